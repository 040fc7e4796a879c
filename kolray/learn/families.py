"""Model families as trials of one search: the PyTorch networks (``net``), LightGBM (``gbt``) and
linear models (``linear``: logistic regression for tokens, ridge for KOLs).

All families train on the same :class:`~kolray.learn.train.TokenArrays` /
:class:`~kolray.learn.train.KOLArrays` (same splits, same features), report the same validation
metric (:data:`kolray.learn.metrics.SELECTION_METRIC`, computed by the same functions), and the
search keeps the best trial of each family; the champion is the family with the best validation
metric. Test is never looked at here.

A ``gbt`` trial's checkpoint is ``trial.json`` (family, parameters, rounds) and LightGBM's model
text; a ``net`` trial's is ``network.json`` and ``model.safetensors``. ASHA applies to the
networks, which report every epoch; a boosting trial stops itself on validation (every
``eval_every`` rounds, ``patience`` checks) and reports once, when it is done. A ``linear`` trial
walks its L2 path, keeps the best strength on validation and reports once; its checkpoint is
``trial.json`` and ``linear.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kolray.learn.boosted import (
    KOL_MODEL_FILES,
    TOKEN_MODEL_FILE,
    BoostedKolForecaster,
    BoostedTokenClassifier,
    BoosterConfig,
    BoosterFit,
    RoundCallback,
    fit_kol_boosters,
    fit_token_booster,
)
from kolray.learn.calibration import CalibrationMethod, choose_threshold, fit_calibrator
from kolray.learn.linear import MODEL_FILE as LINEAR_MODEL_FILE
from kolray.learn.linear import (
    LinearConfig,
    LinearFit,
    LinearKolForecaster,
    LinearModel,
    LinearTokenClassifier,
    PathCallback,
    fit_kol_linear,
    fit_token_linear,
)
from kolray.learn.predictors import KolForecaster, TokenClassifier
from kolray.learn.train import KOLArrays, TokenArrays, finalize_token

Family = Literal["net", "gbt", "linear"]
# The order breaks ties on validation: the first family listed wins.
FAMILIES: tuple[Family, ...] = ("net", "gbt", "linear")
FAMILY_NAMES: dict[str, str] = {"net": "PyTorch network", "gbt": "LightGBM", "linear": "linear model"}
FAMILY_KEY = "family"
TRIAL_FILE = "trial.json"
# Booster and linear parameters carry a prefix in the shared search space: the networks have their
# own dropout, learning rate and weight decay.
GBT_PREFIX = "gbt_"
LINEAR_PREFIX = "linear_"

# What the search, the registry and Serve handle: any family.
TokenPredictor = TokenClassifier | BoostedTokenClassifier | LinearTokenClassifier
KolPredictor = KolForecaster | BoostedKolForecaster | LinearKolForecaster


def booster_search_space(model: str) -> dict[str, Any]:
    """LightGBM's search space (leaves, learning rate, leaf size, subsampling, L2, class weight)."""
    from ray import tune

    space: dict[str, Any] = {
        "gbt_num_leaves": tune.choice([7, 15, 31, 63]),
        "gbt_learning_rate": tune.loguniform(0.01, 0.2),
        "gbt_min_child_samples": tune.choice([10, 20, 50, 100]),
        "gbt_feature_fraction": tune.uniform(0.5, 1.0),
        "gbt_bagging_fraction": tune.uniform(0.6, 1.0),
        "gbt_lambda_l2": tune.loguniform(1e-3, 10.0),
    }
    if model == "token":
        space["gbt_scale_pos_weight"] = tune.choice([1.0, 3.0, 10.0])
    return space


def linear_search_space() -> dict[str, Any]:
    """The linear family's search space: the feature transform (the L2 strength is walked in the trial)."""
    from ray import tune

    return {"linear_transform": tune.choice(["none", "signed_log"])}


