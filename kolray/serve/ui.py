"""The Gradio front end at ``/ui``: what a trader opens every morning.

Tabs: **Leaderboard** (7d/30d/all, sort, search, unrealised PnL, copy ROI and the farming flag;
click a row to open the KOL), **Recent trades** (P(3x) of open buys, colour-coded against the
model's threshold; refreshes itself), **KOL** (statistics per window, 7/30-day forecast, cumulative
PnL, positions with their peaks; click a position to open its token), **Token** (the token's market
tape with the KOLs' buys and sells marked, its gaps, the entries and exits, the positions),
**What-if** (a KOL, an amount and a time → P(3x)), **Models** (versions, metrics against baselines
and the oracle, the report's ROC/PR/calibration plots), **Backtest** and **Alerts** (their tabs
live with their routes: :mod:`kolray.serve.routes.backtests`, :mod:`kolray.serve.routes.alerts`).
One function builds each tab; :func:`build_ui` assembles them and wires what crosses tabs.

Every number comes from the same :class:`~kolray.serve.service.KolrayService` methods as the HTTP
API (and the what-if input goes through the API's own request model), so the UI cannot disagree
with it. The Blocks are built inside the replica: Gradio objects cannot be pickled.
"""

# No ``from __future__ import annotations`` here, and gradio is imported inside the functions:
# gradio takes seconds to import, and the API without the UI (tests, benchmarks, ``ui: false``)
# never needs it. Gradio finds the event-data parameter of a callback (``gr.SelectData``) from its
# annotation, which must then be the class itself, not a string naming a module it cannot see.

import io
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from fastapi import FastAPI
from pydantic import ValidationError

from kolray.kols import InvalidWallet, validate_wallet
from kolray.learn.families import FAMILY_NAMES
from kolray.learn.targets import meaning
from kolray.serve.routes.alerts import alerts_tab
from kolray.serve.routes.backtests import backtest_tab
from kolray.serve.schemas import (
    KolDetail,
    Leaderboard,
    PositionOut,
    RecentTrades,
    TokenItem,
    TokenMarket,
    iso,
)
from kolray.serve.service import KolrayService, ServiceError

if TYPE_CHECKING:
    import gradio as gr
    from matplotlib.figure import Figure

SORTS = [
    ("Total PnL (SOL)", "total_pnl_sol"),
    ("ROI", "roi"),
    ("Win rate", "win_rate"),
    ("3x rate", "rate_3x"),
    ("3x count", "n_3x"),
    ("Consistency", "consistency"),
    ("Diamond Hand", "dh_score"),
    ("Trades", "trades"),
    ("Recent win rate", "recent_win_rate"),
    ("Last active", "last_entry_time"),
    ("Copy ROI", "copy_roi"),
]
STAT_ROWS = [
    ("Trades", "trades", "int"),
    ("Closed", "closed", "int"),
    ("Win rate", "win_rate", "pct"),
    ("3x rate", "rate_3x", "pct"),
    ("3x count", "n_3x", "int"),
    ("Mean multiple", "mean_multiple", "x"),
    ("Median multiple", "median_multiple", "x"),
    ("Total PnL (SOL)", "total_pnl_sol", "sol"),
    ("ROI", "roi", "pct"),
    ("Consistency", "consistency", "pct"),
    ("Diamond Hand", "dh_score", "num"),
    ("Mean hold", "mean_hold_s", "hold"),
    ("Recent win rate", "recent_win_rate", "pct"),
    # Copyability (null in snapshots written before the analyzer computed it).
    ("Copy ROI", "copy_roi", "pct"),
    ("Copy PnL (SOL)", "copy_pnl_sol", "sol"),
    ("Farming", "farming", "flag"),
]
# Every table's columns, given to its gr.Dataframe too: a Dataframe without headers shows "1 2 3"
# over an empty table (before its first value, and for any value without columns).
LEADERBOARD_COLUMNS = [
    "#",
    "KOL",
    "PnL (SOL)",
    "Unrealised (SOL)",
    "ROI",
    "Win rate",
    "3x rate",
    "3x",
    "Consistency",
    "DH",
    "Copy ROI",
    "Farming",
    "Closed",
    "Last buy",
]
TRADES_COLUMNS = ["Time (UTC)", "KOL", "Side", "SOL", "Token", "DEX", "Position", "P(3x)"]
STATS_COLUMNS = ["", "7d", "30d", "all"]
POSITIONS_COLUMNS = [
    "Entry (UTC)",
    "Token",
    "Status",
    "Cost (SOL)",
    "PnL (SOL)",
    "Multiple",
    "Hold",
    "Open value (SOL)",
    "Unrealised (SOL)",
    "Peak",
    "To peak",
    "Drawdown",
    "Missed (SOL)",
    "Flags",
]
TOKEN_TRADES_COLUMNS = ["Time (UTC)", "KOL", "Side", "Price (SOL)", "SOL", "Tokens", "DEX"]
TOKEN_POSITIONS_COLUMNS = [
    "KOL",
    "Status",
    "Entry (UTC)",
    "Cost (SOL)",
    "PnL (SOL)",
    "Unrealised (SOL)",
    "Multiple",
    "Peak",
    "To peak",
    "Drawdown",
    "Missed (SOL)",
]
BUY_COLOUR = "#12b76a"
SELL_COLOUR = "#f04438"
# The report table's columns before a report is shown: the metrics each model's report holds.
REPORT_COLUMNS = {
    "token": ["", "roc_auc", "pr_auc", "brier", "precision", "recall", "threshold", "n", "n_pos"],
    "kol": ["", "rmse_7d", "rmse_30d", "mae_7d", "mae_30d", "r2_7d", "r2_30d", "n"],
}


