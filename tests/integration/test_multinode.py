"""Several nodes: the tracker keeps exactly-once when a worker node disappears mid-sync, and Tune
spreads its trials over the nodes (ray.cluster_utils.Cluster, in a process of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kolray.sim.world import generate_world

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_tracker_and_tune_across_nodes(tmp_path: Path) -> None:
    generate_world(tmp_path / "world", kols=9, days=3, seed=4)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
        "KOLRAY_DATA_DIR": str(tmp_path / "data"),  # the run log, never the user's database
    }
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "clusters" / "multinode.py"),
            str(tmp_path / "world"),
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["nodes"] == 3
    assert seen["poller_nodes"] >= 2, "pollers should spread over the nodes"
    assert seen["removed_mid_sync"], "the node must go while the sync runs"
    assert (seen["missing"], seen["extra"], seen["duplicates"]) == (0, 0, 0), seen
    assert seen["first_restarts"] >= 1, "a poller lived on the removed node and was restarted elsewhere"
    assert seen["second_wallet_errors"] == 0
    assert seen["tune_trials"] == 6 and seen["tune_errors"] == 0
    assert seen["tune_families"] == ["gbt", "linear", "net"], "each family gets its share of the trials"
    assert seen["trial_nodes"] >= 2, "Tune trials should run on more than one node"
