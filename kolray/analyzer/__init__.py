"""Analyzer: swaps → positions (FIFO lots) → point-in-time KOL statistics.

- :mod:`kolray.analyzer.positions`: :func:`build_positions` and the shared position definition.
- :mod:`kolray.analyzer.stats`: :func:`kol_stats` and :class:`KolStatsIndex` (many as-of times).
- :mod:`kolray.analyzer.outcomes`: what the market did around a position (peak, drawdown, missed
  gain, a follower's copy) from the mint's price path.
- :mod:`kolray.analyzer.stage`: :func:`analyze`, the incremental database stage.
"""

from kolray.analyzer.positions import (
    DUST_FRACTION,
    FLAG_NON_SOL_LEG,
    FLAG_UNTRACKED_SELL,
    Ledger,
    Mark,
    Position,
    UntrackedSell,
    build_ledger,
    build_positions,
    chain_key,
    last_prices,
    swap_price_sol,
)
from kolray.analyzer.stage import (
    ANALYZER_VERSION,
    AnalyzeBusy,
    AnalyzeSummary,
    analyze,
    analyzer_lock,
    iter_wallet_positions,
    parse_as_of,
)
from kolray.analyzer.stats import (
    DH_HOLD_SCALE_S,
    FARMING_MIN_COPIES,
    FARMING_RATE,
    RECENT_N,
    STAT_FIELDS,
    WINDOWS,
    KolStats,
    KolStatsIndex,
    Window,
    dh_term,
    kol_stats,
    kol_stats_windows,
    wilson_lower_bound,
)

__all__ = [
    "ANALYZER_VERSION",
    "DH_HOLD_SCALE_S",
    "DUST_FRACTION",
    "FARMING_MIN_COPIES",
    "FARMING_RATE",
    "FLAG_NON_SOL_LEG",
    "FLAG_UNTRACKED_SELL",
    "RECENT_N",
    "STAT_FIELDS",
    "WINDOWS",
    "AnalyzeBusy",
    "AnalyzeSummary",
    "KolStats",
    "KolStatsIndex",
    "Ledger",
    "Mark",
    "Position",
    "UntrackedSell",
    "Window",
    "analyze",
    "analyzer_lock",
    "build_ledger",
    "build_positions",
    "chain_key",
    "dh_term",
    "iter_wallet_positions",
    "kol_stats",
    "kol_stats_windows",
    "last_prices",
    "parse_as_of",
    "swap_price_sol",
    "wilson_lower_bound",
]
