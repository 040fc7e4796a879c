"""kolray's own latency, per swap: chain time → stored → alert raised → webhook delivered.

Chain time is the transaction's ``blockTime`` (whole seconds, floored by the node, so a latency
read from it is up to a second high), or a finer time when the caller has one (the twin knows the
exact start of each slot). Each process that sees a stage records it in a
:class:`LatencyRecorder`:

- as a Ray histogram (``ray_kolray_latency_seconds{stage=...}`` in the Ray dashboard and its
  Prometheus endpoint), when the process runs inside Ray;
- as recent samples in the database's ``meta`` table (one key per stage and writer, the last
  ``keep_s`` seconds), so that ``kolray status`` and Serve's ``/healthz`` can show the last minutes'
  p50 and p99 from anywhere (:func:`latency_summary`).

Stages: ``stored`` (the tracker), ``alert`` and ``webhook`` (the alert runner).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from kolray.db.engine import session_scope
from kolray.db.tables import AlertRow, Meta, now_s

log = logging.getLogger(__name__)

STAGES = ("stored", "alert", "webhook")
META_PREFIX = "latency:"
BOUNDARIES = [0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 900]


class StageLatency(BaseModel):
    """One stage over a recent window: how many swaps, and seconds from chain time."""

    n: int
    p50_s: float | None = None
    p99_s: float | None = None


class LatencyRecorder:
    """Samples of one writer (``writer``: unique per process that records a stage), kept for
    ``keep_s`` and written to ``meta`` by :meth:`flush` (at most every ``flush_every_s``)."""

    def __init__(
        self, writer: str, keep_s: float = 900.0, max_samples: int = 5000, flush_every_s: float = 5.0
    ) -> None:
        self.writer = writer
        self.keep_s = keep_s
        self.flush_every_s = flush_every_s
        self.samples: dict[str, deque[tuple[float, float]]] = {
            stage: deque(maxlen=max_samples) for stage in STAGES
        }
        self._lock = threading.Lock()
        self._last_flush = 0.0
        self._dirty = False
        self._histogram: Any = None
        self._histogram_checked = False

    def observe(self, stage: str, seconds: float, at: float | None = None) -> None:
        if stage not in self.samples:
            raise ValueError(f"unknown latency stage {stage!r} (one of {', '.join(STAGES)})")
        seconds = max(0.0, float(seconds))
        with self._lock:
            self.samples[stage].append((time.time() if at is None else at, seconds))
            self._dirty = True
        if not self._histogram_checked:  # Ray may start after the recorder is made
            self._histogram, self._histogram_checked = _ray_histogram(), True
        if self._histogram is not None:
            self._histogram.observe(seconds, tags={"stage": stage})

    def observe_chain(self, stage: str, chain_times: list[float], at: float | None = None) -> None:
        """One sample per swap whose chain time is in ``chain_times``, the stage reached at ``at``."""
        now = time.time() if at is None else at
        for chain_time in chain_times:
            self.observe(stage, now - chain_time, now)

    def summary(self, window_s: float = 300.0, now: float | None = None) -> dict[str, StageLatency]:
        now = time.time() if now is None else now
        with self._lock:
            return {
                stage: _percentiles([s for at, s in samples if at >= now - window_s])
                for stage, samples in self.samples.items()
            }

    def flush(self, engine: Engine, force: bool = False, now: float | None = None) -> bool:
        """Write this writer's recent samples to ``meta`` (a database error is logged, not raised:
        the samples are informative). Returns whether it wrote."""
        now = time.time() if now is None else now
        if not self._dirty or (not force and now - self._last_flush < self.flush_every_s):
            return False
        with self._lock:
            horizon = now - self.keep_s
            rows = {
                stage: [[round(at, 3), round(s, 3)] for at, s in samples if at >= horizon]
                for stage, samples in self.samples.items()
                if samples
            }
            self._dirty = False
        self._last_flush = now
        try:
            with session_scope(engine) as session:
                for stage, values in rows.items():
                    key = f"{META_PREFIX}{stage}:{self.writer}"[:64]
                    value = {"samples": values, "updated_at": now}
                    if session.scalar(select(Meta.key).where(Meta.key == key)) is None:
                        session.execute(insert(Meta).values(key=key, value=value, updated_at=now_s()))
                    else:
                        session.execute(
                            update(Meta).where(Meta.key == key).values(value=value, updated_at=now_s())
                        )
            return True
        except Exception as error:
            log.warning("latency samples not written", extra={"error": f"{type(error).__name__}: {error}"})
            return False


def latency_summary(
    engine: Engine, window_s: float = 300.0, now: float | None = None
) -> dict[str, StageLatency]:
    """p50 and p99 seconds from chain time to each stage over the last ``window_s``, from every
    writer's samples in ``meta``."""
    now = time.time() if now is None else now
    values: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with session_scope(engine) as session:
        for key, value in session.execute(
            select(Meta.key, Meta.value).where(Meta.key.like(f"{META_PREFIX}%"))
        ):
            stage = key[len(META_PREFIX) :].split(":", 1)[0]
            if stage not in values or not isinstance(value, dict):
                continue
            values[stage].extend(s for at, s in value.get("samples", []) if at >= now - window_s)
    return {stage: _percentiles(samples) for stage, samples in values.items()}


