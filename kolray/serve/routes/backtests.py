"""The backtests domain: ``GET /v1/backtests``, ``/v1/backtests/{id}``, its equity PNG, and the
UI's **Backtest** tab (stored backtests: strategies side by side, equity curves).

Answers come from the same functions as the CLI (:mod:`kolray.backtest`), reading the reports
``kolray backtest`` stored.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from kolray import backtest as bt
from kolray.backtest.report import TAPES_HEADER, BacktestReport
from kolray.serve.routes.deps import Service
from kolray.serve.schemas import ErrorOut
from kolray.serve.service import KolrayService, NotFound, Unavailable

router = APIRouter()

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "Database or storage unavailable."}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No such backtest."}}
REPORT_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
ReportId = Annotated[str, Path(max_length=40, description="A backtest id, or `latest`.")]


class BacktestSummary(BaseModel):
    """One stored backtest in the list: its period, size, and each strategy's total PnL."""

    id: str
    created_at: int
    dataset_version: str
    period_start: int
    period_end: int
    signals: int
    walk_forward: bool | None = Field(
        description="The model strategy's no-lookahead check (None: no model ran)."
    )
    tape: str = Field(description="The price tape the strategies' figures are on: market or trades.")
    strategies: dict[str, float] = Field(description="Strategy → total PnL (SOL) on `tape`.")
    other_tapes: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="The same strategies on the other tapes it ran on: tape → strategy → total PnL (SOL).",
    )


class BacktestList(BaseModel):
    """``GET /v1/backtests``."""

    backtests: list[BacktestSummary] = Field(description="Newest first.")


async def _storage(fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking storage read in a thread: a missing report is 404, storage trouble 503."""
    try:
        return await asyncio.to_thread(fn, *args)
    except FileNotFoundError as error:
        raise NotFound(str(error)) from None
    except (OSError, ValueError) as error:  # unreachable storage, or an unreadable report
        raise Unavailable(f"backtest storage unavailable: {str(error).splitlines()[0]}") from None


def _report_id(report_id: str, storage_uri: str | None) -> str:
    """The id asked for (``latest``: the newest); runs in a thread (it may list storage)."""
    if report_id == "latest":
        ids = bt.list_reports(storage_uri)
        if not ids:
            raise FileNotFoundError("no backtest yet: run `kolray backtest`")
        return ids[-1]
    if not REPORT_ID.match(report_id):
        raise FileNotFoundError(f"no backtest {report_id!r}")
    return report_id


def _summaries(storage_uri: str | None, limit: int) -> BacktestList:
    out = []
    for report_id in reversed(bt.list_reports(storage_uri)[-limit:]):
        report = bt.load_report(report_id, storage_uri)
        out.append(
            BacktestSummary(
                id=report.id,
                created_at=report.created_at,
                dataset_version=report.dataset_version,
                period_start=report.period_start,
                period_end=report.period_end,
                signals=report.signals,
                walk_forward=None if report.model is None else report.model.walk_forward,
                tape=report.tape,
                strategies={s.name: s.metrics.total_pnl_sol for s in report.strategies},
                other_tapes={
                    tape: {s.name: s.metrics.total_pnl_sol for s in results}
                    for tape, results in report.other_tapes.items()
                },
            )
        )
    return BacktestList(backtests=out)


@router.get("/v1/backtests", response_model=BacktestList, tags=["backtests"], responses=UNAVAILABLE)
async def backtests(service: Service, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> BacktestList:
    """Stored backtests (``kolray backtest``), newest first, with each strategy's total PnL."""
    return await _storage(_summaries, service.storage_uri, limit)


@router.get(
    "/v1/backtests/{report_id}",
    response_model=BacktestReport,
    tags=["backtests"],
    responses={**NOT_FOUND, **UNAVAILABLE},
)
async def backtest_report(report_id: ReportId, service: Service) -> BacktestReport:
    """One backtest: execution settings, the no-lookahead check, every strategy's metrics and
    equity curve, notes."""
    storage_uri = service.storage_uri
    return await _storage(lambda: bt.load_report(_report_id(report_id, storage_uri), storage_uri))


@router.get(
    "/v1/backtests/{report_id}/equity.png",
    tags=["backtests"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "PNG"}, **NOT_FOUND, **UNAVAILABLE},
)
async def backtest_png(report_id: ReportId, service: Service) -> Response:
    """The backtest's equity curves (cumulative PnL of every strategy)."""
    storage_uri = service.storage_uri
    data = await _storage(lambda: bt.load_png(_report_id(report_id, storage_uri), storage_uri))
    return Response(data, media_type="image/png")


