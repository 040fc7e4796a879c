"""The market stage's read schedule (``Cadence``): fast while a token's price moves, backing off
while it stands still or cannot be read, never slower than ``slow_s``."""

from __future__ import annotations

import pytest

from kolray.market.watch import Cadence


def test_a_moving_token_is_read_every_fast_s_and_a_still_one_backs_off_to_slow_s() -> None:
    cadence = Cadence(fast_s=2.0, slow_s=60.0)
    cadence.watch(["M"], now=0.0)
    assert cadence.due_now(0.0) == ["M"]  # due at once
    assert cadence.read("M", 1.0, now=0.0) is True and cadence.due["M"] == 2.0
    assert cadence.read("M", 1.1, now=2.0) is True and cadence.due["M"] == 4.0
    # Within 0.1% is not a move: 4, 8, 16, 32, then 60 s at most.
    waits = []
    now = 4.0
    for _ in range(6):
        assert cadence.read("M", 1.1 * 1.0005, now=now) is False
        waits.append(cadence.due["M"] - now)
        now = cadence.due["M"]
    assert waits == [4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert cadence.read("M", 2.0, now=now) is True and cadence.due["M"] - now == 2.0


def test_a_token_that_cannot_be_read_is_tried_again_soon_then_ever_less_often() -> None:
    # A curve that just completed: its pool is unknown until a KOL's swap on it is stored, seconds
    # later. The next read comes in 4 s, not a minute; a mint that never reads settles at slow_s.
    cadence = Cadence(fast_s=2.0, slow_s=60.0)
    cadence.watch(["M"], now=0.0)
    cadence.read("M", 1.0, now=0.0)
    now, waits = 2.0, []
    for _ in range(6):
        cadence.read("M", None, now=now)
        waits.append(cadence.due["M"] - now)
        now = cadence.due["M"]
    assert waits == [4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert cadence.read("M", 1.0, now=now) is False  # the price it last had: not a move
    assert cadence.read("M", 3.0, now=now) is True and cadence.due["M"] - now == 2.0


def test_watching_adds_new_tokens_due_at_once_and_forgets_the_rest() -> None:
    cadence = Cadence(fast_s=2.0, slow_s=60.0)
    cadence.watch(["A", "B"], now=10.0)
    cadence.read("A", 1.0, now=10.0)
    cadence.watch(["A", "C"], now=11.0)
    assert set(cadence.due) == {"A", "C"} and cadence.due_now(11.0) == ["C"]
    assert cadence.read("B", 1.0, now=11.0) is False  # no longer watched: nothing scheduled
    assert cadence.next_due() == 11.0


def test_a_cadence_needs_fast_below_slow() -> None:
    with pytest.raises(ValueError, match="0 < fast_s <= slow_s"):
        Cadence(fast_s=5.0, slow_s=2.0)
