"""Evaluation on the test split: metrics with bootstrap intervals, baselines, the oracle, plots.

``report.json`` for the token model::

    {"model", "version", "dataset_version",
     "test": {roc_auc, pr_auc, brier, precision, recall, f1, threshold, n, n_pos,
              precision_at_10, precision_at_50, precision_at_100, ci95: {metric: [lo, hi]}},
     "baselines": {name: {same keys}}, "oracle": {same keys} | null, ...}

Precision, recall and F1 are at each predictor's own threshold, chosen on validation by the policy
of :mod:`kolray.learn.calibration`; the oracle's threshold is chosen the same way on the
validation ``oracle_p3x``. Intervals: percentile bootstrap over test rows (``n_boot`` resamples,
fixed seed). The KOL report has the same top-level keys with RMSE/MAE/R² per target in ``test``,
``baselines`` (persistence, ridge) and ``oracle`` (the twin's latent rates, when present).

The metrics themselves are in :mod:`kolray.learn.metrics`, shared with training and the search.
Every report states, in ``comparison``, whether the deep model beats each baseline on the primary
metric: a model that does not is reported as such.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kolray import storage
from kolray.config import get_settings
from kolray.datasets import LoadedDataset
from kolray.features.peaks import peak_summary
from kolray.learn.baselines import KOLBaseline, TokenBaseline
from kolray.learn.calibration import choose_threshold
from kolray.learn.families import KolPredictor, TokenPredictor
from kolray.learn.metrics import average_precision, bootstrap_ci, kol_metrics, roc_auc, token_metrics
from kolray.learn.targets import ORACLE_COLUMNS, meaning
from kolray.learn.train import target_rows

TOKEN_KEYS = ("roc_auc", "pr_auc", "brier", "precision", "recall", "f1", "threshold", "n", "n_pos")


_NO_CI = {"n", "n_pos", "threshold"}


def _with_ci(point: dict[str, float], ci: dict[str, list[float]]) -> dict[str, Any]:
    return {**point, "ci95": {k: v for k, v in ci.items() if k not in _NO_CI}}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf → null, numpy scalars → Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# Token


def _token_block(y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    point = token_metrics(y, p, threshold)
    ci = bootstrap_ci(lambda idx: token_metrics(y[idx], p[idx], threshold), len(y), n_boot, seed)
    return _with_ci(point, ci)


def evaluate_token(
    model: TokenPredictor,
    baselines: dict[str, TokenBaseline],
    ds: LoadedDataset,
    *,
    version: str,
    n_boot: int = 500,
    seed: int = 0,
    plots: bool = True,
    families: dict[str, TokenPredictor] | None = None,
    val_metrics: dict[str, float] | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The token report and its PNGs (name → bytes) for the model's target label. Reads the test
    split (and, for the oracle's threshold only, the validation split's oracle column).
    ``families``: the best model of each family searched (the served one among them), reported
    side by side with ``val_metrics``, their validation metric that chose the served one."""
    cols = ds.feature_columns
    target = model.target
    x = ds.features("test")
    y = ds.test[target].to_numpy().astype(int)
    probs: dict[str, np.ndarray] = {"model": model.predict_proba(x)}
    test = _token_block(y, probs["model"], model.threshold.threshold, n_boot, seed)
    test["threshold_policy"] = model.threshold.policy
    family_blocks: dict[str, dict[str, Any]] = {}
    for family, predictor in (families or {}).items():
        p = probs["model"] if predictor is model else predictor.predict_proba(x)
        family_blocks[family] = _token_block(y, p, predictor.threshold.threshold, n_boot, seed)
        family_blocks[family]["val_metric"] = (val_metrics or {}).get(family)
    blocks: dict[str, dict[str, Any]] = {}
    for name, baseline in baselines.items():
        probs[name] = baseline.predict_proba(x, cols)
        blocks[name] = _token_block(y, probs[name], baseline.threshold.threshold, n_boot, seed)
        blocks[name]["threshold_policy"] = baseline.threshold.policy
    oracle = None
    column = ORACLE_COLUMNS.get(target, "oracle_p3x")
    val_rows = ds.val[target_rows(ds, "val", target)]
    has_oracle = column in ds.test.columns and len(ds.test) > 0 and len(val_rows) > 0
    if has_oracle and ds.test[column].notna().all() and val_rows[column].notna().all():
        p_oracle = ds.test[column].to_numpy(dtype=np.float64)
        val_oracle = val_rows[column].to_numpy(dtype=np.float64)
        choice = choose_threshold(val_oracle, val_rows[target].to_numpy(), model.threshold.min_precision)
        probs["oracle"] = p_oracle
        oracle = _token_block(y, p_oracle, choice.threshold, n_boot, seed)
        oracle["threshold_policy"] = choice.policy
    base_rate = float(ds.train[target].to_numpy()[target_rows(ds, "train", target)].mean())
    importance = permutation_importance(
        lambda m: average_precision(y, model.predict_proba(m)), x, cols, seed=seed
    )
    report: dict[str, Any] = {
        "model": "token",
        "version": version,
        "dataset_version": ds.version,
        "target": target,
        "target_meaning": meaning(target),
        "family": model.family,
        "test": test,
        "families": family_blocks,
        "baselines": blocks,
        "oracle": oracle,
        "reference": {
            "base_rate_train": base_rate,
            "brier_base_rate": float(np.mean((base_rate - y) ** 2)) if len(y) else None,
        },
        "policies": {
            "calibration": f"{model.calibrator.method} scaling fitted on the validation split",
            "threshold": f"{model.threshold.policy} on calibrated validation probabilities "
            f"(highest recall with precision ≥ {model.threshold.min_precision:g}, else best F1)",
            "intervals": f"percentile bootstrap over test rows, {n_boot} resamples",
        },
        "comparison": compare(test, blocks, "pr_auc", "max", oracle, "roc_auc"),
        "permutation_importance": {"metric": "pr_auc drop", "values": importance},
    }
    if "twin_peak_3x" in ds.test.columns and ds.test["twin_peak_3x"].notna().any():
        report["label_agreement"] = peak_summary(
            ds.test["peak_3x"].to_numpy(), ds.test["twin_peak_3x"].to_numpy(dtype=np.float64)
        )
    images = token_plots(y, probs, importance) if plots else {}
    report["plots"] = sorted(images)
    return _clean(report), images


