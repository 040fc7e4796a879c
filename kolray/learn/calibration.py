"""Probability calibration and the decision-threshold policy. Both are fitted on the **validation
split only** and stored as plain JSON beside the model.

Calibration (default ``platt``): logistic regression of the label on the raw score (a logit),
p = sigmoid(a·score + b). Two parameters survive the handful of positives a rare 3x label gives;
``isotonic`` (monotone step function) is the option when validation holds hundreds of positives.

Threshold policy: among thresholds on the calibrated validation probabilities whose precision is at
least ``min_precision`` (default 0.7, the design's target), take the one with the highest recall
(ties: higher precision, then higher threshold). If none reaches the target precision, fall back to
the threshold with the best F1. The chosen policy is recorded with the threshold.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

CalibrationMethod = Literal["platt", "isotonic"]
DEFAULT_MIN_PRECISION = 0.7


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, computed through tanh so large inputs do not overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


class Calibrator(BaseModel):
    """Maps a raw score (logit scale) to a probability."""

    model_config = ConfigDict(extra="forbid")

    method: CalibrationMethod
    a: float = 1.0
    b: float = 0.0
    x: list[float] = Field(default_factory=list, description="isotonic: score knots (increasing)")
    y: list[float] = Field(default_factory=list, description="isotonic: probability at each knot")

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        if self.method == "platt":
            return sigmoid(self.a * scores + self.b)
        return np.interp(scores, np.asarray(self.x), np.asarray(self.y))


def fit_calibrator(scores: np.ndarray, labels: np.ndarray, method: CalibrationMethod = "platt") -> Calibrator:
    """Fit on validation scores/labels. With a single class present there is nothing to fit:
    Platt falls back to the identity on the logit scale (and says so by a=1, b=0)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return Calibrator(
            method=method,
            a=1.0,
            b=0.0,
            x=[-1e9, 1e9] if method == "isotonic" else [],
            y=[float(labels.mean())] * 2 if method == "isotonic" else [],
        )
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        # Large C: almost no regularisation, this is a 1-D maximum-likelihood fit.
        lr = LogisticRegression(C=1e4, solver="lbfgs", max_iter=1000)
        lr.fit(scores.reshape(-1, 1), labels)
        return Calibrator(method="platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(scores, labels)
    return Calibrator(method="isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist())


class ThresholdChoice(BaseModel):
    """A decision threshold on calibrated probabilities, with how and on what it was chosen."""

    model_config = ConfigDict(extra="forbid")

    threshold: float
    policy: str = Field(description="'recall_at_precision>=P' or 'best_f1' (fallback)")
    min_precision: float
    val_precision: float
    val_recall: float
    val_f1: float


def choose_threshold(
    probabilities: np.ndarray, labels: np.ndarray, min_precision: float = DEFAULT_MIN_PRECISION
) -> ThresholdChoice:
    """The policy in the module docstring, on validation data."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    n_pos = int(y.sum())
    if n_pos == 0 or len(p) == 0:
        # No positive to recall: predict nothing positive.
        return ThresholdChoice(
            threshold=1.0,
            policy="no_positives",
            min_precision=min_precision,
            val_precision=0.0,
            val_recall=0.0,
            val_f1=0.0,
        )
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    tp = np.cumsum(y_sorted)
    k = np.arange(1, len(p) + 1)
    # Only cut where the score changes: a threshold cannot split tied scores.
    last_of_run = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    tp, k, thresholds = tp[last_of_run], k[last_of_run], p_sorted[last_of_run]
    precision = tp / k
    recall = tp / n_pos
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    ok = precision >= min_precision
    if ok.any():
        candidates = np.flatnonzero(ok)
        # lexsort: last key is primary → recall, then precision, then threshold (all maximised).
        best = candidates[np.lexsort((thresholds[candidates], precision[candidates], recall[candidates]))[-1]]
        policy = f"recall_at_precision>={min_precision:g}"
    else:
        best = int(np.lexsort((thresholds, f1))[-1])
        policy = "best_f1"
    return ThresholdChoice(
        threshold=float(thresholds[best]),
        policy=policy,
        min_precision=min_precision,
        val_precision=float(precision[best]),
        val_recall=float(recall[best]),
        val_f1=float(f1[best]),
    )
