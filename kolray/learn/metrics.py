"""The metrics of learning, in one place: what picks a trial, what decides a promotion, what a
report states.

- Token model: ROC-AUC, PR-AUC (average precision), Brier score, precision/recall/F1 at a
  threshold, precision at the top k.
- KOL model: RMSE, MAE and R² per target (7-day, 30-day); the mean RMSE of the two is the headline.
- Percentile bootstrap intervals of any of them over rows.

Plain numpy: fast enough to bootstrap, and the same numbers during the search and in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from kolray.datasets import LoadedDataset

MetricMode = Literal["max", "min"]
# The validation metric that early stopping and the search optimise: PR-AUC for the rare 3x label,
# mean RMSE of the 7-day and 30-day rates for KOLs.
SELECTION_METRIC: dict[str, tuple[str, MetricMode]] = {
    "token": ("val_pr_auc", "max"),
    "kol": ("val_rmse", "min"),
}
# The test metric that decides "better" between a candidate and the champion.
PRIMARY_METRIC: dict[str, tuple[str, MetricMode]] = {
    "token": ("pr_auc", "max"),
    "kol": ("rmse", "min"),
}
PRECISION_AT = (10, 50, 100)


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann–Whitney form with average ranks for ties; NaN with one class."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(p, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """PR-AUC as average precision (sklearn's definition: step-wise, ties grouped)."""
    y = np.asarray(y).astype(np.float64)
    n_pos = y.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-np.asarray(p, dtype=np.float64), kind="stable")
    ps, ys = np.asarray(p)[order], y[order]
    tp = np.cumsum(ys)
    k = np.arange(1, len(ys) + 1)
    last = np.r_[ps[1:] != ps[:-1], True]
    tp, k = tp[last], k[last]
    recall = tp / n_pos
    precision = tp / k
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of probabilities against 0/1 labels; NaN without rows."""
    p = np.asarray(p, dtype=np.float64)
    return float(np.mean((p - np.asarray(y)) ** 2)) if len(p) else float("nan")


def rmse(pred: np.ndarray, y: np.ndarray) -> float:
    """Root mean squared error (float64)."""
    return float(np.sqrt(np.mean((np.asarray(pred, dtype=np.float64) - y) ** 2)))


def token_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """The token report's block: ranking, calibration, and the decision at ``threshold``."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    predicted = p >= threshold
    tp = int((predicted & (y == 1)).sum())
    n_pred, n_pos = int(predicted.sum()), int(y.sum())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_pos if n_pos else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if n_pos and (precision + recall) > 0 else 0.0
    out = {
        "roc_auc": roc_auc(y, p),
        "pr_auc": average_precision(y, p),
        "brier": brier(y, p),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "threshold": float(threshold),
        "n": len(y),
        "n_pos": n_pos,
    }
    order = np.argsort(-p, kind="stable")
    for k in PRECISION_AT:
        if len(y) >= k:
            out[f"precision_at_{k}"] = float(y[order[:k]].mean())
    return out


def kol_metrics(
    pred: np.ndarray, y: np.ndarray, suffixes: tuple[str, str] = ("7d", "30d")
) -> dict[str, float]:
    """The KOL report's block: RMSE, MAE and R² per target, and their mean RMSE."""
    out: dict[str, float] = {"n": len(y)}
    for i, suffix in enumerate(suffixes):
        err = np.asarray(pred[:, i], dtype=np.float64) - y[:, i]
        var = float(np.var(y[:, i]))
        out[f"rmse_{suffix}"] = rmse(pred[:, i], y[:, i])
        out[f"mae_{suffix}"] = float(np.mean(np.abs(err)))
        out[f"r2_{suffix}"] = float(1 - np.mean(err**2) / var) if var > 0 else float("nan")
    out["rmse"] = float(np.mean([out[f"rmse_{s}"] for s in suffixes]))
    return out


def token_selection_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Validation PR-AUC and ROC-AUC of raw scores; NaN unless both classes are present."""
    both_classes = 0 < y.sum() < len(y)
    return {
        "val_pr_auc": average_precision(y, scores) if both_classes else float("nan"),
        "val_roc_auc": roc_auc(y, scores),
    }


def kol_selection_metrics(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Validation RMSE of the rates (sigmoid of the logits): the mean and per target."""
    return kol_rate_metrics(y, 1.0 / (1.0 + np.exp(-logits.astype(np.float64))))


def kol_rate_metrics(y: np.ndarray, rates: np.ndarray) -> dict[str, float]:
    """Validation RMSE of forecast rates: the mean and per target (the families that output rates
    directly, and the networks and boosters through :func:`kol_selection_metrics`)."""
    per = [rmse(rates[:, i], y[:, i]) for i in range(rates.shape[1])]
    return {"val_rmse": float(np.mean(per)), "val_rmse_7d": per[0], "val_rmse_30d": per[1]}


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray], dict[str, float]], n: int, n_boot: int, seed: int
) -> dict[str, list[float]]:
    """Percentile 95% intervals of every metric ``metric_fn(indices)`` returns (NaN resamples skipped)."""
    if n == 0 or n_boot <= 0:
        return {}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        for key, value in metric_fn(rng.integers(0, n, n)).items():
            samples.setdefault(key, []).append(value)
    out = {}
    for key, values in samples.items():
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        if len(arr):
            out[key] = [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))]
    return out


class Scorable(Protocol):
    """What :func:`primary_metric_value` needs of a model: a registry ``LoadedModel`` has it."""

    @property
    def model(self) -> str:
        """``token`` or ``kol``."""
        ...

    @property
    def feature_columns(self) -> list[str]:
        """The model's input columns, in order."""
        ...

    @property
    def targets(self) -> list[str]:
        """KOL: the target columns, in the order of the outputs."""
        ...

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Token: P(3x), shape (n,); KOL: rates, shape (n, 2)."""
        ...


def primary_metric_value(loaded: Scorable, ds: LoadedDataset) -> float:
    """Token: test PR-AUC on the model's own target label; KOL: mean test RMSE of the two targets."""
    x = ds.test[loaded.feature_columns].to_numpy(dtype=np.float32)
    if loaded.model == "token":
        label = loaded.targets[0] if loaded.targets else "label_3x"
        return average_precision(ds.test[label].to_numpy(), loaded.predict_proba(x))
    y = ds.test[loaded.targets].to_numpy(dtype=np.float64)
    return kol_metrics(loaded.predict_proba(x), y)["rmse"]
