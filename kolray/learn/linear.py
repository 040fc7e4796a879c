"""Linear models as a model family beside the networks and the trees: L2 logistic regression for
the token label, ridge regression for the KOL rates.

They are in the search because on small or noisy datasets a linear model is often the best one
(the KOL dataset is a few hundred KOL-days; the ridge baseline tied or beat the other families),
and a product that fits the better model as a baseline but serves the worse one lets its users
down. Same splits, same features, same validation metric as the other families
(:func:`kolray.learn.metrics.token_selection_metrics`, :func:`kolray.learn.metrics.kol_rate_metrics`),
same calibration and threshold policy for tokens.

- A trial samples the feature transform (``none``, or ``signed_log``: ``sign(x)·log1p(|x|)``
  before standardising, which tames the heavy-tailed amounts and counts a linear model otherwise
  lets dominate) and walks the L2 path itself, keeping the strength with the best validation
  metric, as a boosting trial keeps its best round.
- Stored as one JSON file (``linear.json``: columns, transform, standardisation, coefficients);
  scored by numpy. No pickle, no sklearn at load time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from kolray.learn.baselines import standardise_fit
from kolray.learn.calibration import Calibrator, ThresholdChoice
from kolray.learn.metrics import kol_rate_metrics, token_selection_metrics
from kolray.learn.predictors import as_matrix

FAMILY = "linear"
LINEAR_CLASS = "Linear"
MODEL_FILE = "linear.json"
# The L2 strengths a trial walks (ridge's alpha; logistic regression's C is its inverse).
L2_PATH = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
# z-scores beyond this are clipped, as the networks and the baselines do, for the heavy tail.
Z_CLIP = 8.0

Transform = Literal["none", "signed_log"]
# (step along the path, validation metrics, improved) → None: a Tune trial reports here.
PathCallback = Callable[[int, dict[str, float], bool], None]


class LinearConfig(BaseModel):
    """What a linear trial samples: the feature transform. The L2 strength is chosen on validation."""

    model_config = ConfigDict(extra="forbid")

    transform: Transform = "none"
    l2_path: tuple[float, ...] = Field(default=L2_PATH, min_length=1)
    seed: int = 0


@dataclass
class LinearModel:
    """Features → transform → standardise (NaN → the training mean, clip ±8) → ``z @ coef.T + intercept``.

    ``coef`` is (outputs, features): one output for the token's logit, two for the KOL rates."""

    columns: list[str]
    transform: Transform
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    l2: float

    def __post_init__(self) -> None:
        self.coef = np.atleast_2d(np.asarray(self.coef, dtype=np.float64))
        self.intercept = np.atleast_1d(np.asarray(self.intercept, dtype=np.float64))
        n = len(self.columns)
        if self.coef.shape[1] != n or len(self.mean) != n or len(self.std) != n:
            raise ValueError(
                f"linear model shapes disagree: {n} columns, coef {self.coef.shape}, "
                f"mean {len(self.mean)}, std {len(self.std)}"
            )
        if self.coef.shape[0] != len(self.intercept):
            raise ValueError(f"{self.coef.shape[0]} coefficient rows for {len(self.intercept)} intercepts")

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs, shape (n, outputs), float64."""
        return standardise(transform(x, self.transform), self.mean, self.std) @ self.coef.T + self.intercept

    def to_json(self) -> str:
        return json.dumps(
            {
                "family": FAMILY,
                "columns": self.columns,
                "transform": self.transform,
                "mean": self.mean.tolist(),
                "std": self.std.tolist(),
                "coef": self.coef.tolist(),
                "intercept": self.intercept.tolist(),
                "l2": self.l2,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> LinearModel:
        """Rebuild from :meth:`to_json`; a ``ValueError`` says what is wrong with other text."""
        try:
            body = json.loads(text)
            if body.get("family") != FAMILY:
                raise ValueError(f"not a linear model (family {body.get('family')!r})")
            if body["transform"] not in ("none", "signed_log"):
                raise ValueError(f"unknown transform {body['transform']!r}")
            model = cls(
                [str(c) for c in body["columns"]],
                body["transform"],
                np.asarray(body["mean"], dtype=np.float64),
                np.asarray(body["std"], dtype=np.float64),
                np.asarray(body["coef"], dtype=np.float64),
                np.asarray(body["intercept"], dtype=np.float64),
                float(body["l2"]),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a linear model: {error!r}") from None
        if not (np.isfinite(model.coef).all() and np.isfinite(model.intercept).all()):
            raise ValueError("linear model has non-finite coefficients")
        return model


def transform(x: np.ndarray, kind: Transform) -> np.ndarray:
    """The trial's feature transform (NaN stays NaN)."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "signed_log":
        return np.sign(x) * np.log1p(np.abs(x))
    return x


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    z = (x - mean) / std
    return np.clip(np.nan_to_num(z, nan=0.0, posinf=Z_CLIP, neginf=-Z_CLIP), -Z_CLIP, Z_CLIP)


@dataclass
class LinearFit:
    """A linear trial's result: the model at the best L2 strength and its validation metric."""

    model: LinearModel
    best_metric: float
    history: list[dict[str, float]]
    seconds: float