def compare(
    test: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    metric: str,
    mode: str,
    oracle: dict[str, Any] | None,
    gap_metric: str,
) -> dict[str, Any]:
    """Does the deep model beat each baseline on ``metric``? Stated plainly, never hidden."""
    sign = 1 if mode == "max" else -1
    ours = test.get(metric)
    beats: dict[str, bool | None] = {}
    for name, block in baselines.items():
        theirs = block.get(metric)
        if ours is None or theirs is None or not np.isfinite(ours) or not np.isfinite(theirs):
            beats[name] = None
        else:
            beats[name] = bool(sign * ours > sign * theirs)
    known = {k: v for k, v in beats.items() if v is not None}

    def key(name: str) -> float:
        value = baselines[name].get(metric)
        return sign * value if value is not None and np.isfinite(value) else -np.inf

    best = max(baselines, key=key, default=None)
    out: dict[str, Any] = {
        "metric": metric,
        "mode": mode,
        "beats": beats,
        "beats_all_baselines": bool(known) and all(known.values()),
        "best_baseline": best,
    }
    if best is not None:
        word = "beats" if beats.get(best) else "does NOT beat"
        out["verdict"] = (
            f"deep model {word} the best baseline ({best}) on {metric}: "
            f"{ours:.5f} vs {baselines[best].get(metric):.5f}"
        )
    if oracle is not None and oracle.get(gap_metric) is not None and test.get(gap_metric) is not None:
        out[f"gap_to_oracle_{gap_metric}"] = float(oracle[gap_metric] - test[gap_metric])
    return out


