"""`ray job submit` of the whole pipeline to a local cluster started with `ray start --head`, with
token authentication as Ray 2.5x requires."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pipeline_job_succeeds(ray_head, tmp_path: Path) -> None:
    state = tmp_path / "state"
    runtime_env = {
        "env_vars": {
            "KOLRAY_DATABASE_URL": f"sqlite:///{state / 'kolray.db'}",
            "KOLRAY_STORAGE_URI": str(state / "store"),
            "KOLRAY_SERVE_PORT": str(free_port()),  # nothing serves: the reload notice finds no one
        }
    }
    # The token model's target, peak_3x, holds for about a fifth of the buys: a small world's purged
    # train/val/test splits all hold some (seed 4 at 12 KOLs × 20 days, deterministic).
    entrypoint = ["python", "jobs/pipeline.py", "--kols", "12", "--days", "20", "--seed", "4",
                  "--trials", "1", "--max-epochs", "3", "--models", "token",
                  "--world-dir", str(tmp_path / "world")]  # fmt: skip
    done = ray_head.submit(entrypoint, runtime_env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "succeeded" in output
    summary = json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{")))
    stages = [s["stage"] for s in summary["stages"]]
    assert stages == ["world", "kols", "track", "analyze", "features", "tune:token"]
    assert summary["models"]["token"]["promoted"] is True
    # What the job wrote is where the job's settings said: a champion in the registry.
    from kolray.learn import registry

    assert registry.champion_version("token", str(state / "store")) == summary["models"]["token"]["version"]
