"""KOL statistics: the definitions, the windows, point in time, and the fast index."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kolray.analyzer import (
    FARMING_MIN_COPIES,
    FARMING_RATE,
    FLAG_NON_SOL_LEG,
    FLAG_UNTRACKED_SELL,
    RECENT_N,
    STAT_FIELDS,
    WINDOWS,
    KolStats,
    KolStatsIndex,
    Position,
    build_positions,
    dh_term,
    kol_stats,
    kol_stats_windows,
    wilson_lower_bound,
)
from kolray.chain.types import Swap

W = "Wallet1111111111111111111111111111111111111"
SOL = 1_000_000_000
T0 = 1_700_000_000
DAY = 86_400


def closed(
    entry: int,
    exit_: int,
    multiple: float,
    *,
    cost: int = SOL,
    fees: int = 0,
    hold_weighted: float | None = None,
    flags: tuple[str, ...] = (),
    seq: int = 0,
    mint: str = "M",
    copy: float | None = None,
) -> Position:
    return Position(
        wallet=W,
        mint=mint,
        seq=seq,
        status="closed",
        entry_time=entry,
        exit_time=exit_,
        entry_signature=f"e{entry}{mint}{seq}",
        exit_signature=f"x{exit_}{mint}{seq}",
        entry_dex="raydium",
        token_decimals=6,
        tokens_bought=1_000,
        tokens_sold=1_000,
        cost_lamports=cost,
        proceeds_lamports=round(cost * multiple),
        fees_lamports=fees,
        hold_weighted_s=float(exit_ - entry) if hold_weighted is None else hold_weighted,
        n_buys=1,
        n_sells=1,
        flags=list(flags),
        copy_multiple=copy,
    )


def opened(entry: int, mint: str = "O") -> Position:
    return Position(
        W, mint, 0, "open", entry, f"e{entry}", "raydium", 6, tokens_bought=10, cost_lamports=SOL, n_buys=1
    )


def test_a_small_record_by_hand() -> None:
    positions = [
        closed(T0, T0 + DAY, 3.0, mint="a"),  # held a day, 3x: a perfect diamond hand
        closed(T0, T0 + 60, 2.0, fees=2 * SOL, mint="b"),  # a 2x that lost money after fees: no win
        closed(T0, T0 + 2 * DAY, 0.5, mint="c"),  # held a loser for two days
        closed(T0, T0 + 10, 1.0, flags=(FLAG_NON_SOL_LEG,), mint="d"),  # closed, not scored
        opened(T0 + 5),
    ]
    s = kol_stats(positions, T0 + 3 * DAY, "all")
    assert (s.trades, s.closed, s.scored, s.wins, s.n_3x) == (5, 4, 3, 1, 1)
    assert s.win_rate == pytest.approx(1 / 3) and s.rate_3x == pytest.approx(1 / 3)
    assert s.mean_multiple == pytest.approx(5.5 / 3) and s.median_multiple == 2.0
    assert s.mean_hold_s == pytest.approx((DAY + 60 + 2 * DAY + 10) / 4)
    assert s.total_cost_sol == 3.0 and s.total_pnl_sol == pytest.approx(2.0 + (1.0 - 2.0) - 0.5)
    assert s.roi == pytest.approx(0.5 / 3)
    # DH: +1 (a day at 3x), ~0 (a one-minute 2x), −ln2/ln3 (two days at 0.5x): mean of the three.
    expected_dh = (1.0 + (60 / DAY) * math.log(2) / math.log(3) - math.log(2) / math.log(3)) / 3
    assert s.dh_score == pytest.approx(expected_dh)
    assert s.consistency == pytest.approx(wilson_lower_bound(1, 3))
    assert (s.recent_n, s.last_entry_time, s.last_exit_time) == (3, T0 + 5, T0 + 2 * DAY)
    assert s.untracked_sell_positions == 0


def test_definitions_of_the_scores() -> None:
    assert wilson_lower_bound(0, 0) is None
    assert wilson_lower_bound(3, 3) == pytest.approx(0.4385, abs=1e-4)  # a short streak is not consistency
    assert wilson_lower_bound(60, 100) == pytest.approx(0.5020, abs=1e-4)
    assert wilson_lower_bound(300, 300) > wilson_lower_bound(30, 30) > wilson_lower_bound(3, 3)
    # Diamond Hand: holding winners counts, holding alone does not.
    assert dh_term(3.0, DAY) == 1.0 and dh_term(10.0, 30 * DAY) == 1.0
    assert dh_term(3.0, 60) == pytest.approx(60 / DAY)  # a quick flip scores ~0 even at 3x
    assert dh_term(1 / 3, DAY) == pytest.approx(-1.0) and dh_term(0.0, DAY) == -1.0  # bag-holding
    assert dh_term(1.0, 30 * DAY) == 0.0  # held long for nothing
    assert dh_term(2.0, DAY / 2) == pytest.approx(0.5 * math.log(2) / math.log(3))


def test_windows_count_positions_closed_before_as_of_within_the_span() -> None:
    as_of = T0 + 100 * DAY
    positions = [
        closed(as_of - 40 * DAY, as_of - 31 * DAY, 2.0, mint="a"),  # outside 30d
        closed(as_of - 31 * DAY, as_of - 30 * DAY, 2.0, mint="b"),  # exactly 30 days: inside
        closed(as_of - 8 * DAY, as_of - 7 * DAY, 4.0, mint="c"),  # exactly 7 days: inside
        closed(as_of - DAY, as_of - 1, 0.5, mint="d"),  # one second before: inside
        closed(as_of - DAY, as_of, 9.0, mint="e"),  # at as_of: not yet known
    ]
    counts = {w: kol_stats(positions, as_of, w).closed for w in ("7d", "30d", "all")}
    assert counts == {"7d": 2, "30d": 3, "all": 4}
    s7 = kol_stats(positions, as_of, "7d")
    assert s7.median_multiple == 2.25 and s7.n_3x == 1
    assert (
        s7.trades == 2
    )  # entered in [as_of − 7d, as_of): 'd' and 'e' ('e' counts though still open at as_of)
    assert kol_stats(positions, as_of, "all").trades == 5


def test_recent_form_is_the_last_positions_whatever_the_window() -> None:
    positions = [closed(T0 + i, T0 + 100 + i, 4.0 if i < 5 else 0.5, mint=f"m{i:02d}") for i in range(15)]
    positions.append(closed(T0, T0 + 50 * DAY, 3.0, mint="late"))
    s = kol_stats(positions, T0 + 50 * DAY + 1, "7d")
    assert s.closed == 1 and s.recent_n == RECENT_N
    # The last ten closed: nine 0.5x (m06..m14) and the late 3x.
    assert s.recent_rate_3x == pytest.approx(1 / 10) and s.recent_mean_multiple == pytest.approx(
        (9 * 0.5 + 3.0) / 10
    )


def test_a_follower_result_is_copyability_and_a_kol_that_wins_while_followers_lose_is_farming() -> None:
    as_of = T0 + DAY
    n = FARMING_MIN_COPIES
    # Quick 1.5x flips by the KOL; a follower 5 s behind bought into the crowd and sold after the
    # KOL's dump: 0.8x each.
    farmer = [closed(T0 + i, T0 + i + 30, 1.5, mint=f"f{i}", copy=0.8) for i in range(n)]
    s = kol_stats(farmer, as_of)
    assert (s.copy_scored, s.copy_farmed_rate) == (n, 1.0)
    assert s.copy_pnl_sol == pytest.approx(-0.2 * n) and s.copy_roi == pytest.approx(-0.2)
    assert s.farming is True and KolStatsIndex(farmer).at(as_of) == s
    # One copy fewer: too few to call it.
    assert kol_stats(farmer[:-1], as_of).farming is None
    # Farmed trades must be at least FARMING_RATE of the copies: a KOL whose copiers mostly do as
    # well (1.9x where it made 2x) is not farming even with a few farmed trades among them.
    few = int(FARMING_RATE * n) - 1
    honest = [closed(T0 + i, T0 + i + 600, 2.0, mint=f"h{i}", copy=1.9) for i in range(n - few)]
    honest += [closed(T0 + i, T0 + i + 600, 1.2, mint=f"x{i}", copy=0.9) for i in range(few)]
    h = kol_stats(honest, as_of)
    assert h.farming is False and h.copy_farmed_rate == pytest.approx(few / n)
    # Losing with its copiers is not farming either: the KOL did not win those trades.
    losing = [closed(T0 + i, T0 + i + 600, 0.5, mint=f"l{i}", copy=0.4) for i in range(n)]
    assert kol_stats(losing, as_of).farming is False
    # Farmed trades but copiers ahead overall (one copy ran to 10x): not farming.
    lucky = [*farmer[:-1], closed(T0, T0 + 5, 1.5, mint="big", copy=10.0)]
    assert kol_stats(lucky, as_of).copy_pnl_sol > 0 and kol_stats(lucky, as_of).farming is False
    # Positions without a follower price do not count toward copyability.
    mixed = kol_stats([*farmer, closed(T0, T0 + 5, 9.0, mint="x")], as_of)
    assert mixed.copy_scored == n and mixed.farming is True


def test_untracked_sells_are_counted_and_empty_records_are_none() -> None:
    s = kol_stats([closed(T0, T0 + 5, 2.0, flags=(FLAG_UNTRACKED_SELL,))], T0 + 10, "all")
    assert s.untracked_sell_positions == 1 and s.scored == 1
    empty = kol_stats([], T0, "30d")
    assert (empty.wallet, empty.trades, empty.closed, empty.win_rate, empty.dh_score, empty.consistency) == (
        None, 0, 0, None, None, None,
    )  # fmt: skip
    assert KolStatsIndex([]).at(T0, "30d") == empty


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="window must be one of 7d, 30d, all"):
        kol_stats([], T0, "1y")
    other = closed(T0, T0 + 1, 1.0)
    other.wallet = "Other"
    with pytest.raises(ValueError, match="per wallet"):
        kol_stats([closed(T0, T0 + 1, 1.0), other], T0 + 5)
    with pytest.raises(ValueError, match="per wallet"):
        KolStatsIndex([closed(T0, T0 + 1, 1.0)], wallet="Other")
    assert kol_stats([], T0, wallet="Other").wallet == "Other"


# Random records: the index equals the direct definition

position_records = st.lists(
    st.tuples(
        st.integers(0, 60 * DAY),  # entry offset
        st.integers(0, 10 * DAY),  # hold
        st.sampled_from([0.0, 0.1, 0.5, 0.99, 1.0, 1.5, 2.0, 3.0, 3.0, 7.5, 40.0]),
        st.integers(1, 5 * SOL),  # cost
        st.integers(0, SOL // 10),  # fees
        st.sampled_from([(), (), (), (FLAG_UNTRACKED_SELL,), (FLAG_NON_SOL_LEG,)]),
        st.booleans(),  # still open
        st.sampled_from([None, 0.0, 0.5, 0.8, 1.0, 1.2, 3.0]),  # a follower's copy multiple
    ),
    max_size=40,
)


def make_positions(records: list) -> list[Position]:
    positions = []
    for i, (entry, hold, multiple, cost, fees, flags, is_open, copy) in enumerate(records):
        if is_open:
            positions.append(opened(T0 + entry, mint=f"o{i}"))
        else:
            positions.append(
                closed(
                    T0 + entry,
                    T0 + entry + hold,
                    multiple,
                    cost=cost,
                    fees=fees,
                    flags=flags,
                    mint=f"m{i}",
                    copy=copy,
                )
            )
    return positions


def assert_same(fast: KolStats, direct: KolStats) -> None:
    for name in STAT_FIELDS:
        a, b = getattr(fast, name), getattr(direct, name)
        if isinstance(b, float) and a is not None:
            assert a == pytest.approx(b, rel=1e-9, abs=1e-9), name
        else:
            assert a == b, name


@settings(max_examples=150, deadline=None)
@given(records=position_records, times=st.lists(st.integers(-DAY, 75 * DAY), min_size=1, max_size=6))
def test_the_index_equals_the_direct_definition(records: list, times: list[int]) -> None:
    positions = make_positions(records)
    index = KolStatsIndex(positions)
    for t in times:  # all windows at once read the positions once, and agree with one at a time
        assert kol_stats_windows(positions, T0 + t) == {w: kol_stats(positions, T0 + t, w) for w in WINDOWS}
    for window in ("7d", "30d", "all"):
        table = index.table([T0 + t for t in times], window)
        for i, t in enumerate(times):
            direct = kol_stats(positions, T0 + t, window)
            fast = index.at(T0 + t, window)
            assert_same(fast, direct)
            assert (fast.wallet, fast.as_of, fast.window) == (direct.wallet, direct.as_of, direct.window)
            assert int(table["closed"][i]) == direct.closed
            if direct.median_multiple is not None:
                assert fast.median_multiple == direct.median_multiple  # medians are exact


def of_wallet(positions: list[Position], wallet: str) -> list[Position]:
    for position in positions:
        position.wallet = wallet
    return positions


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(position_records, min_size=1, max_size=5),
    queries=st.lists(st.tuples(st.integers(0, 4), st.integers(-DAY, 75 * DAY)), min_size=1, max_size=12),
)
def test_a_stack_answers_each_wallet_exactly_as_its_own_index(records: list, queries: list) -> None:
    indices = [
        KolStatsIndex(of_wallet(make_positions(r), f"W{k}"), wallet=f"W{k}") for k, r in enumerate(records)
    ]
    stack = KolStatsIndex.stack(indices)
    assert stack.wallets == tuple(f"W{k}" for k in range(len(records)))
    segments = np.array([k % len(indices) for k, _ in queries])
    times = np.array([T0 + t for _, t in queries])
    stacked = stack.tables(times, ("all", "7d", "30d"), segments)
    for window, table in stacked.items():
        for i, (k, t) in enumerate(zip(segments.tolist(), times.tolist(), strict=True)):
            alone = indices[k].table([t], window)
            for name, values in table.items():
                # Bit for bit, NaN where the index alone has NaN: online rows equal dataset rows.
                np.testing.assert_array_equal(values[i : i + 1], alone[name], err_msg=f"{window} {name}")


def test_a_stack_needs_segments_in_range_and_one_wallet_indices() -> None:
    a = KolStatsIndex(of_wallet([closed(T0, T0 + 60, 2.0)], "A"), wallet="A")
    b = KolStatsIndex(of_wallet([closed(T0, T0 + 90, 4.0), opened(T0 + 5)], "B"), wallet="B")
    stack = KolStatsIndex.stack([a, b])
    assert KolStatsIndex.stack([a]) is a  # one wallet: the index itself
    with pytest.raises(ValueError, match="segment of each query"):
        stack.table([T0 + 100])
    with pytest.raises(ValueError, match=r"segments must lie in \[0, 2\)"):
        stack.tables([T0 + 100], ("all",), np.array([2]))
    with pytest.raises(ValueError, match="1 segments for 2 times"):
        stack.tables([T0, T0 + 1], ("all",), np.array([0]))
    with pytest.raises(ValueError, match="one-wallet indices"):
        KolStatsIndex.stack([stack, a])
    with pytest.raises(ValueError, match="one-wallet indices"):
        KolStatsIndex.stack([])
    table = stack.tables([T0 + 100, T0 + 100], ("all",), np.array([1, 0]))["all"]
    assert table["median_multiple"].tolist() == [4.0, 2.0]
    assert table["trades"].tolist() == [2, 1]
    assert table["last_exit_time"].tolist() == [T0 + 90, T0 + 60]


def test_medians_match_statistics_median_on_ties_and_even_counts() -> None:
    multiples = [2.0, 1.0, 2.0, 5.0, 0.5, 2.0, 8.0, 1.0]
    positions = [closed(T0 + i, T0 + 10 + i, m, mint=f"m{i}") for i, m in enumerate(multiples)]
    index = KolStatsIndex(positions)
    for k in range(1, len(multiples) + 1):
        assert index.at(T0 + 10 + k, "all").median_multiple == statistics.median(multiples[:k])


# Point in time: nothing at or after t changes the statistics as of t

MINTS = ["MintA", "MintB", "MintC"]


@st.composite
def swap_histories(draw: st.DrawFn) -> tuple[list[Swap], int, list[Swap]]:
    """A wallet's swaps, a time t, and a second history equal before t and arbitrary after it."""
    t = T0 + draw(st.integers(1, 40 * DAY))

    def one(n: int, low: int, high: int) -> Swap:
        side = draw(st.sampled_from(["buy", "buy", "sell"]))
        return Swap(
            signature=f"{n:06d}-{draw(st.integers(0, 10**6))}",
            slot=draw(st.integers(0, 1_000)),
            block_time=draw(st.integers(low, high)),
            wallet=W,
            mint=draw(st.sampled_from(MINTS)),
            side=side,
            token_amount=draw(st.sampled_from([1_000, 2_000, 999, 500, 1_500, 3_000])),
            token_decimals=6,
            sol_amount=draw(st.integers(0, 3 * SOL)),
            dex="raydium",
            fee=draw(st.integers(0, 10_000)),
            quote_mint=draw(st.sampled_from([None] * 9 + ["USDC"])),
        )

    before = [one(i, T0, t - 1) for i in range(draw(st.integers(0, 30)))]
    after = [one(100 + i, t, t + 40 * DAY) for i in range(draw(st.integers(0, 20)))]
    # The altered future: some of it kept, some changed (amounts, side, time), some added.
    altered = []
    for i, s in enumerate(after):
        action = draw(st.sampled_from(["keep", "drop", "change"]))
        if action == "keep":
            altered.append(s)
        elif action == "change":
            altered.append(one(200 + i, t, t + 40 * DAY))
    altered += [one(300 + i, t, t + 40 * DAY) for i in range(draw(st.integers(0, 10)))]
    return before + after, t, before + altered


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=swap_histories())
def test_statistics_as_of_t_ignore_everything_at_or_after_t(
    history: tuple[list[Swap], int, list[Swap]],
) -> None:
    swaps, t, altered = history
    original = build_positions(swaps)
    changed = build_positions(altered)
    # The positions closed before t are the same objects, exactly.
    assert [p for p in original if p.closed and p.exit_time < t] == [
        p for p in changed if p.closed and p.exit_time < t
    ]
    index_a, index_b = KolStatsIndex(original, wallet=W), KolStatsIndex(changed, wallet=W)
    for window in ("7d", "30d", "all"):
        for as_of in (t, t - 1, t - 3 * DAY):
            direct = kol_stats(original, as_of, window, wallet=W)
            assert kol_stats(changed, as_of, window, wallet=W) == direct
            assert index_a.at(as_of, window) == index_b.at(as_of, window)
            assert_same(index_a.at(as_of, window), direct)