def empty(columns: list[str]) -> pd.DataFrame:
    """A table with its columns and no rows (what a failed or not-yet-possible lookup shows)."""
    return pd.DataFrame(columns=columns)


GOOD = "background-color: #d1fadf; color: #05603a"
MAYBE = "background-color: #fef0c7; color: #93370d"
BAD = "color: #b42318"
MUTED = "color: #667085"
CSS = """
.kolray-big input { font-size: 1.6rem !important; font-weight: 600; }
footer { display: none !important; }
"""


# Formatting


def short(wallet: str) -> str:
    """A wallet or mint shortened to its first and last four characters."""
    return f"{wallet[:4]}…{wallet[-4:]}" if len(wallet) > 10 else wallet


def kol_label(wallet: str, name: str | None) -> str:
    """How a KOL is named in the pickers."""
    return f"{name} · {short(wallet)}" if name else wallet


def fmt(value: Any, kind: str) -> str:
    """A statistic as text, by kind (pct, x, sol, int, hold, dur, flag, price, num); ``–`` for
    none."""
    if value is None:
        return "–"
    if kind == "flag":
        return "⚠️ yes" if value else "no"
    if kind == "price":
        return f"{value:.4g}"
    if kind == "dur":
        return f"{value / 60:.0f} min" if value < 3600 else fmt(value, "hold")
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "sol":
        return f"{value:+,.2f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "hold":
        hours = value / 3600
        return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"
    return f"{value:.3f}"


def when(text: str | None) -> str:
    """An ISO time as shown in tables (no T, no Z)."""
    return text.replace("T", " ").replace("Z", "") if text else "–"


def _pnl_style(value: Any) -> str:
    if not isinstance(value, int | float):
        return ""
    return "color: #05603a" if value > 0 else BAD if value < 0 else ""


def leaderboard_table(board: Leaderboard) -> tuple[Any, list[str]]:
    """The leaderboard as a styled table, and the wallet of each row."""
    rows = []
    for row in board.kols:
        s = row.stats
        rows.append(
            {
                "#": row.rank,
                "KOL": row.name or short(row.wallet),
                "PnL (SOL)": round(s.total_pnl_sol, 2),
                "Unrealised (SOL)": fmt(row.unrealised_pnl_sol, "sol"),
                "ROI": fmt(s.roi, "pct"),
                "Win rate": fmt(s.win_rate, "pct"),
                "3x rate": fmt(s.rate_3x, "pct"),
                "3x": s.n_3x,
                "Consistency": fmt(s.consistency, "pct"),
                "DH": fmt(s.dh_score, "num"),
                "Copy ROI": fmt(s.copy_roi, "pct"),
                "Farming": fmt(s.farming, "flag"),
                "Closed": s.closed,
                "Last buy": when(s.last_entry_time),
            }
        )
    frame = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)
    styled = frame.style.map(_pnl_style, subset=["PnL (SOL)"]).format({"PnL (SOL)": "{:+,.2f}"})
    return styled, [row.wallet for row in board.kols]


def _p3x_style(threshold: float | None):
    def style(value: Any) -> str:
        if not isinstance(value, int | float) or pd.isna(value):
            return MUTED
        if threshold is not None and value >= threshold:
            return GOOD
        if threshold is not None and value >= threshold / 2:
            return MAYBE
        return ""

    return style


def trades_table(trades: RecentTrades) -> Any:
    """Recent trades as a styled table (P(3x) coloured against the threshold)."""
    rows = []
    for t in trades.trades:
        outcome = (
            "open"
            if t.position_status == "open"
            else (fmt(t.multiple, "x") if t.multiple is not None else (t.position_status or "not analysed"))
        )
        rows.append(
            {
                "Time (UTC)": when(t.time),
                "KOL": t.name or short(t.wallet),
                "Side": t.side,
                "SOL": round(t.sol_amount, 3),
                "Token": short(t.mint),
                "DEX": t.dex,
                "Position": outcome,
                "P(3x)": t.p_3x,
            }
        )
    frame = pd.DataFrame(rows, columns=TRADES_COLUMNS)
    return frame.style.map(_p3x_style(trades.threshold), subset=["P(3x)"]).format(
        {"P(3x)": lambda v: "–" if v is None or pd.isna(v) else f"{100 * v:.1f}%", "SOL": "{:.3f}"}
    )


