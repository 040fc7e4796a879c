"""What the feature datasets hold: column lists, Arrow schemas and the per-row arithmetic.

Everything that turns a row's *context* (a KOL's statistics as of the entry, the token's consensus,
the buy itself) into model inputs is here, once: the Ray Data build, the in-memory build and the
online path Serve calls all end in :func:`token_feature_values` / :func:`kol_feature_values`, so
they cannot compute a feature two ways. The context itself comes from :mod:`kolray.features.context`.

Conventions: features are float32; a value that does not exist at that time (a KOL's first buy
has no win rate) is NaN, never a made-up 0 (models impute with training statistics). Times are unix
seconds; durations enter as ``log1p(seconds)``, heavy-tailed amounts as logs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

DAY = 86_400
HOUR = 3_600
DEFAULT_HORIZON_S = 7 * DAY  # docs/features.md: label_3x within H = 7 days of entry
DEFAULT_EMBARGO_S = DAY
KOL_TARGET_WINDOWS: dict[str, int] = {"7d": 7 * DAY, "30d": 30 * DAY}
CONSENSUS_WINDOWS: dict[str, int] = {"1h": HOUR, "24h": DAY}

# Venues (names as kolray.chain.programs.VENUES gives them). A bonding curve is a launchpad's
# pre-migration market: thin, steep and where most 3x runs start; an aggregator name means the
# router was the only venue the extractor could name (no pool event), so the pool is unknown.
CURVE_VENUES = frozenset({"pumpfun", "raydium_launchlab", "meteora_dbc", "moonshot", "boop", "heaven"})
AGGREGATOR_VENUES = frozenset({"jupiter_v6", "jupiter_v4", "jupiter_dca", "jupiter_limit", "okx", "photon"})

# Token dataset (one row per position entry)

SEED_TOKEN_FEATURES: list[str] = [
    "kol_dh_score",  # Diamond Hand score, all positions closed before the entry
    "kol_rate_3x",  # share of those with multiple >= 3
    "kol_win_rate",  # share with PnL > 0 after fees
    "kol_mean_hold_log",  # log1p(mean hold in seconds)
    "log_amount_sol",  # log(SOL spent by the opening buy)
    "hour",  # UTC hour of the entry, 0..23
    "weekday",  # UTC weekday of the entry, Monday = 0
]
EXTRA_TOKEN_FEATURES: list[str] = [
    "hour_sin",  # time of day on the unit circle (23:59 is next to 00:00)
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
    "venue_curve",  # 1: bought on a bonding curve (pump.fun and other launchpads)
    "venue_aggregator",  # 1: routed through an aggregator without a named pool; both 0: an AMM
    "token_age_log",  # log1p(seconds since the first swap of the token kolray saw)
    "log_mcap",  # log(market cap in SOL at the entry), NaN when the supply is unknown
    "n_kols_before",  # other tracked KOLs that had bought the token before
    "n_kols_1h",  # ... of which started buying it in the last hour
    "n_kols_24h",  # ... in the last 24 hours
    "since_prev_kol_log",  # log1p(seconds since another KOL's latest entry in the token)
    "reentry",  # 1: this KOL held the token before
    "log_size_vs_median",  # log(amount / the KOL's median opening buy before)
    "kol_recent_rate_3x",  # last 10 closed positions: 3x share
    "kol_recent_win_rate",
    "kol_recent_mean_multiple_log",  # log1p(mean multiple of those)
    "since_last_trade_log",  # log1p(seconds since the KOL's last entry or close)
    "kol_scored_log",  # log1p(closed positions with a SOL result)
    "kol_consistency",  # Wilson lower bound of the win rate
    "kol_median_multiple_log",  # log1p(median multiple)
    "kol_roi_asinh",  # asinh(total PnL / total cost)
    "kol_rate_3x_7d",  # the same statistics over positions closed in the last 7 / 30 days
    "kol_win_rate_7d",
    "kol_rate_3x_30d",
    "kol_win_rate_30d",
    "kol_trades_7d_log",  # log1p(positions opened in the last 7 days)
    "kol_open_positions_log",  # log1p(positions open at the entry)
    "kol_copy_roi_asinh",  # asinh(what a follower 5 s behind made / cost), all closed before
    "kol_farming",  # 1: the KOL wins while its followers lose (NaN: under 5 copied positions)
]
TOKEN_FEATURES: list[str] = SEED_TOKEN_FEATURES + EXTRA_TOKEN_FEATURES
TOKEN_ID_COLUMNS: list[str] = ["wallet", "mint", "entry_time", "entry_signature"]
# label_3x: the KOL realised 3x; peak_3x: the token traded at 3x the entry price (kolray.features.peaks).
TOKEN_LABEL_COLUMNS: list[str] = ["label_3x", "peak_3x"]
# The twin's truth (evaluation only): its P(label_3x), its P(peak_3x) and its own peak_3x.
TOKEN_EVAL_COLUMNS: list[str] = ["multiple", "oracle_p3x", "oracle_p_peak3x", "twin_peak_3x"]

TOKEN_SCHEMA = pa.schema(
    [
        pa.field("wallet", pa.string()),
        pa.field("mint", pa.string()),
        pa.field("entry_time", pa.int64()),
        pa.field("entry_signature", pa.string()),
        *(pa.field(name, pa.float32()) for name in TOKEN_FEATURES),
        pa.field("label_3x", pa.int8()),
        pa.field("peak_3x", pa.int8()),
        pa.field("multiple", pa.float64()),
        pa.field("oracle_p3x", pa.float64()),
        pa.field("oracle_p_peak3x", pa.float64()),
        pa.field("twin_peak_3x", pa.float64()),
    ]
)

# KOL dataset (one row per KOL per UTC day)

SEED_KOL_FEATURES: list[str] = [
    "dh_score",  # the seed's seven at the KOL level: all positions closed before the day
    "rate_3x",
    "win_rate",
    "mean_hold_log",
    "log_amount_30d",  # mean log SOL of the opening buys in the last 30 days
    "hour_sin_30d",  # the KOL's usual time of day (circular mean of the last 30 days' entries)
    "hour_cos_30d",
]
EXTRA_KOL_FEATURES: list[str] = [
    "weekday_sin",  # the day's weekday
    "weekday_cos",
    "rate_3x_past_7d",  # 3x share of positions closed in the last 7 days (the leaderboard's 7d rate)
    "rate_3x_past_30d",
    "label_rate_past_7d",  # the target's own definition one horizon back: label_3x share of
    "label_rate_past_30d",  # positions opened in [day - W - H, day - H) (all resolved by the day)
    "win_rate_past_7d",
    "win_rate_past_30d",
    "n_past_7d_log",  # log1p(closed positions with a SOL result in the window)
    "n_past_30d_log",
    "trades_7d_log",  # log1p(positions opened in the window)
    "trades_30d_log",
    "dh_score_30d",
    "consistency",
    "consistency_30d",
    "roi_30d_asinh",
    "median_multiple_30d_log",
    "recent_rate_3x",
    "recent_win_rate",
    "recent_mean_multiple_log",
    "scored_log",
    "since_last_trade_log",
    "active_days_log",  # log1p(days since the KOL's first entry)
    "open_positions_log",
    "log_volume_30d",  # log1p(SOL spent on positions closed in the last 30 days)
    "copy_roi_asinh",  # asinh(a follower's ROI copying the KOL, all closed before the day)
    "farming",  # 1: the KOL wins while its followers lose (NaN: under 5 copied positions)
]
KOL_FEATURES: list[str] = SEED_KOL_FEATURES + EXTRA_KOL_FEATURES
KOL_ID_COLUMNS: list[str] = ["wallet", "day"]
KOL_TARGETS: list[str] = ["rate_3x_next_7d", "rate_3x_next_30d"]
KOL_EVAL_COLUMNS: list[str] = ["n_next_7d", "n_next_30d", "oracle_rate_7d", "oracle_rate_30d"]
KOL_PERSISTENCE: dict[str, str] = {
    "rate_3x_next_7d": "rate_3x_past_7d",
    "rate_3x_next_30d": "rate_3x_past_30d",
}

KOL_SCHEMA = pa.schema(
    [
        pa.field("wallet", pa.string()),
        pa.field("day", pa.int64()),
        *(pa.field(name, pa.float32()) for name in KOL_FEATURES),
        pa.field("rate_3x_next_7d", pa.float64()),
        pa.field("rate_3x_next_30d", pa.float64()),
        pa.field("n_next_7d", pa.int64()),
        pa.field("n_next_30d", pa.int64()),
        pa.field("oracle_rate_7d", pa.float64()),
        pa.field("oracle_rate_30d", pa.float64()),
    ]
)


# Small helpers (NaN in, NaN out)


def _f(values: object) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def log1p_pos(values: object) -> np.ndarray:
    """log1p of a non-negative quantity; NaN stays NaN (negative inputs are clock skew: 0)."""
    x = _f(values)
    with np.errstate(invalid="ignore"):
        return np.log1p(np.where(np.isnan(x), np.nan, np.maximum(x, 0.0)))


def log_pos(values: object) -> np.ndarray:
    """log of a positive quantity; NaN for 0, negatives and NaN."""
    x = _f(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)


def since_log(now: object, then: object) -> np.ndarray:
    """log1p(seconds from ``then`` to ``now``); NaN when ``then`` is NaN (it never happened)."""
    return log1p_pos(_f(now) - _f(then))


def hour_of(times: object) -> np.ndarray:
    return (np.asarray(times, dtype=np.int64) % DAY) // HOUR


def weekday_of(times: object) -> np.ndarray:
    """UTC weekday, Monday = 0 (1970-01-01 was a Thursday)."""
    return (np.asarray(times, dtype=np.int64) // DAY + 3) % 7


def _as_float32(columns: Mapping[str, np.ndarray], names: list[str], n: int) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        value = np.asarray(columns[name], dtype=np.float64)
        if value.shape != (n,):
            raise ValueError(f"feature {name!r} has shape {value.shape}, expected ({n},)")
        out[name] = value.astype(np.float32)
    return out


def _venue_flags(dex: object) -> tuple[np.ndarray, np.ndarray]:
    """(curve, aggregator) as floats; NaN for an unknown venue (None), e.g. an online request for
    a token nobody has traded yet."""
    names = np.asarray(dex, dtype=object)
    curve = np.array([np.nan if d is None else float(d in CURVE_VENUES) for d in names], dtype=np.float64)
    aggregator = np.array(
        [np.nan if d is None else float(d in AGGREGATOR_VENUES) for d in names], dtype=np.float64
    )
    return curve, aggregator


# The per-row arithmetic


def token_feature_values(ctx: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Model inputs of token rows from their context (see :func:`kolray.features.context.token_context`
    for the keys): ``{feature: float32 array}`` in :data:`TOKEN_FEATURES` order."""
    t = np.asarray(ctx["entry_time"], dtype=np.int64)
    n = len(t)
    all_, d7, d30 = ctx["stats_all"], ctx["stats_7d"], ctx["stats_30d"]
    seconds_of_day = (t % DAY).astype(np.float64)
    weekday = weekday_of(t).astype(np.float64)
    curve, aggregator = _venue_flags(ctx["dex"])
    open_positions = _f(all_["trades"]) - _f(all_["closed"])
    values = {
        "kol_dh_score": all_["dh_score"],
        "kol_rate_3x": all_["rate_3x"],
        "kol_win_rate": all_["win_rate"],
        "kol_mean_hold_log": log1p_pos(all_["mean_hold_s"]),
        "log_amount_sol": log_pos(ctx["amount_sol"]),
        "hour": hour_of(t),
        "weekday": weekday,
        "hour_sin": np.sin(2 * math.pi * seconds_of_day / DAY),
        "hour_cos": np.cos(2 * math.pi * seconds_of_day / DAY),
        "weekday_sin": np.sin(2 * math.pi * weekday / 7),
        "weekday_cos": np.cos(2 * math.pi * weekday / 7),
        "venue_curve": curve,
        "venue_aggregator": aggregator,
        "token_age_log": since_log(t, ctx["first_seen"]),
        "log_mcap": log_pos(ctx["mcap_sol"]),
        "n_kols_before": ctx["n_kols_before"],
        "n_kols_1h": ctx["n_kols_1h"],
        "n_kols_24h": ctx["n_kols_24h"],
        "since_prev_kol_log": since_log(t, ctx["prev_kol_entry"]),
        "reentry": ctx["reentry"],
        "log_size_vs_median": log_pos(_f(ctx["amount_sol"]) / _f(ctx["past_median_amount"])),
        "kol_recent_rate_3x": all_["recent_rate_3x"],
        "kol_recent_win_rate": all_["recent_win_rate"],
        "kol_recent_mean_multiple_log": log1p_pos(all_["recent_mean_multiple"]),
        "since_last_trade_log": since_log(t, ctx["last_event"]),
        "kol_scored_log": log1p_pos(all_["scored"]),
        "kol_consistency": all_["consistency"],
        "kol_median_multiple_log": log1p_pos(all_["median_multiple"]),
        "kol_roi_asinh": np.arcsinh(_f(all_["roi"])),
        "kol_rate_3x_7d": d7["rate_3x"],
        "kol_win_rate_7d": d7["win_rate"],
        "kol_rate_3x_30d": d30["rate_3x"],
        "kol_win_rate_30d": d30["win_rate"],
        "kol_trades_7d_log": log1p_pos(d7["trades"]),
        "kol_open_positions_log": log1p_pos(open_positions),
        "kol_copy_roi_asinh": np.arcsinh(_f(all_["copy_roi"])),
        "kol_farming": all_["farming"],
    }
    return _as_float32(values, TOKEN_FEATURES, n)


