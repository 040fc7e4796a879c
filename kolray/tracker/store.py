"""Exactly-once ingestion: a wallet's new swaps and its cursor commit in one database transaction.

Two guards make re-runs, crashes and retries harmless:

- swaps are inserted with ``ON CONFLICT DO NOTHING`` on their unique key (signature, wallet, mint),
  so a batch written twice (a retried actor task, a poller restarted after it had committed) adds
  nothing the second time;
- the cursor moves by compare-and-set from the position the poller started at. If another poller
  (a zombie from before a restart) moved it meanwhile, the whole wallet update rolls back and the
  wallet is simply polled again from the cursor that won.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import insert, select, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kolray.chain.types import Swap
from kolray.db.engine import insert_ignoring_duplicates, session_scope
from kolray.db.tables import Cursor, SwapRow


@dataclass(frozen=True)
class CursorPosition:
    signature: str
    slot: int | None
    block_time: int | None


@dataclass
class WalletProgress:
    """What one poll of one wallet found, to commit atomically."""

    wallet: str
    started_from: str | None  # the cursor's newest_signature when the poll began (compare-and-set)
    moved_to: CursorPosition | None  # new newest fully-processed signature; None = cursor stays
    swaps: list[Swap] = field(default_factory=list)
    signatures_seen: int = 0
    failed_txs: int = 0
    non_trade_txs: int = 0
    backfill_done: bool = True
    polled_at: int = field(default_factory=lambda: int(time.time()))


@dataclass
class CommitResult:
    wallet: str
    committed: bool
    swaps_inserted: int = 0
    reason: str = ""


def load_cursors(engine: Engine, wallets: Sequence[str]) -> dict[str, Cursor]:
    """Current cursors of ``wallets`` (wallets never polled are absent)."""
    out: dict[str, Cursor] = {}
    with session_scope(engine) as session:
        for start in range(0, len(wallets), 500):
            chunk = list(wallets[start : start + 500])
            for row in session.scalars(select(Cursor).where(Cursor.wallet.in_(chunk))):
                session.expunge(row)
                out[row.wallet] = row
    return out


def _insert_ignoring_duplicates(session: Session, swaps: Sequence[Swap]) -> int:
    now = int(time.time())
    rows = [dict(s.to_dict(), ingested_at=now) for s in swaps]
    return insert_ignoring_duplicates(session, SwapRow, rows, ("signature", "wallet", "mint"))


def _move_cursor(session: Session, item: WalletProgress, inserted: int) -> bool:
    """Compare-and-set the cursor; False when another poller moved it since this poll started."""
    values: dict[str, object] = {
        "signatures_seen": Cursor.signatures_seen + item.signatures_seen,
        "swaps_stored": Cursor.swaps_stored + inserted,
        "failed_txs": Cursor.failed_txs + item.failed_txs,
        "non_trade_txs": Cursor.non_trade_txs + item.non_trade_txs,
        "last_polled_at": item.polled_at,
        "backfill_done": item.backfill_done,
        "updated_at": int(time.time()),
    }
    if item.moved_to is not None:
        values.update(
            newest_signature=item.moved_to.signature,
            newest_slot=item.moved_to.slot,
            newest_block_time=item.moved_to.block_time,
        )
    guard = (
        Cursor.newest_signature.is_(None)
        if item.started_from is None
        else Cursor.newest_signature == item.started_from
    )
    # An UPDATE's result is a CursorResult (it has the row count); Session.execute is typed Result.
    result = cast(
        CursorResult[Any],
        session.execute(update(Cursor).where(Cursor.wallet == item.wallet, guard).values(**values)),
    )
    if result.rowcount == 1:
        return True
    exists = session.scalar(select(Cursor.wallet).where(Cursor.wallet == item.wallet))
    if exists is not None or item.started_from is not None:
        return False
    # First sight of the wallet: create its cursor (a concurrent creator makes this fail, and loses).
    moved = item.moved_to
    session.execute(
        insert(Cursor).values(
            wallet=item.wallet,
            newest_signature=moved.signature if moved else None,
            newest_slot=moved.slot if moved else None,
            newest_block_time=moved.block_time if moved else None,
            backfill_done=item.backfill_done,
            signatures_seen=item.signatures_seen,
            swaps_stored=inserted,
            failed_txs=item.failed_txs,
            non_trade_txs=item.non_trade_txs,
            last_polled_at=item.polled_at,
        )
    )
    return True


def commit_progress(engine: Engine, items: Iterable[WalletProgress]) -> list[CommitResult]:
    """Commit several wallets' progress in one transaction (batched for SQLite's single writer),
    each wallet inside its own savepoint so one lost compare-and-set rolls back that wallet only."""
    results: list[CommitResult] = []
    with session_scope(engine) as session:
        for item in items:
            savepoint = session.begin_nested()
            try:
                inserted = _insert_ignoring_duplicates(session, item.swaps)
                if not _move_cursor(session, item, inserted):
                    savepoint.rollback()
                    results.append(CommitResult(item.wallet, False, reason="cursor moved by another poller"))
                    continue
                savepoint.commit()
                results.append(CommitResult(item.wallet, True, swaps_inserted=inserted))
            except IntegrityError:
                savepoint.rollback()
                results.append(CommitResult(item.wallet, False, reason="cursor created by another poller"))
    return results