def linear_config(params: dict[str, Any], *, seed: int) -> LinearConfig:
    """A trial's sampled ``linear_*`` parameters → :class:`LinearConfig`."""
    values = {k[len(LINEAR_PREFIX) :]: v for k, v in params.items() if k.startswith(LINEAR_PREFIX)}
    return LinearConfig(**values, seed=seed)


def fit_linear(
    model: str, data: TokenArrays | KOLArrays, config: LinearConfig, on_check: PathCallback | None = None
) -> LinearFit:
    """Fit the model's linear family on the training split, its L2 strength chosen on validation."""
    fit = fit_token_linear if model == "token" else fit_kol_linear
    return fit(
        data.x_train, data.y_train, data.x_val, data.y_val, list(data.feature_columns), config, on_check
    )


def write_linear_checkpoint(
    directory: str | Path, fit: LinearFit, config: LinearConfig, params: dict[str, Any]
) -> None:
    """The trial's checkpoint: the model as JSON and what it was trained with."""
    Path(directory, LINEAR_MODEL_FILE).write_text(fit.model.to_json())
    Path(directory, TRIAL_FILE).write_text(
        json.dumps(
            {
                FAMILY_KEY: "linear",
                "config": config.model_dump(),
                "params": params,
                "l2": fit.model.l2,
                "best_metric": fit.best_metric,
            }
        )
    )


def read_linear_checkpoint(directory: str | Path) -> tuple[str, dict[str, Any]]:
    """The model's JSON and ``trial.json`` from a ``linear`` checkpoint."""
    info = json.loads(Path(directory, TRIAL_FILE).read_text())
    return Path(directory, LINEAR_MODEL_FILE).read_text(), info


def booster_config(params: dict[str, Any], *, seed: int, threads: int, patience: int) -> BoosterConfig:
    """A trial's sampled ``gbt_*`` parameters → :class:`BoosterConfig`."""
    values = {k[len(GBT_PREFIX) :]: v for k, v in params.items() if k.startswith(GBT_PREFIX)}
    return BoosterConfig(**values, seed=seed, n_threads=threads, patience=max(patience, 4))


def fit_booster(
    model: str, data: TokenArrays | KOLArrays, config: BoosterConfig, on_check: RoundCallback | None = None
) -> BoosterFit:
    """Fit the model's boosting family on the training split, stopped on validation."""
    if model == "token":
        return fit_token_booster(data.x_train, data.y_train, data.x_val, data.y_val, config, on_check)
    return fit_kol_boosters(data.x_train, data.y_train, data.x_val, data.y_val, config, on_check)


def write_booster_checkpoint(
    directory: str | Path, model: str, fit: BoosterFit, config: BoosterConfig, params: dict[str, Any]
) -> None:
    """The trial's checkpoint: LightGBM text (no pickle) and what it was trained with."""
    names = [TOKEN_MODEL_FILE] if model == "token" else list(KOL_MODEL_FILES)
    for name, text in zip(names, fit.model_texts, strict=True):
        Path(directory, name).write_text(text)
    Path(directory, TRIAL_FILE).write_text(
        json.dumps(
            {
                FAMILY_KEY: "gbt",
                "config": config.model_dump(),
                "params": params,
                "rounds": fit.best_rounds,
                "best_metric": fit.best_metric,
            }
        )
    )


@dataclass
class FamilyBest:
    """The best trial of one family: what it learnt (a network, or LightGBM texts) and its
    validation metric (the search's selection metric)."""

    family: Family
    val_metric: float
    params: dict[str, Any]
    train_config: dict[str, Any]
    network: Any = None  # net: torch module, best epoch, CPU, eval mode
    model_texts: list[str] | None = None  # gbt: LightGBM text, one per output; linear: its JSON
    best_step: int = 0  # net: epoch; gbt: boosting rounds (the largest, for KOL); linear: 0