def stats_table(detail: KolDetail) -> pd.DataFrame:
    """A KOL's statistics, one row per statistic, one column per window."""
    rows = []
    for label, key, kind in STAT_ROWS:
        row = {"": label}
        for window in ("7d", "30d", "all"):
            stats = detail.stats.get(window)
            row[window] = fmt(getattr(stats, key), kind) if stats is not None else "–"
        rows.append(row)
    return pd.DataFrame(rows, columns=STATS_COLUMNS)


def market_cells(p: PositionOut) -> dict[str, str]:
    """A position's unrealised PnL and what the market did around it, as table cells."""
    return {
        "Unrealised (SOL)": fmt(p.unrealised_pnl_sol, "sol") if p.status == "open" else "",
        "Peak": fmt(p.peak_multiple, "x"),
        "To peak": fmt(p.time_to_peak_s, "dur"),
        "Drawdown": fmt(p.drawdown, "pct"),
        "Missed (SOL)": fmt(p.missed_gain_sol, "num") if p.status == "closed" else "",
    }


def positions_table(detail: KolDetail) -> Any:
    """A KOL's positions as a styled table (a click on a row opens its token)."""
    rows = [
        {
            "Entry (UTC)": when(p.entry_time),
            "Token": short(p.mint),
            "Status": p.status,
            "Cost (SOL)": round(p.cost_sol, 3),
            "PnL (SOL)": p.realised_pnl_sol,
            "Multiple": fmt(p.multiple, "x"),
            "Hold": fmt(p.hold_s, "hold"),
            "Open value (SOL)": fmt(p.unrealised_value_sol, "num") if p.status == "open" else "",
            **market_cells(p),
            "Flags": ", ".join(p.flags),
        }
        for p in detail.positions
    ]
    frame = pd.DataFrame(rows, columns=POSITIONS_COLUMNS)
    return frame.style.map(_pnl_style, subset=["PnL (SOL)"]).format(
        {"PnL (SOL)": lambda v: "–" if v is None or pd.isna(v) else f"{v:+,.3f}", "Cost (SOL)": "{:.3f}"}
    )


def pnl_frame(detail: KolDetail) -> pd.DataFrame:
    """A KOL's cumulative PnL curve, for the line plot."""
    frame = pd.DataFrame(
        {
            "time": [pd.Timestamp(p.time) for p in detail.pnl_curve],
            "cum_pnl_sol": [p.cum_pnl_sol for p in detail.pnl_curve],
        }
    )
    return frame


def forecast_text(detail: KolDetail) -> str:
    """The KOL tab's head: name, links, forecast."""
    head = f"### {detail.name or detail.wallet}\n`{detail.wallet}`"
    if detail.links:
        head += " · " + " · ".join(f"[link]({link})" for link in detail.links[:3])
    if not detail.tracked:
        head += " · *not in the tracked list*"
    if detail.forecast is None:
        return f"{head}\n\n{unrealised_line(detail)}**Forecast unavailable:** {detail.forecast_error or 'no KOL model'}"
    f = detail.forecast
    note = " · *cold start: no closed positions yet, this is the population prior*" if f.cold_start else ""
    return (
        f"{head}\n\n**Forecast 3x rate** — next 7 days: **{100 * f.p_3x_rate_7d:.1f}%** · next 30 days: "
        f"**{100 * f.p_3x_rate_30d:.1f}%**  \n{unrealised_line(detail)}"
        f"<small>KOL model {f.model_version}, as of {when(f.as_of)} UTC · "
        f"{detail.open_positions} open positions{note}</small>"
    )


def unrealised_line(detail: KolDetail) -> str:
    """The KOL's unrealised PnL over its open positions, when it has any marked."""
    if detail.unrealised_pnl_sol is None:
        return ""
    return f"**Unrealised PnL** (open positions at the market): **{fmt(detail.unrealised_pnl_sol, 'sol')} SOL**  \n"


def report_table(report: dict[str, Any]) -> pd.DataFrame:
    """The test metrics of the served model, the best of each family searched, its baselines and
    the oracle side by side."""
    served = FAMILY_NAMES.get(report.get("family") or "net", report.get("family"))
    blocks: list[tuple[str, dict[str, Any]]] = [(f"model (serves: {served})", report.get("test") or {})]
    for family, block in (report.get("families") or {}).items():
        blocks.append((f"family {FAMILY_NAMES.get(family, family)}", block))
    blocks += list((report.get("baselines") or {}).items())
    if report.get("oracle"):
        blocks.append(("oracle (ceiling)", report["oracle"]))
    preferred = [
        "roc_auc",
        "pr_auc",
        "brier",
        "precision",
        "recall",
        "f1",
        "threshold",
        "rmse",
        "rmse_7d",
        "rmse_30d",
        "mae_7d",
        "mae_30d",
        "r2_7d",
        "r2_30d",
        "n",
        "n_pos",
    ]
    keys = [k for k in preferred if any(isinstance(b.get(k), int | float) for _, b in blocks)]
    rows = []
    for name, block in blocks:
        row: dict[str, Any] = {"": name}
        for key in keys:
            value = block.get(key)
            row[key] = (
                (f"{value:,}" if isinstance(value, int) else f"{value:.4f}")
                if isinstance(value, int | float)
                else "–"
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=["", *keys])


