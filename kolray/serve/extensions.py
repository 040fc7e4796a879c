"""Where later features plug into the served app without editing the core routes or the UI.

- :func:`routers`: extra FastAPI routers, included by :func:`kolray.serve.api.build_app` after the
  contract routes: alerts (``GET /v1/alerts``, ``GET /v1/alerts/stream`` — server-sent events
  through Serve's proxy) and backtests (``GET /v1/backtests``, ``/v1/backtests/{id}``, its equity
  PNG).
- :func:`tabs`: extra UI tabs, rendered by :func:`kolray.serve.ui.build_ui` after the built-in
  ones: **Backtest** (stored backtests: strategies side by side, equity curves) and **Alerts**
  (a live feed over the event stream). Each is ``(label, render)``; ``render(service)`` is called
  inside ``gr.Tab(label)`` while the Blocks are being built (inside the replica) and creates its
  components and events there.

Both receive the process's :class:`~kolray.serve.service.KolrayService` (database, storage), and
answer from the same functions as the CLI (:mod:`kolray.alerts.store`, :mod:`kolray.backtest`).
Alert reads use the feature pipeline's read-only engine: a stream polling every second never
takes a lock the tracker waits for.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

# Route signatures are resolved against this module's globals (annotations are strings here), so
# what they name is imported at the top.
from kolray.alerts.store import AlertsOut
from kolray.backtest.report import BacktestReport
from kolray.serve.schemas import ErrorOut

if TYPE_CHECKING:
    from kolray.serve.service import KolrayService

UiTab = tuple[str, "Callable[[KolrayService], None]"]

STREAM_POLL_S = 1.0  # how often the stream looks for new alerts
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "Database or storage unavailable."}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No such backtest."}}
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
REPORT_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


class BacktestSummary(BaseModel):
    id: str
    created_at: int
    dataset_version: str
    period_start: int
    period_end: int
    signals: int
    walk_forward: bool | None = Field(
        description="The model strategy's no-lookahead check (None: no model ran)."
    )
    strategies: dict[str, float] = Field(description="Strategy → total PnL (SOL).")


class BacktestList(BaseModel):
    backtests: list[BacktestSummary] = Field(description="Newest first.")


def _reader(service: KolrayService) -> Any:
    from kolray.features.source import read_engine

    return read_engine(service.database_url)


async def _db(fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking read in a thread; database failures become 503 (as the service's own)."""
    from sqlalchemy.exc import SQLAlchemyError

    from kolray.secrets import redact_text
    from kolray.serve.service import Unavailable

    try:
        return await asyncio.to_thread(fn, *args)
    except SQLAlchemyError as error:
        raise Unavailable(f"database unavailable: {redact_text(str(error).splitlines()[0])}") from None


def _sse(alert: Any) -> str:
    return f"id: {alert.id}\nevent: alert\ndata: {alert.model_dump_json()}\n\n"


