"""extract_swaps on real mainnet transactions (``../shared/fixtures/mainnet``, read in place).

Every MANIFEST entry is checked against the values hand-checked there for its signer:

- trades (kind buy/sell/swap): the mints, sides and raw token amounts exactly, and the SOL
  reconciliation of the fixture README to the lamport: ``Σ ±sol_amount − rent − tips ==
  sol_delta_lamports`` (sells +, buys −; the fee is already added back in ``sol_delta``), with
  ``rent`` and ``tips`` equal to the manifest's own ``rent_lamports`` and ``tips_lamports``;
- non-trades (kind none, failed included) give ``[]``; the malformed one raises.

``sol_amount`` is the whole trade leg, so it includes what the wallet paid *inside* the route
(pump.fun's 1% and creator fee, a router's commission, rent of program accounts a pump.fun
create or migrate opens). Where a pump.fun TradeEvent carries its fees, the test below checks
that this is exactly the difference between the event's pool amount and ``sol_amount``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from solders.pubkey import Pubkey

from kolray.chain import programs
from kolray.chain.swaps import MalformedTransaction, Swap, extract_swaps

_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mainnet"
_MANIFEST = Path(os.environ.get("KOLRAY_SHARED_FIXTURES", _DEFAULT)) / "MANIFEST.json"
_ENTRIES: list[dict[str, Any]] = json.loads(_MANIFEST.read_text()) if _MANIFEST.is_file() else []
_ABSENT = [pytest.param(None, marks=pytest.mark.skip(reason=f"shared fixtures not found at {_MANIFEST}"))]


def _params(*kinds: str) -> list[Any]:
    chosen = [pytest.param(e, id=e["file"]) for e in _ENTRIES if e["kind"] in kinds]
    return chosen or _ABSENT


def _load(directory: Path, entry: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads((directory / entry["file"]).read_bytes())


def _signed_sol(swaps: list[Swap]) -> int:
    return sum(s.sol_amount if s.side == "sell" else -s.sol_amount for s in swaps)


def _token_movements(swaps: list[Swap]) -> dict[str, int]:
    """The wallet's net token change per mint as the swaps tell it (subjects, then quotes)."""
    moved: dict[str, int] = {}
    for s in swaps:
        moved[s.mint] = s.token_amount if s.side == "buy" else -s.token_amount
    for s in swaps:
        if s.quote_mint is not None and s.quote_mint not in moved:
            paid = -s.quote_amount if s.side == "buy" else s.quote_amount
            moved[s.quote_mint] = moved.get(s.quote_mint, 0) + paid
    return moved


def _dex_of(entry: dict[str, Any]) -> str:
    """The venue in the fixture's file name (``<dex>_<kind>_<sig>.json``)."""
    return entry["file"].rsplit("_", 2)[0]


@pytest.mark.parametrize("entry", _params("buy", "sell", "swap"))
def test_trade_amounts_and_sol_reconcile_with_the_manifest(
    mainnet_fixtures: Path, entry: dict[str, Any]
) -> None:
    tx = _load(mainnet_fixtures, entry)
    expected = entry["expected"]
    swaps = extract_swaps(tx, entry["signer"])

    assert swaps, "a trade must give at least one swap"
    assert _token_movements(swaps) == {m: int(v) for m, v in expected["token_deltas"].items()}
    for s in swaps:
        assert s.token_decimals == expected["token_decimals"].get(s.mint, s.token_decimals)
        assert s.token_amount > 0
        assert s.signature == entry["signature"]
        assert s.wallet == entry["signer"]
        assert s.slot == tx.get("slot") and s.block_time == tx.get("blockTime")

    # The README's reconciliation, to the lamport.
    rent = sum(s.rent for s in swaps)
    tips = sum(s.tips for s in swaps)
    assert rent == expected["rent_lamports"]
    assert tips == expected["tips_lamports"]
    assert _signed_sol(swaps) - rent - tips == expected["sol_delta_lamports"]
    assert sum(s.fee for s in swaps) == tx["meta"]["fee"]  # the signer is the fee payer

    if entry["kind"] == "buy":
        assert [s.side for s in swaps] == ["buy"] and swaps[0].sol_amount > 0 and swaps[0].quote_mint is None
    elif entry["kind"] == "sell":
        assert [s.side for s in swaps] == ["sell"] and swaps[0].sol_amount > 0 and swaps[0].quote_mint is None
    else:  # token to token: no SOL leg, every swap names its quote
        assert all(s.sol_amount == 0 and s.quote_mint and s.quote_amount for s in swaps)


@pytest.mark.parametrize("entry", _params("buy", "sell", "swap"))
def test_trades_are_labelled_with_their_venue(mainnet_fixtures: Path, entry: dict[str, Any]) -> None:
    swaps = extract_swaps(_load(mainnet_fixtures, entry), entry["signer"])
    for s in swaps:
        assert s.dex == _dex_of(entry)
        assert programs.VENUES[s.program_id] == s.dex


