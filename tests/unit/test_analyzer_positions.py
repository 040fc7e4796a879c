"""Positions from swaps: docs/analysis.md "Position rules", case by case."""

from __future__ import annotations

import random

import pytest

from kolray.analyzer import (
    FLAG_NON_SOL_LEG,
    FLAG_UNTRACKED_SELL,
    Mark,
    Position,
    build_ledger,
    build_positions,
    last_prices,
)
from kolray.chain.types import WSOL_MINT, Swap
from kolray.db.tables import SwapRow

W = "Wallet1111111111111111111111111111111111111"
W2 = "Wallet2222222222222222222222222222222222222"
MINT = "Mint11111111111111111111111111111111111111"
MINT2 = "Mint22222222222222222222222222222222222222"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
SOL = 1_000_000_000
T0 = 1_700_000_000

_counter = iter(range(10**9))


def swap(
    side: str, tokens: int, sol: float, t: int = 0, *, wallet: str = W, mint: str = MINT, **extra
) -> Swap:
    """A swap at T0 + t seconds; ``sol`` in SOL (converted to lamports)."""
    n = next(_counter)
    values = dict(
        signature=extra.pop("signature", f"sig{n:08d}"),
        slot=extra.pop("slot", 1_000 + t),
        block_time=T0 + t,
        wallet=wallet,
        mint=mint,
        side=side,
        token_amount=tokens,
        token_decimals=extra.pop("token_decimals", 6),
        sol_amount=round(sol * SOL),
        dex=extra.pop("dex", "raydium"),
    )
    values.update(extra)
    return Swap(**values)


def only(positions: list[Position]) -> Position:
    assert len(positions) == 1, positions
    return positions[0]


def test_round_trip_gives_cost_proceeds_fees_multiple_and_hold() -> None:
    buy = swap(
        "buy", 1_000_000, 1.0, 0, dex="pumpfun", fee=5_000, tips=100_000, rent=2_039_280, market_cap_sol=42.0
    )
    sell = swap("sell", 1_000_000, 3.5, 3_600, fee=5_000)
    p = only(build_positions([buy, sell]))
    assert (p.status, p.seq, p.entry_time, p.exit_time) == ("closed", 0, T0, T0 + 3_600)
    assert (p.entry_signature, p.exit_signature, p.entry_dex) == (buy.signature, sell.signature, "pumpfun")
    assert (p.cost_lamports, p.proceeds_lamports, p.fees_lamports) == (
        SOL,
        3_500_000_000,
        110_000,
    )  # rent is no cost
    assert p.cost_sol == 1.0 and p.proceeds_sol == 3.5 and p.fees_sol == 0.00011
    assert p.multiple == 3.5 and p.realised_3x
    assert p.realised_pnl_lamports == 2_500_000_000 - 110_000
    assert p.hold_s == 3_600 and p.hold_weighted_s == 3_600.0
    assert (p.n_buys, p.n_sells, p.flags) == (1, 1, [])
    # 1 SOL for 1 whole token (6 decimals): the price the swap reveals.
    assert p.entry_price_sol == 1.0 and p.entry_market_cap_sol == 42.0
    assert p.last_price_sol is None and p.unrealised_value_sol is None  # closed: no mark


def test_entry_price_prefers_the_swaps_own_price() -> None:
    p = only(build_positions([swap("buy", 2_000_000, 1.0, price_sol=0.25)]))
    assert p.entry_price_sol == 0.25


def test_partial_exits_close_only_when_the_rest_is_dust() -> None:
    swaps = [
        swap("buy", 1_000, 1.0, 0),
        swap("sell", 400, 0.8, 60),
        swap("sell", 599, 1.5, 120),  # 1 token left = 0.1% of 1,000: dust, closes
    ]
    p = only(build_positions(swaps))
    assert p.status == "closed" and p.exit_time == T0 + 120 and p.n_sells == 2
    assert p.tokens_sold == 999 and p.tokens_remaining == 1
    assert p.proceeds_lamports == 2_300_000_000 and p.multiple == pytest.approx(2.3)
    assert p.hold_s == 120
    assert p.hold_weighted_s == (60 * 400 + 120 * 599) / 1_000


def test_dust_boundary_is_a_tenth_of_a_percent_of_what_was_bought() -> None:
    at_limit = build_positions([swap("buy", 100_000, 1.0, 0), swap("sell", 99_900, 1.0, 10)])
    above = build_positions([swap("buy", 100_000, 1.0, 0), swap("sell", 99_899, 1.0, 10)])
    assert only(at_limit).status == "closed"  # 100 left = 0.1%
    assert only(above).status == "open" and only(above).tokens_remaining == 101
    assert only(above).multiple is None and only(above).realised_pnl_sol is None


