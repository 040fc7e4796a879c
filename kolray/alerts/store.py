"""Reading stored alerts: one query and one output model for the HTTP routes, the event stream,
the UI and ``kolray alerts list``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.engine import Engine

from kolray.alerts.rules import AlertPayload
from kolray.db.tables import AlertRow
from kolray.secrets import redact_secret_url


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DeliveryOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    url: str = Field(description="Redacted: webhook URLs carry tokens.")
    state: str
    attempts: int
    last_error: str | None = None
    delivered_at: str | None = None


class AlertOut(BaseModel):
    """One stored alert."""

    model_config = ConfigDict(extra="forbid")

    id: int
    rule: str
    title: str
    message: str
    wallet: str
    kol_name: str | None = None
    mint: str
    signature: str
    time: str = Field(description="The buy's time (ISO-8601 UTC).")
    created_at: str = Field(description="When the alert was raised (ISO-8601 UTC).")
    amount_sol: float
    p_3x: float | None = None
    threshold: float | None = None
    model_version: str | None = None
    dh_score: float | None = None
    dh_positions: int | None = None
    consensus_kols: int | None = None
    deliveries: dict[str, DeliveryOut] = Field(default_factory=dict, description="Per webhook target.")


class AlertsOut(BaseModel):
    alerts: list[AlertOut] = Field(description="Newest first.")
    last_id: int | None = Field(description="The newest alert's id (resume the stream after it).")


def alert_out(row: Any) -> AlertOut:
    payload = AlertPayload.model_validate(row.payload)
    return AlertOut(
        id=row.id,
        rule=payload.rule,
        title=payload.title,
        message=row.message or payload.message(),
        wallet=payload.wallet,
        kol_name=payload.kol_name,
        mint=payload.mint,
        signature=payload.signature,
        time=_iso(payload.time) or "",
        created_at=_iso(row.created_at) or "",
        amount_sol=payload.amount_sol,
        p_3x=payload.p_3x,
        threshold=payload.threshold,
        model_version=payload.model_version,
        dh_score=payload.dh_score,
        dh_positions=payload.dh_positions,
        consensus_kols=payload.consensus_kols,
        deliveries={
            target: DeliveryOut(
                kind=entry.get("kind", "generic"),
                # Redacted when stored; again here for rows stored before loopback URLs were.
                url=redact_secret_url(entry["url"]) if entry.get("url") else "",
                state=entry.get("state", "pending"),
                attempts=int(entry.get("attempts", 0)),
                last_error=entry.get("last_error"),
                delivered_at=_iso(entry.get("delivered_at")),
            )
            for target, entry in (row.deliveries or {}).items()
        },
    )


_COLUMNS = (
    AlertRow.id,
    AlertRow.payload,
    AlertRow.message,
    AlertRow.created_at,
    AlertRow.deliveries,
)


def recent_alerts(engine: Engine, limit: int = 50, rule: str | None = None) -> list[AlertOut]:
    """The newest alerts, newest first."""
    query = select(*_COLUMNS).order_by(AlertRow.id.desc()).limit(limit)
    if rule is not None:
        query = query.where(AlertRow.rule == rule)
    with engine.connect() as conn:
        return [alert_out(row) for row in conn.execute(query)]


def alerts_after(engine: Engine, after_id: int, limit: int = 100) -> list[AlertOut]:
    """Alerts with ``id > after_id``, oldest first (what a stream sends next)."""
    query = select(*_COLUMNS).where(AlertRow.id > after_id).order_by(AlertRow.id).limit(limit)
    with engine.connect() as conn:
        return [alert_out(row) for row in conn.execute(query)]


def last_alert_id(engine: Engine) -> int:
    from sqlalchemy import func

    with engine.connect() as conn:
        return int(conn.scalar(select(func.max(AlertRow.id))) or 0)
