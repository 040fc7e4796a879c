"""Live tracking: pubsub notifications → ``getTransaction`` → swaps stored within a slot or two,
with the poller as the reconciler that fills every gap.

A wallet's transaction reaches the database by two roads, and the database keeps it once:

- **the fast road.** :class:`~kolray.chain.pubsub.LogsSubscriptions` announces each transaction
  that mentions a wallet. Failed ones and ones whose logs invoke nothing but infrastructure programs
  (transfers, airdrops: no trade) are not fetched; the rest are fetched in batches
  (``getTransaction``, one JSON-RPC batch for whatever arrived together), their swaps extracted and
  inserted at once (:func:`store_swaps`: ``ON CONFLICT DO NOTHING`` on the swap's unique key). The
  cursor does not move: it means "everything up to here is stored", which one notification cannot
  vouch for.
- **the reconciler.** :func:`~kolray.tracker.poller.poll_wallet` brings a wallet's cursor up to
  date as before, and so stores whatever the fast road missed. It runs for the wallets of a
  connection each time it (re)subscribes (what happened before was not announced), for every wallet
  each ``reconcile_interval_s`` (missed notifications leave no trace), and each ``poll_interval_s``
  for wallets without a live subscription (refused by the provider's cap, or a connection down).
  Transactions the fast road already fetched are served to it from memory
  (:class:`RememberingSource`), so the reconciliation costs one ``getSignaturesForAddress`` per
  wallet, not a second ``getTransaction``.

Swaps inserted twice are not inserted twice (the unique key); a swap missed by the fast road is
stored by the next reconciliation of its wallet. Plain asyncio: the tracker's actors, the tests and
``bench/live.py`` run it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from kolray.chain.programs import INFRASTRUCTURE
from kolray.chain.pubsub import LogsNotice, LogsSubscriptions
from kolray.chain.swaps import MalformedTransaction, extract_swaps
from kolray.chain.types import Swap
from kolray.db.engine import session_scope
from kolray.db.tables import Cursor, SwapRow
from kolray.tracker.latency import LatencyRecorder
from kolray.tracker.poller import ChainSource, PollPolicy, SignatureRef, WalletPollResult, poll_wallet
from kolray.tracker.store import CommitResult, WalletProgress, commit_progress, load_cursors

log = logging.getLogger(__name__)

_INVOKE = re.compile(r"^Program (\w+) invoke \[\d+\]$")
_INSERT_CHUNK = 400


def may_trade(logs: Sequence[str]) -> bool:
    """Whether a transaction's logs leave room for a swap: some program other than the
    infrastructure (system, token, memo, compute budget...) was invoked. Logs cut short by the
    node ("Log truncated") or absent say nothing, so they count as a possible trade."""
    if not logs or any("Log truncated" in line for line in logs):
        return True
    for line in logs:
        match = _INVOKE.match(line)
        if match and match.group(1) not in INFRASTRUCTURE:
            return True
    return False


def store_swaps(engine: Engine, swaps: Sequence[Swap]) -> list[Swap]:
    """Insert ``swaps``, skipping any already stored (unique on signature, wallet, mint); returns
    those really inserted, and adds them to their wallets' ``swaps_stored`` counters. The cursor
    stays where it is: only a poll that read every signature up to a point may move it."""
    if not swaps:
        return []
    by_key = {(s.signature, s.wallet, s.mint): s for s in swaps}
    inserted: list[Swap] = []
    with session_scope(engine) as session:
        dialect = session.get_bind().dialect.name
        dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        now = int(time.time())
        rows = list(by_key.values())
        for start in range(0, len(rows), _INSERT_CHUNK):
            values = [dict(s.to_dict(), ingested_at=now) for s in rows[start : start + _INSERT_CHUNK]]
            statement = (
                dialect_insert(SwapRow)
                .values(values)
                .on_conflict_do_nothing(index_elements=["signature", "wallet", "mint"])
                .returning(SwapRow.signature, SwapRow.wallet, SwapRow.mint)
            )
            inserted.extend(by_key[(row[0], row[1], row[2])] for row in session.execute(statement).all())
        per_wallet = Counter(s.wallet for s in inserted)
        for wallet, count in per_wallet.items():
            session.execute(
                update(Cursor).where(Cursor.wallet == wallet).values(swaps_stored=Cursor.swaps_stored + count)
            )
    return inserted


def existing_keys(engine: Engine, swaps: Sequence[Swap]) -> set[tuple[str, str, str]]:
    """The (signature, wallet, mint) keys of ``swaps`` that the database already holds."""
    keys = list({(s.signature, s.wallet, s.mint) for s in swaps})
    found: set[tuple[str, str, str]] = set()
    with session_scope(engine) as session:
        for start in range(0, len(keys), 300):
            statement = select(SwapRow.signature, SwapRow.wallet, SwapRow.mint).where(
                tuple_(SwapRow.signature, SwapRow.wallet, SwapRow.mint).in_(keys[start : start + 300])
            )
            found.update((row[0], row[1], row[2]) for row in session.execute(statement).all())
    return found


def commit_telling_new(engine: Engine, progress: WalletProgress) -> tuple[CommitResult, list[Swap]]:
    """:func:`~kolray.tracker.store.commit_progress` for one wallet, and which of its swaps were
    new (callers serialise writes, so nothing lands between the look and the commit)."""
    before = existing_keys(engine, progress.swaps) if progress.swaps else set()
    result = commit_progress(engine, [progress])[0]
    if not result.committed:
        return result, []
    return result, [s for s in progress.swaps if (s.signature, s.wallet, s.mint) not in before]


def block_time_of(swap: Swap) -> float | None:
    """A swap's chain time as the node gives it (whole seconds)."""
    return None if swap.block_time is None else float(swap.block_time)


