"""`kolray status` reads freshness, runs, models and Serve health without touching anything."""

import json
import socket
from pathlib import Path

import pytest

from kolray.cli import main
from kolray.db.engine import session_scope
from kolray.db.migrate import upgrade
from kolray.db.tables import Cursor, Kol, Run
from kolray.status import collect_status, tracker_status

A = "AG27WXxPym3K73JFKtpRxwbMfnRnuPu5bn6juzcvq5rp"
B = "7rhxnLV8C77o6d8oz26AgK8x8m5ePsdeRawjqvojbjnQ"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_staleness_is_measured_from_the_last_poll_of_each_active_wallet(db) -> None:
    now = 1_700_000_000
    with session_scope(db) as session:
        session.add_all([Kol(wallet=A), Kol(wallet=B)])
        session.add(Cursor(wallet=A, last_polled_at=now - 30))
    status = tracker_status(db, now=now)
    assert (status.wallets_active, status.wallets_never_polled) == (2, 1)
    assert status.staleness_max_s == 30 and status.last_poll_at == now - 30


def test_status_names_the_last_run_of_each_stage_and_a_down_serve(data_dir: Path) -> None:
    engine = upgrade(f"sqlite:///{data_dir / 'k.db'}")
    with session_scope(engine) as session:
        session.add(Run(kind="analyze", started_at=10, finished_at=12, status="ok", summary={"positions": 5}))
        session.add(Run(kind="analyze", started_at=20, finished_at=25, status="ok", summary={"positions": 7}))
    report = collect_status(engine, str(data_dir / "store"), "127.0.0.1", free_port())
    [analyze] = [r for r in report.runs if r.kind == "analyze"]
    assert analyze.summary == {"positions": 7}
    assert [m.champion for m in report.models] == [None, None]
    assert not report.serve.healthy


def test_status_command_prints_json(data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("KOLRAY_SERVE_PORT", str(free_port()))
    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tracker"]["wallets_active"] == 0 and report["serve"]["healthy"] is False


def test_status_says_the_recent_latency_from_chain_time(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from kolray.config import get_settings
    from kolray.tracker.latency import LatencyRecorder

    monkeypatch.setenv("KOLRAY_SERVE_PORT", str(free_port()))
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["status"]) == 0
    assert (
        "latency  no swap stored, alert raised or webhook delivered in the last 5 min"
        in capsys.readouterr().out
    )

    recorder = LatencyRecorder("tracker-0")
    for seconds in (0.4, 0.6, 0.8):
        recorder.observe("stored", seconds)
    recorder.observe("webhook", 1.5)
    recorder.flush(upgrade(get_settings().database_url), force=True)
    assert main(["status"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("latency"))
    assert (
        line
        == "latency  from chain time, last 5 min: stored p50 0.60s p99 0.80s (3), webhook p50 1.50s p99 1.50s (1)"
    )
