"""The market stage: every watched token's price tape, from chain state, into the database.

``MarketWatcher.run`` loops: refresh the watch list (:func:`kolray.market.watch.watched_mints`),
read the tokens that are due (:class:`kolray.market.read.MarketReader`, batched), store what moved
(and a heartbeat point every ``heartbeat_s``, so a flat tape is told from a missing one) and the
gaps. ``market_once`` reads every watched token once. The RPC client is the caller's: the tracker
hands it the cluster-wide limiter, so tracking and the market share one rate budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import Engine

from kolray.chain.rpc import RpcClient, client_options_of
from kolray.config import Settings, get_settings
from kolray.db.migrate import upgrade
from kolray.market.history import (
    HISTORY_BUDGET,
    HistoryReader,
    history_windows,
    read_histories,
    tracked_signatures,
)
from kolray.market.read import Gap, MarketReader, Pool, TapePoint, raydium_pool_from_transaction
from kolray.market.store import store_tape
from kolray.market.watch import LABEL_HORIZON_S, Cadence, watched_mints
from kolray.secrets import redact_text

log = logging.getLogger("kolray.market")


FAST_S = 2.0  # a token whose price moved is read again this soon
SLOW_S = 60.0  # … and one standing still at most this late


@dataclass
class MarketOptions:
    rpc_urls: list[str]
    database_url: str
    fast_s: float = FAST_S
    slow_s: float = SLOW_S
    heartbeat_s: float = 300.0  # an unchanged price is stored again after this long
    # The watch list is re-read this often: a token a KOL just bought is first read within it
    # (bench/market_live.py: a 30 s refresh left the first read after an entry at p95 25 s).
    refresh_s: float = 10.0
    horizon_s: int = LABEL_HORIZON_S
    # Tokens bought before the stage first read them get their earlier prices from their trades
    # (kolray.market.history), at most ``history_budget`` getTransaction calls per token.
    history: bool = True
    history_budget: int = HISTORY_BUDGET
    history_tokens_per_pass: int = 20  # histories read between two passes of live reads
    client_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> MarketOptions:
        settings = settings or get_settings()
        options = cls(
            rpc_urls=settings.rpc_url_values,
            database_url=settings.database_url,
            client_options=client_options_of(settings),
        )
        return replace(options, **{name: value for name, value in overrides.items() if value is not None})


class MarketSummary(BaseModel):
    rounds: int = 0
    watched: int = 0
    reads: int = 0
    points_stored: int = 0
    gaps: int = 0
    rpc_calls: int = 0
    untimed: int = 0  # reads left out: the node gave no block time for their slot
    history_tokens: int = 0  # tokens whose history was read
    history_points: int = 0  # tape rows stored from their trades (source 'history')
    history_gaps: int = 0
    history_transactions: int = 0  # getTransaction calls the histories made
    history_signature_calls: int = 0  # getSignaturesForAddress pages they read
    errors: list[str] = []
    elapsed_s: float = 0.0


NO_LONGER_WATCHED = "no longer watched (no tracked buy within the horizon, no open position)"


class MarketWatcher:
    def __init__(self, options: MarketOptions, rpc: RpcClient, engine: Engine | None = None) -> None:
        self.options = options
        self.rpc = rpc
        self.engine = engine or upgrade(options.database_url)
        self.reader = MarketReader(rpc, find_pool=self._find_pool)
        self.cadence = Cadence(options.fast_s, options.slow_s)
        self.stored_at: dict[str, int] = {}  # mint → chain time of its last stored point
        self.gap_reasons: dict[str, str] = {}
        self.watching: set[str] = set()  # the watch list at the last refresh
        self.summary = MarketSummary()
        self.chain_now = 0
        self._refreshed = -float("inf")
        self.history = (
            HistoryReader(rpc, options.history_budget, find_pool=self._history_pool)
            if options.history
            else None
        )
        self.history_pending: list[str] = []  # watched mints whose history is still to be read
        self.history_tried: set[str] = set()
        self.no_pool: set[str] = set()  # stored swaps read for a Raydium pool that named none
        self.pool_lookups = 0  # getTransaction calls made to find Raydium pools
        self.history_task: asyncio.Task[int] | None = None
        self._history_batch: list[str] = []

    async def _find_pool(self, mint: str) -> Pool | None:
        """A graduated token's Raydium pool, from a stored swap of it on Raydium AMM v4, directly or
        routed by Jupiter (the AMM instruction is then an inner one). Up to three swaps are read,
        direct ones first; a swap that named no pool is not read again."""
        signatures = await asyncio.to_thread(self._raydium_swaps, mint)
        for signature in [s for s in signatures if s not in self.no_pool][:3]:
            transaction = await self.rpc.get_transaction(signature)
            self.reader.calls += 1
            self.pool_lookups += 1
            pool = await raydium_pool_from_transaction(self.rpc, mint, transaction) if transaction else None
            if pool is not None:
                return pool
            if transaction is not None:  # read, and no Raydium pool of this mint in it
                self.no_pool.add(signature)
        return None

    def _raydium_swaps(self, mint: str) -> list[str]:
        """Signatures of the stored swaps of ``mint`` that may name its Raydium pool, direct first."""
        sql = (
            "SELECT signature FROM swaps WHERE mint = :mint AND dex IN ('raydium_amm_v4', 'jupiter_v6') "
            "ORDER BY CASE WHEN dex = 'raydium_amm_v4' THEN 0 ELSE 1 END, block_time"
        )
        with self.engine.connect() as conn:
            return [str(r[0]) for r in conn.execute(text(sql), {"mint": mint})]

    async def _history_pool(self, mint: str) -> Pool | None:
        """A graduated token's Raydium pool for its history: the live reader's, or found as it finds one."""
        known = self.reader.pools.get(mint)
        return known if known is not None else await self._find_pool(mint)

    async def _chain_time(self) -> tuple[int, int]:
        """The chain's (slot, block time) now."""
        slot = await self.rpc.call("getSlot", [{"commitment": "confirmed"}])
        self.reader.calls += 2
        return int(slot), int(await self.rpc.call("getBlockTime", [slot]))

    async def refresh(self, now: float) -> list[str]:
        slot, chain_time = await self._chain_time()
        self.chain_now = max(self.chain_now, chain_time)
        mints = await asyncio.to_thread(watched_mints, self.engine, self.chain_now, self.options.horizon_s)
        # A token that leaves the watch list gets a gap from now on: the tape says its price is no
        # longer known, so nothing later (a backtest's fill) takes its last price as current.
        left = sorted(self.watching.difference(mints))
        if left:
            gaps = [Gap(mint, slot, chain_time, NO_LONGER_WATCHED) for mint in left]
            await asyncio.to_thread(store_tape, self.engine, [], gaps)
            for mint in left:
                self.gap_reasons[mint] = NO_LONGER_WATCHED
                self.stored_at.pop(mint, None)
        self.watching = set(mints)
        self.cadence.watch(mints, now)
        self.summary.watched = len(mints)
        if self.history is not None:
            self.history_pending = [m for m in mints if m not in self.history_tried]
        self._refreshed = now
        return mints

    async def read(self, mints: list[str], now: float) -> int:
        """Read ``mints`` once, store what is new; returns the rows stored."""
        points, gaps = await self.reader.read(mints)
        keep_points: list[TapePoint] = []
        keep_gaps: list[Gap] = []
        for p in points:
            moved = self.cadence.read(p.mint, p.price_sol, now)
            last = self.stored_at.get(p.mint)
            if (
                moved
                or last is None
                or p.time - last >= self.options.heartbeat_s
                or p.mint in self.gap_reasons
            ):
                keep_points.append(p)
                self.stored_at[p.mint] = p.time
            self.gap_reasons.pop(p.mint, None)
            self.chain_now = max(self.chain_now, p.time)
        for g in gaps:
            self.cadence.read(g.mint, None, now)
            # A gap is stored (and told) where it starts or its reason changes.
            if self.gap_reasons.get(g.mint) != g.reason:
                log.warning("market: no price for a token", extra={"mint": g.mint, "reason": g.reason})
                keep_gaps.append(g)
                self.gap_reasons[g.mint] = g.reason
        stored = await asyncio.to_thread(store_tape, self.engine, keep_points, keep_gaps)
        self.summary.rounds += 1
        self.summary.reads += len(mints)
        self.summary.points_stored += stored
        self.summary.gaps += len(gaps)
        self.summary.rpc_calls = self.reader.calls
        self.summary.untimed = self.reader.untimed
        return stored

    async def backfill(self, mints: list[str]) -> int:
        """Read the history of those of ``mints`` that need one; returns the rows stored. Run after
        the tokens' first live read, so a history ends where the live tape begins."""
        if self.history is None or not mints:
            return 0
        self.history_tried.update(mints)
        windows = await asyncio.to_thread(
            history_windows, self.engine, mints, self.chain_now, self.options.horizon_s
        )
        known = {w.mint: await asyncio.to_thread(tracked_signatures, self.engine, w.mint) for w in windows}
        results = await read_histories(self.history, windows, known)
        stored = 0
        for result in results:
            # A token whose signatures could not be listed stores nothing and is tried again later.
            if result.signature_calls == 0 or (not result.points and not result.gaps):
                if result.signature_calls == 0:
                    self.history_tried.discard(result.mint)
                self.summary.history_signature_calls += result.signature_calls
                continue
            added = await asyncio.to_thread(store_tape, self.engine, result.points, result.gaps, "history")
            stored += added
            self.summary.history_tokens += 1
            self.summary.history_points += len(result.points)
            self.summary.history_gaps += len(result.gaps)
            self.summary.history_transactions += result.fetched
            self.summary.history_signature_calls += result.signature_calls
        return stored

    async def step(self, now: float) -> float:
        """One pass of the loop; returns how long to wait before the next."""
        if now - self._refreshed >= self.options.refresh_s:
            await self.refresh(now)
        due = self.cadence.due_now(now)
        if due:
            await self.read(due, now)
        self._history_step()
        upcoming = self.cadence.next_due()
        wait = self.options.refresh_s if upcoming is None else upcoming - time.monotonic()
        return min(max(wait, 0.05), self.options.refresh_s)

    def _history_step(self) -> None:
        """Start the next batch of histories once the last has ended. They run beside the live
        reads (the same client, so the same rate limit): a backfill of hundreds of tokens never
        holds up a moving token's next read."""
        task = self.history_task
        if task is not None:
            if not task.done():
                return
            self.history_task = None
            error = None if task.cancelled() else task.exception()
            if error is not None:
                message = redact_text(f"history: {type(error).__name__}: {error}")
                log.warning("market history failed", extra={"error": message})
                self.summary.errors = [*self.summary.errors[-9:], message]
                self.history_tried.difference_update(self._history_batch)  # tried again later
        if self.history_pending:
            batch = self.history_pending[: self.options.history_tokens_per_pass]
            self.history_pending = self.history_pending[len(batch) :]
            self._history_batch = batch
            self.history_task = asyncio.create_task(self.backfill(batch))

    async def run(
        self, stop: asyncio.Event, on_round: Callable[[MarketSummary], None] | None = None
    ) -> MarketSummary:
        """Watch until ``stop`` is set; an RPC or database failure is logged and retried next pass."""
        started = time.monotonic()
        while not stop.is_set():
            try:
                wait = await self.step(time.monotonic())
            except Exception as error:  # one failed round never stops the stage
                message = redact_text(f"{type(error).__name__}: {error}")
                log.warning("market round failed", extra={"error": message})
                self.summary.errors = [*self.summary.errors[-9:], message]
                wait = self.options.fast_s
            if on_round is not None:
                on_round(self.summary)
            self.summary.elapsed_s = round(time.monotonic() - started, 3)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
        if self.history_task is not None:  # a history in hand is dropped; nothing of it was half-stored
            self.history_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.history_task
        return self.summary


async def market_once_async(options: MarketOptions) -> MarketSummary:
    """Read every watched token once and store the tape."""
    started = time.monotonic()
    async with RpcClient(options.rpc_urls, **options.client_options) as rpc:
        watcher = MarketWatcher(options, rpc)
        mints = await watcher.refresh(time.monotonic())
        for begin in range(0, len(mints), 1000):
            await watcher.read(mints[begin : begin + 1000], time.monotonic())
        if options.history:
            await watcher.backfill(mints)
    watcher.summary.elapsed_s = round(time.monotonic() - started, 3)
    return watcher.summary


def market_once(options: MarketOptions | None = None) -> MarketSummary:
    return asyncio.run(market_once_async(options or MarketOptions.from_settings()))
