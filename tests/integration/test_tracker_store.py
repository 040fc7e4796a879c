"""Exactly-once writes on SQLite and PostgreSQL: swaps and cursor move together, replays add nothing,
a poller that lost the race changes nothing."""

from sqlalchemy import func, select

from kolray.chain.types import Swap
from kolray.db.engine import session_scope
from kolray.db.tables import Cursor, SwapRow
from kolray.tracker.store import CursorPosition, WalletProgress, commit_progress, load_cursors

WALLET = "AG27WXxPym3K73JFKtpRxwbMfnRnuPu5bn6juzcvq5rp"


def swap(sig: str, mint: str = "M1", side: str = "buy") -> Swap:
    return Swap(
        signature=sig,
        slot=10,
        block_time=1_700_000_000,
        wallet=WALLET,
        mint=mint,
        side=side,  # type: ignore[arg-type]
        token_amount=2**63 + 5,
        token_decimals=6,
        sol_amount=1_000_000,
        dex="pumpfun",
        fee=5000,
    )


def counts(engine) -> tuple[int, str | None]:
    with session_scope(engine) as session:
        n = session.scalar(select(func.count()).select_from(SwapRow))
        cursor = session.scalar(select(Cursor.newest_signature).where(Cursor.wallet == WALLET))
    return n, cursor


def test_first_poll_creates_cursor_with_its_swaps(db) -> None:
    progress = WalletProgress(
        WALLET, None, CursorPosition("s2", 11, 1_700_000_100), [swap("s1"), swap("s2")], 3, 1, 0
    )
    [result] = commit_progress(db, [progress])
    assert result.committed and result.swaps_inserted == 2
    assert counts(db) == (2, "s2")
    cursor = load_cursors(db, [WALLET])[WALLET]
    assert (cursor.signatures_seen, cursor.failed_txs, cursor.swaps_stored) == (3, 1, 2)


def test_replaying_a_committed_batch_adds_nothing(db) -> None:
    commit_progress(db, [WalletProgress(WALLET, None, CursorPosition("s2", 11, 1), [swap("s1"), swap("s2")])])
    # A retried task: the same batch again, but its compare-and-set base is stale.
    [again] = commit_progress(
        db, [WalletProgress(WALLET, None, CursorPosition("s2", 11, 1), [swap("s1"), swap("s2")])]
    )
    assert not again.committed
    # A restarted poller that re-reads the cursor and re-fetches overlapping transactions.
    [overlap] = commit_progress(
        db, [WalletProgress(WALLET, "s2", CursorPosition("s3", 12, 2), [swap("s2"), swap("s3")])]
    )
    assert overlap.committed and overlap.swaps_inserted == 1
    assert counts(db) == (3, "s3")


def test_a_stale_poller_changes_nothing(db) -> None:
    commit_progress(db, [WalletProgress(WALLET, None, CursorPosition("s1", 1, 1), [swap("s1")])])
    commit_progress(db, [WalletProgress(WALLET, "s1", CursorPosition("s2", 2, 2), [swap("s2")])])
    [stale] = commit_progress(db, [WalletProgress(WALLET, "s1", CursorPosition("s9", 9, 9), [swap("s9")])])
    assert not stale.committed
    assert counts(db) == (2, "s2")  # s9's swap rolled back with the lost cursor move


def test_one_lost_wallet_does_not_roll_back_the_others_in_a_batch(db) -> None:
    other = "7rhxnLV8C77o6d8oz26AgK8x8m5ePsdeRawjqvojbjnQ"
    commit_progress(db, [WalletProgress(WALLET, None, CursorPosition("s1", 1, 1), [swap("s1")])])
    other_swap = swap("o1")
    other_swap.wallet = other
    results = commit_progress(
        db,
        [
            WalletProgress(WALLET, "stale", CursorPosition("s5", 5, 5), [swap("s5")]),
            WalletProgress(other, None, CursorPosition("o1", 1, 1), [other_swap]),
        ],
    )
    assert [r.committed for r in results] == [False, True]
    assert counts(db)[0] == 2


def test_a_poll_that_finds_nothing_new_keeps_the_cursor(db) -> None:
    commit_progress(db, [WalletProgress(WALLET, None, CursorPosition("s1", 1, 1), [swap("s1")])])
    [result] = commit_progress(db, [WalletProgress(WALLET, "s1", None, [], signatures_seen=0)])
    assert result.committed
    assert counts(db) == (1, "s1")
