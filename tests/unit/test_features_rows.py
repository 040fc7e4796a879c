"""Feature rows on hand-made histories: labels, which rows exist, the token consensus, the KOL
record as of each buy (the leaderboard's numbers), KOL targets, and the arithmetic of features."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime

import numpy as np
import pytest

from kolray.analyzer import build_positions, kol_stats
from kolray.chain.types import Swap
from kolray.features.context import (
    HistoryStack,
    MintEntries,
    position_frame,
    prefix_medians,
    wallet_histories,
)
from kolray.features.definitions import DAY, HOUR, TOKEN_FEATURES, hour_of, weekday_of
from kolray.features.rows import kol_day_range, kol_rows, token_rows

SOL = 1_000_000_000
T0 = 1_700_006_400  # 2023-11-15 00:00:00 UTC, a Wednesday
H = 7 * DAY
_n = iter(range(10**9))


def swap(wallet: str, mint: str, side: str, t: int, lamports: int, tokens: int = 1_000, **extra) -> Swap:
    return Swap(
        signature=extra.pop("signature", f"s{next(_n):07d}"),
        slot=t,
        block_time=t,
        wallet=wallet,
        mint=mint,
        side=side,
        token_amount=tokens,
        token_decimals=6,
        sol_amount=lamports,
        dex=extra.pop("dex", "pumpfun"),
        **extra,
    )


def round_trip(
    wallet: str, mint: str, t: int, hold: int, cost: float, proceeds: float, **extra
) -> list[Swap]:
    return [
        swap(wallet, mint, "buy", t, int(cost * SOL), **extra),
        swap(wallet, mint, "sell", t + hold, int(proceeds * SOL)),
    ]


def build_rows(swaps: list[Swap], cutoff: int, horizon: int = H):
    frame = position_frame(build_positions(swaps), swaps)
    first = {}
    for s in swaps:
        first[s.mint] = min(first.get(s.mint, s.block_time), s.block_time)
    tokens = MintEntries.build(frame["mint"], frame["wallet"], frame["entry_time"], first)
    return frame, token_rows(frame, tokens, horizon_s=horizon, cutoff=cutoff)


# Labels and which rows exist


def test_label_is_3x_realised_within_the_horizon_and_only_known_outcomes_make_rows():
    swaps = [
        *round_trip("A", "win", T0, HOUR, 1, 4),  # 4x within an hour: 1
        *round_trip("A", "exact", T0 + 10, H, 1, 3),  # exactly 3x, closed exactly at entry + H: 1
        *round_trip("A", "late", T0 + 20, H + 1, 1, 10),  # 10x, one second too late: 0
        *round_trip("A", "loss", T0 + 30, HOUR, 1, 0.5),  # 0
        swap("A", "open", "buy", T0 + 40, SOL),  # still open: 0, not left out
        swap("A", "tok2tok", "buy", T0 + 50, 0, quote_mint="USDC", quote_amount=10**6),  # no SOL buy
        swap("A", "young", "buy", T0 + 2 * DAY, SOL),  # entered less than H before the cutoff
    ]
    cutoff = T0 + 40 + H  # "open" is exactly old enough; "young" is not
    _, rows = build_rows(swaps, cutoff)
    labels = dict(zip(rows["mint"], rows["label_3x"], strict=True))
    assert labels == {"win": 1, "exact": 1, "late": 0, "loss": 0, "open": 0}
    assert rows["multiple"].tolist()[:2] == [4.0, 3.0]
    assert np.isnan(rows.set_index("mint").loc["open", "multiple"])


def test_label_uses_the_horizon_given():
    swaps = round_trip("A", "m", T0, 2 * DAY, 1, 5)
    _, short = build_rows(swaps, T0 + 10 * DAY, horizon=DAY)
    _, long = build_rows(swaps, T0 + 10 * DAY, horizon=3 * DAY)
    assert short["label_3x"].tolist() == [0] and long["label_3x"].tolist() == [1]


def test_resolution_time_is_the_close_within_the_horizon_else_entry_plus_h():
    swaps = [*round_trip("A", "fast", T0, HOUR, 1, 2), *round_trip("A", "slow", T0, 9 * DAY, 1, 2)]
    _, rows = build_rows(swaps, T0 + 20 * DAY)
    resolve = dict(zip(rows["mint"], rows["resolve_time"], strict=True))
    assert resolve == {"fast": T0 + HOUR, "slow": T0 + H}


# The KOL's record as of each buy: the analyzer's definitions, positions closed before the buy


def test_kol_record_at_each_entry_equals_the_analyzer_statistics_as_of_that_time():
    rng = random.Random(3)
    swaps = []
    for i in range(60):
        t = T0 + rng.randrange(40 * DAY)
        swaps += round_trip(
            "A", f"m{i}", t, rng.randrange(60, 3 * DAY), rng.uniform(0.1, 2), rng.uniform(0, 8)
        )
    positions = build_positions(swaps)
    _, rows = build_rows(swaps, T0 + 60 * DAY)
    assert len(rows) == 60
    for row in rows.itertuples():
        everything = kol_stats(positions, row.entry_time, "all", wallet="A")
        week = kol_stats(positions, row.entry_time, "7d", wallet="A")
        expected = {
            "kol_dh_score": everything.dh_score,
            "kol_rate_3x": everything.rate_3x,
            "kol_win_rate": everything.win_rate,
            "kol_consistency": everything.consistency,
            "kol_recent_rate_3x": everything.recent_rate_3x,
            "kol_rate_3x_7d": week.rate_3x,
            "kol_mean_hold_log": None if everything.mean_hold_s is None else np.log1p(everything.mean_hold_s),
        }
        for name, value in expected.items():
            got = getattr(row, name)
            if value is None:
                assert np.isnan(got), name
            else:
                assert got == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_a_history_stack_gives_each_kol_exactly_what_its_own_history_gives():
    rng = random.Random(7)
    swaps = []
    for i in range(90):
        wallet = "ABC"[i % 3]
        t = T0 + rng.randrange(40 * DAY)
        swaps += round_trip(
            wallet, f"m{i % 17}", t, rng.randrange(60, 3 * DAY), rng.uniform(0.1, 2), rng.uniform(0, 8)
        )
    histories = wallet_histories(position_frame(build_positions(swaps), swaps), H)
    stack = HistoryStack.of(["C", "A", "B", "C"], histories, H)
    assert list(stack) == ["C", "A", "B"] and stack["A"] is histories["A"] and len(stack) == 3
    # Buys of the three KOLs interleaved, at times around their own trades, some in known tokens.
    wallets = [rng.choice("ABC") for _ in range(200)]
    times = np.array([T0 + rng.randrange(-DAY, 45 * DAY) for _ in wallets], dtype=np.int64)
    mints = [rng.choice([None, "m1", "m5", "m16", "new"]) for _ in wallets]
    together = stack.token_context(stack.segments(wallets), times, mints)
    for wallet in "ABC":
        rows = [i for i, w in enumerate(wallets) if w == wallet]
        alone = histories[wallet].token_context(times[rows], [mints[i] for i in rows])
        for key, value in alone.items():
            parts = value.items() if isinstance(value, dict) else [(None, value)]
            for name, array in parts:
                got = together[key] if name is None else together[key][name]
                np.testing.assert_array_equal(got[rows], array, err_msg=f"{wallet} {key} {name}")
    assert stack.segments(["A", "Z"]) is None  # a wallet the stack lacks
    with pytest.raises(ValueError, match="each wallet once"):
        HistoryStack([histories["A"], histories["A"]])


def test_a_first_buy_has_no_record_and_a_position_closing_at_the_entry_second_is_not_yet_known():
    swaps = [*round_trip("A", "m1", T0, HOUR, 1, 5), swap("A", "m2", "buy", T0 + HOUR, SOL)]
    _, rows = build_rows(swaps, T0 + 30 * DAY)
    first, second = rows.iloc[0], rows.iloc[1]
    assert np.isnan(first["kol_rate_3x"]) and first["kol_scored_log"] == 0
    # m1 closed at T0 + 1h, the second the m2 buy happened: not "before" it.
    assert np.isnan(second["kol_rate_3x"])
    assert second["kol_open_positions_log"] == pytest.approx(np.log1p(1))  # m1 was still open then


def test_size_is_relative_to_the_median_of_the_kols_earlier_opening_buys_only():
    swaps = [
        swap("A", "m1", "buy", T0, 1 * SOL),
        swap("A", "m1", "buy", T0 + 5, 50 * SOL),  # an add to m1: not an opening buy
        swap("A", "m2", "buy", T0 + 10, 3 * SOL),
        swap("A", "m3", "buy", T0 + 20, 4 * SOL),
    ]
    _, rows = build_rows(swaps, T0 + 30 * DAY)
    ratio = dict(zip(rows["mint"], rows["log_size_vs_median"], strict=True))
    assert np.isnan(ratio["m1"])
    assert ratio["m2"] == pytest.approx(np.log(3 / 1))
    assert ratio["m3"] == pytest.approx(np.log(4 / 2))  # median of 1 and 3
    amounts = dict(zip(rows["mint"], rows["log_amount_sol"], strict=True))
    assert amounts["m1"] == pytest.approx(np.log(1.0))  # the opening buy, not the position's cost


# The token's consensus


def test_consensus_counts_other_kols_that_bought_before_once_each():
    swaps = [
        swap("B", "tok", "buy", T0, SOL),
        swap("B", "tok", "sell", T0 + 60, SOL),
        swap("B", "tok", "buy", T0 + 120, SOL),  # B re-enters: still one KOL
        swap("C", "tok", "buy", T0 + 23 * HOUR, SOL),
        swap("D", "tok", "buy", T0 + 24 * HOUR + 100, SOL),  # same second as A: not before A
        swap("A", "tok", "buy", T0 + 24 * HOUR + 100, SOL),
        swap("A", "tok", "sell", T0 + 25 * HOUR, SOL),
        swap("A", "tok", "buy", T0 + 25 * HOUR + 1800, SOL),  # A's re-entry: A never counts itself
    ]
    _, rows = build_rows(swaps, T0 + 30 * DAY)
    a = rows[rows["wallet"] == "A"].reset_index(drop=True)
    assert a["n_kols_before"].tolist() == [2, 3]  # B and C; then D as well
    assert a["n_kols_24h"].tolist() == [1, 2]  # C started within 24h; then C and D
    assert a["n_kols_1h"].tolist() == [0, 0]
    assert a["reentry"].tolist() == [0, 1]
    # Latest entry by someone else: C at 23h for the first; D's entry for the re-entry.
    assert a["since_prev_kol_log"].tolist() == pytest.approx(
        [np.log1p(HOUR + 100), np.log1p(HOUR + 1800 - 100)]
    )
    first = rows[rows["wallet"] == "B"].iloc[0]
    assert first["n_kols_before"] == 0 and np.isnan(first["since_prev_kol_log"])


def test_token_age_venue_and_market_cap_come_from_the_swaps_at_entry():
    swaps = [
        swap("B", "tok", "sell", T0, SOL),  # an airdrop sold: the first swap of the token seen
        swap("A", "tok", "buy", T0 + HOUR, SOL, dex="pumpfun", market_cap_sol=40.0),
        swap("C", "tok", "buy", T0 + 2 * HOUR, SOL, dex="pumpswap"),
        swap("D", "tok", "buy", T0 + 3 * HOUR, SOL, dex="jupiter_v6", market_cap_sol=0.0),
    ]
    _, rows = build_rows(swaps, T0 + 30 * DAY)
    by = rows.set_index("wallet")
    assert by.loc["A", "token_age_log"] == pytest.approx(np.log1p(HOUR))
    assert (by.loc["A", "venue_curve"], by.loc["A", "venue_aggregator"]) == (1, 0)
    assert (by.loc["C", "venue_curve"], by.loc["C", "venue_aggregator"]) == (0, 0)  # an AMM
    assert (by.loc["D", "venue_curve"], by.loc["D", "venue_aggregator"]) == (0, 1)
    assert by.loc["A", "log_mcap"] == pytest.approx(np.log(40.0), rel=1e-6)
    assert np.isnan(by.loc["C", "log_mcap"]) and np.isnan(by.loc["D", "log_mcap"])  # unknown, not 0


def test_time_features_are_utc_and_cyclic():
    monday_noon = int(datetime(2024, 1, 1, 12, 30, tzinfo=UTC).timestamp())
    assert hour_of([monday_noon]).tolist() == [12]
    assert weekday_of([monday_noon]).tolist() == [0]
    _, rows = build_rows([swap("A", "m", "buy", monday_noon, SOL)], monday_noon + 30 * DAY)
    row = rows.iloc[0]
    angle = 2 * np.pi * (12.5 / 24)
    assert (row["hour"], row["weekday"]) == (12, 0)
    assert (row["hour_sin"], row["hour_cos"]) == pytest.approx((np.sin(angle), np.cos(angle)), abs=1e-6)


def test_features_are_float32_in_the_declared_order():
    _, rows = build_rows(round_trip("A", "m", T0, HOUR, 1, 2), T0 + 30 * DAY)
    assert [c for c in rows.columns if c in TOKEN_FEATURES] == TOKEN_FEATURES
    assert all(rows[c].dtype == np.float32 for c in TOKEN_FEATURES)


def test_prefix_medians_match_the_statistics_module():
    rng = np.random.default_rng(0)
    values = rng.lognormal(size=101)
    medians = prefix_medians(values)
    assert np.isnan(medians[0])
    for k in range(1, len(values) + 1):
        assert medians[k] == statistics.median(values[:k].tolist())


# KOL rows


def test_kol_targets_are_the_label_share_of_buys_opened_in_the_window_ahead():
    day0 = (T0 // DAY) * DAY
    swaps = [
        *round_trip("A", "a", day0 + 2 * DAY, HOUR, 1, 4),  # 3x
        *round_trip("A", "b", day0 + 3 * DAY, HOUR, 1, 1),
        *round_trip("A", "c", day0 + 20 * DAY, HOUR, 1, 5),  # 3x, in the 30-day window only
        *round_trip("A", "d", day0 + 40 * DAY, HOUR, 1, 5),  # beyond every window of day 0
    ]
    frame = position_frame(build_positions(swaps), swaps)
    rows = kol_rows(frame, horizon_s=H, first_day=day0, last_day=day0 + DAY).set_index("day")
    assert rows.loc[day0, "n_next_7d"] == 2 and rows.loc[day0, "rate_3x_next_7d"] == 0.5
    assert rows.loc[day0, "n_next_30d"] == 3 and rows.loc[day0, "rate_3x_next_30d"] == pytest.approx(2 / 3)
    assert rows.loc[day0, "resolve_time"] == day0 + 30 * DAY + H
    # Day 4's 7-day window has no buy: no target, no row.
    later = kol_rows(frame, horizon_s=H, first_day=day0 + 4 * DAY, last_day=day0 + 4 * DAY)
    assert later.empty


def test_kol_past_rates_are_point_in_time_and_persistence_reads_the_leaderboard_rate():
    day0 = (T0 // DAY) * DAY
    swaps = [
        *round_trip("A", "a", day0 - 3 * DAY, HOUR, 1, 4),  # closed 3 days before: 3x
        *round_trip("A", "b", day0 - 2 * DAY, HOUR, 1, 1),
        *round_trip("A", "c", day0 + DAY, HOUR, 1, 1),  # gives day 0 a target
    ]
    frame = position_frame(build_positions(swaps), swaps)
    row = kol_rows(frame, horizon_s=H, first_day=day0, last_day=day0).iloc[0]
    assert row["rate_3x_past_7d"] == 0.5 and row["rate_3x_past_30d"] == 0.5
    # Labelled buys need their horizon behind the day: none opened in [day - 7d - H, day - H).
    assert np.isnan(row["label_rate_past_7d"])


def test_kol_day_range_keeps_only_days_whose_windows_and_horizon_have_elapsed():
    first, last = kol_day_range(T0 + 5, T0 + 100 * DAY, H)
    assert first == (T0 // DAY + 1) * DAY  # the first midnight after the first entry
    assert last + 30 * DAY + H <= T0 + 100 * DAY < last + DAY + 30 * DAY + H