class LiveStore(Protocol):
    """Where live tracking writes: the database directly (:class:`EngineStore`) or through the
    tracker's writer actor."""

    async def store(self, swaps: list[Swap]) -> list[Swap]: ...

    async def commit(self, progress: WalletProgress) -> tuple[CommitResult, list[Swap]]: ...

    async def cursors(self, wallets: list[str]) -> dict[str, str | None]: ...


class EngineStore:
    """:class:`LiveStore` on an engine, writes serialised (SQLite has one writer)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = asyncio.Lock()

    async def store(self, swaps: list[Swap]) -> list[Swap]:
        async with self._lock:
            return await asyncio.to_thread(store_swaps, self.engine, swaps)

    async def commit(self, progress: WalletProgress) -> tuple[CommitResult, list[Swap]]:
        async with self._lock:
            return await asyncio.to_thread(commit_telling_new, self.engine, progress)

    async def cursors(self, wallets: list[str]) -> dict[str, str | None]:
        found = await asyncio.to_thread(load_cursors, self.engine, wallets)
        return {w: c.newest_signature for w, c in found.items()}


class RememberingSource:
    """A :class:`~kolray.tracker.poller.ChainSource` that serves transactions the fast road already
    fetched from memory (once: the reconciler reads each at most once more), and counts calls."""

    def __init__(self, source: ChainSource, capacity: int = 20_000) -> None:
        self.source = source
        self.capacity = capacity
        self.remembered: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.calls: Counter[str] = Counter()

    def remember(self, signature: str, transaction: dict[str, Any]) -> None:
        self.remembered[signature] = transaction
        while len(self.remembered) > self.capacity:
            self.remembered.popitem(last=False)

    async def signatures(
        self, wallet: str, until: str | None, not_before: int | None, max_count: int | None
    ) -> list[SignatureRef]:
        self.calls["signatures"] += 1
        return await self.source.signatures(wallet, until, not_before, max_count)

    async def transactions(self, signatures: Sequence[str]) -> list[dict[str, Any] | None]:
        known = {s: self.remembered.pop(s) for s in signatures if s in self.remembered}
        missing = [s for s in signatures if s not in known]
        fetched = dict(zip(missing, await self.fetch(missing), strict=True)) if missing else {}
        return [known[s] if s in known else fetched[s] for s in signatures]

    async def fetch(self, signatures: Sequence[str]) -> list[dict[str, Any] | None]:
        self.calls["transactions"] += len(signatures)
        return await self.source.transactions(signatures)


@dataclass
class StoredSwaps:
    """What one batch of the fast road (or one reconciliation) stored, and when."""

    swaps: list[Swap]
    stored_at: float  # unix s
    noticed_at: dict[str, float] = field(default_factory=dict)  # signature → notification read
    road: str = "live"  # "live" or "reconcile"


@dataclass
class LiveOptions:
    poll_interval_s: float = 60.0  # wallets without a live subscription
    reconcile_interval_s: float = 600.0  # every wallet: what the subscriptions silently missed
    gap_delay_s: float = 0.5  # gather (re)subscribed connections' wallets before reconciling them
    fetch_batch: int = 100
    fetch_window_s: float = 0.005  # notifications read within this are fetched in one batch
    fetch_retries: int = 5  # a transaction announced but not served yet (null): retry this often
    per_connection: int = 1000
    commitment: str = "confirmed"
    wallet_concurrency: int = 32
    policy: PollPolicy = field(default_factory=PollPolicy)


class LiveTracker:
    """Holds subscriptions for ``wallets`` and stores their swaps as they land. ``run`` until
    ``stop``; ``on_stored`` hears of every batch of new swaps (straight on to alerts)."""

    def __init__(
        self,
        source: ChainSource,
        store: LiveStore,
        ws_urls: Sequence[str],
        wallets: Sequence[str],
        options: LiveOptions | None = None,
        on_stored: Callable[[StoredSwaps], Awaitable[None] | None] | None = None,
        latency: LatencyRecorder | None = None,
        latency_engine: Engine | None = None,
        chain_time: Callable[[Swap], float | None] = block_time_of,
    ) -> None:
        self.options = options or LiveOptions()
        self.latency = latency
        self.latency_engine = latency_engine
        self.chain_time = chain_time
        self.source = RememberingSource(source)
        self.store = store
        self.wallets = list(dict.fromkeys(wallets))
        self.on_stored = on_stored
        self.queue: asyncio.Queue[LogsNotice] = asyncio.Queue()
        self.subscriptions = LogsSubscriptions(
            ws_urls,
            self.wallets,
            self.queue.put_nowait,
            self._gap,
            per_connection=self.options.per_connection,
            commitment=self.options.commitment,
        )
        self.gaps: set[str] = set()
        self.gap_event = asyncio.Event()
        self.seen: OrderedDict[tuple[str, str], None] = OrderedDict()  # (wallet, signature) fetched
        self.counts: Counter[str] = Counter()
        self.reconcile_results: list[WalletPollResult] = []
        self._semaphore = asyncio.Semaphore(self.options.wallet_concurrency)

    def _gap(self, wallets: list[str]) -> None:
        self.gaps.update(wallets)
        self.gap_event.set()

    async def run(self, stop: asyncio.Event) -> None:
        await self.subscriptions.start()
        tasks = [
            asyncio.create_task(self._fast_road(stop)),
            asyncio.create_task(self._gap_filler(stop)),
            asyncio.create_task(self._sweeps(stop)),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.subscriptions.aclose()

    # The fast road

    async def _fast_road(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.options.fetch_window_s
            while len(batch) < self.options.fetch_batch:
                try:
                    batch.append(
                        await asyncio.wait_for(self.queue.get(), max(0.0, deadline - time.monotonic()))
                    )
                except TimeoutError:
                    break
            try:
                await self.ingest(batch)
            except Exception as error:  # the reconciler stores what this batch could not
                self.counts["fast_road_errors"] += 1
                log.warning("live batch failed", extra={"error": f"{type(error).__name__}: {error}"})

    async def ingest(self, notices: list[LogsNotice]) -> list[Swap]:
        """Fetch, extract and store the swaps of ``notices`` (one batch)."""
        wanted: dict[str, list[LogsNotice]] = {}
        for notice in notices:
            self.counts["notices"] += 1
            key = (notice.address, notice.signature)
            if key in self.seen:
                self.counts["duplicate_notices"] += 1
                continue
            if notice.err is not None:
                self.counts["failed"] += 1
                continue
            if not may_trade(notice.logs):
                self.counts["not_trades"] += 1
                continue
            wanted.setdefault(notice.signature, []).append(notice)
        swaps: list[Swap] = []
        pending = list(wanted)
        for attempt in range(self.options.fetch_retries + 1):
            if not pending:
                break
            if attempt:
                await asyncio.sleep(0.1 * 2 ** (attempt - 1))  # announced, not served yet: soon
            transactions = await self.source.fetch(pending)
            retry = []
            for signature, transaction in zip(pending, transactions, strict=True):
                if transaction is None:
                    retry.append(signature)
                    continue
                self.source.remember(signature, transaction)
                for notice in wanted[signature]:
                    self._mark_seen(notice)
                    try:
                        swaps.extend(extract_swaps(transaction, notice.address))
                    except MalformedTransaction:
                        self.counts["malformed"] += 1
            pending = retry
        self.counts["unavailable"] += len(pending)  # left to the reconciler
        if swaps:
            inserted = await self.store.store(swaps)
            stored_at = time.time()
            self.counts["stored_live"] += len(inserted)
            if inserted:
                noticed = {n.signature: n.received_at for n in notices}
                await self._tell(StoredSwaps(inserted, stored_at, noticed, "live"))
            return inserted
        return []

    def _mark_seen(self, notice: LogsNotice) -> None:
        self.seen[(notice.address, notice.signature)] = None
        while len(self.seen) > 100_000:
            self.seen.popitem(last=False)

    async def _tell(self, stored: StoredSwaps) -> None:
        if self.latency is not None:
            times = [t for t in map(self.chain_time, stored.swaps) if t is not None]
            self.latency.observe_chain("stored", times, stored.stored_at)
            if self.latency_engine is not None:
                await asyncio.to_thread(self.latency.flush, self.latency_engine)
        if self.on_stored is None:
            return
        outcome = self.on_stored(stored)
        if outcome is not None:
            await outcome

    # The reconciler

    async def _gap_filler(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.gap_event.wait()
            await asyncio.sleep(self.options.gap_delay_s)
            self.gap_event.clear()
            wallets, self.gaps = sorted(self.gaps), set()
            self.counts["gap_reconciles"] += 1
            await self.reconcile(wallets)

    async def _sweeps(self, stop: asyncio.Event) -> None:
        last_full = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.poll_interval_s)
            if stop.is_set():
                return
            if time.monotonic() - last_full >= self.options.reconcile_interval_s:
                last_full = time.monotonic()
                self.counts["full_reconciles"] += 1
                await self.reconcile(self.wallets)
            else:
                uncovered = sorted(self.subscriptions.uncovered())
                if uncovered:
                    self.counts["uncovered_polls"] += 1
                    await self.reconcile(uncovered)

    async def reconcile(self, wallets: list[str]) -> list[WalletPollResult]:
        """Bring ``wallets``' cursors up to date (the poller), storing whatever was missed."""
        if not wallets:
            return []
        cursors = await self.store.cursors(wallets)

        async def commit(progress: WalletProgress) -> CommitResult:
            outcome, fresh = await self.store.commit(progress)
            if fresh:
                self.counts["stored_reconcile"] += len(fresh)
                await self._tell(StoredSwaps(fresh, time.time(), {}, "reconcile"))
            return outcome

        async def one(wallet: str) -> WalletPollResult:
            async with self._semaphore:
                try:
                    return await poll_wallet(
                        self.source, wallet, cursors.get(wallet), commit, self.options.policy
                    )
                except Exception as error:  # the next reconciliation tries again
                    log.warning("reconcile failed", extra={"wallet": wallet, "error": str(error)})
                    return WalletPollResult(wallet, errors=[f"{type(error).__name__}: {error}"])

        results = await asyncio.gather(*(one(w) for w in wallets))
        self.reconcile_results.extend(results)
        return list(results)

    def stats(self) -> dict[str, Any]:
        return {
            **dict(self.counts),
            "rpc_calls": dict(self.source.calls),
            "pubsub": self.subscriptions.stats(),
        }