def test_fifo_lots_weight_the_hold_by_size() -> None:
    swaps = [
        swap("buy", 100, 0.1, 0),
        swap("buy", 300, 0.3, 100),
        swap("sell", 200, 0.4, 200),  # 100 from lot 1 (held 200 s), 100 from lot 2 (held 100 s)
        swap("sell", 200, 0.4, 400),  # 200 from lot 2 (held 300 s)
    ]
    p = only(build_positions(swaps))
    assert (p.n_buys, p.n_sells, p.tokens_bought, p.cost_lamports) == (2, 2, 400, 400_000_000)
    assert p.hold_s == 400
    assert p.hold_weighted_s == (200 * 100 + 100 * 100 + 300 * 200) / 400 == 225.0


def test_a_buy_after_a_close_opens_the_next_seq_without_the_dust() -> None:
    swaps = [
        swap("buy", 10_000, 1.0, 0),
        swap("sell", 9_995, 2.0, 10),  # 5 tokens of dust stay behind
        swap("buy", 1_000, 0.5, 20),
        swap("sell", 1_000, 0.25, 30),
    ]
    first, second = build_positions(swaps)
    assert (first.seq, first.status, first.multiple) == (0, "closed", 2.0)
    assert (second.seq, second.status, second.entry_time, second.exit_time) == (1, "closed", T0 + 20, T0 + 30)
    assert second.tokens_bought == 1_000 and second.multiple == 0.5 and second.flags == []


def test_selling_more_than_was_bought_keeps_the_extra_out_of_pnl() -> None:
    swaps = [swap("buy", 100, 1.0, 0), swap("sell", 150, 3.0, 60)]  # 50 came by transfer
    p = only(build_positions(swaps))
    assert p.flags == [FLAG_UNTRACKED_SELL] and p.status == "closed"
    assert (p.tokens_sold, p.tokens_untracked) == (100, 50)
    assert (p.proceeds_lamports, p.untracked_lamports) == (2 * SOL, SOL)  # 100/150 of 3 SOL
    assert p.multiple == 2.0 and p.realised_pnl_sol == 1.0


def test_the_untracked_share_rounds_the_tracked_share_down() -> None:
    p = only(build_positions([swap("buy", 1, 1.0, 0), swap("sell", 3, 1e-9, 60)]))  # 1 lamport for 3 tokens
    assert (p.proceeds_lamports, p.untracked_lamports) == (0, 1)


def test_a_sell_without_a_position_is_an_untracked_sell_and_no_position() -> None:
    airdrop_sale = swap("sell", 500, 0.2, 0)
    buy = swap("buy", 1_000, 1.0, 10)
    ledger = build_ledger([airdrop_sale, buy])
    assert [s.signature for s in ledger.untracked_sells] == [airdrop_sale.signature]
    assert ledger.untracked_sells[0].sol_amount == 200_000_000
    p = only(ledger.positions)
    assert (p.seq, p.status, p.flags, p.entry_signature) == (0, "open", [], buy.signature)


def test_token_to_token_legs_are_flagged_and_have_no_sol_multiple() -> None:
    usdc_buy = swap("buy", 1_000, 0.0, 0, quote_mint=USDC, quote_amount=50_000_000, quote_decimals=6)
    sol_sell = swap("sell", 1_000, 2.0, 60)
    p = only(build_positions([usdc_buy, sol_sell]))
    assert p.flags == [FLAG_NON_SOL_LEG] and p.status == "closed"
    assert not p.sol_valued and p.multiple is None and p.realised_pnl_sol is None
    assert p.entry_price_sol is None  # no SOL leg, no SOL price
    # A token-to-token sell flags the position too.
    q = only(build_positions([swap("buy", 10, 1.0, 0), swap("sell", 10, 0.0, 9, quote_mint=USDC)]))
    assert q.flags == [FLAG_NON_SOL_LEG] and q.multiple is None


def test_wsol_as_the_quote_is_sol() -> None:
    p = only(build_positions([swap("buy", 10, 1.0, 0, quote_mint=WSOL_MINT), swap("sell", 10, 2.0, 9)]))
    assert p.flags == [] and p.multiple == 2.0


def test_input_order_does_not_matter_chain_order_does() -> None:
    swaps = [
        swap("buy", 1_000, 1.0, 0),
        swap("buy", 1_000, 2.0, 5),
        swap("sell", 1_500, 4.5, 50),
        swap("buy", 1_000, 1.0, 80, wallet=W2),
        swap("sell", 500, 0.5, 90),
        swap("buy", 7, 1.0, 100, mint=MINT2),
        swap("sell", 7, 0.1, 101, mint=MINT2),
    ]
    expected = build_positions(swaps)
    for seed in range(5):
        shuffled = swaps[:]
        random.Random(seed).shuffle(shuffled)
        assert build_positions(shuffled) == expected
    assert [(p.wallet, p.mint, p.seq) for p in expected] == sorted(
        (p.wallet, p.mint, p.seq) for p in expected
    )