def _side_style(value: Any) -> str:
    return (
        f"color: {BUY_COLOUR}; font-weight: 600"
        if value == "buy"
        else f"color: {SELL_COLOUR}; font-weight: 600"
    )


def token_trades_table(market: TokenMarket) -> Any:
    """The KOLs' entries and exits of a token, newest first, buys green and sells red."""
    rows = [
        {
            "Time (UTC)": when(t.time),
            "KOL": t.name or short(t.wallet),
            "Side": t.side,
            "Price (SOL)": fmt(t.price_sol, "price"),
            "SOL": round(t.sol_amount, 3),
            "Tokens": f"{t.token_amount:,.0f}",
            "DEX": t.dex,
        }
        for t in reversed(market.trades)
    ]
    frame = pd.DataFrame(rows, columns=TOKEN_TRADES_COLUMNS)
    return frame.style.map(_side_style, subset=["Side"]).format({"SOL": "{:.3f}"})


def token_positions_table(market: TokenMarket) -> Any:
    """The KOLs' positions in a token, newest entry first."""
    rows = [
        {
            "KOL": p.name or short(p.wallet),
            "Status": p.status,
            "Entry (UTC)": when(p.entry_time),
            "Cost (SOL)": round(p.cost_sol, 3),
            "PnL (SOL)": p.realised_pnl_sol,
            "Multiple": fmt(p.multiple, "x"),
            **market_cells(p),
        }
        for p in market.positions
    ]
    frame = pd.DataFrame(rows, columns=TOKEN_POSITIONS_COLUMNS)
    return frame.style.map(_pnl_style, subset=["PnL (SOL)"]).format(
        {"PnL (SOL)": lambda v: "–" if v is None or pd.isna(v) else f"{v:+,.3f}", "Cost (SOL)": "{:.3f}"}
    )


def token_text(market: TokenMarket) -> str:
    """The Token tab's head: newest price and venue, the first KOL buy, the peak since, gaps."""
    s = market.summary
    lines = [f"### Token `{market.mint}`"]
    if s.latest_price_sol is not None:
        venue = f"{s.venue or '–'}, {'graduated' if s.graduated else 'bonding curve'}"
        lines.append(
            f"Newest price **{fmt(s.latest_price_sol, 'price')} SOL** at {when(s.latest_time)} UTC ({venue}) · "
            f"market cap {fmt(s.market_cap_sol, 'price')} SOL · liquidity {fmt(s.liquidity_sol, 'price')} SOL"
        )
    else:
        lines.append("No market price in this window (the market stage has not read this token).")
    if s.first_entry_time is not None:
        peak = (
            f" · peak since: **{fmt(s.peak_price_sol, 'price')} SOL** at {when(s.peak_time)} UTC"
            + (f" (**{fmt(s.peak_multiple, 'x')}** the first buy)" if s.peak_multiple is not None else "")
            if s.peak_price_sol is not None
            else ""
        )
        lines.append(
            f"First KOL buy {when(s.first_entry_time)} UTC at {fmt(s.first_entry_price_sol, 'price')} SOL{peak}"
            f" · {s.kols} KOLs traded it"
        )
    for gap in market.gaps[:5]:
        lines.append(f"⚠️ No price {when(gap.start)} → {when(gap.end)} UTC ({gap.reads} reads): {gap.reason}")
    if len(market.gaps) > 5:
        lines.append(f"… and {len(market.gaps) - 5} more stretches without a price")
    if market.downsampled:
        lines.append(f"<small>{market.points_total:,} tape prices, drawn as {len(market.points):,}.</small>")
    return "  \n".join(lines)


def _day_number(text: str) -> float:
    """An ISO time as matplotlib's date number (days since its epoch), UTC."""
    import matplotlib.dates as mdates

    return float(mdates.date2num(datetime.fromisoformat(text.replace("Z", "+00:00"))))


