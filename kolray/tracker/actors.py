"""The Ray edge of the tracker: a cluster-wide rate limiter, one database writer, async pollers.

Everything here is thin: the logic lives in :mod:`~kolray.tracker.poller` (per wallet),
:mod:`~kolray.tracker.store` (exactly-once commits) and :mod:`~kolray.tracker.ratelimit`.

- ``kolray-rate-limiter``: one actor holding a token bucket per RPC endpoint for the whole cluster.
  Pollers *reserve* tokens and wait locally, so the actor answers every call immediately.
- ``kolray-writer``: the single writer. It batches the commits of many wallets into one database
  transaction (SQLite allows one writer at a time; PostgreSQL benefits from fewer round trips).
- ``kolray-poller-<i>``: async actors, each holding many wallets and polling up to
  ``wallet_concurrency`` of them at once over one HTTP connection pool. Restarted on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from typing import Any

from kolray.chain.types import Swap
from kolray.db.migrate import upgrade
from kolray.logs import configure_logging
from kolray.secrets import redact_text, register_secret
from kolray.tracker.latency import LatencyRecorder
from kolray.tracker.live import LiveOptions, LiveTracker, commit_telling_new, store_swaps
from kolray.tracker.poller import PollPolicy, WalletPollResult, poll_wallet
from kolray.tracker.ratelimit import RateLimiter
from kolray.tracker.source import RpcChainSource
from kolray.tracker.store import CommitResult, WalletProgress, commit_progress, load_cursors

log = logging.getLogger(__name__)

NAMESPACE = "kolray"
LIMITER_NAME = "kolray-rate-limiter"
WRITER_NAME = "kolray-writer"


def poller_name(index: int) -> str:
    return f"kolray-poller-{index}"


class RateLimiterActor:
    def __init__(self, rate: float, burst: float) -> None:
        self.limiter = RateLimiter(rate, burst)

    def reconfigure(self, rate: float, burst: float) -> None:
        if (rate, burst) != (self.limiter.rate, self.limiter.burst):
            self.limiter = RateLimiter(rate, burst)

    def reserve(self, key: str, n: float = 1.0) -> float:
        return self.limiter.reserve(key, n)

    def pause(self, key: str, seconds: float) -> None:
        self.limiter.pause(key, seconds)

    def stats(self) -> dict[str, dict[str, float]]:
        return self.limiter.stats()


class WriterActor:
    """Batches wallet commits: waits at most ``flush_ms`` or until ``max_batch`` items, then commits
    them in one transaction (each wallet in its own savepoint)."""

    def __init__(self, database_url: str, max_batch: int = 64, flush_ms: float = 20.0) -> None:
        configure_logging()
        self.engine = upgrade(database_url)
        self.max_batch = max_batch
        self.flush_s = flush_ms / 1000
        self.queue: list[tuple[WalletProgress, asyncio.Future[CommitResult]]] = []
        self.wakeup = asyncio.Event()
        self.flusher: asyncio.Task[None] | None = None
        self.commits = 0
        self.stored_live = 0
        self.stored_reconciled = 0

    async def commit(self, progress: WalletProgress) -> CommitResult:
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        future: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
        self.queue.append((progress, future))
        if len(self.queue) >= self.max_batch:
            self.wakeup.set()
        return await future

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout=self.flush_s)
            self.wakeup.clear()
            if not self.queue:
                continue
            batch, self.queue = self.queue[: self.max_batch], self.queue[self.max_batch :]
            try:
                results = await asyncio.to_thread(commit_progress, self.engine, [p for p, _ in batch])
            except Exception as error:  # the transaction rolled back: every caller retries
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.commits += 1
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def store(self, swaps: list[Swap]) -> list[Swap]:
        """The live road's swaps, inserted at once (no batching wait: seconds count), without
        moving cursors; returns those that were new."""
        inserted = await asyncio.to_thread(store_swaps, self.engine, swaps)
        self.stored_live += len(inserted)
        return inserted

    async def commit_telling_new(self, progress: WalletProgress) -> tuple[CommitResult, list[Swap]]:
        """The reconciler's commit, saying which swaps were new (for latency and alerts)."""
        outcome, fresh = await asyncio.to_thread(commit_telling_new, self.engine, progress)
        self.stored_reconciled += len(fresh)
        return outcome, fresh

    def stats(self) -> dict[str, int]:
        return {
            "transactions": self.commits,
            "queued": len(self.queue),
            "stored_live": self.stored_live,
            "stored_reconciled": self.stored_reconciled,
        }