def read_booster_checkpoint(directory: str | Path, model: str) -> tuple[list[str], dict[str, Any]]:
    """LightGBM texts and ``trial.json`` from a ``gbt`` checkpoint."""
    info = json.loads(Path(directory, TRIAL_FILE).read_text())
    names = [TOKEN_MODEL_FILE] if model == "token" else list(KOL_MODEL_FILES)
    return [Path(directory, name).read_text() for name in names], info


def finalize_token_booster(
    best: FamilyBest,
    data: TokenArrays,
    calibration: CalibrationMethod = "platt",
    min_precision: float = 0.7,
    target: str = "label_3x",
) -> BoostedTokenClassifier:
    """Calibrator and threshold from the **validation split only**, as for the network."""
    assert best.model_texts is not None
    probe = BoostedTokenClassifier(
        best.model_texts[0],
        fit_calibrator(np.zeros(0), np.zeros(0), calibration),
        choose_threshold(np.zeros(0), np.zeros(0)),
        list(data.feature_columns),
        best.train_config,
    )
    scores = probe.scores(data.x_val)
    calibrator = fit_calibrator(scores, data.y_val, calibration)
    threshold = choose_threshold(calibrator(scores), data.y_val, min_precision)
    return BoostedTokenClassifier(
        best.model_texts[0],
        calibrator,
        threshold,
        list(data.feature_columns),
        best.train_config,
        target=target,
    )


def kol_booster_forecaster(best: FamilyBest, data: KOLArrays) -> BoostedKolForecaster:
    """The KOL family's predictor (no calibration: the rates are the cross-entropy fit's)."""
    assert best.model_texts is not None
    return BoostedKolForecaster(
        list(best.model_texts), list(data.feature_columns), list(data.targets), best.train_config
    )


def champion_family(bests: dict[str, FamilyBest], mode: str) -> FamilyBest:
    """The family whose best trial has the best validation metric (ties: the first in FAMILIES)."""
    finite = [b for b in bests.values() if np.isfinite(b.val_metric)]
    if not finite:
        raise ValueError("no family has a finite validation metric")
    sign = 1.0 if mode == "max" else -1.0
    order = {f: i for i, f in enumerate(FAMILIES)}
    return max(finite, key=lambda b: (sign * b.val_metric, -order.get(b.family, 99)))


def finalize_family_token(
    best: FamilyBest, data: TokenArrays, calibration: CalibrationMethod = "platt", min_precision: float = 0.7
) -> TokenPredictor:
    """A family's best token model with its calibrator and threshold (validation only)."""
    if best.family == "gbt":
        return finalize_token_booster(best, data, calibration, min_precision, target=data.target)
    if best.family == "linear":
        return finalize_token_linear(best, data, calibration, min_precision)
    return finalize_token(best.network, data, calibration, min_precision)


def finalize_token_linear(
    best: FamilyBest, data: TokenArrays, calibration: CalibrationMethod = "platt", min_precision: float = 0.7
) -> LinearTokenClassifier:
    """Calibrator and threshold from the **validation split only**, as for the other families."""
    assert best.model_texts is not None
    model = LinearModel.from_json(best.model_texts[0])
    scores = model.outputs(data.x_val)[:, 0]
    calibrator = fit_calibrator(scores, data.y_val, calibration)
    threshold = choose_threshold(calibrator(scores), data.y_val, min_precision)
    return LinearTokenClassifier(model, calibrator, threshold, list(data.feature_columns), data.target)


def family_kol_forecaster(best: FamilyBest, data: KOLArrays) -> KolPredictor:
    """A family's best KOL model as a predictor."""
    if best.family == "gbt":
        return kol_booster_forecaster(best, data)
    if best.family == "linear":
        assert best.model_texts is not None
        model = LinearModel.from_json(best.model_texts[0])
        return LinearKolForecaster(model, list(data.feature_columns), list(data.targets))
    return KolForecaster(best.network, list(data.feature_columns), list(data.targets))