def permutation_importance(
    score: Callable[[np.ndarray], float], x: np.ndarray, columns: list[str], repeats: int = 3, seed: int = 0
) -> dict[str, float]:
    """Mean drop of ``score`` (higher is better) when one column is shuffled."""
    if len(x) == 0:
        return {}
    rng = np.random.default_rng(seed)
    base = score(x)
    out = {}
    for j, column in enumerate(columns):
        drops = []
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[:, j] = shuffled[rng.permutation(len(x)), j]
            drops.append(base - score(shuffled))
        out[column] = float(np.nanmean(drops))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# KOL


def evaluate_kol(
    model: KolPredictor,
    baselines: dict[str, KOLBaseline],
    ds: LoadedDataset,
    *,
    version: str,
    n_boot: int = 500,
    seed: int = 0,
    plots: bool = True,
    families: dict[str, KolPredictor] | None = None,
    val_metrics: dict[str, float] | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The KOL report and its PNGs (name → bytes), from the test split; ``families`` as for
    :func:`evaluate_token`."""
    cols = ds.feature_columns
    x = ds.features("test")
    y = ds.test[model.targets].to_numpy(dtype=np.float64)
    preds = {"model": model.predict(x)}
    for name, baseline in baselines.items():
        preds[name] = baseline.predict(x, cols)
    oracle_cols = ["oracle_rate_7d", "oracle_rate_30d"]
    if (
        all(c in ds.test.columns for c in oracle_cols)
        and not ds.test[oracle_cols].isna().any().any()
        and len(y)
    ):
        preds["oracle"] = ds.test[oracle_cols].to_numpy(dtype=np.float64)

    def block(pred: np.ndarray) -> dict[str, Any]:
        point = kol_metrics(pred, y)
        ci = bootstrap_ci(lambda idx: kol_metrics(pred[idx], y[idx]), len(y), n_boot, seed)
        return _with_ci(point, ci)

    test = block(preds["model"])
    family_blocks: dict[str, dict[str, Any]] = {}
    for family, predictor in (families or {}).items():
        family_blocks[family] = block(preds["model"] if predictor is model else predictor.predict(x))
        family_blocks[family]["val_metric"] = (val_metrics or {}).get(family)
    blocks = {name: block(preds[name]) for name in baselines}
    oracle = block(preds["oracle"]) if "oracle" in preds else None
    importance = permutation_importance(
        lambda m: -kol_metrics(model.predict(m), y)["rmse"], x, cols, seed=seed
    )
    report: dict[str, Any] = {
        "model": "kol",
        "version": version,
        "dataset_version": ds.version,
        "targets": list(model.targets),
        "family": model.family,
        "test": test,
        "families": family_blocks,
        "baselines": blocks,
        "oracle": oracle,
        "policies": {"intervals": f"percentile bootstrap over test rows, {n_boot} resamples"},
        "comparison": compare(test, blocks, "rmse", "min", oracle, "rmse"),
        "permutation_importance": {"metric": "mean RMSE increase", "values": importance},
    }
    images = kol_plots(y, preds, importance) if plots else {}
    report["plots"] = sorted(images)
    return _clean(report), images


# Plots


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _figure(size: tuple[float, float] = (5.5, 4.5)) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def token_plots(
    y: np.ndarray, probs: dict[str, np.ndarray], importance: dict[str, float]
) -> dict[str, bytes]:
    """ROC, precision–recall, calibration and importance plots as PNG bytes."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    images: dict[str, bytes] = {}
    if 0 < y.sum() < len(y):
        fig, ax = _figure()
        for name, p in probs.items():
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=f"{name} ({roc_auc(y, p):.3f})", lw=2 if name == "model" else 1)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
        ax.legend(fontsize=8)
        images["roc.png"] = _png(fig)

        fig, ax = _figure()
        for name, p in probs.items():
            precision, recall, _ = precision_recall_curve(y, p)
            ax.step(
                recall,
                precision,
                where="post",
                label=f"{name} ({average_precision(y, p):.3f})",
                lw=2 if name == "model" else 1,
            )
        ax.axhline(y.mean(), color="k", ls=":", lw=0.8)
        ax.set(xlabel="recall", ylabel="precision", title="Precision–recall (test)")
        ax.legend(fontsize=8)
        images["pr.png"] = _png(fig)

    fig, ax = _figure()
    for name, p in probs.items():
        # Equal-count bins: with rare positives, equal-width bins leave the high end empty.
        bins = np.unique(np.quantile(p, np.linspace(0, 1, 11)))
        which = np.clip(np.searchsorted(bins, p, side="right") - 1, 0, max(len(bins) - 2, 0))
        mean_p = [p[which == b].mean() for b in range(len(bins) - 1) if (which == b).any()]
        frac = [y[which == b].mean() for b in range(len(bins) - 1) if (which == b).any()]
        ax.plot(mean_p, frac, "o-", ms=3, label=name, lw=2 if name == "model" else 1)
    top = max(float(np.max(p)) for p in probs.values()) if len(y) else 1.0
    ax.plot([0, top], [0, top], "k:", lw=0.8)
    ax.set(xlabel="mean predicted P(3x)", ylabel="observed 3x rate", title="Calibration (test, deciles)")
    ax.legend(fontsize=8)
    images["calibration.png"] = _png(fig)
    if importance:
        images["importance.png"] = _importance_plot(importance, "PR-AUC drop when shuffled")
    return images


