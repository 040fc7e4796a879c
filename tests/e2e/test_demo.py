"""`kolray demo --exit-after` with the defaults `make demo` uses: the one-command demo runs every
stage, trains and promotes both models, serves them, and the smoke check of the served API passes
(about 4 minutes on 2 cores)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_exit_after_serves_both_champions(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KOLRAY_DATA_DIR": str(tmp_path / "data"),
        "RAY_AUTH_MODE": "token",
        "COLUMNS": "200",  # rich wraps narrower tables; the assertions read whole lines
    }
    env.pop("RAY_ADDRESS", None)  # a demo starts its own local Ray, never the test session's
    port = free_port()
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "kolray"),
            "demo",
            "--exit-after",
            "--dir",
            str(tmp_path / "demo"),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    for stage in ("world", "kols", "track", "analyze", "features", "tune:token", "tune:kol"):
        assert f"{stage}: done in" in output, f"stage {stage} did not finish:\n{output[-3000:]}"
    assert "kolray is serving" in output
    for check in ("healthz", "leaderboard", "kol detail", "predict", "models"):
        line = next((ln for ln in output.splitlines() if f"smoke {check}" in ln), "")
        assert line and "ok" in line.split(check, 1)[1], f"smoke check {check}: {line!r}\n{output[-3000:]}"

    # Both models were promoted into the demo's own registry, never the user's.
    from kolray import registry

    store = str(tmp_path / "demo" / "state" / "store")
    assert registry.champion_version("token", store) is not None
    assert registry.champion_version("kol", store) is not None
    assert not (tmp_path / "data" / "store").exists()