def token_chart(market: TokenMarket) -> "Figure":
    """The token's tape as a line, its gaps shaded, the KOLs' buys (green ▲) and sells (red ▼) at
    their own prices."""
    # Lazy: matplotlib only for the UI; a Figure without pyplot keeps no global state (threads).
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    prices = [p.price_sol for p in market.points]
    # A NaN where each gap starts breaks the line there: no price is drawn across a gap.
    path = sorted(
        [(_day_number(p.time), p.price_sol) for p in market.points]
        + [(_day_number(g.start), math.nan) for g in market.gaps]
    )
    axes.plot(
        [t for t, _ in path], [v for _, v in path], color="#475467", lw=1.2, label="market price (tape)"
    )
    for i, gap in enumerate(market.gaps):
        label = "no price (market not readable)" if i == 0 else None
        start, end = _day_number(gap.start), _day_number(gap.end)
        if start == end:
            axes.axvline(start, color=SELL_COLOUR, alpha=0.35, lw=3, label=label)
        else:
            axes.axvspan(start, end, color=SELL_COLOUR, alpha=0.12, label=label)
    for side, marker, colour in (("buy", "^", BUY_COLOUR), ("sell", "v", SELL_COLOUR)):
        marks = [
            (_day_number(t.time), t.price_sol)
            for t in market.trades
            if t.side == side and t.price_sol is not None
        ]
        prices += [price for _, price in marks]
        axes.scatter(
            [time for time, _ in marks],
            [price for _, price in marks],
            marker=marker,
            s=80,
            color=colour,
            edgecolors="#101828",
            linewidths=0.6,
            zorder=3,
            label=f"KOL {side}s ({len(marks)})",
        )
    positive = [p for p in prices if p > 0]
    if positive and max(positive) > 20 * min(positive):
        axes.set_yscale("log")  # memecoins move by orders of magnitude
    axes.set_ylabel("SOL per token")
    axes.set_title(f"{short(market.mint)}: market price and KOL trades (UTC)", fontsize=10)
    axes.grid(alpha=0.3)
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes.xaxis_date()
    axes.legend(loc="best", fontsize=8)
    return figure


# Reads shared by the tabs


async def _safe(fn: Callable[..., Any], *args: Any) -> Any:
    """``await fn(*args)``, or None when the service cannot answer."""
    try:
        return await fn(*args)
    except ServiceError:
        return None


async def status_line(service: KolrayService) -> str:
    """The line under the title: the versions served and how recent the data is."""
    versions = await service.serving_versions()
    clock = await _safe(service.data_clock)
    serving = " · ".join(f"{m} model **{v or 'none'}**" for m, v in versions.items())
    return f"Serving {serving} · data up to **{when(iso(clock)) if clock else '–'} UTC**"


async def kol_choices(service: KolrayService) -> list[tuple[str, str]]:
    """(label, wallet) of every KOL, for the pickers; none when the database is away."""
    try:
        return [(kol_label(w, n), w) for w, n in await service.kol_choices()]
    except ServiceError:
        return []


# The tabs: each builds its components inside its gr.Tab and wires its own events; what another
# tab needs is returned.


def leaderboard_tab(service: KolrayService, blocks: "gr.Blocks") -> tuple["gr.Dataframe", "gr.State"]:
    """**Leaderboard**: 7d/30d/all, sort, search. Returns the table and the wallets of its rows
    (a click on a row opens the KOL: wired by :func:`build_ui`)."""
    import gradio as gr

    async def show(window: str, sort: str, search: str) -> tuple[Any, list[str], str]:
        try:
            board = await service.leaderboard(window, sort, 200, search or None)
        except ServiceError as error:
            return empty(LEADERBOARD_COLUMNS), [], f"⚠️ {error.message}"
        table, wallets = leaderboard_table(board)
        note = f"{board.total} KOLs · statistics as of {when(board.as_of)} UTC · click a row to open the KOL"
        return table, wallets, note

    with gr.Tab("Leaderboard", id="leaderboard", elem_id="tab-leaderboard"):
        with gr.Row():
            window = gr.Radio(["7d", "30d", "all"], value="30d", label="Window", scale=1)
            sort = gr.Dropdown(SORTS, value="total_pnl_sol", label="Sort by", scale=1)
            search = gr.Textbox(label="Search", placeholder="name or wallet", scale=2)
        note = gr.Markdown()
        board = gr.Dataframe(
            headers=LEADERBOARD_COLUMNS,
            interactive=False,
            elem_id="leaderboard-table",
            max_height=640,
            wrap=True,
        )
        wallets = gr.State([])
    blocks.load(show, [window, sort, search], [board, wallets, note])
    for control in (window, sort):
        control.change(show, [window, sort, search], [board, wallets, note])
    search.submit(show, [window, sort, search], [board, wallets, note])
    return board, wallets


