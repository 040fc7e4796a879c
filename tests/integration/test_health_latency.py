"""``GET /healthz`` shows the last minutes' latency per stage, from every writer's samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kolray.db import upgrade
from kolray.serve.api import build_app
from kolray.testing.serving_world import local_service
from kolray.tracker.latency import LatencyRecorder


def test_healthz_carries_p50_and_p99_per_stage(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'kolray.db'}"
    store = str(tmp_path / "store")
    engine = upgrade(db_url)
    tracker, alerts = LatencyRecorder("tracker-0"), LatencyRecorder("alerts")
    for seconds in (0.3, 0.5, 0.7):
        tracker.observe("stored", seconds)
    alerts.observe("webhook", 0.9)
    tracker.flush(engine, force=True)
    alerts.flush(engine, force=True)
    service, _ = local_service(db_url, store)
    with TestClient(build_app(service, ui=False)) as client:
        body = client.get("/healthz").json()
    assert body["database"] == "ok"
    assert body["latency"]["stored"] == {"n": 3, "p50_s": 0.5, "p99_s": pytest.approx(0.696, abs=1e-3)}
    assert body["latency"]["webhook"]["n"] == 1 and body["latency"]["alert"] == {
        "n": 0,
        "p50_s": None,
        "p99_s": None,
    }