class PollerActor:
    """Polls its share of wallets. ``sync`` brings every wallet of the share up to date once."""

    def __init__(
        self,
        index: int,
        rpc_urls: list[str],
        database_url: str,
        policy: PollPolicy,
        client_options: dict[str, Any],
        wallet_concurrency: int = 32,
    ) -> None:
        import ray

        configure_logging()
        for url in rpc_urls:
            register_secret(url)
        self.index = index
        self.rpc_urls = rpc_urls
        self.database_url = database_url
        self.policy = policy
        self.client_options = client_options
        self.wallet_concurrency = wallet_concurrency
        self.source: Any = None
        self.engine: Any = None
        self.writer = ray.get_actor(WRITER_NAME, namespace=NAMESPACE)
        self.limiter = ray.get_actor(LIMITER_NAME, namespace=NAMESPACE)
        self.done = 0
        self.in_flight = 0
        self.stopping = False
        self.metrics = _PollerMetrics(index)
        self.pid = os.getpid()
        self.live_stop: asyncio.Event | None = None
        self.live_tracker: LiveTracker | None = None

    async def _ensure_source(self) -> Any:
        if self.source is None:
            self.engine = await asyncio.to_thread(upgrade, self.database_url)
            self.source = RpcChainSource.create(self.rpc_urls, limiter=self.limiter, **self.client_options)
        return self.source

    async def sync(self, wallets: list[str]) -> list[dict[str, Any]]:
        """Poll every wallet once; returns one result per wallet (as dicts, cheap to ship)."""
        source = await self._ensure_source()
        self.stopping = False
        self.metrics.new_sync()
        cursors = await asyncio.to_thread(load_cursors, self.engine, wallets)
        semaphore = asyncio.Semaphore(self.wallet_concurrency)

        async def commit(progress: WalletProgress) -> CommitResult:
            return await self.writer.commit.remote(progress)

        async def one(wallet: str) -> dict[str, Any]:
            async with semaphore:
                if self.stopping:
                    return {"wallet": wallet, "skipped": True}
                self.in_flight += 1
                started = time.time()
                try:
                    cursor = cursors.get(wallet)
                    result = await poll_wallet(
                        source,
                        wallet,
                        cursor.newest_signature if cursor else None,
                        commit,
                        self.policy,
                        should_stop=lambda: self.stopping,
                    )
                except Exception as error:  # one wallet's failure never stops the others
                    log.warning(
                        "wallet poll failed", extra={"wallet": wallet, "error": redact_text(str(error))}
                    )
                    result = WalletPollResult(
                        wallet, errors=[redact_text(f"{type(error).__name__}: {error}")]
                    )
                finally:
                    self.in_flight -= 1
                    self.done += 1
                self.metrics.record(result, time.time() - started)
                return _as_dict(result)

        return await asyncio.gather(*(one(w) for w in wallets))

    def progress(self) -> dict[str, Any]:
        stats = self.source.stats() if self.source is not None else {}
        return {
            "index": self.index,
            "done": self.done,
            "in_flight": self.in_flight,
            "pid": self.pid,
            "rpc": stats,
        }

    def reset_progress(self) -> None:
        self.done = 0

    async def live(self, wallets: list[str], ws_urls: list[str], options: LiveOptions) -> dict[str, Any]:
        """Hold subscriptions for ``wallets`` and store their swaps as they land, the poller
        reconciling (:mod:`kolray.tracker.live`), until :meth:`stop`. Returns the live stats."""
        source = await self._ensure_source()
        self.stopping = False
        self.live_stop = asyncio.Event()
        tracker = LiveTracker(
            source,
            _WriterStore(self.writer, self.engine),
            ws_urls,
            wallets,
            options,
            latency=LatencyRecorder(f"tracker-{self.index}"),
            latency_engine=self.engine,
        )
        self.live_tracker = tracker
        await tracker.run(self.live_stop)
        return tracker.stats()

    def live_stats(self) -> dict[str, Any]:
        return self.live_tracker.stats() if self.live_tracker is not None else {}

    def stop(self) -> None:
        """Finish the wallets in flight (their commits land), start no new ones."""
        self.stopping = True
        if self.live_stop is not None:
            self.live_stop.set()

    def pid_of(self) -> int:
        return self.pid


