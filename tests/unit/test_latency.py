"""Latency samples: recorded per stage, written per writer to ``meta``, summarised over a window
from every writer's samples."""

from __future__ import annotations

import pytest

from kolray.db.migrate import upgrade
from kolray.tracker.latency import LatencyRecorder, latency_summary


def test_samples_of_every_writer_are_summarised_over_the_window(sqlite_url: str) -> None:
    engine = upgrade(sqlite_url)
    now = 1_000_000.0
    tracker, alerts = LatencyRecorder("tracker-0"), LatencyRecorder("alerts")
    for i in range(100):
        tracker.observe("stored", 0.01 * (i + 1), at=now - 10)  # 0.01 .. 1.00 s
    tracker.observe("stored", 50.0, at=now - 3600)  # an hour ago: outside a 5-minute window
    alerts.observe_chain("alert", [now - 2.0, now - 4.0], at=now)
    alerts.observe("webhook", 2.5, at=now)
    assert tracker.flush(engine, force=True, now=now) and alerts.flush(engine, force=True, now=now)
    summary = latency_summary(engine, window_s=300, now=now)
    assert summary["stored"].n == 100
    assert summary["stored"].p50_s == pytest.approx(0.505, abs=1e-3)
    assert summary["stored"].p99_s == pytest.approx(0.99, abs=0.01)
    assert summary["alert"].n == 2 and summary["alert"].p50_s == pytest.approx(3.0)
    assert summary["webhook"].n == 1
    # A second flush replaces the writer's row instead of adding one.
    tracker.observe("stored", 0.2, at=now - 5)
    assert tracker.flush(engine, force=True, now=now)
    assert latency_summary(engine, window_s=300, now=now)["stored"].n == 101
    # Nothing recorded: nothing written, an empty summary.
    assert not LatencyRecorder("idle").flush(engine, force=True)
    with pytest.raises(ValueError):
        tracker.observe("mined", 1.0)


def test_local_summary_and_flush_rate(sqlite_url: str) -> None:
    engine = upgrade(sqlite_url)
    recorder = LatencyRecorder("x", flush_every_s=60)
    recorder.observe("stored", 1.0)
    assert recorder.flush(engine)
    recorder.observe("stored", 3.0)
    assert not recorder.flush(engine), "flushed again within flush_every_s"
    local = recorder.summary()
    assert local["stored"].n == 2 and local["alert"].n == 0 and local["alert"].p50_s is None


def test_status_shows_the_last_minutes(sqlite_url: str) -> None:
    from kolray.status import tracker_status

    engine = upgrade(sqlite_url)
    recorder = LatencyRecorder("tracker-0")
    for seconds in (0.4, 0.6, 0.8):
        recorder.observe("stored", seconds)
    recorder.flush(engine, force=True)
    status = tracker_status(engine)
    assert status.latency["stored"].n == 3 and status.latency["stored"].p50_s == pytest.approx(0.6)
    assert status.latency["webhook"].n == 0
