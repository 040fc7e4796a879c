"""Benchmark: what would close the ``peak_3x`` gap to the oracle? The same learner, more information.

    .venv/bin/python bench/peak_ceiling.py [--demo-dir DIR]

``DIR`` is a ``kolray demo --dir DIR`` directory (its ``state/`` database and storage and its
``world-*`` twin world). Without it, ``kolray pipeline`` first runs the demo's stages on the
default world in a scratch directory (about 6 minutes on 2 cores). On the latest token dataset,
one LightGBM recipe (fixed parameters, early stopping on validation, scored once on test) is
trained on:

1. the dataset's features (what kolray serves with);
2. those plus a point-in-time KOL *peak rate*: the share of the KOL's earlier entries, resolved
   (entry + 7 days) before this one, whose token traded at ≥ 3x (smoothed towards the base rate),
   the KOL's token-picking skill as a follower sees it;
3. those plus the token's own market before the entry (:func:`market_before`: log returns over the
   last 1 min, 10 min, 1 h and 6 h, realised volatility per 5 s over the last 5 min and 1 h, the
   level, its distance from the first price and from the running high, time since that high, age,
   price points in the last hour), read strictly before the entry time from kolray's own prices
   (the mint's :class:`~kolray.analyzer.outcomes.PricePaths`: stored swaps and the market tape);
4. the same features from the twin's *true* tape (``tapes.parquet``), what a complete recorded tape
   (a history read before the entry) would give; and, beside it, those features alone;
5. the dataset's features plus the twin's volatility ``sigma`` (hidden: the most a perfect reading of
   the path's volatility gives), then plus ``sigma`` and the death rate (together they fix ``alpha``);
6. those plus the twin's latent token quality ``q`` (what a skilled KOL perceives; no feature can
   hold it exactly);
7. those plus the token's tail exponent ``alpha`` (which ``q`` and an unperceived part set).

Beside them, the twin's own ``oracle_p_peak3x`` on the same test rows. ROC-AUC and PR-AUC against
the chain label ``peak_3x`` (what the served model is scored on), and under ``twin_truth`` against
the twin's true peak (the chain label misses peaks no tracked wallet traded at). Rows 4 to 7 use the
twin's hidden truth and exist only to locate the gap; nothing here is tuned on test. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HORIZON_S = 7 * 86_400
PRIOR_ROWS = 5.0  # the peak rate's smoothing: as if 5 earlier entries at the base rate


def kol_peak_rate(rows: pd.DataFrame, base_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the wallet's smoothed share of ``peak_3x`` among its entries resolved before this
    entry, and how many there were (point in time: an entry counts from ``entry_time + H`` on)."""
    rate = np.full(len(rows), np.nan)
    count = np.zeros(len(rows))
    entries = rows["entry_time"].to_numpy(np.int64)
    labels = rows["peak_3x"].to_numpy(np.float64)
    for _wallet, at in rows.groupby("wallet", sort=False).indices.items():
        entry, label = entries[at], labels[at]
        order = np.argsort(entry + HORIZON_S, kind="stable")
        resolved = (entry + HORIZON_S)[order]
        positives = np.r_[0.0, np.cumsum(label[order])]
        known = np.searchsorted(resolved, entry, side="right")
        rate[at] = (positives[known] + base_rate * PRIOR_ROWS) / (known + PRIOR_ROWS)
        count[at] = known
    return rate, count


# The token's own market before the entry (rows 2 and 3): a log-price step function per mint,
# read strictly before the entry time (a change point at or after it never counts).
MARKET_RETURN_WINDOWS = {"1m": 60, "10m": 600, "1h": 3_600, "6h": 6 * 3_600}
MARKET_VOL_GRIDS = {"5m": (5, 60), "1h": (5, 720)}  # name: (grid step in seconds, steps)
MARKET_COLUMNS = [
    *(f"mkt_ret_{name}" for name in MARKET_RETURN_WINDOWS),
    *(f"mkt_vol_{name}" for name in MARKET_VOL_GRIDS),
    "mkt_level",
    "mkt_level_vs_first",
    "mkt_peak_vs_first",
    "mkt_drawdown",
    "mkt_since_peak_log",
    "mkt_age_log",
    "mkt_points_1h_log",
]