@pytest.mark.parametrize("entry", _params("none"))
def test_non_trades_and_failed_transactions_give_no_swap(
    mainnet_fixtures: Path, entry: dict[str, Any]
) -> None:
    assert extract_swaps(_load(mainnet_fixtures, entry), entry["signer"]) == []


@pytest.mark.parametrize("entry", _params("malformed"))
def test_the_malformed_result_raises_naming_the_problem(
    mainnet_fixtures: Path, entry: dict[str, Any]
) -> None:
    tx = _load(mainnet_fixtures, entry)
    # Its signer is not recorded; the intact copy of the same transaction names it.
    intact = next(e for e in _ENTRIES if e["signature"] == entry["signature"] and e["kind"] != "malformed")
    with pytest.raises(MalformedTransaction, match="account keys"):
        extract_swaps(tx, intact["signer"])


def test_the_stablecoin_swaps_quote_in_usdc(mainnet_fixtures: Path) -> None:
    by_file = {e["file"]: e for e in _ENTRIES}
    cases = {
        "okx_swap_3p36wGRa.json": "buy",  # USDC → pump token
        "jupiter_v6_swap_51SfoFAg.json": "buy",  # USDC → ORE
        "jupiter_v6_swap_rNMFZpBm.json": "sell",  # pump token → USDC
    }
    for name, side in cases.items():
        entry = by_file[name]
        (swap,) = extract_swaps(_load(mainnet_fixtures, entry), entry["signer"])
        assert (swap.side, swap.quote_mint, swap.quote_decimals) == (side, programs.USDC_MINT, 6)
        assert swap.quote_amount == abs(entry["expected"]["token_deltas"][programs.USDC_MINT])
        assert swap.price_sol is None and swap.market_cap_sol is None  # no SOL leg, no SOL price


def test_a_swap_between_two_tokens_is_a_sell_and_a_buy(mainnet_fixtures: Path) -> None:
    entry = next(e for e in _ENTRIES if e["file"] == "okx_swap_2bhr1FWq.json")
    sold, bought = extract_swaps(_load(mainnet_fixtures, entry), entry["signer"])
    deltas = entry["expected"]["token_deltas"]
    a, b = "7atgF8KQo4wJrD5ATGX7t1V2zVvykPJbFfNeVf1icFv1", "ED5nyyWEzpPPiWimP8vYm7sD7TD3LAt3Q3gRTWHzPJBY"
    assert (sold.side, sold.mint, sold.token_amount) == ("sell", a, -deltas[a])
    assert (sold.quote_mint, sold.quote_amount) == (b, deltas[b])
    assert (bought.side, bought.mint, bought.token_amount) == ("buy", b, deltas[b])
    assert (bought.quote_mint, bought.quote_amount) == (a, -deltas[a])
    # Costs are not counted twice: the swaps share them.
    assert sold.fee + bought.fee == 4117000 and sold.rent + bought.rent == entry["expected"]["rent_lamports"]
    assert bought.rent == entry["expected"]["rent_lamports"]  # the new token account is b's


def _pump_entries() -> list[Any]:
    chosen = [
        pytest.param(e, id=e["file"])
        for e in _ENTRIES
        if e["kind"] in ("buy", "sell") and e["expected"].get("event_user") == e["signer"]
    ]
    return chosen or _ABSENT


@pytest.mark.parametrize("entry", _pump_entries())
def test_pump_trades_price_from_the_curve(mainnet_fixtures: Path, entry: dict[str, Any]) -> None:
    (swap,) = extract_swaps(_load(mainnet_fixtures, entry), entry["signer"])
    assert swap.price_sol is not None and swap.price_sol > 0
    # The spot price after the trade is near the trade's own average price. Curves move and fees
    # are in sol_amount, so not equal: 3bYXWjjN sells 59% of the supply and halves the price. A
    # wrong decimals or a swapped reserve pair would be off by a factor of 1000 or more.
    average = (swap.sol_amount / 1e9) / (swap.token_amount / 10**swap.token_decimals)
    assert 0.2 < swap.price_sol / average < 5
    # A buy leaves the price above what it paid on average for the pool's part, a sell below.
    if swap.side == "sell":
        assert swap.price_sol < average * 1.05
    else:
        assert swap.price_sol > average * 0.95
    if swap.dex == "pumpfun":  # a pump.fun coin's supply is 1e9 whole tokens
        assert swap.market_cap_sol == pytest.approx(swap.price_sol * 1e9)


