"""``kolray status``: tracker freshness, last runs, champion models, Serve health."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from kolray.commands._common import out, settings
from kolray.commands._database import database
from kolray.status import collect_status
from kolray.tracker.latency import StageLatency


def _ago(ts: int | None) -> str:
    if not ts:
        return "never"
    seconds = max(0, int(datetime.now(UTC).timestamp()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _latency_line(latency: dict[str, StageLatency], window_s: float) -> str:
    """Seconds from chain time to each stage over the window, or why there is nothing to show."""
    minutes = f"last {window_s / 60:.0f} min"
    seen = [(stage, lat) for stage, lat in latency.items() if lat.n and lat.p50_s is not None]
    if not seen:
        return f"no swap stored, alert raised or webhook delivered in the {minutes} (kolray track --live records them)"
    parts = [f"{stage} p50 {lat.p50_s:.2f}s p99 {lat.p99_s:.2f}s ({lat.n})" for stage, lat in seen]
    return f"from chain time, {minutes}: " + ", ".join(parts)


def status(json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Tracker lag, last analyze/features/tune runs, champion models, Serve health."""
    from rich.table import Table

    config = settings()
    report = collect_status(database(), config.storage_uri, config.serve_host, config.serve_port)
    if json_:
        out.print_json(report.model_dump_json())
        return
    t = report.tracker
    out.print(
        f"[bold]tracker[/]  {t.wallets_active} active wallets ({t.wallets_never_polled} never polled), "
        f"{t.swaps} swaps, last poll {_ago(t.last_poll_at)}, staleness p50 "
        f"{t.staleness_p50_s if t.staleness_p50_s is not None else '-'}s max "
        f"{t.staleness_max_s if t.staleness_max_s is not None else '-'}s"
    )
    out.print(f"[bold]latency[/]  {_latency_line(t.latency, t.latency_window_s)}")
    runs = Table("stage", "status", "started", "took", "summary", title="last runs")
    for run in report.runs:
        took = f"{run.finished_at - run.started_at}s" if run.finished_at else "running"
        brief = ", ".join(
            f"{k}={v}" for k, v in list(run.summary.items())[:4] if not isinstance(v, dict | list)
        )
        runs.add_row(run.kind, run.status, _ago(run.started_at), took, brief)
    out.print(runs)
    models = Table("model", "champion", "versions", "metric", title="models")
    for m in report.models:
        metric = m.primary_metric or {}
        shown = (
            f"{metric.get('name')}={metric.get('value'):.4f}"
            if isinstance(metric.get("value"), float)
            else "-"
        )
        models.add_row(m.model, m.champion or (m.error or "none"), str(m.versions), shown)
    out.print(models)
    s = report.serve
    out.print(
        f"[bold]serve[/]    {s.url}: {'healthy' if s.healthy else 'down'}  {s.detail if not s.healthy else ''}"
    )
