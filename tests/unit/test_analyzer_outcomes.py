"""A position's market outcome: peak after entry, time to it, drawdown, missed gain, copy multiple.

Prices are hand-made so every figure can be checked by eye (docs: kolray/analyzer/outcomes.py).
"""

from __future__ import annotations

import math

import pytest

from kolray.analyzer.outcomes import COPY_DELAY_S, PEAK_HORIZON_S, Outcome, PricePaths, position_outcome

T = 1_700_000_000
H = PEAK_HORIZON_S


def paths(points: list[tuple[int, float]], mint: str = "M") -> PricePaths:
    return PricePaths.build([mint] * len(points), [t for t, _ in points], [p for _, p in points])


def outcome(
    prices: PricePaths,
    *,
    entry: float | None = 1.0,
    exit_time: int | None = None,
    sold_tokens: float = 0.0,
    proceeds: float = 0.0,
) -> Outcome:
    return position_outcome(
        prices,
        mint="M",
        entry_time=T,
        entry_price_sol=entry,
        exit_time=exit_time,
        tokens_sold=round(sold_tokens * 10**6),
        token_decimals=6,
        proceeds_sol=proceeds,
    )


def test_the_peak_is_the_highest_price_after_the_entry_within_seven_days() -> None:
    # The entry's own second and anything after entry + 7 d do not count; entry + 7 d itself does.
    prices = paths([(T, 9.0), (T + 60, 2.0), (T + 600, 3.5), (T + H, 4.0), (T + H + 1, 50.0)])
    got = outcome(prices)
    assert got.peak_multiple == 4.0 and got.peak_time == T + H


def test_time_to_peak_is_the_first_time_the_high_traded() -> None:
    got = outcome(paths([(T + 10, 3.0), (T + 20, 1.0), (T + 30, 3.0)]))
    assert (got.peak_multiple, got.peak_time) == (3.0, T + 10)


def test_a_token_that_only_fell_after_the_buy_peaked_at_the_entry() -> None:
    got = outcome(paths([(T + 10, 0.9), (T + 20, 0.5)]))
    assert (got.peak_multiple, got.peak_time) == (1.0, T)
    assert got.drawdown == pytest.approx(0.5)


def test_drawdown_is_the_largest_fall_from_a_running_high_starting_at_the_entry() -> None:
    # 1 → 0.8 is a 20% fall from the entry; 4 → 1 later is 75% from the high.
    got = outcome(paths([(T + 1, 0.8), (T + 2, 4.0), (T + 3, 2.0), (T + 4, 1.0), (T + 5, 3.0)]))
    assert got.drawdown == pytest.approx(0.75)
    assert outcome(paths([(T + 1, 1.5), (T + 2, 2.0)])).drawdown == 0.0


def test_missed_gain_is_what_the_sold_tokens_would_have_fetched_at_the_later_peak() -> None:
    # Sold 100 tokens for 150 SOL at T + 100; the token later traded at 4 SOL: 400 − 150 missed.
    prices = paths([(T + 50, 1.5), (T + 100, 1.5), (T + 5000, 4.0), (T + H + 10, 100.0)])
    got = outcome(prices, exit_time=T + 100, sold_tokens=100, proceeds=150.0)
    assert got.missed_gain_sol == pytest.approx(250.0)
    # Nothing traded above what the KOL got after the exit: nothing missed.
    flat = outcome(paths([(T + 200, 1.0)]), exit_time=T + 100, sold_tokens=100, proceeds=150.0)
    assert flat.missed_gain_sol == 0.0
    assert outcome(prices).missed_gain_sol is None  # still open


def test_a_follower_pays_the_price_d_seconds_after_the_buy_and_exits_with_the_kol() -> None:
    d = COPY_DELAY_S
    # The crowd lifts the price to 1.6 right after the KOL's buy (a farmer's pattern); the KOL
    # sells into it at T + 30, leaving the pool at 1.2; the follower sells then too. What happens
    # after the exit is no part of it (it would not be known at the close).
    prices = paths([(T, 1.0), (T + 2, 1.6), (T + d + 1, 5.0), (T + 25, 2.0), (T + 30, 1.2), (T + 31, 0.1)])
    got = outcome(prices, exit_time=T + 30, sold_tokens=100, proceeds=180.0)
    assert got.copy_multiple == pytest.approx(1.2 / 1.6)
    # Where kolray saw no other price, the follower trades at the KOL's own prices.
    only_kol = outcome(paths([(T, 1.0), (T + 30, 2.0)]), exit_time=T + 30, sold_tokens=1, proceeds=2.0)
    assert only_kol.copy_multiple == 2.0


def test_without_an_entry_price_or_any_later_price_there_is_no_outcome() -> None:
    assert outcome(paths([(T + 5, 2.0)]), entry=None) == Outcome()
    assert outcome(paths([(T + 5, 2.0)]), entry=math.nan) == Outcome()
    nothing_after = outcome(paths([(T - 5, 2.0)]))
    assert nothing_after.peak_multiple is None and nothing_after.drawdown is None


def test_prices_of_one_second_are_ordered_as_the_chain_ordered_them() -> None:
    # Two swaps in the same second: the later slot is the price at that time, whatever the order
    # the rows were read in.
    a = PricePaths.build(["M", "M"], [T, T], [2.0, 1.0], slots=[11, 10])
    b = PricePaths.build(["M", "M"], [T, T], [1.0, 2.0], slots=[10, 11])
    assert a.price_at("M", T) == b.price_at("M", T) == 2.0
    assert a.price_at("M", T - 1) is None and a.window_peak("other", 0, T) is None
