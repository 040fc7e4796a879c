"""What is going on: tracker freshness, the last run of every stage, champion models, Serve health.

Plain reads (database, registry, one HTTP GET): safe to run any time, from any machine that has the
settings, while everything else keeps running.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from kolray.db.engine import session_scope
from kolray.db.tables import Cursor, Kol, Run, SwapRow
from kolray.learn import registry
from kolray.tracker.latency import StageLatency, latency_summary

LATENCY_WINDOW_S = 300.0
STAGES = ("track", "analyze", "features", "tune", "continuous_train", "pipeline")


class TrackerStatus(BaseModel):
    wallets_active: int
    wallets_never_polled: int
    swaps: int
    last_poll_at: int | None
    # Seconds since each active wallet was last brought up to date: what "freshness" means to a user.
    staleness_p50_s: float | None
    staleness_max_s: float | None
    # Seconds from chain time (blockTime) to each stage — stored, alert raised, webhook delivered —
    # over the last ``latency_window_s`` (kolray.tracker.latency; samples from every process).
    latency_window_s: float = LATENCY_WINDOW_S
    latency: dict[str, StageLatency] = {}


class RunStatus(BaseModel):
    kind: str
    status: str
    started_at: int
    finished_at: int | None
    summary: dict[str, Any]


class ModelStatus(BaseModel):
    model: str
    champion: str | None
    versions: int
    primary_metric: dict[str, Any] | None = None
    error: str | None = None


class ServeStatus(BaseModel):
    url: str
    healthy: bool
    detail: dict[str, Any] | str


class Status(BaseModel):
    tracker: TrackerStatus
    runs: list[RunStatus]
    models: list[ModelStatus]
    serve: ServeStatus


def tracker_status(engine: Engine, now: float | None = None) -> TrackerStatus:
    now = now or time.time()
    with session_scope(engine) as session:
        active = list(session.scalars(select(Kol.wallet).where(Kol.active.is_(True))))
        polled = (
            dict(
                session.execute(
                    select(Cursor.wallet, Cursor.last_polled_at).where(Cursor.wallet.in_(active))
                ).all()
            )
            if active
            else {}
        )
        swaps = session.scalar(select(func.count()).select_from(SwapRow)) or 0
    ages = sorted(now - at for at in polled.values() if at)
    try:
        latency = latency_summary(engine, LATENCY_WINDOW_S, now)
    except Exception:  # a status shows what it can read
        latency = {}
    return TrackerStatus(
        wallets_active=len(active),
        wallets_never_polled=sum(1 for w in active if not polled.get(w)),
        swaps=swaps,
        last_poll_at=max((at for at in polled.values() if at), default=None),
        staleness_p50_s=round(ages[len(ages) // 2], 1) if ages else None,
        staleness_max_s=round(ages[-1], 1) if ages else None,
        latency=latency,
    )


def last_runs(engine: Engine) -> list[RunStatus]:
    out: list[RunStatus] = []
    with session_scope(engine) as session:
        for kind in STAGES:
            run = session.scalar(
                select(Run).where(Run.kind == kind).order_by(Run.started_at.desc(), Run.id.desc())
            )
            if run is not None:
                out.append(
                    RunStatus(
                        kind=run.kind,
                        status=run.status,
                        started_at=run.started_at,
                        finished_at=run.finished_at,
                        summary=run.summary or {},
                    )
                )
    return out


def model_status(storage_uri: str | None = None) -> list[ModelStatus]:

    out: list[ModelStatus] = []
    for model in ("token", "kol"):
        try:
            index = registry.read_index(model, storage_uri)
        except Exception as error:  # unreadable storage is a status to show, not a crash
            out.append(ModelStatus(model=model, champion=None, versions=0, error=str(error).splitlines()[0]))
            continue
        champion = next((v for v in index.versions if v.version == index.champion), None)
        out.append(
            ModelStatus(
                model=model,
                champion=index.champion,
                versions=len(index.versions),
                primary_metric=champion.primary_metric if champion else None,
            )
        )
    return out


def serve_status(host: str, port: int, timeout_s: float = 2.0) -> ServeStatus:
    import httpx

    url = f"http://{host}:{port}"
    try:
        response = httpx.get(f"{url}/healthz", timeout=timeout_s)
        detail: dict[str, Any] | str
        try:
            detail = response.json()
        except ValueError:
            detail = response.text[:200]
        return ServeStatus(url=url, healthy=response.status_code == 200, detail=detail)
    except httpx.HTTPError as error:
        return ServeStatus(url=url, healthy=False, detail=f"not reachable ({type(error).__name__})")


def collect_status(engine: Engine, storage_uri: str, serve_host: str, serve_port: int) -> Status:
    return Status(
        tracker=tracker_status(engine),
        runs=last_runs(engine),
        models=model_status(storage_uri),
        serve=serve_status(serve_host, serve_port),
    )
