"""A local Ray that kolray starts listens on loopback only; Ray's own default listens everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import json, os, re, subprocess, sys, time
    import ray
    from kolray.cluster import init_ray

    options = dict(num_cpus=1, include_dashboard=True, object_store_memory=80_000_000, log_to_driver=False)
    if sys.argv[1] == "kolray":
        context = init_ray(**options)
    else:
        context = ray.init(address="local", **options)
    time.sleep(2)  # agents open their ports a moment after init returns
    session = context.address_info["session_dir"]
    mine = {os.getpid()}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if session.encode() in f.read():
                    mine.add(int(pid))
        except OSError:
            pass
    children = True
    while children:  # workers and agents are children of the raylet; their command lines may not name the session
        children = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent in mine and int(pid) not in mine:
                mine.add(int(pid))
                children = True
    listening = set()
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        pids = {int(p) for p in re.findall(r"pid=(\\d+)", line)}
        if pids & mine:
            listening.add(line.split()[3].rsplit(":", 1)[0].strip("[]"))
    print(json.dumps({"node_ip": context.address_info["node_ip_address"], "listening": sorted(listening)}))
    ray.shutdown()
    """
)


def listening_addresses(how: str) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    env.setdefault("RAY_AUTH_MODE", "token")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, how], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def is_loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@pytest.mark.slow
def test_a_local_ray_started_by_kolray_listens_on_loopback_only() -> None:
    seen = listening_addresses("kolray")
    assert seen["node_ip"] == "127.0.0.1"
    assert seen["listening"], "found no listening sockets: the probe sees nothing"
    assert all(is_loopback(ip) for ip in seen["listening"]), seen


@pytest.mark.slow
def test_the_probe_sees_what_ray_alone_exposes() -> None:
    """The check above can fail: Ray's default local instance listens on every interface."""
    seen = listening_addresses("ray")
    assert not all(is_loopback(ip) for ip in seen["listening"]), seen
