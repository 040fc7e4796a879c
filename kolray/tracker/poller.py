"""Polling one wallet: new signatures since its cursor → transactions → swaps → one commit per batch.

Plain asyncio, no Ray: the Ray actors in :mod:`kolray.tracker.actors` run these coroutines for many
wallets at once, and tests run them directly.

The order of work is what makes ingestion exactly-once and gap-free:

1. list every signature newer than the cursor (newest first, as the RPC pages them), or on first
   sight the wallet's recent history up to the backfill bounds (when that is empty, one more call
   tells an empty wallet from one whose history is all older than the window);
2. walk them **oldest first** in batches; failed transactions (``err`` in the signature list) are
   counted without being fetched;
3. a transaction the node returns as ``null`` (not yet available: a node that lists a signature
   can lag a second behind in serving it) is asked for again ``null_retries`` times with a growing
   pause; one still ``null`` after that stops the walk *before* it: the cursor is never moved past a
   transaction that was not read, so the next poll fetches it again;
4. each batch's swaps and the cursor at the batch's last processed signature are committed in one
   database transaction (:func:`kolray.tracker.store.commit_progress`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kolray.chain.swaps import MalformedTransaction, extract_swaps
from kolray.tracker.store import CommitResult, CursorPosition, WalletProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignatureRef:
    signature: str
    slot: int | None
    block_time: int | None
    failed: bool


class ChainSource(Protocol):
    """What the poller needs from the chain (implemented over :class:`kolray.chain.rpc.RpcClient`)."""

    async def signatures(
        self, wallet: str, until: str | None, not_before: int | None, max_count: int | None
    ) -> list[SignatureRef]:
        """Every signature of ``wallet`` newer than ``until`` (newest first), or, when ``until`` is
        None, the newest ones back to ``not_before`` (unix s) and at most ``max_count``."""
        ...

    async def transactions(self, signatures: Sequence[str]) -> list[dict[str, Any] | None]:
        """``getTransaction`` results in the same order; None where the node has no result yet."""
        ...


Commit = Callable[[WalletProgress], Awaitable[CommitResult]]


@dataclass
class WalletPollResult:
    wallet: str
    signatures: int = 0
    fetched: int = 0
    swaps: int = 0
    failed_txs: int = 0
    non_trade_txs: int = 0
    malformed_txs: int = 0
    unavailable: int = 0  # the walk stopped at a transaction that was not yet available
    commits: int = 0
    lost_race: bool = False  # another poller moved the cursor: this one stopped
    stopped_early: bool = False  # a graceful stop came before the wallet was up to date
    listed_at: float = 0.0  # when the signature list was taken: the data is fresh as of then
    newest_block_time: int | None = None
    first_sight: bool = False  # no cursor yet: this poll was the wallet's backfill
    # First sight found nothing inside the backfill window, but the wallet has older history: the
    # block time of its newest signature (None: unknown to the node), so the user can be told.
    outside_backfill: bool = False
    outside_backfill_newest: int | None = None
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PollPolicy:
    batch_size: int = 100
    backfill_seconds: float = 30 * 86400
    backfill_max_signatures: int = 5000
    # A ``null`` transaction is asked for again this many times, after null_retry_s, 2×, 4×... Without
    # it a wallet advanced only to its first ``null`` per poll: a long backfill on a lagging node
    # took one poll per ``null``.
    null_retries: int = 2
    null_retry_s: float = 0.25


async def poll_wallet(
    source: ChainSource,
    wallet: str,
    cursor_signature: str | None,
    commit: Commit,
    policy: PollPolicy = PollPolicy(),
    now: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> WalletPollResult:
    """Bring one wallet up to date from ``cursor_signature`` (None: first sight, backfill).

    ``should_stop`` is checked between batches: a graceful stop lets the batch in hand commit.
    """
    result = WalletPollResult(wallet, listed_at=time.time())
    first_sight = result.first_sight = cursor_signature is None
    not_before = int((now or time.time()) - policy.backfill_seconds) if first_sight else None
    listed = await source.signatures(
        wallet,
        until=cursor_signature,
        not_before=not_before,
        max_count=policy.backfill_max_signatures if first_sight else None,
    )
    result.signatures = len(listed)
    if not listed and first_sight:
        # Nothing in the window: one more call (the newest signature, whatever its age) tells an
        # empty wallet from one whose history is all older than the window (a twin world, a KOL
        # quiet for weeks), which the user must hear about: 0 swaps and no word is a trap.
        newest = await source.signatures(wallet, until=None, not_before=None, max_count=1)
        if newest:
            result.outside_backfill = True
            result.outside_backfill_newest = newest[0].block_time
    if not listed:
        # Record the poll (and create the cursor on first sight) so lag and counters stay honest.
        outcome = await commit(WalletProgress(wallet, cursor_signature, None, backfill_done=True))
        result.lost_race = not outcome.committed
        result.commits += outcome.committed
        return result

    oldest_first = list(reversed(listed))
    position = cursor_signature
    for start in range(0, len(oldest_first), policy.batch_size):
        if should_stop():
            result.stopped_early = True
            break
        chunk = oldest_first[start : start + policy.batch_size]
        to_fetch = [ref.signature for ref in chunk if not ref.failed]
        fetched = dict(zip(to_fetch, await source.transactions(to_fetch), strict=True)) if to_fetch else {}
        result.fetched += len(to_fetch)
        for attempt in range(policy.null_retries):
            not_yet = [signature for signature in to_fetch if fetched[signature] is None]
            if not not_yet:
                break
            await asyncio.sleep(policy.null_retry_s * 2**attempt)
            fetched.update(zip(not_yet, await source.transactions(not_yet), strict=True))
            result.fetched += len(not_yet)

        progress = WalletProgress(wallet, position, None)
        stopped = False
        for ref in chunk:
            if ref.failed:
                progress.failed_txs += 1
            else:
                tx = fetched[ref.signature]
                if tx is None:
                    result.unavailable += 1
                    stopped = True
                    break
                try:
                    swaps = extract_swaps(tx, wallet)
                except MalformedTransaction as error:
                    # A syntactically valid answer we cannot read: counted and logged, not retried
                    # forever (a stuck cursor would stop the wallet for good).
                    result.malformed_txs += 1
                    result.errors.append(f"{ref.signature}: {error}")
                    log.warning(
                        "malformed transaction skipped", extra={"wallet": wallet, "signature": ref.signature}
                    )
                    swaps = []
                if swaps:
                    progress.swaps.extend(swaps)
                elif (tx.get("meta") or {}).get("err") is not None:
                    progress.failed_txs += 1
                else:
                    progress.non_trade_txs += 1
            progress.signatures_seen += 1
            progress.moved_to = CursorPosition(ref.signature, ref.slot, ref.block_time)

        if progress.moved_to is None:
            break  # the very first transaction is not available yet: nothing to commit
        outcome = await commit(progress)
        if not outcome.committed:
            result.lost_race = True
            break
        result.commits += 1
        result.swaps += outcome.swaps_inserted
        result.failed_txs += progress.failed_txs
        result.non_trade_txs += progress.non_trade_txs
        result.newest_block_time = progress.moved_to.block_time or result.newest_block_time
        position = progress.moved_to.signature
        if stopped:
            break
    return result