def test_same_second_ties_break_by_slot_then_signature() -> None:
    # Two swaps in the same second: the sell in the earlier slot comes first, so it has nothing to sell.
    sell = swap("sell", 100, 1.0, 0, slot=10, signature="zzzz")
    buy = swap("buy", 100, 1.0, 0, slot=11, signature="aaaa")
    ledger = build_ledger([buy, sell])
    assert len(ledger.untracked_sells) == 1 and only(ledger.positions).status == "open"
    # Same slot: the signature decides ('aaaa' before 'zzzz'): buy, then sell.
    sell2 = swap("sell", 100, 1.0, 0, slot=10, signature="zzzz")
    buy2 = swap("buy", 100, 1.0, 0, slot=10, signature="aaaa")
    assert only(build_positions([sell2, buy2])).status == "closed"


def test_a_late_backfilled_buy_turns_an_untracked_sell_into_a_closed_position() -> None:
    recent = [swap("sell", 1_000, 3.0, 500), swap("buy", 200, 0.1, 600)]
    before = build_ledger(recent)
    assert len(before.untracked_sells) == 1 and only(before.positions).entry_time == T0 + 600
    backfilled = [swap("buy", 1_000, 1.0, 100), *recent]  # an older buy arrives later
    first, second = build_positions(backfilled)
    assert (first.seq, first.entry_time, first.exit_time, first.multiple) == (0, T0 + 100, T0 + 500, 3.0)
    assert (second.seq, second.status, second.entry_time) == (1, "open", T0 + 600)


def test_open_positions_are_marked_with_the_last_price_of_their_mint_from_any_wallet() -> None:
    mine = swap("buy", 2_000_000, 1.0, 0)  # 0.5 SOL per whole token
    other_early = swap("buy", 1_000_000, 2.0, 50, wallet=W2)  # 2 SOL per token
    other_late = swap("sell", 1_000_000, 4.0, 200, wallet=W2)  # 4 SOL per token
    p = next(p for p in build_positions([mine, other_early, other_late]) if p.wallet == W)
    assert (p.last_price_sol, p.mark_time) == (4.0, T0 + 200)
    assert p.unrealised_value_sol == 8.0  # 2 whole tokens at 4 SOL
    # As of t=100 only the earlier swaps are known: the mark is 2 SOL, and W2's sell has not happened.
    as_of = build_positions([mine, other_early, other_late], as_of=T0 + 100)
    assert {(p.wallet, p.status) for p in as_of} == {(W, "open"), (W2, "open")}
    assert next(p for p in as_of if p.wallet == W).last_price_sol == 2.0
    # Marks can come from elsewhere (the database stage passes its own).
    given = only(build_positions([mine], marks={MINT: Mark(0.1, T0 + 999)}))
    assert (given.last_price_sol, given.mark_time) == (0.1, T0 + 999)
    assert only(build_positions([mine], marks={})).last_price_sol is None
    # A non-SOL swap reveals no SOL price.
    assert last_prices([mine, swap("buy", 10, 0.0, 300, quote_mint=USDC)]) == {MINT: Mark(0.5, T0)}


def test_swaps_without_time_or_tokens_are_skipped_and_counted() -> None:
    ledger = build_ledger(
        [swap("buy", 0, 1.0, 0), Swap("s", 1, None, W, MINT, "buy", 10, 6, 1, "x"), swap("buy", 5, 1.0)]
    )
    assert ledger.skipped == 2 and len(ledger.positions) == 1


def test_bad_input_is_refused_with_the_reason() -> None:
    one = swap("buy", 10, 1.0, 0)
    with pytest.raises(ValueError, match="given twice"):
        build_positions([one, one])
    with pytest.raises(ValueError, match="side must be"):
        build_positions([swap("swap", 10, 1.0, 0)])


def test_rows_and_mappings_work_like_swaps() -> None:
    swaps = [
        swap("buy", 2**64 - 1, 1.0, 0),
        swap("buy", 2**64 - 1, 1.0, 5),
        swap("sell", 2 * (2**64 - 1), 3.0, 9),
    ]
    rows = [SwapRow(**s.to_dict()) for s in swaps]
    expected = build_positions(swaps)
    assert build_positions(rows) == expected == build_positions([s.to_dict() for s in swaps])
    p = only(expected)
    assert p.tokens_bought == 2 * (2**64 - 1) and p.status == "closed" and p.multiple == 1.5


def test_a_position_survives_the_database_row_round_trip() -> None:
    swaps = [swap("buy", 1_000, 1.0, 0, fee=7), swap("sell", 1_500, 2.0, 30), swap("buy", 5, 0.1, 40)]
    for p in build_positions(swaps):
        row = p.to_row()
        assert Position.from_row(row) == p
        assert row["multiple"] == p.multiple and row["hold_s"] == p.hold_s