def kol_feature_values(ctx: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Model inputs of KOL rows (a wallet as of a time) from their context (see
    :func:`kolray.features.context.kol_context`): ``{feature: float32 array}`` in :data:`KOL_FEATURES` order."""
    t = np.asarray(ctx["as_of"], dtype=np.int64)
    n = len(t)
    all_, d7, d30 = ctx["stats_all"], ctx["stats_7d"], ctx["stats_30d"]
    weekday = weekday_of(t).astype(np.float64)
    open_positions = _f(all_["trades"]) - _f(all_["closed"])
    values = {
        "dh_score": all_["dh_score"],
        "rate_3x": all_["rate_3x"],
        "win_rate": all_["win_rate"],
        "mean_hold_log": log1p_pos(all_["mean_hold_s"]),
        "log_amount_30d": ctx["mean_log_amount_30d"],
        "hour_sin_30d": ctx["hour_sin_30d"],
        "hour_cos_30d": ctx["hour_cos_30d"],
        "weekday_sin": np.sin(2 * math.pi * weekday / 7),
        "weekday_cos": np.cos(2 * math.pi * weekday / 7),
        "rate_3x_past_7d": d7["rate_3x"],
        "rate_3x_past_30d": d30["rate_3x"],
        "label_rate_past_7d": ctx["label_rate_past_7d"],
        "label_rate_past_30d": ctx["label_rate_past_30d"],
        "win_rate_past_7d": d7["win_rate"],
        "win_rate_past_30d": d30["win_rate"],
        "n_past_7d_log": log1p_pos(d7["scored"]),
        "n_past_30d_log": log1p_pos(d30["scored"]),
        "trades_7d_log": log1p_pos(d7["trades"]),
        "trades_30d_log": log1p_pos(d30["trades"]),
        "dh_score_30d": d30["dh_score"],
        "consistency": all_["consistency"],
        "consistency_30d": d30["consistency"],
        "roi_30d_asinh": np.arcsinh(_f(d30["roi"])),
        "median_multiple_30d_log": log1p_pos(d30["median_multiple"]),
        "recent_rate_3x": all_["recent_rate_3x"],
        "recent_win_rate": all_["recent_win_rate"],
        "recent_mean_multiple_log": log1p_pos(all_["recent_mean_multiple"]),
        "scored_log": log1p_pos(all_["scored"]),
        "since_last_trade_log": since_log(t, ctx["last_event"]),
        "active_days_log": log1p_pos((_f(t) - _f(ctx["first_entry"])) / DAY),
        "open_positions_log": log1p_pos(open_positions),
        "log_volume_30d": log1p_pos(d30["total_cost_sol"]),
        "copy_roi_asinh": np.arcsinh(_f(all_["copy_roi"])),
        "farming": all_["farming"],
    }
    return _as_float32(values, KOL_FEATURES, n)