def routers(service: KolrayService) -> list[APIRouter]:
    """The alert and backtest routes."""
    from kolray import backtest as bt
    from kolray.alerts import alerts_after, last_alert_id, recent_alerts
    from kolray.serve.service import NotFound

    router = APIRouter()

    @router.get("/v1/alerts", response_model=AlertsOut, tags=["alerts"], responses=UNAVAILABLE)
    async def alerts(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        rule: Annotated[
            Literal["p3x", "dh", "consensus"] | None, Query(description="Only this rule.")
        ] = None,
    ) -> AlertsOut:
        """The latest alerts (newest first) with their delivery state per webhook (URLs redacted).

        Live: ``GET /v1/alerts/stream`` sends each new alert as a server-sent event (``event:
        alert``, ``id``: the alert id, ``data``: the alert as here); ``?backlog=N`` starts with the
        latest N, ``?since_id=`` after an id, and a reconnecting ``EventSource`` resumes after its
        ``Last-Event-ID``. (It is left out of this schema: OpenAPI cannot describe an endless
        stream, and schema-driven clients would wait on it forever.)"""
        found = await _db(recent_alerts, _reader(service), limit, rule)
        return AlertsOut(alerts=found, last_id=found[0].id if found else None)

    @router.get("/v1/alerts/stream", response_class=StreamingResponse, include_in_schema=False)
    async def alert_stream(
        request: Request,
        since_id: Annotated[int | None, Query(ge=0, description="Send alerts after this id first.")] = None,
        backlog: Annotated[int, Query(ge=0, le=200, description="Start with the latest N alerts.")] = 0,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        """Alerts as they are raised, as server-sent events: ``event: alert``, ``id`` the alert id,
        ``data`` the alert as in ``GET /v1/alerts``. A reconnecting ``EventSource`` resumes after
        the last id it saw (``Last-Event-ID``); otherwise the stream starts after ``since_id``, or
        with the latest ``backlog`` alerts, or with what comes next."""
        reader = _reader(service)
        if last_event_id is not None and last_event_id.strip().isdigit():
            after = int(last_event_id.strip())
        elif since_id is not None:
            after = since_id
        else:
            after = (
                max(0, await _db(last_alert_id, reader) - backlog)
                if backlog
                else await _db(last_alert_id, reader)
            )
        return StreamingResponse(
            _events(request, reader, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(request: Request, reader: Any, after: int) -> AsyncIterator[str]:
        yield "retry: 3000\n\n"
        beat = time.monotonic()
        while not await request.is_disconnected():
            try:
                found = await asyncio.to_thread(alerts_after, reader, after, 100)
            except Exception:  # the database is away: tell the client, keep the stream
                yield ": database unavailable, retrying\n\n"
                await asyncio.sleep(5 * STREAM_POLL_S)
                continue
            for alert in found:
                yield _sse(alert)
                after = alert.id
            if found:
                beat = time.monotonic()
            elif time.monotonic() - beat > KEEPALIVE_S:
                yield ": keep-alive\n\n"
                beat = time.monotonic()
            if len(found) < 100:
                await asyncio.sleep(STREAM_POLL_S)

    async def _storage(fn: Callable[..., Any], *args: Any) -> Any:
        """A blocking storage read in a thread: a missing report is 404, storage trouble 503."""
        from kolray.serve.service import Unavailable

        try:
            return await asyncio.to_thread(fn, *args)
        except FileNotFoundError as error:
            raise NotFound(str(error)) from None
        except (OSError, ValueError) as error:  # unreachable storage, or an unreadable report
            raise Unavailable(f"backtest storage unavailable: {str(error).splitlines()[0]}") from None

    def _report_id(report_id: str) -> str:
        """The id asked for (``latest``: the newest); runs in a thread (it may list storage)."""
        if report_id == "latest":
            ids = bt.list_reports(service.storage_uri)
            if not ids:
                raise FileNotFoundError("no backtest yet: run `kolray backtest`")
            return ids[-1]
        if not REPORT_ID.match(report_id):
            raise FileNotFoundError(f"no backtest {report_id!r}")
        return report_id

    @router.get("/v1/backtests", response_model=BacktestList, tags=["backtests"], responses=UNAVAILABLE)
    async def backtests(limit: Annotated[int, Query(ge=1, le=200)] = 20) -> BacktestList:
        """Stored backtests (``kolray backtest``), newest first, with each strategy's total PnL."""

        def read() -> BacktestList:
            out = []
            for report_id in reversed(bt.list_reports(service.storage_uri)[-limit:]):
                report = bt.load_report(report_id, service.storage_uri)
                out.append(
                    BacktestSummary(
                        id=report.id,
                        created_at=report.created_at,
                        dataset_version=report.dataset_version,
                        period_start=report.period_start,
                        period_end=report.period_end,
                        signals=report.signals,
                        walk_forward=None if report.model is None else report.model.walk_forward,
                        strategies={s.name: s.metrics.total_pnl_sol for s in report.strategies},
                    )
                )
            return BacktestList(backtests=out)

        return await _storage(read)

    @router.get(
        "/v1/backtests/{report_id}",
        response_model=BacktestReport,
        tags=["backtests"],
        responses={**NOT_FOUND, **UNAVAILABLE},
    )
    async def backtest_report(
        report_id: Annotated[str, Path(max_length=40, description="A backtest id, or `latest`.")],
    ) -> BacktestReport:
        """One backtest: execution settings, the no-lookahead check, every strategy's metrics and
        equity curve, notes."""
        return await _storage(lambda: bt.load_report(_report_id(report_id), service.storage_uri))

    @router.get(
        "/v1/backtests/{report_id}/equity.png",
        tags=["backtests"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "PNG"}, **NOT_FOUND, **UNAVAILABLE},
    )
    async def backtest_png(
        report_id: Annotated[str, Path(max_length=40, description="A backtest id, or `latest`.")],
    ) -> Response:
        """The backtest's equity curves (cumulative PnL of every strategy)."""
        data = await _storage(lambda: bt.load_png(_report_id(report_id), service.storage_uri))
        return Response(data, media_type="image/png")

    return [router]


# The UI


def tabs() -> list[UiTab]:
    """The Backtest and Alerts tabs."""
    return [("Backtest", render_backtest), ("Alerts", render_alerts)]


def render_backtest(service: KolrayService) -> None:
    import io
    from datetime import UTC, datetime

    import gradio as gr
    import pandas as pd

    from kolray import backtest as bt
    from kolray.backtest.report import COLUMNS

    def day(t: int) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")

    def choices() -> Any:
        ids = list(reversed(bt.list_reports(service.storage_uri)))
        return gr.update(choices=ids, value=ids[0] if ids else None)

    headers = [label for label, _ in COLUMNS]

    def show(report_id: str | None) -> tuple[str, pd.DataFrame, Any]:
        from PIL import Image

        if not report_id:
            return "No backtest yet: run `kolray backtest`.", pd.DataFrame(columns=headers), None
        try:
            report = bt.load_report(report_id, service.storage_uri)
            image = Image.open(io.BytesIO(bt.load_png(report_id, service.storage_uri)))
        except (FileNotFoundError, ValueError) as error:
            return f"⚠️ {error}", pd.DataFrame(columns=headers), None
        ex = report.execution
        lines = [
            f"Dataset **{report.dataset_version}**, test period {day(report.period_start)} → "
            f"{day(report.period_end)} UTC, **{report.signals}** KOL buys replayed.  ",
            f"Stake {ex.stake_sol:g} SOL, delay {ex.delay_s} s, slippage {ex.slippage_bps:g} bps, fee "
            f"{ex.fee_bps:g} bps + {ex.tx_fee_sol:g} SOL per transaction; copies exit with the KOL"
            + (f", take-profit {ex.take_profit:g}x" if ex.take_profit else "")
            + (f", stop-loss {ex.stop_loss:g}x" if ex.stop_loss else "")
            + (f", max hold {ex.max_hold_s / 3600:g} h" if ex.max_hold_s else "")
            + ".",
        ]
        if report.model is not None:
            label = "No lookahead" if report.model.walk_forward else "Warning"
            lines.append(f"\n**{label}:** {report.model.verdict}")
        for result in report.strategies:
            lines.append(f"\n- **{result.name}**: {result.description}")
        for name, why in report.skipped.items():
            lines.append(f"\n- *{name}: not run — {why}*")
        table = pd.DataFrame(bt.table_rows(report), columns=headers)
        return "".join(lines), table, image

    with gr.Row():
        pick = gr.Dropdown(label="Backtest", elem_id="backtest-pick", scale=3)
        refresh = gr.Button("Refresh", scale=1)
    summary = gr.Markdown(elem_id="backtest-summary")
    # Headers given: a Dataframe without them shows "1 2 3" over an empty table.
    table = gr.Dataframe(
        headers=headers, interactive=False, elem_id="backtest-table", label="Strategies side by side"
    )
    curve = gr.Image(type="pil", label="Equity curves (cumulative PnL, SOL)", elem_id="backtest-equity")
    gr.on(None, choices, inputs=[], outputs=[pick])
    refresh.click(choices, outputs=[pick])
    pick.change(show, [pick], [summary, table, curve])


ALERTS_HTML = """
<div class="kolray-alerts">
  <div class="alerts-head">Live feed · <span id="alerts-status" data-state="connecting">connecting…</span></div>
  <ul id="alerts-feed" class="alerts-feed"></ul>
</div>
"""
ALERTS_CSS = """
.kolray-alerts .alerts-head { font-size: 0.9rem; color: #667085; margin-bottom: 0.4rem; }
.kolray-alerts #alerts-status[data-state="live"] { color: #05603a; font-weight: 600; }
.kolray-alerts .alerts-feed { list-style: none; margin: 0; padding: 0; max-height: 560px; overflow-y: auto; }
.kolray-alerts .alert-row { padding: 0.45rem 0.6rem; border-left: 4px solid #98a2b3; margin-bottom: 0.3rem;
  background: #f9fafb; border-radius: 4px; font-size: 0.92rem; }
.kolray-alerts .alert-p3x { border-left-color: #12b76a; }
.kolray-alerts .alert-dh { border-left-color: #2e90fa; }
.kolray-alerts .alert-consensus { border-left-color: #f79009; }
.kolray-alerts .alert-time { color: #667085; margin-right: 0.5rem; font-variant-numeric: tabular-nums; }
"""
# Runs in the browser when the feed is shown: an EventSource on the API's stream (same origin as
# the UI, whatever prefix the app is served under); text goes in with textContent, never as HTML.
ALERTS_JS = """
const feed = element.querySelector('#alerts-feed');
const status = element.querySelector('#alerts-status');
const base = window.location.pathname.replace(/\\/ui(\\/.*)?$/, '');
if (window.__kolrayAlerts) { window.__kolrayAlerts.close(); }
const source = new EventSource(base + '/v1/alerts/stream?backlog=20');
window.__kolrayAlerts = source;
source.onopen = function () { status.textContent = 'live'; status.dataset.state = 'live'; };
source.onerror = function () { status.textContent = 'reconnecting…'; status.dataset.state = 'reconnecting'; };
source.addEventListener('alert', function (event) {
  const alert = JSON.parse(event.data);
  if (feed.querySelector('[data-alert-id="' + alert.id + '"]')) { return; }
  const row = document.createElement('li');
  row.className = 'alert-row alert-' + alert.rule;
  row.dataset.alertId = String(alert.id);
  const when = document.createElement('span');
  when.className = 'alert-time';
  when.textContent = alert.time.replace('T', ' ').replace('Z', ' UTC');
  const text = document.createElement('span');
  text.className = 'alert-text';
  text.textContent = alert.message;
  const link = document.createElement('a');
  link.href = 'https://solscan.io/tx/' + encodeURIComponent(alert.signature);
  link.target = '_blank';
  link.rel = 'noopener';
  link.textContent = ' tx';
  row.append(when, text, link);
  feed.prepend(row);
  while (feed.children.length > 200) { feed.lastChild.remove(); }
});
"""


ALERT_COLUMNS = ["time (UTC)", "rule", "KOL", "token", "SOL", "P(3x)", "DH", "delivered"]


def render_alerts(service: KolrayService) -> None:
    import gradio as gr
    import pandas as pd

    from kolray.alerts import recent_alerts

    gr.Markdown(
        "Alerts fire when a tracked KOL opens a position and a rule holds: the token model's "
        "**P(3x)** is above its threshold, the KOL's **Diamond Hand** score is high, or several KOLs "
        "bought the token within the window (**consensus**). They stream here as they are raised "
        "(`GET /v1/alerts/stream`) and go to the configured webhooks."
    )
    gr.HTML(
        value="",
        html_template=ALERTS_HTML,
        css_template=ALERTS_CSS,
        js_on_load=ALERTS_JS,
        elem_id="alerts-live",
    )

    async def history() -> pd.DataFrame:
        try:
            alerts = await _db(recent_alerts, _reader(service), 100, None)
        except Exception:
            return pd.DataFrame({"": ["database unavailable"]})
        rows = []
        for alert in alerts:
            states = [d.state for d in alert.deliveries.values()]
            rows.append(
                {
                    "time (UTC)": alert.time.replace("T", " ").rstrip("Z"),
                    "rule": alert.rule,
                    "KOL": alert.kol_name or f"{alert.wallet[:4]}…{alert.wallet[-4:]}",
                    "token": f"{alert.mint[:4]}…{alert.mint[-4:]}",
                    "SOL": round(alert.amount_sol, 2),
                    "P(3x)": None if alert.p_3x is None else f"{100 * alert.p_3x:.1f}%",
                    "DH": None if alert.dh_score is None else round(alert.dh_score, 2),
                    "delivered": f"{states.count('delivered')}/{len(states)}" if states else "–",
                }
            )
        return pd.DataFrame(rows, columns=ALERT_COLUMNS)

    with gr.Accordion("History and delivery state", open=False):
        refresh = gr.Button("Refresh")
        table = gr.Dataframe(headers=ALERT_COLUMNS, interactive=False, elem_id="alerts-table", max_height=480)
    gr.on(None, history, inputs=[], outputs=[table])
    refresh.click(history, outputs=[table])