def _levels_before(
    time: np.ndarray, level: np.ndarray, drift: np.ndarray, at: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The step function's level just before each time in ``at`` (change points strictly earlier)
    and the index of the change point used (-1: none, the level is NaN)."""
    i = np.searchsorted(time, at, side="left") - 1
    j = np.maximum(i, 0)
    value = level[j] + drift[j] * (at - time[j])
    return np.where(i >= 0, value, np.nan), i


def market_before(
    time: np.ndarray, level: np.ndarray, drift: np.ndarray, entries: np.ndarray
) -> dict[str, np.ndarray]:
    """Pre-entry market features of one mint's entries at ``entries`` (unix seconds) from its
    log-price change points ``(time, level, drift)`` (time-sorted): NaN where no point precedes."""
    t = np.asarray(entries, dtype=np.float64)
    now, k = _levels_before(time, level, drift, t)
    has = k >= 0
    kk = np.maximum(k, 0)
    out: dict[str, np.ndarray] = {}
    for name, window in MARKET_RETURN_WINDOWS.items():
        then, _ = _levels_before(time, level, drift, t - window)
        out[f"mkt_ret_{name}"] = now - np.where(np.isnan(then), level[0], then)  # younger: since the first
    for name, (step, steps) in MARKET_VOL_GRIDS.items():
        grid, used = _levels_before(time, level, drift, t[:, None] - step * np.arange(steps, -1, -1)[None, :])
        # From the second point on: a launch block's spike and dump (the twin's snipers) is no volatility.
        moves = np.diff(np.where(used >= 1, grid, np.nan), axis=1)
        count = np.isfinite(moves).sum(axis=1)
        square = np.nansum(moves * moves, axis=1)
        out[f"mkt_vol_{name}"] = np.where(count > 0, np.sqrt(square / np.maximum(count, 1)), np.nan)
    high = np.maximum.accumulate(level)
    new_high = np.r_[True, level[1:] > high[:-1]]
    high_at = np.maximum.accumulate(np.where(new_high, np.arange(len(level)), 0))
    out["mkt_level"] = now
    out["mkt_level_vs_first"] = now - level[0]
    out["mkt_peak_vs_first"] = high[kk] - level[0]
    out["mkt_drawdown"] = now - high[kk]
    out["mkt_since_peak_log"] = np.log1p(np.maximum(t - time[high_at[kk]], 0.0))
    out["mkt_age_log"] = np.log1p(np.maximum(t - time[0], 0.0))
    recent = np.searchsorted(time, t - 3_600, side="left")
    out["mkt_points_1h_log"] = np.log1p(np.maximum(k + 1 - recent, 0))
    return {name: np.where(has, value, np.nan) for name, value in out.items()}


def market_columns(
    rows: pd.DataFrame, paths: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> pd.DataFrame:
    """:func:`market_before` for every row (``paths``: mint → time, level, drift)."""
    out = np.full((len(rows), len(MARKET_COLUMNS)), np.nan)
    entries = rows["entry_time"].to_numpy(np.float64)
    for mint, at in rows.groupby("mint", sort=False).indices.items():
        if mint not in paths:
            continue
        time, level, drift = paths[mint]
        for chunk in np.array_split(at, max(len(at) // 2_000, 1)):
            values = market_before(time, level, drift, entries[chunk])
            out[chunk] = np.column_stack([values[name] for name in MARKET_COLUMNS])
    return pd.DataFrame(out, columns=MARKET_COLUMNS, index=rows.index)


def true_tape_paths(world_dir: Path, mints: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The twin's true tape per mint (a complete recorded tape's stand-in)."""
    from kolray.sim.tapes import Tapes

    tapes = Tapes.read(world_dir)
    return {
        mint: (tapes.time[b:e], tapes.level[b:e], tapes.drift[b:e])
        for mint, (b, e) in tapes.ranges.items()
        if mint in mints
    }


def kolray_price_paths(
    database_url: str, mints: set[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """What kolray has: the mint's :class:`~kolray.analyzer.outcomes.PricePaths` (stored swaps of
    any tracked wallet and the market stage's tape) as log prices."""
    from kolray.features.peaks import read_all_prices
    from kolray.features.source import read_snapshot

    paths = read_all_prices(database_url, read_snapshot(database_url).swap_watermark).paths
    out = {}
    for mint in mints:
        times, prices = paths.path(mint)
        if len(times):
            out[mint] = (times.astype(np.float64), np.log(prices), np.zeros(len(times)))
    return out


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC-AUC and PR-AUC as kolray's reports compute them (:mod:`kolray.learn.metrics`)."""
    from kolray.learn.metrics import average_precision, roc_auc

    return {"roc_auc": round(roc_auc(y, p), 3), "pr_auc": round(average_precision(y, p), 3)}


def fit_and_score(splits: dict[str, pd.DataFrame], columns: list[str], seed: int) -> dict[str, Any]:
    import lightgbm as lgb

    model = lgb.LGBMClassifier(
        n_estimators=2000,
        learning_rate=0.03,
        num_leaves=15,
        min_child_samples=50,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=seed,
        verbose=-1,
    )
    model.fit(
        splits["train"][columns],
        splits["train"]["peak_3x"],
        eval_X=splits["val"][columns],
        eval_y=splits["val"]["peak_3x"],
        callbacks=[lgb.early_stopping(100, verbose=False)],
    )
    p = np.asarray(model.predict_proba(splits["test"][columns]))[:, 1]
    return against_both_labels(splits["test"], p)


def against_both_labels(test: pd.DataFrame, p: np.ndarray) -> dict[str, Any]:
    """Scores against the chain label ``peak_3x`` and, where the twin knows it, its true peak."""
    known = test["twin_peak_3x"].notna().to_numpy()
    return {
        **scores(test["peak_3x"].to_numpy(int), p),
        "twin_truth": scores(test["twin_peak_3x"].to_numpy(np.float64)[known].astype(int), p[known]),
    }


def run_pipeline_into(root: Path) -> None:
    """``kolray pipeline`` (the demo's stages, default world) with its state in ``root/state`` and
    its world in ``root/world-default``: the layout of a ``kolray demo --dir``."""
    state = root / "state"
    state.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "KOLRAY_DATA_DIR": str(state),
        "KOLRAY_DATABASE_URL": f"sqlite:///{state / 'kolray.db'}",
        "KOLRAY_STORAGE_URI": str(state / "store"),
    }
    world = str(root / "world-default")
    subprocess.run(
        [sys.executable, "-m", "kolray", "pipeline", "--world-dir", world, "--no-backtest"],
        env=env,
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--demo-dir", type=Path, help="a `kolray demo --dir` directory (default: run the pipeline first)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.demo_dir is not None:
        measure(parser, args.demo_dir, args.seed)
        return
    with tempfile.TemporaryDirectory(prefix="kolray-peak-ceiling-") as scratch:
        run_pipeline_into(Path(scratch))
        measure(parser, Path(scratch), args.seed)


def measure(parser: argparse.ArgumentParser, demo_dir: Path, seed: int) -> None:
    """The four fits and the oracle on ``demo_dir``'s latest token dataset; prints the JSON line."""
    from kolray.datasets import load_dataset
    from kolray.sim.world import load_world

    worlds = sorted(demo_dir.glob("world-*"))
    store = demo_dir / "state" / "store"
    if not worlds or not store.is_dir():
        parser.error(f"{demo_dir} holds no demo run (world-* and state/store): run `kolray demo --dir` first")
    ds = load_dataset("token", None, str(store))
    columns = list(ds.feature_columns)
    frames = []
    for split in ("train", "val", "test"):
        frame = getattr(ds, split).copy()
        frame["split"] = split
        frames.append(frame)
    rows = (
        pd.concat(frames, ignore_index=True).sort_values("entry_time", kind="stable").reset_index(drop=True)
    )
    base_rate = float(rows.loc[rows["split"] == "train", "peak_3x"].mean())
    rows["kol_peak_rate"], count = kol_peak_rate(rows, base_rate)
    rows["kol_peak_count_log"] = np.log1p(count)
    tokens = load_world(worlds[-1]).tokens().set_index("mint")
    for column in ("quality", "tail_alpha", "sigma_per_sqrt_h", "death_rate_per_h"):
        rows[column] = tokens[column].reindex(rows["mint"]).to_numpy()
    mints = set(rows["mint"].astype(str))
    true_market = market_columns(rows, true_tape_paths(worlds[-1], mints))
    database_url = f"sqlite:///{demo_dir / 'state' / 'kolray.db'}"
    seen_market = market_columns(rows, kolray_price_paths(database_url, mints))
    rows = rows.join(true_market.add_prefix("true_")).join(seen_market.add_prefix("seen_"))
    splits = {s: rows[rows["split"] == s] for s in ("train", "val", "test")}

    out: dict[str, Any] = {
        "dataset": ds.version,
        "world": worlds[-1].name,
        "test_rows": len(splits["test"]),
        "test_positives": int(splits["test"]["peak_3x"].sum()),
    }
    test = splits["test"]
    out["test_rows_with_market_before"] = {
        source: int(test[f"{source}_mkt_level"].notna().sum()) for source in ("seen", "true")
    }
    seen = [f"seen_{name}" for name in MARKET_COLUMNS]
    true = [f"true_{name}" for name in MARKET_COLUMNS]
    for name, used in (
        ("features", columns),
        ("features + KOL peak rate", [*columns, "kol_peak_rate", "kol_peak_count_log"]),
        ("features + market before entry, kolray's prices", [*columns, *seen]),
        ("features + market before entry, true tape", [*columns, *true]),
        ("market before entry alone, true tape", true),
        ("features + volatility sigma", [*columns, "sigma_per_sqrt_h"]),
        ("features + sigma + death rate", [*columns, "sigma_per_sqrt_h", "death_rate_per_h"]),
        ("features + latent quality q", [*columns, "quality"]),
        ("features + tail alpha", [*columns, "tail_alpha"]),
    ):
        out[name] = fit_and_score(splits, used, seed)
        print(
            f"{name:<50} ROC-AUC {out[name]['roc_auc']:.3f}  PR-AUC {out[name]['pr_auc']:.3f}  "
            f"twin's true peaks {out[name]['twin_truth']['roc_auc']:.3f}",
            flush=True,
        )
    out["oracle"] = against_both_labels(test, test["oracle_p_peak3x"].to_numpy(np.float64))
    print(
        f"{'oracle':<50} ROC-AUC {out['oracle']['roc_auc']:.3f}  PR-AUC {out['oracle']['pr_auc']:.3f}  "
        f"twin's true peaks {out['oracle']['twin_truth']['roc_auc']:.3f}"
    )
    out["gap_closed_by_peak_rate"] = round(
        out["features + KOL peak rate"]["roc_auc"] - out["features"]["roc_auc"], 3
    )
    out["gap_closed_by_quality"] = round(
        out["features + latent quality q"]["roc_auc"] - out["features"]["roc_auc"], 3
    )
    for key, name in (
        ("gap_closed_by_market_seen", "features + market before entry, kolray's prices"),
        ("gap_closed_by_market_true", "features + market before entry, true tape"),
    ):
        out[key] = round(out[name]["roc_auc"] - out["features"]["roc_auc"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
