"""The twin's ground-truth positions follow docs/analysis.md ("Position rules") to the letter (hand-written cases)."""

from __future__ import annotations

import pytest

from kolray.sim.positions import build_positions

W = "Wallet1111111111111111111111111111111111111"
M = "Mint11111111111111111111111111111111111111"
SOL = 1_000_000_000


def swap(
    sig: str,
    t: int,
    side: str,
    tokens: int,
    lamports: int,
    *,
    fee: int = 5000,
    tips: int = 0,
    wallet: str = W,
    mint: str = M,
    slot: int | None = None,
) -> dict:
    return {
        "signature": sig, "slot": slot if slot is not None else t, "block_time": t, "wallet": wallet, "mint": mint,
        "side": side, "token_amount": tokens, "sol_amount": lamports, "fee": fee, "tips": tips, "rent": 0,
        "dex": "pumpfun", "market_cap_sol": 50.0, "quote_mint": None,
    }  # fmt: skip


def test_buy_then_full_sell_closes_with_multiple_and_fees_apart() -> None:
    positions, untracked = build_positions(
        [swap("a", 100, "buy", 1000, 1 * SOL, tips=10_000), swap("b", 400, "sell", 1000, 3 * SOL)]
    )
    (p,) = positions
    assert (p["seq"], p["status"], p["entry_signature"], p["exit_signature"]) == (0, "closed", "a", "b")
    assert p["cost_sol"] == 1.0 and p["proceeds_sol"] == 3.0
    assert p["fees_sol"] == pytest.approx((5000 + 10_000 + 5000) / SOL)
    assert p["multiple"] == 3.0 and p["label_3x"] is True  # ≥ 3, within 7 days
    assert p["realised_pnl_sol"] == pytest.approx(2.0 - p["fees_sol"])
    assert p["hold_s"] == 300 and p["hold_weighted_s"] == 300
    assert untracked == {}


def test_partial_sells_keep_the_position_open_until_dust() -> None:
    rows = [
        swap("a", 0, "buy", 10_000, SOL),
        swap("b", 10, "sell", 5_000, SOL),
        swap("c", 20, "sell", 4_990, SOL),  # 10 left = 0.1% of 10,000: dust, the position closes
    ]
    (p,) = build_positions(rows)[0]
    assert p["status"] == "closed" and p["exit_signature"] == "c" and p["n_sells"] == 2


def test_more_than_dust_left_is_still_open() -> None:
    rows = [swap("a", 0, "buy", 10_000, SOL), swap("b", 10, "sell", 9_989, SOL)]  # 11 left > 0.1%
    (p,) = build_positions(rows)[0]
    assert p["status"] == "open" and p["multiple"] is None and p["label_3x"] is False


def test_fifo_lots_and_size_weighted_hold() -> None:
    rows = [
        swap("a", 0, "buy", 100, SOL),
        swap("b", 100, "buy", 100, 2 * SOL),  # an add: same position
        swap("c", 200, "sell", 150, 3 * SOL),  # all of lot a (held 200 s) and half of lot b (100 s)
        swap("d", 300, "sell", 50, SOL),  # the rest of lot b (200 s)
    ]
    (p,) = build_positions(rows)[0]
    assert p["n_buys"] == 2 and p["cost_sol"] == 3.0 and p["multiple"] == pytest.approx(4 / 3)
    assert p["hold_weighted_s"] == pytest.approx((200 * 100 + 100 * 50 + 200 * 50) / 200)
    assert p["hold_s"] == 300


def test_a_buy_after_a_close_opens_the_next_seq() -> None:
    rows = [
        swap("a", 0, "buy", 100, SOL),
        swap("b", 10, "sell", 100, SOL),
        swap("c", 20, "buy", 100, SOL),
    ]
    positions, _ = build_positions(rows)
    assert [(p["seq"], p["status"]) for p in positions] == [(0, "closed"), (1, "open")]


def test_sells_beyond_the_position_are_untracked_and_flagged() -> None:
    rows = [
        swap("a", 0, "buy", 100, SOL),
        swap("b", 10, "sell", 200, 4 * SOL),  # 100 of these tokens were never bought here
    ]
    (p,) = build_positions(rows)[0]
    assert p["flags"] == "untracked_sell"
    assert p["proceeds_sol"] == 2.0  # only the tracked half's share of the SOL
    assert p["status"] == "closed"


def test_a_sell_with_no_open_position_creates_none() -> None:
    positions, untracked = build_positions([swap("a", 0, "sell", 100, SOL)])
    assert positions == [] and untracked == {W: 1}


def test_label_needs_the_close_within_the_horizon_and_usable_needs_the_horizon_elapsed() -> None:
    late = 7 * 86_400 + 1
    rows = [swap("a", 0, "buy", 100, SOL), swap("b", late, "sell", 100, 5 * SOL)]
    (p,) = build_positions(rows, cutoff=late)[0]
    assert p["multiple"] == 5.0 and p["label_3x"] is False  # closed after H
    (q,) = build_positions([swap("a", 1000, "buy", 100, SOL)], cutoff=1000 + 7 * 86_400 - 1)[0]
    assert q["usable"] is False


def test_chain_order_is_time_then_slot_then_signature() -> None:
    # Same block time: the slot decides; same slot: the signature string decides.
    rows = [
        swap("z", 5, "sell", 100, SOL, slot=11),
        swap("y", 5, "buy", 100, SOL, slot=10),
    ]
    (p,) = build_positions(rows)[0]
    assert p["entry_signature"] == "y" and p["status"] == "closed"
    rows = [swap("b", 5, "sell", 100, SOL, slot=10), swap("a", 5, "buy", 100, SOL, slot=10)]
    (p,) = build_positions(rows)[0]
    assert p["entry_signature"] == "a" and p["status"] == "closed"


def test_positions_are_per_wallet_and_mint() -> None:
    other = "Mint22222222222222222222222222222222222222"
    rows = [
        swap("a", 0, "buy", 100, SOL),
        swap("b", 1, "buy", 100, SOL, mint=other),
        swap("c", 2, "sell", 100, SOL),
    ]
    positions, _ = build_positions(rows)
    by_mint = {p["mint"]: p["status"] for p in positions}
    assert by_mint == {M: "closed", other: "open"}
