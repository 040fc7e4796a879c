"""What ``kolray track`` tells the user beside its counts: a wallet whose history is all older than
the backfill window, and why a pass stored no swap."""

from __future__ import annotations

from dataclasses import asdict

from kolray.tracker.poller import WalletPollResult
from kolray.tracker.supervisor import SyncSummary

DAY = 86_400
NOW = 1_780_000_000  # 2026-05-28


def result(wallet: str, **fields) -> dict:
    return asdict(WalletPollResult(wallet, listed_at=NOW - 1, **fields))


def summary_of(*results: dict, days: float = 30) -> SyncSummary:
    summary = SyncSummary(wallets=len(results), backfill_days=days, backfill_max_signatures=5000)
    for one in results:
        summary.add(one, NOW)
    return summary


def test_wallets_with_history_only_before_the_window_are_named_with_the_setting_to_widen() -> None:
    summary = summary_of(
        result("a", first_sight=True, outside_backfill=True, outside_backfill_newest=NOW - 400 * DAY),
        result("b", first_sight=True, outside_backfill=True, outside_backfill_newest=NOW - 90 * DAY),
        result("c", first_sight=True),
    )
    assert (summary.wallets_outside_backfill, summary.wallets_without_history) == (2, 1)
    assert summary.outside_backfill_newest == NOW - 400 * DAY  # the window must reach this far
    outside, why = summary.notes(now=NOW)
    assert outside.startswith("2 wallets have transactions, but none in the first-sight backfill window")
    assert "(the last 30 days; the last transaction of the quietest is from 2025-04-23)" in outside
    assert "KOLRAY_BACKFILL_DAYS=401 " in outside and "--backfill-days 401" in outside
    for setting in (
        "KOLRAY_BACKFILL_DAYS",
        "--backfill-days",
        "backfill_days",
        "KOLRAY_BACKFILL_MAX_SIGNATURES",
    ):
        assert setting in outside
    assert why.startswith("0 swaps stored: of 3 wallets, 2 with history only before the backfill window")
    assert "1 with no transaction at all on this RPC endpoint" in why


def test_a_pass_that_stored_nothing_says_why() -> None:
    quiet = summary_of(result("a"), result("b"))  # known wallets, no new signature
    assert quiet.notes(now=NOW) == [
        "0 swaps stored: of 2 wallets, 2 with no new transaction since the last poll"
    ]
    busy = summary_of(result("a", signatures=4, fetched=3, failed_txs=1, non_trade_txs=3))
    (why,) = busy.notes(now=NOW)
    assert "4 transactions read, none a swap by these wallets (3 not trades, 1 failed" in why


def test_a_pass_that_stored_swaps_has_nothing_to_explain() -> None:
    assert summary_of(result("a", signatures=2, fetched=2, swaps=2)).notes(now=NOW) == []