def trades_tab(service: KolrayService, blocks: "gr.Blocks") -> "gr.Timer":
    """**Recent trades**: P(3x) of open buys, colour-coded against the model's threshold; refreshes
    itself. Returns its timer (the status line refreshes with it)."""
    import gradio as gr

    async def show(limit: float) -> tuple[Any, str]:
        try:
            trades = await service.recent_trades(int(limit))
        except ServiceError as error:
            return empty(TRADES_COLUMNS), f"⚠️ {error.message}"
        if trades.model_version:
            legend = (
                f"P(3x) = {meaning(trades.target)}, by token model {trades.model_version}; green ≥ threshold "
                f"{100 * (trades.threshold or 0):.1f}%, amber ≥ half of it."
            )
        else:
            legend = f"P(3x) unavailable: {trades.prediction_error}" if trades.prediction_error else ""
        return trades_table(trades), legend

    with gr.Tab("Recent trades", id="trades", elem_id="tab-trades"):
        with gr.Row():
            limit = gr.Slider(10, 200, value=50, step=10, label="Trades", scale=3)
            refresh = gr.Button("Refresh", scale=1)
        note = gr.Markdown()
        table = gr.Dataframe(
            headers=TRADES_COLUMNS, interactive=False, elem_id="trades-table", max_height=640
        )
        timer = gr.Timer(30)
    blocks.load(show, [limit], [table, note])
    for trigger in (refresh.click, limit.release, timer.tick):
        trigger(show, [limit], [table, note])
    return timer


async def kol_view(
    service: KolrayService, wallet: str | None
) -> tuple[str, Any, pd.DataFrame, Any, list[str]]:
    """The KOL tab's contents for ``wallet``: forecast line, statistics, PnL curve, positions, and
    the mint of each position row."""
    no_curve = pd.DataFrame({"time": [], "cum_pnl_sol": []})
    if not wallet:
        return (
            "Pick a KOL above (or paste a wallet).",
            empty(STATS_COLUMNS),
            no_curve,
            empty(POSITIONS_COLUMNS),
            [],
        )
    try:
        detail = await service.kol_detail(validate_wallet(wallet), 200)
    except (ServiceError, InvalidWallet) as error:
        message = f"⚠️ {getattr(error, 'message', error)}"
        return message, empty(STATS_COLUMNS), no_curve, empty(POSITIONS_COLUMNS), []
    return (
        forecast_text(detail),
        stats_table(detail),
        pnl_frame(detail),
        positions_table(detail),
        [p.mint for p in detail.positions],
    )


def kol_tab(service: KolrayService) -> tuple["gr.Dropdown", "gr.Dataframe", "gr.State"]:
    """**KOL**: statistics per window, 7/30-day forecast, cumulative PnL, positions. Returns the
    KOL picker, the positions table and the mint of each of its rows (a click on a row opens
    the token: wired by :func:`build_ui`)."""
    import gradio as gr

    async def show(wallet: str | None) -> tuple[str, Any, pd.DataFrame, Any, list[str]]:
        return await kol_view(service, wallet)

    with gr.Tab("KOL", id="kol", elem_id="tab-kol"):
        pick = gr.Dropdown(label="KOL", allow_custom_value=True, elem_id="kol-pick")
        head = gr.Markdown(elem_id="kol-forecast")
        with gr.Row():
            stats = gr.Dataframe(
                headers=STATS_COLUMNS, interactive=False, label="Statistics", scale=2, elem_id="kol-stats"
            )
            curve = gr.LinePlot(
                x="time",
                y="cum_pnl_sol",
                title="Cumulative realised PnL (SOL)",
                x_title="exit time (UTC)",
                y_title="SOL",
                scale=3,
            )
        positions = gr.Dataframe(
            headers=POSITIONS_COLUMNS,
            interactive=False,
            label="Positions (newest first; click one to open its token)",
            max_height=480,
            elem_id="kol-positions",
        )
        mints = gr.State([])
    pick.change(show, [pick], [head, stats, curve, positions, mints])
    return pick, positions, mints


async def token_view(service: KolrayService, mint: str | None) -> tuple[str, Any, Any, Any]:
    """The Token tab's contents for ``mint``: summary, chart, the KOLs' trades, their positions."""
    if not mint:
        return (
            "Pick a token above (or paste a mint).",
            None,
            empty(TOKEN_TRADES_COLUMNS),
            empty(TOKEN_POSITIONS_COLUMNS),
        )
    try:
        market = await service.token_market(validate_wallet(mint))
    except (ServiceError, InvalidWallet) as error:
        message = f"⚠️ {getattr(error, 'message', error)}".replace("wallet address", "mint address")
        return message, None, empty(TOKEN_TRADES_COLUMNS), empty(TOKEN_POSITIONS_COLUMNS)
    return token_text(market), token_chart(market), token_trades_table(market), token_positions_table(market)


async def token_choices(service: KolrayService) -> list[tuple[str, str]]:
    """(label, mint) of the most recently traded tokens; none when the database is away."""
    try:
        return [(f"{short(m)} · {n} KOL{'s' if n != 1 else ''}", m) for m, n in await service.token_choices()]
    except ServiceError:
        return []


