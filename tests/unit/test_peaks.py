"""peak_3x from stored swap prices: the window, the entry price, point in time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kolray.features.peaks import MintPrices, peak_labels, peak_multiples, peak_summary, with_peak_columns
from kolray.features.rows import RESOLVE

H = 7 * 86_400


def prices() -> MintPrices:
    # mint A: the entry at t=100 (price 1.0), then 2.0, 3.5 inside the window and 10 after it.
    # mint B: the entry at t=50 (price 4.0), then only lower prices.
    return MintPrices.build(
        ["A", "A", "A", "A", "B", "B"],
        [100, 200, 100 + H, 100 + H + 1, 50, 60],
        [1.0, 2.0, 3.5, 10.0, 4.0, 1.0],
        ["a0", "a1", "a2", "a3", "b0", "b1"],
        ["k1", "k2", "k3", "k4", "k1", "k2"],
    )


def rows(**extra: list) -> pd.DataFrame:
    base = {
        "wallet": ["k1", "k1", "k9"],
        "mint": ["A", "B", "A"],
        "entry_time": [100, 50, 100],
        "entry_signature": ["a0", "b0", "unknown"],
        RESOLVE: [150, 60, 100 + H],
    }
    return pd.DataFrame({**base, **extra})


def test_peak_is_the_highest_price_in_the_window_over_the_entry_price() -> None:
    multiple = peak_multiples(rows(), prices(), H)
    assert multiple[0] == 3.5  # the price at exactly entry + H counts, the one a second later does not
    assert multiple[1] == 0.25
    assert np.isnan(multiple[2])  # no price for this entry: no label
    assert peak_labels(rows(), prices(), H).tolist() == [1, 0, 0]


def test_a_shorter_horizon_misses_the_late_peak() -> None:
    assert peak_labels(rows(), prices(), H - 1).tolist() == [0, 0, 0]


def test_the_entry_itself_and_earlier_swaps_do_not_count() -> None:
    # Only the entry's own price at the entry second: no later trade, multiple 0.
    only = MintPrices.build(["A", "A"], [90, 100], [50.0, 1.0], ["x", "a0"], ["k2", "k1"])
    assert peak_multiples(rows().iloc[:1], only, H).tolist() == [0.0]


def test_rows_keep_their_resolution_time_and_get_nan_twin_columns_without_a_world() -> None:
    out = with_peak_columns(rows(), prices(), H)
    assert out["peak_3x"].tolist() == [1, 0, 0] and out["peak_3x"].dtype == np.int8
    assert out[RESOLVE].tolist() == rows()[RESOLVE].tolist()
    assert out["twin_peak_3x"].isna().all() and out["oracle_p_peak3x"].isna().all()


def test_summary_counts_misses_and_extras() -> None:
    summary = peak_summary(np.array([1, 0, 0, 1]), np.array([1.0, 1.0, np.nan, 0.0]), unpriced=2)
    assert summary == {
        "rows": 3,
        "agreement": 1 / 3,
        "positives_chain": 2,
        "positives_twin": 2,
        "missed": 1,
        "extra": 1,
        "unpriced_entries": 2,
    }
