"""A backtest's result: the report (JSON), the side-by-side table, the equity-curve PNG, storage.

Layout under the storage URI (local directory or ``s3://``)::

    reports/backtest/<id>/report.json   # BacktestReport
    reports/backtest/<id>/equity.png    # cumulative PnL of every strategy
    reports/backtest/<id>/trades.csv    # every simulated copy, per strategy

``report.json`` is written last: an id without it is unfinished and not listed.
"""

from __future__ import annotations

import io
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kolray import storage
from kolray.backtest.engine import Execution, Metrics
from kolray.backtest.strategies import StrategySpec
from kolray.config import get_settings

REPORT_DIR = ("reports", "backtest")


class ModelCheck(BaseModel):
    """Whether the model strategy could have known what it used (the no-lookahead guard)."""

    model_config = ConfigDict(extra="forbid")

    version: str
    dataset_version: str
    trained_through: int | None = Field(
        description="Every feature and label the model (and its calibration and threshold) used was "
        "known before this time (unix s); None when it cannot be established."
    )
    basis: str = Field(description="How trained_through was established.")
    first_signal: int
    signals_before: int = Field(
        description="Signals earlier than trained_through: those the model may have seen."
    )
    walk_forward: bool = Field(description="True when every signal comes after everything the model used.")
    same_dataset: bool = Field(description="The backtest replays the split the model was evaluated on.")
    verdict: str = Field(description="One line for people.")


class StrategyResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    spec: StrategySpec
    description: str
    threshold: float | None = None
    metrics: Metrics
    equity: list[tuple[int, float]] = Field(description="(time, capital + realised PnL) after each exit.")
    note: str | None = None


class DelayResult(BaseModel):
    """One strategy's same copies at another delay."""

    model_config = ConfigDict(extra="forbid")

    delay_s: int
    metrics: Metrics


class TapeCoverageOut(BaseModel):
    """How much of the signals' tokens a tape prices before the end of the data."""

    model_config = ConfigDict(extra="forbid")

    tokens: int = Field(description="The signals' tokens.")
    tokens_priced: int = Field(description="Tokens with at least one price on this tape.")
    signals_unpriced: int = Field(
        description="Signals whose token has no price on this tape: never copied on it (counted in "
        "each strategy's skipped_unfillable)."
    )
    points: int = Field(description="Prices of the signals' tokens on this tape.")
    gaps: int = Field(default=0, description="Rows where the market could not be read (no price).")


class BacktestReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    created_at: int
    code_version: str
    dataset_version: str
    split: str
    period_start: int
    period_end: int
    signals: int
    dropped: dict[str, int] = Field(default_factory=dict, description="Dataset rows not replayed, by reason.")
    execution: Execution
    model: ModelCheck | None = None
    strategies: list[StrategyResult]
    skipped: dict[str, str] = Field(
        default_factory=dict, description="Strategies that could not run, and why."
    )
    notes: list[str] = Field(default_factory=list)
    by_delay: dict[str, list[DelayResult]] = Field(
        default_factory=dict,
        description="Per strategy: the same decisions replayed at each requested delay (what latency is worth), "
        "on the report's tape.",
    )
    tape: Literal["market", "trades"] = Field(
        default="trades",
        description="The price tape that ``strategies``, ``by_delay`` and the equity plot filled on: "
        "``market`` (each token's own curve or pool, recorded by the market stage) or ``trades`` "
        "(prices revealed by tracked wallets' swaps; every report before the market tape).",
    )
    other_tapes: dict[str, list[StrategyResult]] = Field(
        default_factory=dict,
        description="The same strategies, with the same decisions, filled on each other tape: side by side.",
    )
    coverage: dict[str, TapeCoverageOut] = Field(
        default_factory=dict, description="Per tape the strategies ran on: the signals' tokens it prices."
    )

    def strategy(self, name: str, tape: str | None = None) -> StrategyResult:
        """A strategy's result by name or kind, on ``tape`` (default: the report's own)."""
        if tape is None or tape == self.tape:
            results = self.strategies
        elif tape in self.other_tapes:
            results = self.other_tapes[tape]
        else:
            raise KeyError(
                f"backtest {self.id} did not run on the {tape} tape (it ran on {', '.join(self.tapes)})"
            )
        for result in results:
            if result.name == name or result.spec.kind == name:
                return result
        raise KeyError(f"no strategy {name!r} in backtest {self.id} ({', '.join(s.name for s in results)})")

    @property
    def tapes(self) -> list[str]:
        """The tapes the strategies ran on, the report's own first."""
        return [self.tape, *self.other_tapes]