def _percentiles(samples: list[float]) -> StageLatency:
    if not samples:
        return StageLatency(n=0)
    array = np.asarray(samples, dtype=float)
    return StageLatency(
        n=len(samples),
        p50_s=round(float(np.percentile(array, 50)), 3),
        p99_s=round(float(np.percentile(array, 99)), 3),
    )


def _ray_histogram() -> Any:
    """The dashboard's histogram when this process is part of a Ray cluster, else None."""
    try:
        import ray
        from ray.util.metrics import Histogram
    except ImportError:  # pragma: no cover - ray is a dependency
        return None
    if not ray.is_initialized():
        return None
    histogram = Histogram(
        "kolray_latency_seconds",
        "Per swap: seconds from chain time (blockTime) to the stage.",
        boundaries=BOUNDARIES,
        tag_keys=("stage",),
    )
    return histogram


class AlertLatency:
    """The alert runner's stages, read back from the ``alerts`` table: raised (when the evaluation
    that stored the alert returned) and webhook delivered (each target's ``delivered_at``, first
    one per alert), both from the buy's block time."""

    def __init__(self, recorder: LatencyRecorder) -> None:
        self.recorder = recorder
        self.delivered: set[int] = set()

    def raised(self, engine: Engine, alert_ids: list[int], at: float | None = None) -> None:
        if not alert_ids:
            return
        at = time.time() if at is None else at
        with session_scope(engine) as session:
            payloads = session.scalars(select(AlertRow.payload).where(AlertRow.id.in_(alert_ids))).all()
        self.recorder.observe_chain("alert", [float(p["time"]) for p in payloads if p.get("time")], at)

    def deliveries(self, engine: Engine, now: float | None = None) -> None:
        """Record the first delivery of every recent alert not recorded yet."""
        now = time.time() if now is None else now
        since = int(now - self.recorder.keep_s)
        with session_scope(engine) as session:
            rows = session.execute(
                select(AlertRow.id, AlertRow.payload, AlertRow.deliveries).where(AlertRow.created_at >= since)
            ).all()
        for alert_id, payload, deliveries in rows:
            if alert_id in self.delivered or not payload.get("time"):
                continue
            times = [
                float(d["delivered_at"])
                for d in (deliveries or {}).values()
                if isinstance(d, dict) and d.get("state") == "delivered" and d.get("delivered_at")
            ]
            if times:
                self.delivered.add(alert_id)
                first = min(times)
                self.recorder.observe("webhook", first - float(payload["time"]), first)
