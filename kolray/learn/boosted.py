"""Gradient-boosted trees (LightGBM) as a model family beside the networks: same splits, same
features, same validation metric, same calibration and threshold policy, so the search can pick
either and Serve can load either.

- :func:`fit_token_booster`: binary objective on the token label; early stopping on validation
  PR-AUC computed by :func:`kolray.learn.metrics.token_selection_metrics` (the function that scores
  the network's epochs), checked every ``eval_every`` rounds.
- :func:`fit_kol_boosters`: one booster per target (7-day, 30-day rate) with LightGBM's
  ``cross_entropy`` objective, which takes targets in [0, 1] like the networks' soft-target loss;
  early stopping on each target's validation RMSE; the pair is scored by
  :func:`kolray.learn.metrics.kol_selection_metrics`.
- :class:`BoostedTokenClassifier`, :class:`BoostedKolForecaster`: the predictors, with the
  interface of :class:`~kolray.learn.predictors.TokenClassifier` and
  :class:`~kolray.learn.predictors.KolForecaster`. Stored as LightGBM's model text
  (``Booster.model_to_string``) and loaded with ``Booster(model_str=...)``: never a pickle.

Raw scores are on the logit scale (binary and cross-entropy objectives both), so the token
calibrator is the same Platt/isotonic fit as for the network's logits and the KOL rates are the
sigmoid of the raw scores.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from kolray.learn.calibration import Calibrator, ThresholdChoice, sigmoid
from kolray.learn.metrics import kol_selection_metrics, token_selection_metrics
from kolray.learn.predictors import as_matrix

FAMILY = "gbt"
BOOSTER_CLASS = "LightGBM"
TOKEN_MODEL_FILE = "model.txt"
KOL_MODEL_FILES = ("model_7d.txt", "model_30d.txt")

# (round, validation metrics, improved) → None: a Tune trial reports here.
RoundCallback = Callable[[int, dict[str, float], bool], None]


class BoosterConfig(BaseModel):
    """LightGBM's parameters that the search samples, and the round budget."""

    model_config = ConfigDict(extra="forbid")

    num_leaves: int = Field(default=15, ge=2)
    learning_rate: float = Field(default=0.05, gt=0)
    min_child_samples: int = Field(default=20, ge=1)
    feature_fraction: float = Field(default=0.9, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    lambda_l2: float = Field(default=1.0, ge=0)
    # Positives weighted up by this factor (token only); 1 leaves the classes as they come.
    scale_pos_weight: float = Field(default=1.0, gt=0)
    max_rounds: int = Field(default=600, ge=1)
    eval_every: int = Field(default=5, ge=1, description="Rounds between validation checks.")
    patience: int = Field(default=8, ge=1, description="Checks without improvement before stopping.")
    seed: int = 0
    n_threads: int = Field(default=1, ge=1)


def _params(config: BoosterConfig, objective: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "objective": objective,
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_child_samples": config.min_child_samples,
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": 1 if config.bagging_fraction < 1 else 0,
        "lambda_l2": config.lambda_l2,
        "metric": "None",  # validation is scored by kolray's own metrics, below
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": config.n_threads,
        "verbosity": -1,
    }
    if objective == "binary" and config.scale_pos_weight != 1.0:
        params["scale_pos_weight"] = config.scale_pos_weight
    return params


@dataclass
class BoosterFit:
    """The best round's model text(s) and how the search got there."""

    model_texts: list[str]  # one per output: token 1, KOL 2 (7-day, 30-day)
    best_rounds: list[int]
    best_metric: float
    history: list[dict[str, float]]
    seconds: float


def _fit_one(
    params: dict[str, Any],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    val_metrics: Callable[[np.ndarray], dict[str, float]],
    monitor: str,
    maximise: bool,
    config: BoosterConfig,
    on_check: RoundCallback | None,
) -> tuple[str, int, float, list[dict[str, float]]]:
    """Train one booster, scoring validation every ``eval_every`` rounds; keep the best round."""
    import lightgbm as lgb

    sign = 1.0 if maximise else -1.0
    best: dict[str, Any] = {"value": -math.inf, "round": 0, "stale": 0}
    history: list[dict[str, float]] = []

    def check(env: Any) -> None:
        done = env.iteration + 1
        if done % config.eval_every and done != env.end_iteration:
            return
        raw = np.asarray(env.model.predict(x_val, raw_score=True, num_iteration=done))
        metrics = val_metrics(raw)
        value = metrics[monitor]
        improved = math.isfinite(value) and sign * value > best["value"] + 1e-9
        if improved:
            best.update(value=sign * value, round=done, stale=0)
        else:
            best["stale"] += 1
        metrics = {**metrics, "round": float(done), f"best_{monitor}": sign * best["value"]}
        history.append(metrics)
        if on_check is not None:
            on_check(done, metrics, bool(improved))
        if best["stale"] >= config.patience:
            raise lgb.callback.EarlyStopException(best["round"] - 1, [])

    names = [f"f{i}" for i in range(x_train.shape[1])]
    train = lgb.Dataset(
        np.ascontiguousarray(x_train, dtype=np.float64),
        label=np.ascontiguousarray(y_train),
        feature_name=names,
    )
    booster = lgb.train(params, train, num_boost_round=config.max_rounds, callbacks=[check])
    rounds = max(int(best["round"]), 1)
    return booster.model_to_string(num_iteration=rounds), rounds, sign * best["value"], history


def fit_token_booster(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: BoosterConfig,
    on_check: RoundCallback | None = None,
) -> BoosterFit:
    """Binary trees with early stopping on validation PR-AUC (the network's selection metric)."""
    started = time.perf_counter()
    y_val = np.asarray(y_val)

    def val_metrics(raw: np.ndarray) -> dict[str, float]:
        return token_selection_metrics(y_val, raw)

    text, rounds, value, history = _fit_one(
        _params(config, "binary"), x_train, y_train, x_val, val_metrics, "val_pr_auc", True, config, on_check
    )
    return BoosterFit([text], [rounds], value, history, time.perf_counter() - started)


def fit_kol_boosters(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: BoosterConfig,
    on_check: RoundCallback | None = None,
) -> BoosterFit:
    """One cross-entropy booster per target column of ``y`` (rates in [0, 1]), each stopped on its
    own validation RMSE; ``best_metric`` is the pair's mean validation RMSE as the networks report it."""
    started = time.perf_counter()
    y_val = np.asarray(y_val, dtype=np.float64)
    texts, rounds, history = [], [], []
    for target in range(y_train.shape[1]):
        column = y_val[:, target]

        def val_metrics(raw: np.ndarray, column: np.ndarray = column) -> dict[str, float]:
            return {"val_rmse_target": float(np.sqrt(np.mean((sigmoid(raw) - column) ** 2)))}

        text, best_round, _value, part = _fit_one(
            _params(config, "cross_entropy"),
            x_train,
            y_train[:, target],
            x_val,
            val_metrics,
            "val_rmse_target",
            False,
            config,
            None,
        )
        texts.append(text)
        rounds.append(best_round)
        history += [{**h, "target": float(target)} for h in part]
    raw = np.column_stack([_raw_scores(_booster(t), x_val) for t in texts])
    metrics = kol_selection_metrics(y_val, raw)
    if on_check is not None:
        on_check(max(rounds), {**metrics, "best_val_rmse": metrics["val_rmse"]}, True)
    return BoosterFit(texts, rounds, metrics["val_rmse"], history, time.perf_counter() - started)


def _booster(model_text: str) -> Any:
    import lightgbm as lgb

    return lgb.Booster(model_str=model_text)


def _raw_scores(booster: Any, x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        return np.zeros(0, dtype=np.float64)
    return np.asarray(booster.predict(np.asarray(x, dtype=np.float64), raw_score=True), dtype=np.float64)


def check_model_text(model_text: str, n_features: int, name: str) -> None:
    """A stored model must be LightGBM text for this many features (not just any text file)."""
    if not model_text.startswith("tree\n"):
        raise ValueError(f"{name} is not a LightGBM text model")
    booster = _booster(model_text)
    if booster.num_feature() != n_features:
        raise ValueError(f"{name} expects {booster.num_feature()} features, the metadata lists {n_features}")


# Predictors


@dataclass
class BoostedTokenClassifier:
    """Trees → raw score (logit) → calibrated P → yes/no at the validation-chosen threshold."""

    model_text: str
    calibrator: Calibrator
    threshold: ThresholdChoice
    feature_columns: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    target: str = "label_3x"  # the label column it answers (kolray.learn.train.TOKEN_TARGETS)
    _booster: Any = field(default=None, repr=False, compare=False)

    family: ClassVar[str] = FAMILY

    @property
    def booster(self) -> Any:
        if self._booster is None:
            self._booster = _booster(self.model_text)
        return self._booster

    def scores(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        return _raw_scores(self.booster, as_matrix(features, self.feature_columns))

    def predict_proba(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Calibrated probability per row, shape (n,)."""
        return self.calibrator(self.scores(features))

    def predict(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        return self.predict_proba(features) >= self.threshold.threshold

    def describe(self) -> dict[str, Any]:
        """What the registry records as the model's structure."""
        return {
            "class": BOOSTER_CLASS,
            "hparams": {**self.config, "rounds": self.booster.current_iteration()},
        }

    def to_files(self) -> dict[str, bytes]:
        return {TOKEN_MODEL_FILE: self.model_text.encode()}

    @classmethod
    def from_files(
        cls,
        files: dict[str, bytes],
        calibrator: Calibrator,
        threshold: ThresholdChoice,
        feature_columns: list[str],
        config: dict[str, Any] | None = None,
        target: str = "label_3x",
    ) -> BoostedTokenClassifier:
        text = files[TOKEN_MODEL_FILE].decode()
        check_model_text(text, len(feature_columns), TOKEN_MODEL_FILE)
        return cls(text, calibrator, threshold, list(feature_columns), dict(config or {}), target)


@dataclass
class BoostedKolForecaster:
    """One booster per target; the rates are the sigmoid of their raw scores."""

    model_texts: list[str]
    feature_columns: list[str]
    targets: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    _boosters: list[Any] = field(default_factory=list, repr=False, compare=False)

    family: ClassVar[str] = FAMILY

    def __post_init__(self) -> None:
        if len(self.model_texts) != len(self.targets):
            raise ValueError(f"{len(self.model_texts)} boosters for {len(self.targets)} targets")

    @property
    def boosters(self) -> list[Any]:
        if not self._boosters:
            self._boosters = [_booster(text) for text in self.model_texts]
        return self._boosters

    def predict_proba(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Forecast rates, shape (n, targets), columns in the order of ``targets``."""
        x = as_matrix(features, self.feature_columns)
        if len(x) == 0:
            return np.zeros((0, len(self.targets)))
        return sigmoid(np.column_stack([_raw_scores(b, x) for b in self.boosters]))

    def predict(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        return self.predict_proba(features)

    def describe(self) -> dict[str, Any]:
        rounds = [b.current_iteration() for b in self.boosters]
        return {"class": BOOSTER_CLASS, "hparams": {**self.config, "rounds": rounds}}

    def to_files(self) -> dict[str, bytes]:
        return {name: text.encode() for name, text in zip(KOL_MODEL_FILES, self.model_texts, strict=True)}

    @classmethod
    def from_files(
        cls,
        files: dict[str, bytes],
        feature_columns: list[str],
        targets: list[str],
        config: dict[str, Any] | None = None,
    ) -> BoostedKolForecaster:
        texts = [files[name].decode() for name in KOL_MODEL_FILES[: len(targets)]]
        for name, text in zip(KOL_MODEL_FILES, texts, strict=False):
            check_model_text(text, len(feature_columns), name)
        return cls(texts, list(feature_columns), list(targets), dict(config or {}))
