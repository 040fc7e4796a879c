"""Synthetic feature datasets in the exact format of docs/features.md ("Dataset format"), with a planted signal.

Beside the real datasets the feature build makes, these exercise training, search,
evaluation and the registry end to end. The signal is planted through latent traits that only show
through noisy observable features, as on the chain twin, so that an oracle exists and is a ceiling
a model can approach but not reach:

- token: a KOL's latent skill and a token's latent quality set P(3x) (``oracle_p3x``); features are
  noisy views of them, with an interaction (quality matters more on a bonding-curve venue) that a
  linear model cannot express.
- KOL: each KOL's hit rate drifts slowly; past 7/30-day rates are binomial estimates from few
  positions (noisy), so "the past rate carries on" is a poor forecast and shrinkage plus the
  other behavioural features do better.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kolray.datasets import SPLITS, DatasetManifest, write_dataset

DAY = 86_400
SEED_TOKEN_FEATURES = [
    "kol_dh_score",
    "kol_rate_3x",
    "kol_win_rate",
    "kol_mean_hold_log",
    "log_amount_sol",
    "hour",
    "weekday",
]
EXTRA_TOKEN_FEATURES = [
    "venue_curve",
    "token_age_log",
    "log_mcap",
    "n_kols_before",
    "since_prev_kol_log",
    "size_vs_median",
    "recent_form",
    "since_last_trade_log",
    "hour_sin",
    "hour_cos",
]
TOKEN_FEATURES = SEED_TOKEN_FEATURES + EXTRA_TOKEN_FEATURES
KOL_FEATURES = [
    "rate_3x_past_7d",
    "rate_3x_past_30d",
    "n_past_7d",
    "n_past_30d",
    "win_rate_past_30d",
    "dh_score",
    "mean_hold_log",
    "log_volume_30d",
]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _split_by_time(
    frame: pd.DataFrame, time_column: str, start: int, end: int, embargo_s: int, fractions=(0.6, 0.2, 0.2)
) -> dict[str, pd.DataFrame]:
    """Cut [start, end) into train/val/test by time with an embargo gap after train and after val."""
    usable = end - start - 2 * embargo_s
    if usable <= 0:
        raise ValueError("time range too short for the embargo")
    t1 = start + int(usable * fractions[0])
    t2 = t1 + embargo_s + int(usable * fractions[1])
    t = frame[time_column]
    masks = {
        "train": t < t1,
        "val": (t >= t1 + embargo_s) & (t < t2),
        "test": t >= t2 + embargo_s,
    }
    return {s: frame[masks[s]].reset_index(drop=True) for s in SPLITS}


def token_frame(
    n_rows: int = 12_000,
    n_kols: int = 120,
    base_rate: float = 0.06,
    seed: int = 0,
    days: int = 120,
    start: int = 1_700_000_000,
) -> pd.DataFrame:
    """One row per KOL buy with the token dataset's columns (features float32, label int8)."""
    rng = np.random.default_rng(seed)
    skill = rng.normal(size=n_kols)
    kol = rng.integers(0, n_kols, n_rows)
    quality = rng.normal(size=n_rows)
    venue_curve = (rng.random(n_rows) < 0.5).astype(np.float64)
    # Latent → probability: skill and quality, with quality mattering more on a bonding curve.
    logit_raw = 1.1 * skill[kol] + 0.8 * quality + 0.9 * quality * venue_curve + 0.3 * venue_curve
    offset = np.log(base_rate / (1 - base_rate))
    # Shift so the mean probability is near base_rate.
    for _ in range(30):
        offset -= np.log(_sigmoid(logit_raw + offset).mean() / base_rate)
    oracle = _sigmoid(logit_raw + offset)
    label = (rng.random(n_rows) < oracle).astype(np.int8)

    entry_time = np.sort(rng.integers(start, start + days * DAY, n_rows))
    hour = (entry_time % DAY) // 3600
    n_obs = rng.integers(3, 40, n_rows)  # positions behind the KOL's record at entry
    true_rate = _sigmoid(skill[kol] - 2.0)
    amount = np.exp(rng.normal(0.0, 1.0, n_rows))
    frame = pd.DataFrame(
        {
            "wallet": [f"W{k:04d}" for k in kol],
            "mint": [f"M{i:06d}" for i in range(n_rows)],
            "entry_time": entry_time.astype(np.int64),
            "entry_signature": [f"S{i:08d}" for i in range(n_rows)],
            # Seed features: noisy views of skill (the record reveals it over time) + nuisance.
            "kol_dh_score": 0.6 * skill[kol] + rng.normal(0, 0.8, n_rows),
            "kol_rate_3x": rng.binomial(n_obs, true_rate) / n_obs,
            "kol_win_rate": np.clip(0.45 + 0.08 * skill[kol] + rng.normal(0, 0.1, n_rows), 0, 1),
            "kol_mean_hold_log": rng.normal(8.0, 1.0, n_rows),
            "log_amount_sol": np.log(amount),
            "hour": hour.astype(np.float64),
            "weekday": ((entry_time // DAY + 3) % 7).astype(np.float64),
            # Extra features: views of token quality, and nuisance.
            "venue_curve": venue_curve,
            "token_age_log": rng.normal(7.0, 1.5, n_rows) - 0.3 * quality,
            "log_mcap": 10.0 + 0.5 * quality + rng.normal(0, 0.8, n_rows),
            "n_kols_before": rng.poisson(np.exp(0.5 + 0.5 * quality)).astype(np.float64),
            "since_prev_kol_log": rng.normal(6.0, 1.0, n_rows) - 0.4 * quality,
            "size_vs_median": amount / np.median(amount),
            "recent_form": 0.3 * skill[kol] + rng.normal(0, 1.0, n_rows),
            "since_last_trade_log": rng.normal(9.0, 1.5, n_rows),
            "hour_sin": np.sin(2 * np.pi * hour / 24),
            "hour_cos": np.cos(2 * np.pi * hour / 24),
        }
    )
    # Missing values happen (a KOL's first trade has no record): keep a few to exercise imputation.
    first = rng.random(n_rows) < 0.03
    frame.loc[first, ["kol_rate_3x", "kol_win_rate"]] = np.nan
    for column in TOKEN_FEATURES:
        frame[column] = frame[column].astype(np.float32)
    frame["label_3x"] = label
    frame["multiple"] = np.where(label == 1, rng.uniform(3, 20, n_rows), rng.uniform(0, 2.99, n_rows))
    frame["oracle_p3x"] = oracle
    return frame


def write_token_dataset(
    storage_uri: str, seed: int = 0, version: str | None = None, **kwargs: Any
) -> DatasetManifest:
    days = int(kwargs.pop("days", 120))
    start = 1_700_000_000
    frame = token_frame(seed=seed, days=days, start=start, **kwargs)
    horizon = 7 * DAY
    splits = _split_by_time(frame, "entry_time", start, start + days * DAY, horizon)
    return write_dataset(
        "token",
        splits,
        feature_columns=TOKEN_FEATURES,
        label_columns=["label_3x"],
        id_columns=["wallet", "mint", "entry_time", "entry_signature"],
        eval_only_columns=["multiple", "oracle_p3x"],
        time_column="entry_time",
        horizon_s=horizon,
        embargo_s=horizon,
        feature_groups={"seed": SEED_TOKEN_FEATURES},
        source={"synthetic": True, "seed": seed},
        version=version,
        storage_uri=storage_uri,
    )


def kol_frame(
    n_kols: int = 150, n_days: int = 240, seed: int = 0, start: int = 1_700_000_000
) -> tuple[pd.DataFrame, int, int]:
    """One row per KOL per day; returns (frame, first usable time, end time)."""
    rng = np.random.default_rng(seed)
    # Latent hit rate logit: per-KOL level + slow AR(1) drift.
    level = rng.normal(-2.2, 0.8, n_kols)
    drift = np.zeros((n_kols, n_days))
    for d in range(1, n_days):
        drift[:, d] = 0.97 * drift[:, d - 1] + rng.normal(0, 0.12, n_kols)
    rate = _sigmoid(level[:, None] + drift)  # (K, D)
    activity = np.exp(rng.normal(0.0, 0.7, n_kols))  # positions per day
    counts = rng.poisson(activity[:, None] * np.ones((1, n_days)))
    hits = rng.binomial(counts, rate)
    wins = rng.binomial(counts, np.clip(rate + 0.3, 0, 1))

    def window(values: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Sum over days [d+lo, d+hi) for every d (zero outside the simulation)."""
        c = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(values, axis=1)], axis=1)
        d = np.arange(n_days)
        a = np.clip(d + lo, 0, n_days)
        b = np.clip(d + hi, 0, n_days)
        return c[:, b] - c[:, a]

    n7, n30 = window(counts, -7, 0), window(counts, -30, 0)
    h7, h30 = window(hits, -7, 0), window(hits, -30, 0)
    w30 = window(wins, -30, 0)
    nn7, nn30 = window(counts, 0, 7), window(counts, 0, 30)
    hn7, hn30 = window(hits, 0, 7), window(hits, 0, 30)
    rate_sum7, rate_sum30 = window(rate, 0, 7), window(rate, 0, 30)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame = pd.DataFrame(
            {
                "wallet": np.repeat([f"W{k:04d}" for k in range(n_kols)], n_days),
                "day": np.tile(start + np.arange(n_days) * DAY, n_kols).astype(np.int64),
                "rate_3x_past_7d": (h7 / n7).ravel(),
                "rate_3x_past_30d": (h30 / n30).ravel(),
                "n_past_7d": n7.ravel(),
                "n_past_30d": n30.ravel(),
                "win_rate_past_30d": (w30 / n30).ravel(),
                # A behavioural trait that reveals the current skill level through noise.
                "dh_score": (level[:, None] + drift + rng.normal(0, 0.5, (n_kols, n_days))).ravel(),
                "mean_hold_log": rng.normal(8.0, 1.0, n_kols * n_days),
                "log_volume_30d": np.log1p(n30 * np.exp(rng.normal(0, 0.5, (n_kols, n_days)))).ravel(),
                "rate_3x_next_7d": (hn7 / nn7).ravel(),
                "rate_3x_next_30d": (hn30 / nn30).ravel(),
                "n_next_7d": nn7.ravel().astype(np.int64),
                "n_next_30d": nn30.ravel().astype(np.int64),
                "oracle_rate_7d": (rate_sum7 / 7).ravel(),
                "oracle_rate_30d": (rate_sum30 / 30).ravel(),
            }
        )
    day_index = np.tile(np.arange(n_days), n_kols)
    # Only rows whose 30-day target window has fully elapsed and which have history; rows without
    # positions behind a target are dropped (as the feature pipeline does).
    keep = (
        (day_index >= 30) & (day_index <= n_days - 30) & (frame["n_next_7d"] > 0) & (frame["n_next_30d"] > 0)
    )
    frame = frame[keep].reset_index(drop=True)
    for column in KOL_FEATURES:
        frame[column] = frame[column].astype(np.float32)
    return frame, start + 30 * DAY, start + (n_days - 29) * DAY


def write_kol_dataset(
    storage_uri: str, seed: int = 0, version: str | None = None, **kwargs: Any
) -> DatasetManifest:
    frame, lo, hi = kol_frame(seed=seed, **kwargs)
    horizon = 30 * DAY
    splits = _split_by_time(frame, "day", lo, hi, horizon, fractions=(0.6, 0.2, 0.2))
    return write_dataset(
        "kol",
        splits,
        feature_columns=KOL_FEATURES,
        label_columns=["rate_3x_next_7d", "rate_3x_next_30d"],
        id_columns=["wallet", "day"],
        eval_only_columns=["n_next_7d", "n_next_30d", "oracle_rate_7d", "oracle_rate_30d"],
        time_column="day",
        horizon_s=horizon,
        embargo_s=horizon,
        persistence_features={"rate_3x_next_7d": "rate_3x_past_7d", "rate_3x_next_30d": "rate_3x_past_30d"},
        source={"synthetic": True, "seed": seed},
        version=version,
        storage_uri=storage_uri,
    )