def _walk_path(
    x: np.ndarray,
    x_val: np.ndarray,
    columns: list[str],
    config: LinearConfig,
    solve: Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]],
    score: Callable[[LinearModel, np.ndarray], dict[str, float]],
    metric: str,
    higher_is_better: bool,
    on_check: PathCallback | None,
) -> LinearFit:
    """Transform and standardise once, then ``solve`` (z, l2) → (coef, intercept) at each strength
    of the path; the model with the best validation ``metric`` wins (ties: the weaker penalty)."""
    started = time.perf_counter()
    xt = transform(x, config.transform)
    mean, std = standardise_fit(xt)
    z = standardise(xt, mean, std)
    best: tuple[float, LinearModel] | None = None
    history: list[dict[str, float]] = []
    for step, l2 in enumerate(config.l2_path, start=1):
        coef, intercept = solve(z, l2)
        model = LinearModel(list(columns), config.transform, mean, std, coef, intercept, l2)
        metrics = score(model, x_val)
        value = metrics[metric]
        history.append({"l2": l2, **metrics})
        improved = np.isfinite(value) and (
            best is None or (value > best[0] if higher_is_better else value < best[0])
        )
        if improved:
            best = (value, model)
        if on_check is not None:
            on_check(step, metrics, bool(improved))
    if best is None:
        raise ValueError(f"no L2 strength gave a finite validation {metric}")
    return LinearFit(best[1], best[0], history, time.perf_counter() - started)


def fit_token_linear(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    columns: list[str],
    config: LinearConfig,
    on_check: PathCallback | None = None,
) -> LinearFit:
    """L2 logistic regression at each strength of the path; the best validation PR-AUC wins."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(y).astype(int)
    if len(np.unique(labels)) < 2:
        raise ValueError("the training split has one class: logistic regression needs both")

    def solve(z: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
        lr = LogisticRegression(C=1.0 / l2, max_iter=2000, random_state=config.seed).fit(z, labels)
        return lr.coef_, lr.intercept_

    def score(model: LinearModel, x_val: np.ndarray) -> dict[str, float]:
        return token_selection_metrics(y_val, model.outputs(x_val)[:, 0])

    return _walk_path(x, x_val, columns, config, solve, score, "val_pr_auc", True, on_check)


def fit_kol_linear(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    columns: list[str],
    config: LinearConfig,
    on_check: PathCallback | None = None,
) -> LinearFit:
    """Ridge regression of both rates at each strength of the path; the best validation RMSE wins."""
    from sklearn.linear_model import Ridge

    targets = np.asarray(y, dtype=np.float64)

    def solve(z: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
        ridge = Ridge(alpha=l2).fit(z, targets)
        return ridge.coef_, ridge.intercept_

    def score(model: LinearModel, x_val: np.ndarray) -> dict[str, float]:
        return kol_rate_metrics(y_val, rates(model, x_val))

    return _walk_path(x, x_val, columns, config, solve, score, "val_rmse", False, on_check)


def rates(model: LinearModel, x: np.ndarray) -> np.ndarray:
    """Ridge outputs as rates: clipped to [0, 1]."""
    return np.clip(model.outputs(x), 0.0, 1.0)


# Predictors


@dataclass
class LinearTokenClassifier:
    """Logistic regression → raw score (logit) → calibrated P → yes/no at the validation threshold."""

    model: LinearModel
    calibrator: Calibrator
    threshold: ThresholdChoice
    feature_columns: list[str]
    target: str = "label_3x"

    family: ClassVar[str] = FAMILY

    def scores(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        return self.model.outputs(as_matrix(features, self.feature_columns))[:, 0]

    def predict_proba(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Calibrated probability per row, shape (n,)."""
        return self.calibrator(self.scores(features))

    def predict(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        return self.predict_proba(features) >= self.threshold.threshold

    def describe(self) -> dict[str, Any]:
        """What the registry records as the model's structure."""
        return {"class": LINEAR_CLASS, "hparams": describe(self.model)}

    def to_files(self) -> dict[str, bytes]:
        return {MODEL_FILE: self.model.to_json().encode()}

    @classmethod
    def from_files(
        cls,
        files: dict[str, bytes],
        calibrator: Calibrator,
        threshold: ThresholdChoice,
        feature_columns: list[str],
        target: str = "label_3x",
    ) -> LinearTokenClassifier:
        model = _checked(files, feature_columns, 1)
        return cls(model, calibrator, threshold, list(feature_columns), target)


@dataclass
class LinearKolForecaster:
    """Ridge regression of the 7-day and 30-day rates, clipped to [0, 1]."""

    model: LinearModel
    feature_columns: list[str]
    targets: list[str]

    family: ClassVar[str] = FAMILY

    def predict_proba(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Forecast rates, shape (n, targets), columns in the order of ``targets``."""
        return rates(self.model, as_matrix(features, self.feature_columns))

    def predict(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        return self.predict_proba(features)

    def describe(self) -> dict[str, Any]:
        return {"class": LINEAR_CLASS, "hparams": describe(self.model)}

    def to_files(self) -> dict[str, bytes]:
        return {MODEL_FILE: self.model.to_json().encode()}

    @classmethod
    def from_files(
        cls, files: dict[str, bytes], feature_columns: list[str], targets: list[str]
    ) -> LinearKolForecaster:
        return cls(_checked(files, feature_columns, len(targets)), list(feature_columns), list(targets))


def describe(model: LinearModel) -> dict[str, Any]:
    return {"transform": model.transform, "l2": model.l2, "outputs": int(model.coef.shape[0])}


def _checked(files: dict[str, bytes], feature_columns: list[str], outputs: int) -> LinearModel:
    """The stored model, checked against the metadata's columns and outputs."""
    model = LinearModel.from_json(files[MODEL_FILE])
    if model.columns != list(feature_columns):
        raise ValueError(f"{MODEL_FILE} columns differ from the metadata's feature columns")
    if model.coef.shape[0] != outputs:
        raise ValueError(f"{MODEL_FILE} has {model.coef.shape[0]} outputs, the metadata {outputs}")
    return model