def token_tab(service: KolrayService) -> "gr.Dropdown":
    """**Token**: the market tape with the KOLs' buys and sells marked, gaps, entries and exits,
    positions. Returns the token picker."""
    import gradio as gr

    async def show(mint: str | None) -> tuple[str, Any, Any, Any]:
        return await token_view(service, mint)

    with gr.Tab("Token", id="token", elem_id="tab-token"):
        pick = gr.Dropdown(
            label="Token (recently traded by KOLs, or paste a mint)",
            allow_custom_value=True,
            elem_id="token-pick",
        )
        head = gr.Markdown(elem_id="token-summary")
        chart = gr.Plot(label="Market price and KOL trades", format="png", elem_id="token-chart")
        trades = gr.Dataframe(
            headers=TOKEN_TRADES_COLUMNS,
            interactive=False,
            label="KOL entries and exits (newest first)",
            max_height=400,
            elem_id="token-trades",
        )
        positions = gr.Dataframe(
            headers=TOKEN_POSITIONS_COLUMNS,
            interactive=False,
            label="KOL positions in the token",
            max_height=400,
            elem_id="token-positions",
        )
    pick.change(show, [pick], [head, chart, trades, positions])
    return pick


async def what_if(
    service: KolrayService, wallet: str | None, amount: float | None, at: str, mint: str
) -> tuple[float | None, str]:
    """P(3x) in percent and its explanation for one hypothetical buy (through the API's own
    request model)."""
    try:
        item = TokenItem.model_validate(
            {"wallet": wallet or "", "amount_sol": amount, "entry_time": at, "mint": mint.strip() or None}
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return None, f"⚠️ {problems}"
    try:
        result = await service.predict_tokens([item])
    except ServiceError as error:
        return None, f"⚠️ {error.message}"
    p = result.predictions[0]
    verdict = (
        "above the model's threshold: a **candidate 3x**"
        if p.above_threshold
        else "below the model's threshold"
    )
    cold = "  \n*Cold start: this KOL had no closed position before that time.*" if p.cold_start else ""
    threshold = f"{100 * result.threshold:.1f}%" if result.threshold is not None else "–"
    return round(100 * p.p_3x, 2), (
        f"P(3x) = **{100 * p.p_3x:.1f}%**, {verdict} ({threshold}).  \n"
        f"<small>token model {result.model_version}</small>{cold}"
    )


def what_if_tab(service: KolrayService) -> tuple["gr.Dropdown", "gr.Textbox"]:
    """**What-if**: a KOL, an amount and a time → P(3x). Returns the KOL picker and the time box
    (filled when the page loads)."""
    import gradio as gr

    async def predict(
        wallet: str | None, amount: float | None, at: str, mint: str
    ) -> tuple[float | None, str]:
        return await what_if(service, wallet, amount, at, mint)

    with gr.Tab("What-if", id="whatif", elem_id="tab-whatif"):
        gr.Markdown("If this KOL buys this much at this time, how likely is the position to reach 3x?")
        with gr.Row():
            kol = gr.Dropdown(label="KOL", allow_custom_value=True, elem_id="whatif-kol", scale=2)
            amount = gr.Number(value=1.0, label="Amount (SOL)", elem_id="whatif-amount", scale=1)
            at = gr.Textbox(label="Time (ISO-8601, UTC)", elem_id="whatif-time", scale=2)
            mint = gr.Textbox(label="Token mint (optional)", elem_id="whatif-mint", scale=2)
        go = gr.Button("Predict", variant="primary", elem_id="whatif-go")
        with gr.Row():
            p = gr.Number(label="P(3x) %", interactive=False, elem_id="whatif-p3x", elem_classes="kolray-big")
            text = gr.Markdown(elem_id="whatif-text")
    go.click(predict, [kol, amount, at, mint], [p, text])
    return kol, at


async def model_versions(service: KolrayService, model: str) -> tuple[Any, str]:
    """The version picker's choices for ``model`` (champion selected) and its summary line."""
    import gradio as gr

    try:
        info = getattr(await service.models(), model)
    except ServiceError as error:
        return gr.update(choices=[], value=None), f"⚠️ {error.message}"
    choices = [
        (
            f"{v.version} · {v.stage} · {FAMILY_NAMES.get(v.family, v.family)}"
            + (f" · {v.metric} {v.metric_value:.4f}" if v.metric_value is not None else ""),
            v.version,
        )
        for v in info.versions
    ]
    summary = (
        f"**{model}** · champion **{info.champion or 'none'}** · serving **{info.serving or 'none'}**"
        + (f" ({FAMILY_NAMES.get(info.serving_family, info.serving_family)})" if info.serving_family else "")
        + (f" · answers {meaning(info.serving_target)}" if info.serving_target else "")
        + (f" · ⚠️ {info.serving_error}" if info.serving_error else "")
        + f" · {len(info.versions)} versions"
    )
    default = info.champion or (info.versions[0].version if info.versions else None)
    return gr.update(choices=choices, value=default), summary


async def model_report(
    service: KolrayService, model: str, version: str | None
) -> tuple[pd.DataFrame, list[Any], str]:
    """A version's test metrics (against baselines and the oracle), its plots, and a note."""
    if not version:
        return empty(REPORT_COLUMNS[model]), [], "No version registered yet: run `kolray tune`."
    # Lazy: PIL decodes the report's PNGs for the gallery only in the UI.
    from PIL import Image

    try:
        report = await service.report(model, version)
    except ServiceError as error:
        return empty(REPORT_COLUMNS[model]), [], f"⚠️ {error.message}"
    images = []
    for name in await service.plot_names(model, version):
        data = await service.plot(model, version, name)
        images.append((Image.open(io.BytesIO(data)), name.removesuffix(".png").replace("_", " ")))
    comparison = report.get("comparison")
    text = f"Dataset {report.get('dataset_version', '–')}"
    if report.get("target"):
        text += f" · target {report['target']}: {meaning(report['target'])}"
    if report.get("family"):
        text += f" · serves the {FAMILY_NAMES.get(report['family'], report['family'])} family (best on validation)"
    if isinstance(comparison, dict) and comparison.get("summary"):
        text += f" · {comparison['summary']}"
    return report_table(report), images, text


def models_tab(service: KolrayService, blocks: "gr.Blocks") -> None:
    """**Models**: versions, metrics against baselines and the oracle, the report's plots."""
    import gradio as gr

    async def versions(model: str) -> tuple[Any, str]:
        return await model_versions(service, model)

    async def show(model: str, version: str | None) -> tuple[pd.DataFrame, list[Any], str]:
        return await model_report(service, model, version)

    with gr.Tab("Models", id="models", elem_id="tab-models"):
        with gr.Row():
            model = gr.Radio(["token", "kol"], value="token", label="Model", scale=1)
            version = gr.Dropdown(label="Version", scale=3, elem_id="model-version")
        summary = gr.Markdown(elem_id="model-summary")
        note = gr.Markdown()
        metrics = gr.Dataframe(
            headers=REPORT_COLUMNS["token"],
            interactive=False,
            label="Test metrics (model vs baselines vs oracle)",
            elem_id="model-metrics",
        )
        plots = gr.Gallery(
            label="Report plots", columns=3, height="auto", object_fit="contain", elem_id="model-plots"
        )
    blocks.load(versions, [model], [version, summary])
    model.change(versions, [model], [version, summary])
    version.change(show, [model, version], [metrics, plots, note])


# The Blocks


def build_ui(service: KolrayService) -> "gr.Blocks":
    """The whole UI: the title, the status line, every tab, and what crosses tabs (a leaderboard
    row opens the KOL tab, a KOL's position its Token tab; the pickers are filled when the page
    loads)."""
    import gradio as gr

    async def on_load() -> tuple[Any, ...]:
        choices = await kol_choices(service)
        tokens = await token_choices(service)
        clock = await _safe(service.data_clock)
        first = choices[0][1] if choices else None
        return (
            await status_line(service),
            gr.update(choices=choices, value=first),
            gr.update(choices=choices, value=first),
            iso(clock) if clock else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            gr.update(choices=tokens, value=tokens[0][1] if tokens else None),
        )

    async def refresh_status() -> str:
        return await status_line(service)

    def open_row(keys: list[str], tab: str, event: gr.SelectData) -> tuple[Any, Any]:
        row = event.index[0] if isinstance(event.index, list | tuple) else event.index
        if not keys or row is None or row >= len(keys):
            return gr.update(), gr.update()
        return gr.update(value=keys[row]), gr.Tabs(selected=tab)

    def open_kol(wallets: list[str], event: gr.SelectData) -> tuple[Any, Any]:
        return open_row(wallets, "kol", event)

    def open_token(mints: list[str], event: gr.SelectData) -> tuple[Any, Any]:
        return open_row(mints, "token", event)

    with gr.Blocks(title="kolray") as blocks:
        gr.Markdown("## kolray — Solana KOL buys that run to 3x")
        status = gr.Markdown(elem_id="status-line")
        with gr.Tabs(selected="leaderboard") as tabs:
            board, board_wallets = leaderboard_tab(service, blocks)
            timer = trades_tab(service, blocks)
            kol_pick, kol_positions, kol_mints = kol_tab(service)
            token_pick = token_tab(service)
            what_if_kol, what_if_time = what_if_tab(service)
            models_tab(service, blocks)
            with gr.Tab("Backtest"):
                backtest_tab(service)
            with gr.Tab("Alerts"):
                alerts_tab(service)
        blocks.load(on_load, outputs=[status, kol_pick, what_if_kol, what_if_time, token_pick])
        board.select(open_kol, [board_wallets], [kol_pick, tabs])
        kol_positions.select(open_token, [kol_mints], [token_pick, tabs])
        timer.tick(refresh_status, outputs=[status])
    return blocks


def mount_ui(app: FastAPI, service: KolrayService) -> FastAPI:
    """``app`` with the UI mounted at ``/ui``."""
    import gradio as gr

    mounted: FastAPI = gr.mount_gradio_app(
        app, build_ui(service), path="/ui", footer_links=[], css=CSS, theme=gr.themes.Soft()
    )
    return mounted
