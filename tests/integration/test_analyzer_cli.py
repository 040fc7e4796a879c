"""``kolray analyze`` and ``jobs/analyze.py`` against the configured (SQLite) database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from kolray.analyzer import parse_as_of
from kolray.cli import main
from kolray.config import get_settings
from kolray.db.migrate import upgrade
from kolray.db.tables import KolStatRow, PositionRow, SwapRow

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000
W = "Wallet1111111111111111111111111111111111111"


def seed_swaps() -> None:
    engine = upgrade(get_settings().database_url)
    rows = [
        dict(signature="a", slot=1, block_time=T0, wallet=W, mint="M", side="buy", token_amount=10, token_decimals=0, sol_amount=10**9, dex="raydium"),
        dict(signature="b", slot=2, block_time=T0 + 60, wallet=W, mint="M", side="sell", token_amount=10, token_decimals=0, sol_amount=3 * 10**9, dex="raydium"),
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(SwapRow), rows)


def test_analyze_command_runs_incrementally_and_in_full(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_swaps()
    assert main(["analyze"]) == 0
    line = capsys.readouterr().out.strip()
    assert (
        line.startswith("analyze full: 1 wallets, 2 swaps → 1 positions (0 open)")
        and "2023-11-14 22:14:21Z" in line
    )
    assert main(["analyze", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["mode"], summary["wallets"], summary["swaps_read"]) == ("incremental", 0, 0)
    assert main(["analyze", "--full", "--as-of", "2023-11-15T00:00:00Z", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["mode"], summary["as_of"]) == ("full", parse_as_of("2023-11-15T00:00:00Z"))
    with upgrade(get_settings().database_url).connect() as conn:
        assert conn.scalar(select(PositionRow.multiple)) == 3.0
        assert conn.scalar(select(func.count()).select_from(KolStatRow)) == 3


def test_analyze_command_refuses_a_bad_time(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--as-of", "yesterday"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --as-of: 'yesterday' is not unix seconds, an ISO-8601 time or 'now'"


def test_parse_as_of() -> None:
    assert parse_as_of("1700000000") == 1_700_000_000
    assert parse_as_of("2023-11-14T22:13:20Z") == 1_700_000_000
    assert parse_as_of("2023-11-14 22:13:20") == 1_700_000_000  # no zone: UTC
    assert parse_as_of("2023-11-15T00:13:20+02:00") == 1_700_000_000
    assert abs(parse_as_of("now") - __import__("time").time()) < 5


def test_job_entrypoint_prints_one_json_line(data_dir: Path) -> None:
    seed_swaps()
    env = {**os.environ, "KOLRAY_DATA_DIR": str(data_dir), "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "jobs/analyze.py", "--as-of", str(T0 + 3600)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["mode"], summary["positions_written"], summary["as_of"]) == ("full", 1, T0 + 3600)
    bad = subprocess.run(
        [sys.executable, "jobs/analyze.py"],
        cwd=ROOT, env={**env, "KOLRAY_DATABASE_URL": "postgresql+psycopg://nobody:secret@127.0.0.1:1/x"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "secret" not in bad.stderr


@pytest.mark.slow
def test_the_job_runs_under_ray_job_submit(data_dir: Path, ray_head) -> None:
    """``ray job submit --working-dir . -- python jobs/analyze.py`` on a head of its own, with the
    database named in the job's runtime environment."""
    seed_swaps()
    done = ray_head.submit(
        ["python", "jobs/analyze.py", "--as-of", str(T0 + 3600)],
        {"env_vars": {"KOLRAY_DATABASE_URL": get_settings().database_url}},
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    summary = json.loads(next(ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")))
    assert (summary["mode"], summary["positions_written"], summary["as_of"]) == ("full", 1, T0 + 3600)