# The Backtest tab

HEADERS = list(TAPES_HEADER)


def _day(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _summary_text(report: BacktestReport) -> str:
    ex = report.execution
    lines = [
        f"Dataset **{report.dataset_version}**, test period {_day(report.period_start)} → "
        f"{_day(report.period_end)} UTC, **{report.signals}** KOL buys replayed, filled on the "
        f"**{' and '.join(report.tapes)}** tape{'s' if len(report.tapes) > 1 else ''}.  ",
        f"Stake {ex.stake_sol:g} SOL, delay {ex.delay_s} s, slippage {ex.slippage_bps:g} bps, fee "
        f"{ex.fee_bps:g} bps + {ex.tx_fee_sol:g} SOL per transaction; copies exit with the KOL"
        + (f", take-profit {ex.take_profit:g}x" if ex.take_profit else "")
        + (f", stop-loss {ex.stop_loss:g}x" if ex.stop_loss else "")
        + (f", max hold {ex.max_hold_s / 3600:g} h" if ex.max_hold_s else "")
        + ".",
    ]
    for line in bt.coverage_text(report):
        lines.append(f"\n- {line}")
    if report.model is not None:
        label = "No lookahead" if report.model.walk_forward else "Warning"
        lines.append(f"\n**{label}:** {report.model.verdict}")
    for result in report.strategies:
        lines.append(f"\n- **{result.name}**: {result.description}")
    for name, why in report.skipped.items():
        lines.append(f"\n- *{name}: not run — {why}*")
    return "".join(lines)


def _show(storage_uri: str | None, report_id: str | None) -> tuple[str, pd.DataFrame, Any]:
    # Lazy: PIL decodes the PNG for gr.Image only in the UI.
    from PIL import Image

    if not report_id:
        return "No backtest yet: run `kolray backtest`.", pd.DataFrame(columns=HEADERS), None
    try:
        report = bt.load_report(report_id, storage_uri)
        image = Image.open(io.BytesIO(bt.load_png(report_id, storage_uri)))
    except (FileNotFoundError, ValueError) as error:
        return f"⚠️ {error}", pd.DataFrame(columns=HEADERS), None
    table = pd.DataFrame(bt.tapes_table_rows(report), columns=HEADERS)
    return _summary_text(report), table, image


def backtest_tab(service: KolrayService) -> None:
    """The **Backtest** tab's components and events (called inside its ``gr.Tab``)."""
    # Lazy: gradio takes seconds to import, and the API without the UI (tests, benchmarks,
    # ``ui: false``) never needs it.
    import gradio as gr

    def choices() -> Any:
        ids = list(reversed(bt.list_reports(service.storage_uri)))
        return gr.update(choices=ids, value=ids[0] if ids else None)

    def show(report_id: str | None) -> tuple[str, pd.DataFrame, Any]:
        return _show(service.storage_uri, report_id)

    with gr.Row():
        pick = gr.Dropdown(label="Backtest", elem_id="backtest-pick", scale=3)
        refresh = gr.Button("Refresh", scale=1)
    summary = gr.Markdown(elem_id="backtest-summary")
    # Headers given: a Dataframe without them shows "1 2 3" over an empty table.
    table = gr.Dataframe(
        headers=HEADERS, interactive=False, elem_id="backtest-table", label="Strategies side by side"
    )
    curve = gr.Image(type="pil", label="Equity curves (cumulative PnL, SOL)", elem_id="backtest-equity")
    gr.on(None, choices, inputs=[], outputs=[pick])
    refresh.click(choices, outputs=[pick])
    pick.change(show, [pick], [summary, table, curve])