# The table

COLUMNS: tuple[tuple[str, str], ...] = (
    ("strategy", "strategy"),
    ("trades", "trades"),
    ("hit rate", "hit_rate"),
    ("3x hits", "hits_3x"),
    ("total PnL (SOL)", "total_pnl_sol"),
    ("return/trade", "return_per_trade"),
    ("total return", "total_return"),
    ("max drawdown", "max_drawdown"),
    ("exposure", "exposure"),
)
_PERCENT = {"hit_rate", "return_per_trade", "total_return", "max_drawdown", "exposure"}


def _cell(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key in _PERCENT:
        return (
            f"{100 * value:+.1f}%" if key in ("return_per_trade", "total_return") else f"{100 * value:.1f}%"
        )
    if key == "total_pnl_sol":
        return f"{value:+.2f}"
    return str(value)


def table_rows(report: BacktestReport) -> list[list[str]]:
    """The side-by-side table as text cells, one row per strategy (the CLI and the UI both show it)."""
    rows = []
    for result in report.strategies:
        values = result.metrics.model_dump()
        rows.append([result.name] + [_cell(key, values[key]) for _, key in COLUMNS[1:]])
    return rows


def table_text(report: BacktestReport) -> str:
    """The table as aligned plain text (Markdown-compatible pipes)."""
    return _markdown_table([label for label, _ in COLUMNS], table_rows(report))


TAPES_HEADER: tuple[str, ...] = ("strategy", "tape", *(label for label, _ in COLUMNS[1:]))


def tapes_table_rows(report: BacktestReport) -> list[list[str]]:
    """Each strategy on each tape it ran on, paired: one row per (strategy, tape), the report's
    own tape first. A report with one tape gives one row per strategy."""
    others = {tape: {r.name: r for r in results} for tape, results in report.other_tapes.items()}
    rows = []
    for result in report.strategies:
        pairs = [(report.tape, result)] + [
            (tape, by_name[result.name]) for tape, by_name in others.items() if result.name in by_name
        ]
        for tape, paired in pairs:
            values = paired.metrics.model_dump()
            rows.append([result.name, tape] + [_cell(key, values[key]) for _, key in COLUMNS[1:]])
    return rows


def tapes_table_text(report: BacktestReport) -> str:
    """The strategies side by side on every tape, as a Markdown table."""
    return _markdown_table(list(TAPES_HEADER), tapes_table_rows(report), left=2)


def coverage_text(report: BacktestReport) -> list[str]:
    """One line per tape: how many of the signals' tokens it prices."""
    lines = []
    for tape in report.tapes:
        c = report.coverage.get(tape)
        if c is None:
            continue
        line = f"{tape} tape: {c.points} prices of {c.tokens_priced} of the signals' {c.tokens} tokens" + (
            f", {c.gaps} gaps" if c.gaps else ""
        )
        if c.signals_unpriced:
            line += f"; {c.signals_unpriced} signals on tokens it never prices (never copied on it)"
        lines.append(line)
    return lines


def _markdown_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Aligned Markdown pipes: the first ``left`` columns (names) left-aligned, the others (figures)
    right-aligned."""
    widths = [max([len(header[i]), *(len(r[i]) for r in rows)]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        aligned = (
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(aligned) + " |"

    rule = (
        "|" + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def delay_table_text(report: BacktestReport) -> str:
    """Return per trade of each strategy at each requested delay, as a Markdown table ("" when no
    delay list was asked for)."""
    delays = sorted({r.delay_s for results in report.by_delay.values() for r in results})
    if not delays:
        return ""
    header = ["return per trade", *(f"{d} s" for d in delays)]
    rows = []
    for name, results in report.by_delay.items():
        at = {r.delay_s: r.metrics for r in results}
        rows.append(
            [name]
            + [
                _cell("return_per_trade", at[d].return_per_trade) + f" ({at[d].trades})" if d in at else "–"
                for d in delays
            ]
        )
    return _markdown_table(header, rows)


# The plot


def equity_png(report: BacktestReport) -> bytes:
    """Cumulative realised PnL (SOL) of each strategy over the period: one PNG."""
    from datetime import UTC, datetime

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5.2), dpi=110)
    try:
        start = datetime.fromtimestamp(report.period_start, UTC)
        end = datetime.fromtimestamp(report.period_end, UTC)
        others = {tape: {r.name: r for r in results} for tape, results in report.other_tapes.items()}
        for index, result in enumerate(report.strategies):
            color = f"C{index % 10}"
            lines = [(report.tape, result, "-")] + [
                (tape, by_name[result.name], "--")
                for tape, by_name in others.items()
                if result.name in by_name
            ]
            for tape, shown, style in lines:
                capital = shown.metrics.capital_sol
                times = [datetime.fromtimestamp(t, UTC) for t, _ in shown.equity] + [end]
                pnl = [value - capital for _, value in shown.equity]
                pnl.append(pnl[-1] if pnl else 0.0)
                label = (
                    f"{shown.name}, {tape} tape ({shown.metrics.trades} trades, "
                    f"{shown.metrics.total_pnl_sol:+.1f} SOL)"
                )
                # Datetimes go through matplotlib's unit registry (date ticks); its stubs accept only numbers.
                axes.step(times, pnl, where="post", label=label, linewidth=1.6, linestyle=style, color=color)  # type: ignore[arg-type]
        axes.axhline(0, color="#888888", linewidth=0.8)
        axes.set_xlim(start, end)  # type: ignore[arg-type]  # datetimes, as above
        axes.set_ylabel("cumulative PnL (SOL)")
        axes.set_title(
            f"Copy-trading backtest on dataset {report.dataset_version} ({report.split} period), "
            f"stake {report.execution.stake_sol:g} SOL\nfills on the {' and '.join(report.tapes)} tape"
            + ("s (dashed: the " + ", ".join(report.other_tapes) + " tape)" if report.other_tapes else ""),
            fontsize=10,
        )
        locator = mdates.AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        axes.set_xlabel("UTC")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=8)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


# Storage


def report_uri(report_id: str, storage_uri: str | None = None, name: str | None = None) -> str:
    root = storage_uri
    if root is None:
        root = get_settings().storage_uri
    parts = [*REPORT_DIR, report_id] + ([name] if name else [])
    return storage.join(root, *parts)


def trades_csv(trades: dict[str, list[dict[str, Any]]]) -> bytes:
    import csv

    buffer = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    for strategy, rows in trades.items():
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(buffer, fieldnames=["strategy", *row])
                writer.writeheader()
            writer.writerow({"strategy": strategy, **row})
    return buffer.getvalue().encode()


def save_report(
    report: BacktestReport,
    png: bytes,
    trades: dict[str, list[dict[str, Any]]] | None = None,
    storage_uri: str | None = None,
) -> str:
    """Write the report, its plot and its trades; returns the report's directory URI."""
    storage.makedirs(report_uri(report.id, storage_uri))
    storage.write_bytes(report_uri(report.id, storage_uri, "equity.png"), png)
    if trades is not None:
        storage.write_bytes(report_uri(report.id, storage_uri, "trades.csv"), trades_csv(trades))
    storage.write_bytes(
        report_uri(report.id, storage_uri, "report.json"), report.model_dump_json(indent=1).encode()
    )
    return report_uri(report.id, storage_uri)


def list_reports(storage_uri: str | None = None) -> list[str]:
    """Finished backtest ids, oldest first."""
    root = report_uri("", storage_uri).rstrip("/")
    return [name for name in storage.listdir(root) if storage.exists(storage.join(root, name, "report.json"))]


def load_report(report_id: str, storage_uri: str | None = None) -> BacktestReport:
    uri = report_uri(report_id, storage_uri, "report.json")
    if not storage.exists(uri):
        raise FileNotFoundError(f"no backtest {report_id!r} (no {uri})")
    return BacktestReport.model_validate_json(storage.read_bytes(uri))


def load_png(report_id: str, storage_uri: str | None = None) -> bytes:
    uri = report_uri(report_id, storage_uri, "equity.png")
    if not storage.exists(uri):
        raise FileNotFoundError(f"no equity plot for backtest {report_id!r}")
    return storage.read_bytes(uri)
