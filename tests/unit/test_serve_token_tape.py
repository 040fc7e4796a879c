"""The token route's pure parts: how a long tape is downsampled and how failed reads become gaps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kolray.serve.queries import TapeGap, downsample, split_tape


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.integers(0, 600), min_size=1, max_size=3000),
    seed=st.integers(0, 2**32 - 1),
    max_points=st.integers(10, 500),
)
def test_downsampling_keeps_the_extremes_the_ends_and_the_cap(
    steps: list[int], seed: int, max_points: int
) -> None:
    times = np.cumsum(np.array(steps, dtype=np.int64)) + 1_717_000_000
    prices = np.exp(np.random.default_rng(seed).normal(0, 1, len(times))) * 1e-6
    kept = downsample(times, prices, max_points)
    assert len(kept) <= max_points
    assert list(kept) == sorted(set(kept.tolist()))  # in time order, each point once
    assert kept[0] == 0 and kept[-1] == len(times) - 1  # the first and the newest price
    assert prices[kept].max() == prices.max() and prices[kept].min() == prices.min()
    if len(times) <= max_points:
        assert len(kept) == len(times)  # nothing dropped below the cap


def row(time: int, price: float | None, note: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(time=time, price_sol=price, note=note)


def test_consecutive_failed_reads_for_one_reason_are_one_gap() -> None:
    rows = [
        row(0, 1.0),
        row(10, None, "no curve"),
        row(20, None, "no curve"),
        row(30, None, "vaults empty"),  # another reason: another gap
        row(40, 2.0),
        row(50, None, "no curve"),  # after a price: a new gap, same reason
        row(60, float("nan")),  # a non-finite price is no price either
    ]
    points, gaps = split_tape(rows)
    assert [p.time for p in points] == [0, 40]
    assert gaps == [
        TapeGap(10, 20, 2, "no curve"),
        TapeGap(30, 30, 1, "vaults empty"),
        TapeGap(50, 50, 1, "no curve"),
        TapeGap(60, 60, 1, "no price read"),
    ]
