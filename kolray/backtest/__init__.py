"""Backtesting copy-trading strategies on the test period of the token dataset.

Each tracked KOL opening buy in the period is a signal; a strategy decides, from what was known at
the buy, whether to copy it; the copy enters after a delay with slippage and fees, and exits when
the KOL sells (mirrored), by take-profit / stop-loss / max-hold, or at the end of the data.

- :mod:`kolray.backtest.engine`: the pure simulation (:class:`Execution`, :class:`Signal`,
  :class:`PriceTape`, :func:`simulate_copy`, :func:`replay`, :class:`Metrics`).
- :mod:`kolray.backtest.strategies`: ``copy_all``, ``top_kols``, ``model``, ``oracle``.
- :mod:`kolray.backtest.data`: signals and the two price tapes (market, trades) from a dataset and
  the database.
- :mod:`kolray.backtest.run`: :func:`run_backtest`, the no-lookahead guard, and
  :func:`backtest_stage` (run, keep the report, log the run: ``kolray backtest`` and the demo).
- :mod:`kolray.backtest.report`: the report, its table and equity plot, storage.
"""

from kolray.backtest.data import (
    BacktestError,
    SignalSet,
    TapeCoverage,
    TapeName,
    load_market_tape,
    load_signals,
)
from kolray.backtest.engine import (
    Execution,
    KolSell,
    Metrics,
    PriceTape,
    Replay,
    Signal,
    Trade,
    metrics,
    replay,
    simulate_copy,
)
from kolray.backtest.report import (
    BacktestReport,
    DelayResult,
    ModelCheck,
    StrategyResult,
    TapeCoverageOut,
    coverage_text,
    delay_table_text,
    equity_png,
    list_reports,
    load_png,
    load_report,
    save_report,
    table_rows,
    table_text,
    tapes_table_rows,
    tapes_table_text,
)
from kolray.backtest.run import (
    BacktestOptions,
    BacktestRun,
    BacktestStage,
    LookaheadError,
    TapeChoice,
    backtest_stage,
    check_model,
    choose_tapes,
    run_backtest,
    run_summary,
    trained_through,
)
from kolray.backtest.strategies import DEFAULT_STRATEGIES, StrategySpec

__all__ = [
    "DEFAULT_STRATEGIES",
    "BacktestError",
    "BacktestOptions",
    "BacktestReport",
    "BacktestRun",
    "BacktestStage",
    "DelayResult",
    "Execution",
    "KolSell",
    "LookaheadError",
    "Metrics",
    "ModelCheck",
    "PriceTape",
    "Replay",
    "Signal",
    "SignalSet",
    "StrategyResult",
    "StrategySpec",
    "TapeChoice",
    "TapeCoverage",
    "TapeCoverageOut",
    "TapeName",
    "Trade",
    "backtest_stage",
    "check_model",
    "choose_tapes",
    "coverage_text",
    "delay_table_text",
    "equity_png",
    "list_reports",
    "load_market_tape",
    "load_png",
    "load_report",
    "load_signals",
    "metrics",
    "replay",
    "run_backtest",
    "run_summary",
    "save_report",
    "simulate_copy",
    "table_rows",
    "table_text",
    "tapes_table_rows",
    "tapes_table_text",
    "trained_through",
]
