"""Live tracking keeps its market stage running: the watchdog restarts it while tracking lasts."""

from __future__ import annotations

import threading
import time

import pytest

from kolray.tracker.supervisor import market_watchdog


class StandIn:
    """A tracker whose market stage ends (crashes) after every start, and counts the starts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.starts = 0
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def start_market(self) -> None:
        with self.lock:
            self.starts += 1
            if self.starts <= self.fail_first:
                raise RuntimeError("actor unreachable")


def test_the_market_stage_is_started_again_while_tracking_lasts_and_never_after() -> None:
    tracker = StandIn()
    with market_watchdog(tracker, every_s=0.02):
        time.sleep(0.3)
    after = tracker.starts
    assert after >= 3  # one check every 0.02 s for 0.3 s: well over three, however loaded
    time.sleep(0.1)
    assert tracker.starts == after  # the watchdog is joined on exit: no start races stop_market


def test_a_failed_restart_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    tracker = StandIn(fail_first=2)
    with market_watchdog(tracker, every_s=0.02):
        time.sleep(0.3)
    assert tracker.starts >= 3
    assert "could not restart the market stage" in caplog.text
