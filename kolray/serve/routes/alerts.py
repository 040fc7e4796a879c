"""The alerts domain: ``GET /v1/alerts``, ``GET /v1/alerts/stream`` (server-sent events through
Serve's proxy) and the UI's **Alerts** tab (a live feed over that stream, and the history).

Answers come from the same functions as the CLI (:mod:`kolray.alerts.store`). Reads use the
feature pipeline's read-only engine: a stream polling every second never takes a lock the
tracker waits for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from kolray.alerts import AlertOut, AlertsOut, alerts_after, last_alert_id, recent_alerts
from kolray.features.source import read_engine
from kolray.secrets import redact_text
from kolray.serve.routes.deps import Service
from kolray.serve.schemas import ErrorOut
from kolray.serve.service import KolrayService, Unavailable

router = APIRouter()

STREAM_POLL_S = 1.0  # how often the stream looks for new alerts
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "Database or storage unavailable."}
}


def reader(service: KolrayService) -> Engine:
    """The read-only engine on the service's database."""
    return read_engine(service.database_url)


async def read_db(fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking read in a thread; database failures become 503 (as the service's own)."""
    try:
        return await asyncio.to_thread(fn, *args)
    except SQLAlchemyError as error:
        raise Unavailable(f"database unavailable: {redact_text(str(error).splitlines()[0])}") from None


def _sse(alert: AlertOut) -> str:
    return f"id: {alert.id}\nevent: alert\ndata: {alert.model_dump_json()}\n\n"


@router.get("/v1/alerts", response_model=AlertsOut, tags=["alerts"], responses=UNAVAILABLE)
async def alerts(
    service: Service,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    rule: Annotated[Literal["p3x", "dh", "consensus"] | None, Query(description="Only this rule.")] = None,
) -> AlertsOut:
    """The latest alerts (newest first) with their delivery state per webhook (URLs redacted).

    Live: ``GET /v1/alerts/stream`` sends each new alert as a server-sent event (``event:
    alert``, ``id``: the alert id, ``data``: the alert as here); ``?backlog=N`` starts with the
    latest N, ``?since_id=`` after an id, and a reconnecting ``EventSource`` resumes after its
    ``Last-Event-ID``. (It is left out of this schema: OpenAPI cannot describe an endless
    stream, and schema-driven clients would wait on it forever.)"""
    found = await read_db(recent_alerts, reader(service), limit, rule)
    return AlertsOut(alerts=found, last_id=found[0].id if found else None)


@router.get("/v1/alerts/stream", response_class=StreamingResponse, include_in_schema=False)
async def alert_stream(
    request: Request,
    service: Service,
    since_id: Annotated[int | None, Query(ge=0, description="Send alerts after this id first.")] = None,
    backlog: Annotated[int, Query(ge=0, le=200, description="Start with the latest N alerts.")] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Alerts as they are raised, as server-sent events: ``event: alert``, ``id`` the alert id,
    ``data`` the alert as in ``GET /v1/alerts``. A reconnecting ``EventSource`` resumes after
    the last id it saw (``Last-Event-ID``); otherwise the stream starts after ``since_id``, or
    with the latest ``backlog`` alerts, or with what comes next."""
    engine = reader(service)
    if last_event_id is not None and last_event_id.strip().isdigit():
        after = int(last_event_id.strip())
    elif since_id is not None:
        after = since_id
    else:
        after = (
            max(0, await read_db(last_alert_id, engine) - backlog)
            if backlog
            else await read_db(last_alert_id, engine)
        )
    return StreamingResponse(
        _events(request, engine, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(request: Request, engine: Engine, after: int) -> AsyncIterator[str]:
    yield "retry: 3000\n\n"
    beat = time.monotonic()
    while not await request.is_disconnected():
        try:
            found = await asyncio.to_thread(alerts_after, engine, after, 100)
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


# The Alerts tab

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


def alerts_tab(service: KolrayService) -> None:
    """The **Alerts** tab's components and events (called inside its ``gr.Tab``)."""
    # Lazy: gradio takes seconds to import, and the API without the UI (tests, benchmarks,
    # ``ui: false``) never needs it.
    import gradio as gr

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
            alerts = await read_db(recent_alerts, reader(service), 100, None)
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
