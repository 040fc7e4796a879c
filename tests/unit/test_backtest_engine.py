"""The copy-trading simulation on hand-made signals and prices, every number worked out by hand.

Conventions used below: slippage s = 1%, fee f = 1%, 0.0005 SOL per transaction, stake 1 SOL
unless a test says otherwise. A copy that pays p per token holds 0.99 / (1.01 p) tokens; selling a
share of them at p' returns tokens × share × p' × 0.99 × 0.99.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from kolray.backtest import (
    Execution,
    KolSell,
    PriceTape,
    Signal,
    StrategySpec,
    metrics,
    replay,
    simulate_copy,
)
from kolray.backtest.engine import Replay, Trade, capital_needed, deployment, max_drawdown
from kolray.backtest.strategies import at_least, top_kols

T = 1_000_000
EX = Execution()  # delay 30 s, 1% + 1%, 0.0005 SOL/tx, stake 1


def tape(**series: list[tuple[int, float]]) -> PriceTape:
    return PriceTape({mint: ([t for t, _ in obs], [p for _, p in obs]) for mint, obs in series.items()})


def signal(mint: str = "M", t: int = T, sells: tuple[KolSell, ...] = (), closed: bool = True, **kw) -> Signal:
    return Signal(
        wallet=kw.pop("wallet", "W"),
        mint=mint,
        time=t,
        signature=kw.pop("signature", f"s{t}{mint}"),
        sells=sells,
        closed=closed,
        **kw,
    )


def test_round_trip_costs_slippage_fees_and_transactions() -> None:
    # The KOL buys at 1.0 and sells everything at 2.0 an hour later; no other trade.
    prices = tape(M=[(T, 1.0), (T + 3600, 2.0)])
    trade = simulate_copy(signal(sells=(KolSell(T + 3600, 1.0, "x"),)), prices, EX, end=T + 86_400)
    assert trade is not None
    assert trade.entry_time == T + 30 and trade.entry_price == 1.0
    assert trade.exit_time == T + 3630 and trade.exit_reason == "kol"
    tokens = 0.99 / 1.01
    assert trade.proceeds_sol == pytest.approx(tokens * 2.0 * 0.99 * 0.99, rel=1e-12)
    assert trade.transactions == 2 and trade.tx_fees_sol == pytest.approx(0.001)
    assert trade.pnl_sol == pytest.approx(2 * 0.99**3 / 1.01 - 1 - 0.001, rel=1e-12)
    assert trade.net_multiple == pytest.approx(1 + trade.pnl_sol)


def test_the_delay_fills_at_the_price_seen_then_not_the_kols() -> None:
    # Another wallet trades at 1.5 ten seconds after the KOL: a 30 s copy pays that.
    prices = tape(M=[(T, 1.0), (T + 10, 1.5), (T + 100, 3.0)])
    trade = simulate_copy(signal(sells=(KolSell(T + 100, 1.0, "x"),)), prices, EX, end=T + 1000)
    assert trade is not None and trade.entry_price == 1.5
    assert trade.proceeds_sol == pytest.approx(0.99 / (1.5 * 1.01) * 3.0 * 0.99**2, rel=1e-12)
    # With no delay the copy fills at the KOL's own price.
    fast = simulate_copy(
        signal(sells=(KolSell(T + 100, 1.0, "x"),)), prices, Execution(delay_s=0), end=T + 1000
    )
    assert fast is not None and fast.entry_price == 1.0 and fast.exit_time == T + 100


def test_partial_sells_are_mirrored_as_shares_of_the_holding() -> None:
    # The KOL sells 25% of its holding at 2.0, then a third of what is left (25% of the original)
    # at 4.0, then closes at 0.5. The copy sells the same shares of its own holding.
    prices = tape(M=[(T, 1.0), (T + 100, 2.0), (T + 200, 4.0), (T + 300, 0.5)])
    sells = (KolSell(T + 100, 0.25, "a"), KolSell(T + 200, 1 / 3, "b"), KolSell(T + 300, 0.9995, "c"))
    trade = simulate_copy(signal(sells=sells), prices, EX, end=T + 1000)
    assert trade is not None
    tokens = 0.99 / 1.01
    # 25% at 2.0, 25% at 4.0 and the rest (50%: the closing sell sells everything) at 0.5.
    expected = tokens * (0.25 * 2.0 + 0.25 * 4.0 + 0.5 * 0.5) * 0.99**2
    assert trade.proceeds_sol == pytest.approx(expected, rel=1e-12)
    assert trade.transactions == 4 and trade.exit_time == T + 330 and trade.exit_reason == "kol"


def test_a_position_still_open_is_valued_at_the_end() -> None:
    prices = tape(M=[(T, 1.0), (T + 100, 0.8)])
    trade = simulate_copy(signal(closed=False), prices, EX, end=T + 500)
    assert trade is not None and trade.exit_reason == "end" and trade.exit_time == T + 500
    assert trade.proceeds_sol == pytest.approx(0.99 / 1.01 * 0.8 * 0.99**2, rel=1e-12)
    # A partial sell, then the end: the rest is valued at the last price.
    half = simulate_copy(signal(sells=(KolSell(T + 100, 0.5, "a"),), closed=False), prices, EX, end=T + 500)
    assert half is not None and half.exit_reason == "end" and half.transactions == 3
    assert half.proceeds_sol == pytest.approx(0.99 / 1.01 * (0.5 * 0.8 + 0.5 * 0.8) * 0.99**2, rel=1e-12)
    # KOL sells whose reaction would fill after the end are not seen.
    late = simulate_copy(signal(sells=(KolSell(T + 480, 1.0, "a"),)), prices, EX, end=T + 500)
    assert late is not None and late.exit_reason == "end"


def test_take_profit_stop_loss_and_max_hold() -> None:
    prices = tape(M=[(T, 1.0), (T + 100, 1.5), (T + 200, 2.1), (T + 300, 0.4), (T + 400, 5.0)])
    closes_late = (KolSell(T + 400, 1.0, "x"),)
    fill = 1.01  # the entry fill price the rules are relative to
    # Take-profit 2x triggers on the first price >= 2.02: 2.1 at T+200, filled 30 s later at the
    # last price by then (2.1).
    tp = simulate_copy(signal(sells=closes_late), prices, Execution(take_profit=2.0), end=T + 1000)
    assert tp is not None and tp.exit_reason == "take_profit" and tp.exit_time == T + 230
    assert tp.proceeds_sol == pytest.approx(0.99 / fill * 2.1 * 0.99**2, rel=1e-12)
    # Stop-loss 0.5x (0.505): 0.4 at T+300 gaps through it; the fill is at 0.4, not at the stop.
    sl = simulate_copy(signal(sells=closes_late), prices, Execution(stop_loss=0.5), end=T + 1000)
    assert sl is not None and sl.exit_reason == "stop_loss" and sl.exit_time == T + 330
    assert sl.proceeds_sol == pytest.approx(0.99 / fill * 0.4 * 0.99**2, rel=1e-12)
    # Both: the take-profit comes first.
    both = simulate_copy(
        signal(sells=closes_late), prices, Execution(take_profit=2.0, stop_loss=0.5), end=T + 1000
    )
    assert both is not None and both.exit_reason == "take_profit"
    # Max hold 150 s: sells at T+30+150 at the price then (1.5), with no reaction delay.
    mh = simulate_copy(signal(sells=closes_late), prices, Execution(max_hold_s=150), end=T + 1000)
    assert mh is not None and mh.exit_reason == "max_hold" and mh.exit_time == T + 180
    assert mh.proceeds_sol == pytest.approx(0.99 / fill * 1.5 * 0.99**2, rel=1e-12)
    # No rule: the KOL's exit at 5.0.
    kol = simulate_copy(signal(sells=closes_late), prices, EX, end=T + 1000)
    assert kol is not None and kol.exit_reason == "kol" and kol.exit_time == T + 430


def test_rules_ignore_prices_before_the_entry() -> None:
    # 3.0 is observed 10 s after the KOL's buy, before the copy's fill: not a take-profit.
    prices = tape(M=[(T, 1.0), (T + 10, 3.0), (T + 600, 1.0)])
    trade = simulate_copy(
        signal(sells=(KolSell(T + 600, 1.0, "x"),)), prices, Execution(take_profit=2.0), end=T + 1000
    )
    assert trade is not None and trade.entry_price == 3.0 and trade.exit_reason == "kol"


def test_no_copy_without_a_price_or_after_the_end() -> None:
    assert simulate_copy(signal(mint="X"), tape(M=[(T, 1.0)]), EX, end=T + 100) is None
    assert (
        simulate_copy(signal(), tape(M=[(T + 60, 1.0)]), EX, end=T + 100) is None
    )  # first price after the fill
    assert simulate_copy(signal(), tape(M=[(T, 1.0)]), EX, end=T + 29) is None


def test_replay_one_copy_per_token_and_stacking() -> None:
    prices = tape(
        M=[(T, 1.0), (T + 50, 1.0), (T + 1000, 2.0), (T + 2000, 2.0)], N=[(T + 500, 1.0), (T + 900, 1.0)]
    )
    signals = [
        signal("M", T, (KolSell(T + 1000, 1.0, "a"),), signature="a"),
        signal("M", T + 50, (KolSell(T + 2000, 1.0, "b"),), signature="b", wallet="V"),  # M still held
        signal("N", T + 500, (KolSell(T + 900, 1.0, "c"),), signature="c"),
        signal("M", T + 2000, closed=False, signature="d"),  # the first M copy is closed by then
    ]
    result = replay(signals, [True, True, True, True], prices, EX, end=T + 3000)
    assert [t.signal_signature for t in result.trades] == ["a", "c", "d"]
    assert result.selected == 4 and result.skipped_held == 1
    stacked = replay(signals, [True] * 4, prices, Execution(one_per_token=False), end=T + 3000)
    assert len(stacked.trades) == 4 and stacked.skipped_held == 0
    chosen = replay(
        signals, np.array([False, True, False, False]), prices, EX, end=T + 3000, scores=[0.1, 0.9, 0.2, 0.3]
    )
    assert [(t.signal_signature, t.score) for t in chosen.trades] == [("b", 0.9)]
    with pytest.raises(ValueError, match="3 decisions for 4 signals"):
        replay(signals, [True] * 3, prices, EX, end=T + 3000)


def test_metrics_by_hand() -> None:
    # Three copies, stake 1: +1.0 (T+30 → T+1030), −0.5 (T+530 → T+1530), +0.2 (T+2030 → T+2530).
    prices = tape(
        A=[(T, 1.0), (T + 1000, 2.0 * 1.01 / 0.99**3 + 0.001 * 1.01 / 0.99**3)],
        B=[(T + 500, 1.0), (T + 1500, 0.5 * 1.01 / 0.99**3 + 0.001 * 1.01 / 0.99**3)],
        C=[(T + 2000, 1.0), (T + 2500, 1.2 * 1.01 / 0.99**3 + 0.001 * 1.01 / 0.99**3)],
    )
    signals = [
        signal("A", T, (KolSell(T + 1000, 1.0, "a"),), signature="a", label_3x=1),
        signal("B", T + 500, (KolSell(T + 1500, 1.0, "b"),), signature="b", label_3x=0),
        signal("C", T + 2000, (KolSell(T + 2500, 1.0, "c"),), signature="c"),
    ]
    result = replay(signals, [True] * 3, prices, EX, end=T + 4000)
    assert [round(t.pnl_sol, 9) for t in result.trades] == [1.0, -0.5, 0.2]
    m, curve = metrics(result, 5, EX, start=T, end=T + 4000)
    assert (m.signals, m.selected, m.trades) == (5, 3, 3)
    assert m.hit_rate == pytest.approx(2 / 3)
    assert m.hits_3x == 0 and m.kol_3x == 1  # 2x is not 3x; one copied buy was a KOL 3x
    assert m.total_pnl_sol == pytest.approx(0.7)
    assert m.return_per_trade == pytest.approx(0.7 / 3) and m.median_return == pytest.approx(0.2)
    # Two copies overlap from T+530 to T+1030: peak 2 SOL, the default capital.
    assert m.peak_deployed_sol == pytest.approx(2.0) and m.capital_sol == pytest.approx(2.0)
    assert m.total_return == pytest.approx(0.35)
    # Equity 2 → 3 (T+1030) → 2.5 (T+1530) → 2.7: drawdown 0.5 SOL from the peak of 3.
    assert curve.times == [T, T + 1030, T + 1530, T + 2530]
    assert curve.equity == pytest.approx([2.0, 3.0, 2.5, 2.7])
    assert m.max_drawdown == pytest.approx(0.5 / 3) and m.max_drawdown_sol == pytest.approx(0.5)
    # Open [T+30, T+1530] and [T+2030, T+2530]: 2000 s of 4000; 1000 + 1000 + 500 SOL·s.
    assert m.exposure == pytest.approx(2000 / 4000)
    assert m.avg_deployed_sol == pytest.approx(2500 / 4000)
    assert m.exits == {"kol": 3}
    fixed, _ = metrics(result, 5, Execution(capital_sol=10), start=T, end=T + 4000)
    assert fixed.total_return == pytest.approx(0.07) and fixed.max_drawdown == pytest.approx(0.5 / 11)


def test_metrics_of_no_trades() -> None:
    m, curve = metrics(replay([signal()], [False], tape(M=[(T, 1.0)]), EX, end=T + 100), 1, EX, T, T + 100)
    assert m.trades == 0 and m.hit_rate is None and m.return_per_trade is None and m.total_return is None
    assert m.total_pnl_sol == 0 and m.max_drawdown == 0 and m.exposure == 0
    assert curve.equity == [EX.stake_sol]


def test_capital_needed_recycles_what_copies_bring_back() -> None:
    def trade(entry: int, exit_: int, pnl: float) -> Trade:
        return Trade("W", "M", entry, "s", entry, 1.0, exit_, "kol", 1.0, 1.0 + pnl, 0, 0.0)

    # One after the other: the second stake is paid from what the first brought back.
    assert capital_needed([trade(0, 10, 0.5), trade(10, 20, 0.5)]) == pytest.approx(1.0)
    # After a loss of 0.8 the next stake needs 0.8 more: losses can never exceed the capital.
    losing = [trade(0, 10, -0.8), trade(20, 30, -0.9)]
    assert capital_needed(losing) == pytest.approx(1.8)
    m, _ = metrics(Replay(trades=losing, selected=2), 2, EX, 0, 40)
    assert m.capital_sol == pytest.approx(1.8) and m.max_drawdown == pytest.approx(1.7 / 1.8)
    # Overlapping: both stakes at once.
    assert capital_needed([trade(0, 10, 5.0), trade(5, 20, 0.0)]) == pytest.approx(2.0)


def test_deployment_and_drawdown_helpers() -> None:
    assert max_drawdown([10, 12, 9, 11, 6, 7]) == (pytest.approx(0.5), pytest.approx(6))
    assert max_drawdown([1, 2, 3]) == (0.0, 0.0)


def test_back_to_back_copies_do_not_overlap() -> None:
    prices = tape(M=[(T, 1.0), (T + 100, 1.0)], N=[(T + 70, 1.0), (T + 200, 1.0)])
    signals = [
        signal("M", T, (KolSell(T + 100, 1.0, "a"),), signature="a"),
        signal("N", T + 100, (KolSell(T + 200, 1.0, "b"),), signature="b"),
    ]
    result = replay(signals, [True, True], prices, EX, end=T + 300)
    exposure, average, peak = deployment(result.trades, T, T + 300)
    assert peak == 1.0 and exposure == pytest.approx(200 / 300) and average == pytest.approx(200 / 300)


def test_price_tape_checks_its_input() -> None:
    with pytest.raises(ValueError, match="not in time order"):
        tape(M=[(T + 1, 1.0), (T, 1.0)])
    with pytest.raises(ValueError, match="finite and positive"):
        tape(M=[(T, 0.0)])
    with pytest.raises(ValueError, match="finite and positive"):
        tape(M=[(T, math.nan)])
    ordered = PriceTape.from_observations(
        [("M", (T, 2, "b"), 2.0), ("M", (T, 1, "z"), 1.0), ("M", (T - 5, 9, "a"), 0.5)]
    )
    assert ordered.price_at("M", T) == 2.0 and ordered.price_at("M", T - 1) == 0.5
    assert ordered.price_at("M", T - 6) is None and ordered.price_at("X", T) is None


def test_execution_rejects_bad_values() -> None:
    for bad in (
        {"delay_s": -1},
        {"slippage_bps": 10_000},
        {"fee_bps": -1},
        {"stake_sol": 0},
        {"take_profit": 1.0},
        {"stop_loss": 1.0},
        {"max_hold_s": 0},
        {"tx_fee_sol": math.inf},
    ):
        with pytest.raises(ValidationError):
            Execution(**bad)


def test_strategy_specs() -> None:
    assert StrategySpec.parse("copy_all").name == "copy_all"
    assert StrategySpec.parse("top_kols").name == "top_kols:10"
    assert StrategySpec.parse("top-kols:3").top_k == 3
    assert (
        StrategySpec.parse("model:0.25").threshold == 0.25 and StrategySpec.parse("model").threshold is None
    )
    assert StrategySpec.parse(" oracle:1 ").name == "oracle:1"
    for bad, message in (
        ("buy_everything", "unknown strategy"),
        ("copy_all:3", "takes no argument"),
        ("top_kols:x", "whole number"),
        ("top_kols:0", "at least 1"),
        ("model:1.5", r"in \[0, 1\]"),
        ("model:abc", "must be a number"),
        ("oracle:nan", r"in \[0, 1\]"),
    ):
        with pytest.raises(ValueError, match=message):
            StrategySpec.parse(bad)


def test_top_kols_ranks_point_in_time_pnl() -> None:
    # Three KOLs (rows) at two times (columns: the signals); Z has too few scored positions.
    wallets = ["X", "Y", "Z"]
    pnl = np.array([[5.0, -1.0], [3.0, 4.0], [9.0, 9.0]])
    scored = np.array([[6, 6], [6, 7], [2, 2]])
    decisions, ranks = top_kols(["Y", "X"], wallets, pnl, scored, top_k=1, min_scored=5)
    # At the first signal Y ranks 2nd (X has 5 > 3); at the second X ranks 2nd with negative PnL.
    assert decisions.tolist() == [False, False] and ranks.tolist() == [2, 2]
    # Ranked, not filtered: in the top K even with a loss (everyone may be losing).
    decisions, _ = top_kols(["X"], wallets, pnl[:, 1:], scored[:, 1:], top_k=2)
    assert decisions.tolist() == [True]
    decisions, ranks = top_kols(
        ["X", "Y", "Z", "Q"], wallets, np.hstack([pnl, pnl]), np.hstack([scored, scored]), top_k=1
    )
    assert decisions.tolist() == [True, True, False, False]
    assert ranks[:2].tolist() == [1, 1] and np.isnan(ranks[2:]).all()


def test_at_least_never_picks_missing_values() -> None:
    assert at_least(np.array([0.2, np.nan, 0.5, 0.7]), 0.5).tolist() == [False, False, True, True]


# The market tape beside the trades tape. The trades tape holds the prices tracked wallets traded
# at; the market tape the token's own curve or pool, read every few seconds, with gaps where the
# market could not be read. The engine fills on either: the same rules, other prices.


def test_a_take_profit_between_two_kol_trades_triggers_on_the_market_tape_only() -> None:
    # The KOL buys at 1.0 and sells at 1.1 ten minutes later; no tracked wallet trades in between.
    # The token's own market ran to 3.5 at T+200 and fell back: only the market tape saw it.
    trades = tape(M=[(T, 1.0), (T + 600, 1.1)])
    market = tape(M=[(T, 1.0), (T + 20, 1.02), (T + 200, 3.5), (T + 260, 1.4), (T + 600, 1.1)])
    kol = signal(sells=(KolSell(T + 600, 1.0, "x"),))
    rule = Execution(take_profit=3.0)

    on_trades = simulate_copy(kol, trades, rule, end=T + 3600)
    assert on_trades is not None and on_trades.exit_reason == "kol" and on_trades.exit_time == T + 630
    assert on_trades.proceeds_sol == pytest.approx(0.99 / 1.01 * 1.1 * 0.99**2, rel=1e-12)

    on_market = simulate_copy(kol, market, rule, end=T + 3600)
    # The copy pays the market at T+30 (1.02, not the KOL's 1.0); 3.5 ≥ 3 × 1.02 × 1.01 at T+200:
    # sold 30 s later at the market then (still 3.5).
    assert on_market is not None and on_market.entry_price == 1.02
    assert on_market.exit_reason == "take_profit" and on_market.exit_time == T + 230
    assert on_market.proceeds_sol == pytest.approx(0.99 / (1.02 * 1.01) * 3.5 * 0.99**2, rel=1e-12)


def test_a_stop_loss_between_two_kol_trades_triggers_on_the_market_tape_only() -> None:
    trades = tape(M=[(T, 1.0), (T + 600, 0.9)])
    market = tape(M=[(T, 1.0), (T + 100, 0.6), (T + 150, 0.3), (T + 400, 0.8), (T + 600, 0.9)])
    kol = signal(sells=(KolSell(T + 600, 1.0, "x"),))
    rule = Execution(stop_loss=0.5)

    on_trades = simulate_copy(kol, trades, rule, end=T + 3600)
    assert on_trades is not None and on_trades.exit_reason == "kol"
    assert on_trades.proceeds_sol == pytest.approx(0.99 / 1.01 * 0.9 * 0.99**2, rel=1e-12)

    # 0.3 at T+150 is below 0.5 × 1.01: sold at T+180 at the market then (0.3), not at the stop.
    on_market = simulate_copy(kol, market, rule, end=T + 3600)
    assert on_market is not None and on_market.exit_reason == "stop_loss" and on_market.exit_time == T + 180
    assert on_market.proceeds_sol == pytest.approx(0.99 / 1.01 * 0.3 * 0.99**2, rel=1e-12)


def test_a_gap_is_not_a_price() -> None:
    # Read at 1.0 (T), lost at T+20 (a gap: e.g. the curve completed and no pool is known yet),
    # read again at T+100 at 2.0.
    market = PriceTape({"M": ([T, T + 100, T + 400], [1.0, 2.0, 1.5])}, gaps={"M": [T + 20]})
    assert market.price_at("M", T + 19) == 1.0 and market.price_at("M", T + 30) is None
    assert market.last_price("M", T + 30) == 1.0 and market.next_price("M", T + 30) == (T + 100, 2.0)
    assert market.price_at("M", T + 100) == 2.0
    assert len(market) == 3 and market.gaps == 1

    # An entry that would fill in the gap is not made: not at the 1.0 from before it.
    kol = signal(sells=(KolSell(T + 400, 1.0, "x"),))
    assert simulate_copy(kol, market, EX, end=T + 1000) is None
    skipped = replay([kol], [True], market, EX, end=T + 1000)
    assert skipped.trades == [] and skipped.skipped_unfillable == 1

    # A sell that would fill in a gap fills at the first price after it, then.
    lost = PriceTape({"M": ([T, T + 200], [1.0, 2.0])}, gaps={"M": [T + 100]})
    early = signal(sells=(KolSell(T + 80, 1.0, "x"),))
    trade = simulate_copy(early, lost, EX, end=T + 1000)
    assert trade is not None and trade.exit_reason == "kol" and trade.exit_time == T + 200
    assert trade.proceeds_sol == pytest.approx(0.99 / 1.01 * 2.0 * 0.99**2, rel=1e-12)
    assert trade.gap_fills == 1

    # A copy held into a gap that lasts to the end of the data is valued at the last price before it.
    held = simulate_copy(signal(closed=False), PriceTape({"M": ([T], [1.0])}, {"M": [T + 100]}), EX, T + 500)
    assert (
        held is not None and held.exit_reason == "end" and held.exit_time == T + 500 and held.gap_fills == 1
    )
    assert held.proceeds_sol == pytest.approx(0.99 / 1.01 * 1.0 * 0.99**2, rel=1e-12)
    m, _ = metrics(replay([early], [True], lost, EX, end=T + 1000), 1, EX, T, T + 1000)
    assert m.gap_fills == 1

    # Nor does a gap trigger a rule: no stop-loss while the market cannot be read.
    ruled = simulate_copy(early, lost, Execution(stop_loss=0.5, take_profit=5.0), end=T + 1000)
    assert ruled is not None and ruled.exit_reason == "kol"


def test_a_gap_and_a_price_in_the_same_second_follow_chain_order() -> None:
    # The chain key's slot orders rows within a second; the last one says what the market is.
    read_again = PriceTape.from_observations(
        [("M", (T, 1, ""), 1.0), ("M", (T + 50, 6, ""), 2.0), ("M", (T + 50, 5, ""), None)]
    )
    assert read_again.price_at("M", T + 50) == 2.0
    lost_again = PriceTape.from_observations(
        [("M", (T, 1, ""), 1.0), ("M", (T + 50, 5, ""), 2.0), ("M", (T + 50, 6, ""), None)]
    )
    assert lost_again.price_at("M", T + 50) is None and lost_again.last_price("M", T + 50) == 2.0
    # Without slots (the constructor), the gap comes last: a fill never uses a price the market lost.
    assert PriceTape({"M": ([T], [1.0])}, gaps={"M": [T]}).price_at("M", T) is None
    # A token with gaps only has no price: it is not on the tape.
    only_gaps = PriceTape({}, gaps={"N": [T]})
    assert "N" not in only_gaps and only_gaps.mints == set() and only_gaps.price_at("N", T + 1) is None
    with pytest.raises(ValueError, match="finite and positive"):
        PriceTape.from_observations([("M", (T, 1, ""), 0.0)])