@pytest.mark.parametrize(
    ("name", "sol_in_curve"),
    [
        # pump.fun Create + dev buy: the curve starts at 30 SOL / 1,073,000,000 tokens (virtual),
        # so after the buy it holds 30 SOL + what went in, and 1.073e9 tokens − what came out.
        ("pumpfun_buy_2s393PSY.json", 1_000_000_000),
        ("pumpfun_buy_a9tyifZa.json", 4_000_000_000),
    ],
)
def test_price_after_a_dev_buy_follows_from_the_initial_curve(
    mainnet_fixtures: Path, name: str, sol_in_curve: int
) -> None:
    entry = next(e for e in _ENTRIES if e["file"] == name)
    (swap,) = extract_swaps(_load(mainnet_fixtures, entry), entry["signer"])
    virtual_sol = 30_000_000_000 + sol_in_curve
    virtual_tokens = 1_073_000_000_000_000 - swap.token_amount
    price = (virtual_sol / 1e9) / (virtual_tokens / 1e6)
    assert swap.price_sol == pytest.approx(price, rel=1e-12)
    assert swap.market_cap_sol == pytest.approx(price * 1e9, rel=1e-12)


@pytest.mark.parametrize("name", ["pumpfun_buy_2ghHZXwy.json", "pumpfun_sell_trjspFNZ.json"])
def test_sol_amount_includes_the_fees_paid_inside_the_route(mainnet_fixtures: Path, name: str) -> None:
    """The new pump.fun TradeEvent states its protocol and creator fee: the pool's amount plus
    (buy) or minus (sell) those fees is exactly the trade's sol_amount."""
    entry = next(e for e in _ENTRIES if e["file"] == name)
    (event,) = [e for e in entry["expected"]["pump_events"] if e["user"] == entry["signer"]]
    (swap,) = extract_swaps(_load(mainnet_fixtures, entry), entry["signer"])
    fees = event["fee"] + event["creator_fee"]
    assert swap.sol_amount == event["sol_amount"] + (fees if event["is_buy"] else -fees)


@pytest.mark.parametrize("name", ["pumpfun_buy_JBnrBbgq.json", "pumpfun_buy_3S2vFszS.json"])
def test_every_buyer_in_a_bundle_gets_their_own_swap(mainnet_fixtures: Path, name: str) -> None:
    entry = next(e for e in _ENTRIES if e["file"] == name)
    tx = _load(mainnet_fixtures, entry)
    events = entry["expected"]["pump_events"]
    assert len({e["user"] for e in events}) == len(events) > 1
    for event in events:
        (swap,) = extract_swaps(tx, event["user"])
        assert (swap.mint, swap.side, swap.token_amount) == (event["mint"], "buy", event["token_amount"])
        assert swap.dex == "pumpfun" and swap.price_sol is not None
        # Only the signer pays the network fee.
        assert swap.fee == (tx["meta"]["fee"] if event["user"] == entry["signer"] else 0)


def test_events_are_read_from_emit_cpi_when_the_logs_are_cut(mainnet_fixtures: Path) -> None:
    """3S2vFszS's logs end in "Log truncated" and hold 4 of its 5 TradeEvents: the fifth buyer's
    price comes from the emit_cpi inner instruction."""
    entry = next(e for e in _ENTRIES if e["file"] == "pumpfun_buy_3S2vFszS.json")
    tx = _load(mainnet_fixtures, entry)
    assert tx["meta"]["logMessages"][-1] == "Log truncated"
    last_buyer = entry["expected"]["pump_events"][-1]["user"]
    (swap,) = extract_swaps(tx, last_buyer)
    assert swap.price_sol is not None and swap.market_cap_sol is not None


@pytest.mark.parametrize("entry", _pump_entries())
def test_logs_and_emit_cpi_give_the_same_swaps(mainnet_fixtures: Path, entry: dict[str, Any]) -> None:
    tx = _load(mainnet_fixtures, entry)
    without_logs = copy.deepcopy(tx)
    without_logs["meta"]["logMessages"] = []
    assert extract_swaps(without_logs, entry["signer"]) == extract_swaps(tx, entry["signer"])


@pytest.mark.parametrize("entry", _params("buy", "sell", "swap", "none"))
def test_a_wallet_that_took_no_part_gets_nothing(mainnet_fixtures: Path, entry: dict[str, Any]) -> None:
    stranger = str(Pubkey(bytes(range(32))))  # a valid address in none of these transactions
    assert extract_swaps(_load(mainnet_fixtures, entry), stranger) == []


def test_the_whole_set_is_covered(mainnet_fixtures: Path) -> None:
    """The parametrised tests above ran over every file: none was filtered out by kind."""
    kinds = {e["kind"] for e in _ENTRIES}
    assert kinds == {"buy", "sell", "swap", "none", "malformed"}
    files = {p.name for p in mainnet_fixtures.glob("*.json")} - {"MANIFEST.json"}
    assert files == {e["file"] for e in _ENTRIES}
