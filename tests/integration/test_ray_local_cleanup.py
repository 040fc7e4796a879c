"""A kolray process killed with SIGKILL leaves no Ray process behind for long; Ray alone does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from kolray.reaper import alive, descendants, process_table, start_time

DRIVER = textwrap.dedent(
    """
    import subprocess, sys, time
    import ray
    from kolray.cluster import init_ray

    options = dict(num_cpus=1, include_dashboard=False, object_store_memory=80_000_000, log_to_driver=False)
    if sys.argv[1] == "kolray":
        init_ray(**options)
    else:
        ray.init(address="local", **options)
    time.sleep(3)  # the agents are up by now
    # A child of the driver that is not Ray's: the reaper must leave it alone.
    bystander = subprocess.Popen(["sleep", "120"], start_new_session=True)
    print("ready", bystander.pid, flush=True)
    time.sleep(600)
    """
)


def is_reaper(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"kolray.reaper" in cmdline.read()
    except OSError:  # gone already
        return False


def survivors_after_sigkill(how: str, wait_s: float) -> tuple[set[tuple[int, int]], bool]:
    """Ray's processes still running ``wait_s`` after the driver's SIGKILL, and whether the driver's
    one non-Ray child (a bystander) is still running then."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    env.setdefault("RAY_AUTH_MODE", "token")
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, how], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        assert driver.stdout is not None
        word, bystander_pid = driver.stdout.readline().split()
        assert word == "ready"
        bystander = int(bystander_pid)
        table = process_table()
        started = {
            (pid, start)
            for pid, start in descendants(driver.pid, table)
            if not is_reaper(pid) and pid != bystander
        }
        assert len(started) >= 4, "expected Ray's GCS, raylet and agents under the driver"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + wait_s
    while (left := alive(started)) and time.monotonic() < deadline:
        time.sleep(0.25)
    bystander_alive = start_time(bystander) is not None
    # Whatever the outcome, leave nothing running for the rest of the suite.
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    if bystander_alive:
        os.kill(bystander, signal.SIGKILL)
    return left, bystander_alive


@pytest.mark.slow
def test_nothing_of_a_sigkilled_kolray_ray_outlives_it_by_more_than_seconds() -> None:
    left, bystander_alive = survivors_after_sigkill("kolray", wait_s=12)
    assert left == set()
    assert bystander_alive, "the reaper ended a process of the driver's that is not Ray's"


@pytest.mark.slow
def test_ray_alone_leaves_its_agents_running_after_a_sigkill() -> None:
    """What the reaper is for: without it Ray's agents outlive the driver by tens of seconds."""
    left, _ = survivors_after_sigkill("ray", wait_s=12)
    assert left