class _WriterStore:
    """The live tracker's store through the writer actor (cursor reads straight from the database)."""

    def __init__(self, writer: Any, engine: Any) -> None:
        self.writer = writer
        self.engine = engine

    async def store(self, swaps: list[Swap]) -> list[Swap]:
        inserted: list[Swap] = await self.writer.store.remote(swaps)
        return inserted

    async def commit(self, progress: WalletProgress) -> tuple[CommitResult, list[Swap]]:
        outcome: tuple[CommitResult, list[Swap]] = await self.writer.commit_telling_new.remote(progress)
        return outcome

    async def cursors(self, wallets: list[str]) -> dict[str, str | None]:
        found = await asyncio.to_thread(load_cursors, self.engine, wallets)
        return {w: c.newest_signature for w, c in found.items()}


# The Ray options of each actor class, applied by ``remote``: the classes stay plain, so importing the
# tracker (the CLI does) does not load Ray.
ACTOR_OPTIONS: dict[type, dict[str, Any]] = {
    RateLimiterActor: {"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1},
    WriterActor: {"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1},
    PollerActor: {"num_cpus": 0.25, "max_restarts": -1, "max_task_retries": 0},
}


@functools.cache
def remote(actor: type) -> Any:
    """The Ray actor class of ``actor`` (one of :data:`ACTOR_OPTIONS`), with its options."""
    import ray

    return ray.remote(**ACTOR_OPTIONS[actor])(actor)


def _as_dict(result: WalletPollResult) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(result)


class _PollerMetrics:
    """Ray metrics for the dashboard (Prometheus names ray_kolray_*)."""

    def __init__(self, index: int) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = {"poller": str(index)}
        self.swaps = Counter("kolray_swaps_ingested", "Swaps stored by the tracker.", ("poller",))
        self.signatures = Counter("kolray_signatures_seen", "Signatures processed.", ("poller",))
        self.txs = Counter("kolray_transactions", "Transactions by outcome.", ("poller", "outcome"))
        self.lag = Histogram(
            "kolray_wallet_lag_seconds",
            "Per polled wallet: from the moment its new signatures were listed until they were all stored.",
            boundaries=[1, 5, 15, 30, 60, 120, 300, 900],
            tag_keys=("poller",),
        )
        self.max_lag = Gauge(
            "kolray_wallet_lag_max_seconds", "Largest wallet lag in this poller's last sync.", ("poller",)
        )
        self.poll_seconds = Histogram(
            "kolray_wallet_poll_seconds",
            "Time to bring one wallet up to date.",
            boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60],
            tag_keys=("poller",),
        )
        for metric in (self.swaps, self.signatures, self.txs, self.lag, self.max_lag, self.poll_seconds):
            metric.set_default_tags(tags)
        self._max_lag = 0.0

    def record(self, result: WalletPollResult, seconds: float) -> None:
        # Ray counters refuse an increment of 0.
        if result.swaps:
            self.swaps.inc(result.swaps)
        if result.signatures:
            self.signatures.inc(result.signatures)
        for outcome, count in (
            ("failed", result.failed_txs),
            ("non_trade", result.non_trade_txs),
            ("malformed", result.malformed_txs),
            ("unavailable", result.unavailable),
        ):
            if count:
                self.txs.inc(count, tags={"outcome": outcome})
        self.poll_seconds.observe(seconds)
        if result.listed_at:
            lag = max(0.0, time.time() - result.listed_at)
            self.lag.observe(lag)
            self._max_lag = max(self._max_lag, lag)
            self.max_lag.set(self._max_lag)

    def new_sync(self) -> None:
        self._max_lag = 0.0