def kol_plots(y: np.ndarray, preds: dict[str, np.ndarray], importance: dict[str, float]) -> dict[str, bytes]:
    """Predicted against realised rates per target, and importance, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for i, (ax, label) in enumerate(zip(axes, ("7-day", "30-day"), strict=True)):
        for name, pred in preds.items():
            ax.scatter(pred[:, i], y[:, i], s=3, alpha=0.35 if name == "model" else 0.15, label=name)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="predicted 3x rate", ylabel="realised 3x rate", title=f"{label} (test)")
        ax.legend(fontsize=8, markerscale=3)
    images = {"pred_vs_actual.png": _png(fig)}
    if importance:
        images["importance.png"] = _importance_plot(importance, "RMSE increase when shuffled")
    return images


def _importance_plot(importance: dict[str, float], xlabel: str) -> bytes:
    names = list(importance)[:20][::-1]
    fig, ax = _figure((6, 0.3 * len(names) + 1.2))
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel=xlabel, title="Permutation importance (test)")
    return _png(fig)


# Writing


def report_uri(model: str, version: str, storage_uri: str | None = None) -> str:
    """``<storage>/reports/<model>/<version>``."""
    if storage_uri is None:
        storage_uri = get_settings().storage_uri
    return storage.join(storage_uri, "reports", model, version)


def write_report(
    report: dict[str, Any],
    images: dict[str, bytes],
    storage_uri: str | None = None,
    local_dir: Path | None = None,
) -> list[str]:
    """Write ``report.json`` and the PNGs to ``<storage>/reports/<model>/<version>/`` and, when
    ``local_dir`` is given, to ``<local_dir>/<model>/<version>/``. Returns the report.json locations."""
    body = json.dumps(report, indent=1, sort_keys=True).encode()
    root = report_uri(report["model"], report["version"], storage_uri)
    written = []
    for name, data in images.items():
        storage.write_bytes(storage.join(root, name), data)
    storage.write_bytes(storage.join(root, "report.json"), body)
    written.append(storage.join(root, "report.json"))
    if local_dir is not None:
        target = Path(local_dir) / report["model"] / report["version"]
        target.mkdir(parents=True, exist_ok=True)
        for name, data in images.items():
            (target / name).write_bytes(data)
        (target / "report.json").write_bytes(body)
        written.append(str(target / "report.json"))
    return written


def read_report(model: str, version: str, storage_uri: str | None = None) -> dict[str, Any]:
    """The stored ``report.json`` of a version."""
    return storage.read_json(storage.join(report_uri(model, version, storage_uri), "report.json"))
