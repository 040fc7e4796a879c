"""The tracker's supervisor: shards the active wallets over a pool of poller actors, survives actor
deaths, reports progress, and runs once (``kolray track --once``) or forever (``--interval``)."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from kolray.chain.pubsub import ws_url_of
from kolray.chain.rpc import client_options_of
from kolray.cluster import init_ray
from kolray.config import Settings, get_settings
from kolray.db.migrate import upgrade
from kolray.db.runs import record_run
from kolray.kols import list_kols
from kolray.market.actors import keep_running, market_actor
from kolray.market.stage import MarketOptions, MarketSummary
from kolray.tracker import actors
from kolray.tracker.live import LiveOptions
from kolray.tracker.poller import PollPolicy

log = logging.getLogger(__name__)

MAX_RESUBMITS = 20  # per shard and sync: an actor that keeps dying is a bug, not bad luck


class SyncSummary(BaseModel):
    """What one pass over every active wallet did."""

    wallets: int = 0
    signatures: int = 0
    fetched: int = 0
    swaps: int = 0
    failed_txs: int = 0
    non_trade_txs: int = 0
    malformed_txs: int = 0
    unavailable: int = 0
    lost_races: int = 0
    stopped_early: int = 0
    wallet_errors: int = 0
    actor_restarts: int = 0
    rpc: dict[str, float] = {}
    elapsed_s: float = 0.0
    max_wallet_lag_s: float = 0.0
    # Why a pass may store nothing, per wallet: first sight found no signature at all; first sight
    # found history, all of it older than the backfill window; no new signature since the cursor.
    wallets_without_history: int = 0
    wallets_outside_backfill: int = 0
    outside_backfill_newest: int | None = Field(
        default=None,
        description="Of the wallets outside the backfill window, the oldest newest-signature time "
        "(unix s): how far back the window must reach to include all of them.",
    )
    wallets_up_to_date: int = 0
    backfill_days: float | None = None
    backfill_max_signatures: int | None = None
    errors: list[str] = []

    def add(self, result: dict[str, Any], finished_at: float) -> None:
        self.signatures += result.get("signatures", 0)
        self.fetched += result.get("fetched", 0)
        self.swaps += result.get("swaps", 0)
        self.failed_txs += result.get("failed_txs", 0)
        self.non_trade_txs += result.get("non_trade_txs", 0)
        self.malformed_txs += result.get("malformed_txs", 0)
        self.unavailable += result.get("unavailable", 0)
        self.lost_races += bool(result.get("lost_race"))
        self.stopped_early += bool(result.get("stopped_early") or result.get("skipped"))
        if result.get("errors"):
            self.wallet_errors += 1
            self.errors.extend(result["errors"][:3])
        if result.get("listed_at"):
            self.max_wallet_lag_s = max(self.max_wallet_lag_s, finished_at - result["listed_at"])
        if result.get("outside_backfill"):
            self.wallets_outside_backfill += 1
            newest = result.get("outside_backfill_newest")
            if newest is not None:
                known = self.outside_backfill_newest
                self.outside_backfill_newest = newest if known is None else min(known, newest)
        elif result.get("listed_at") and not result.get("signatures") and not result.get("errors"):
            if result.get("first_sight"):
                self.wallets_without_history += 1
            else:
                self.wallets_up_to_date += 1

    def notes(self, now: float | None = None) -> list[str]:
        """What the user must be told beside the counts: wallets whose whole history lies before the
        backfill window (with the setting that widens it), and why a pass stored no swap."""
        notes = []
        if self.wallets_outside_backfill:
            notes.append(self._outside_backfill_note(time.time() if now is None else now))
        if self.swaps == 0 and self.wallets:
            reasons = []
            if self.wallets_outside_backfill:
                reasons.append(
                    f"{self.wallets_outside_backfill} with history only before the backfill window"
                )
            if self.wallets_without_history:
                reasons.append(
                    f"{self.wallets_without_history} with no transaction at all on this RPC endpoint "
                    "(check the address, and that KOLRAY_RPC_URLS / --rpc-url is the right cluster)"
                )
            if self.wallets_up_to_date:
                reasons.append(f"{self.wallets_up_to_date} with no new transaction since the last poll")
            if self.wallet_errors:
                reasons.append(f"{self.wallet_errors} with errors")
            read = self.fetched + self.failed_txs
            if read:
                reasons.append(
                    f"{read} transactions read, none a swap by these wallets ({self.non_trade_txs} not "
                    f"trades, {self.failed_txs} failed, {self.malformed_txs} unreadable)"
                )
            notes.append(
                f"0 swaps stored: of {self.wallets} wallets, " + "; ".join(reasons or ["nothing new"])
            )
        return notes

    def _outside_backfill_note(self, now: float) -> str:
        count = self.wallets_outside_backfill
        window = f"the last {self.backfill_days:g} days" if self.backfill_days is not None else "its bounds"
        if self.backfill_max_signatures == 0:
            window += ", KOLRAY_BACKFILL_MAX_SIGNATURES 0"
        newest, days = "", "N"
        if self.outside_backfill_newest is not None:
            day = datetime.fromtimestamp(self.outside_backfill_newest, UTC).strftime("%Y-%m-%d")
            whose = "the last transaction of the quietest" if count > 1 else "its last transaction"
            newest = f"; {whose} is from {day}"
            days = str(math.ceil(max(0.0, now - self.outside_backfill_newest) / 86400) + 1)
        cap = self.backfill_max_signatures
        return (
            f"{count} {'wallets have' if count > 1 else 'wallet has'} transactions, but none in the "
            f"first-sight backfill window ({window}{newest}), so none was read. Widen it and run again: "
            f"KOLRAY_BACKFILL_DAYS={days} (or backfill_days in the config file, or `kolray track "
            f"--backfill-days {days}`); KOLRAY_BACKFILL_MAX_SIGNATURES (--backfill-max-signatures"
            f"{f', now {cap}' if cap is not None else ''}) caps the signatures read per wallet"
        )


@dataclass
class TrackerOptions:
    rpc_urls: list[str]
    database_url: str
    actors: int = 2
    rps: float = 10.0
    burst: float = 10.0
    policy: PollPolicy = field(default_factory=PollPolicy)
    wallet_concurrency: int = 32
    client_options: dict[str, Any] = field(default_factory=dict)
    # The market stage, run beside continuous tracking in the same rate budget (None: off).
    market: MarketOptions | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> TrackerOptions:
        settings = settings or get_settings()
        options = cls(
            rpc_urls=settings.rpc_url_values,
            database_url=settings.database_url,
            actors=settings.tracker_actors,
            rps=settings.rpc_rps,
            burst=settings.rpc_burst,
            policy=PollPolicy(
                batch_size=settings.rpc_batch_size,
                backfill_seconds=settings.backfill_days * 86400,
                backfill_max_signatures=settings.backfill_max_signatures,
            ),
            client_options=client_options_of(settings),
        )
        return replace(options, **{name: value for name, value in overrides.items() if value is not None})


def shard_of(wallet: str, shards: int) -> int:
    """Stable across runs and processes (unlike ``hash``): adding wallets moves no other wallet."""
    return zlib.crc32(wallet.encode()) % shards


class Tracker:
    """Owns the actors. Use as a context manager, or call :meth:`shutdown`."""

    def __init__(self, options: TrackerOptions) -> None:
        import ray
        import ray.util.scheduling_strategies

        init_ray(namespace="kolray", log_to_driver=False)
        self.options = options
        ns = actors.NAMESPACE
        # The limiter and the writer stay beside the supervisor (the head, or whichever node runs the
        # job): worker nodes may be spot instances. Soft, so a one-node cluster is no special case.
        here = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=True
        )
        self.limiter = (
            actors.remote(actors.RateLimiterActor)
            .options(name=actors.LIMITER_NAME, namespace=ns, get_if_exists=True, scheduling_strategy=here)
            .remote(options.rps, options.burst)
        )
        ray.get(self.limiter.reconfigure.remote(options.rps, options.burst))
        self.writer = (
            actors.remote(actors.WriterActor)
            .options(name=actors.WRITER_NAME, namespace=ns, get_if_exists=True, scheduling_strategy=here)
            .remote(options.database_url)
        )
        # Pollers spread over the nodes: RPC sockets, CPU for extraction and failures are shared out.
        self.pollers = [
            actors.remote(actors.PollerActor)
            .options(
                name=actors.poller_name(i), namespace=ns, get_if_exists=True, scheduling_strategy="SPREAD"
            )
            .remote(
                i,
                options.rpc_urls,
                options.database_url,
                options.policy,
                options.client_options,
                options.wallet_concurrency,
            )
            for i in range(options.actors)
        ]
        self.restarts = 0
        self.market: Any = None
        self.market_run: Any = None

    def start_market(self) -> None:
        """Start the market stage's actor (:mod:`kolray.market`) if the options ask for it, or run it
        again if its last run ended (the actor was restarted)."""
        if self.options.market is None:
            return
        if self.market is None:
            self.market = market_actor(self.options.market, self.options.rps, self.options.burst)
        self.market_run = keep_running(self.market, self.market_run)

    def stop_market(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop the market stage; its summary (empty if it was off or did not answer in time)."""
        if self.market is None or self.market_run is None:
            return {}
        import ray

        self.market.stop.remote()
        try:
            summary: dict[str, Any] = ray.get(self.market_run, timeout=timeout_s)
        except Exception:
            summary = {}
        self.market_run = None
        return summary

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        import ray

        for actor in [*self.pollers, self.writer, self.limiter, *([self.market] if self.market else [])]:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(actor, no_restart=True)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until every actor has started (so a timed sync measures polling, not start-up)."""
        import ray

        ray.get([p.progress.remote() for p in self.pollers] + [self.writer.stats.remote()], timeout=timeout_s)

    def stop(self) -> None:
        """Ask every poller to stop after the batch in hand (graceful shutdown)."""
        for poller in self.pollers:
            poller.stop.remote()

    def shards(self, wallets: list[str]) -> list[list[str]]:
        shards: list[list[str]] = [[] for _ in self.pollers]
        for wallet in wallets:
            shards[shard_of(wallet, len(self.pollers))].append(wallet)
        return shards

    def sync(
        self,
        wallets: list[str],
        on_progress: Callable[[int, int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> SyncSummary:
        """Bring every wallet up to date once. Survives poller deaths: a dead poller is restarted by
        Ray and its shard resubmitted; cursors make the repeat cheap and exactly-once."""
        import ray
        from ray.exceptions import RayActorError

        started = time.time()
        summary = SyncSummary(
            wallets=len(wallets),
            backfill_days=self.options.policy.backfill_seconds / 86400,
            backfill_max_signatures=self.options.policy.backfill_max_signatures,
        )
        for poller in self.pollers:
            poller.reset_progress.remote()
        pending: dict[Any, tuple[int, list[str], int]] = {}
        for index, shard in enumerate(self.shards(wallets)):
            if shard:
                pending[self.pollers[index].sync.remote(shard)] = (index, shard, 0)
        done_wallets = 0
        stop_sent = False
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            if stop is not None and stop.is_set() and not stop_sent:
                self.stop()
                stop_sent = True
            for ref in ready:
                index, shard, attempts = pending.pop(ref)
                try:
                    results = ray.get(ref)
                except RayActorError as error:
                    # The actor died mid-sync (killed, OOM, node lost). Ray restarts it; resubmit.
                    self.restarts += 1
                    summary.actor_restarts += 1
                    if attempts >= MAX_RESUBMITS:
                        summary.errors.append(
                            f"poller {index} died {attempts + 1} times: giving up on {len(shard)} wallets"
                        )
                        summary.wallet_errors += len(shard)
                        continue
                    log.warning(
                        "poller died, resubmitting its shard",
                        extra={"poller": index, "error": type(error).__name__},
                    )
                    pending[self.pollers[index].sync.remote(shard)] = (index, shard, attempts + 1)
                    continue
                finished = time.time()
                for result in results:
                    summary.add(result, finished)
                done_wallets += len(shard)
            if on_progress is not None:
                on_progress(done_wallets + self._in_progress(pending), len(wallets))
        summary.rpc = self._rpc_stats()
        summary.elapsed_s = round(time.time() - started, 3)
        return summary

    def live(
        self,
        wallets: list[str],
        ws_urls: list[str],
        live_options: LiveOptions,
        stop: threading.Event,
        on_stored: Callable[[int], None] | None = None,
        check_s: float = 0.1,
    ) -> dict[str, Any]:
        """Hold pubsub subscriptions for ``wallets`` (sharded over the pollers as for polling) until
        ``stop``; the pollers reconcile. ``on_stored(n)`` hears, within ``check_s``, that n more
        swaps were stored (straight on to alerts). A poller that dies is restarted by Ray and its
        shard resubscribed (its first reconciliation fills what was missed meanwhile). Returns the
        pollers' live stats, summed."""
        import ray
        from ray.exceptions import RayActorError

        pending: dict[Any, tuple[int, list[str], int]] = {}
        for index, shard in enumerate(self.shards(wallets)):
            if shard:
                pending[self.pollers[index].live.remote(shard, ws_urls, live_options)] = (index, shard, 0)
        totals: dict[str, Any] = {"actor_restarts": 0}
        last_stored: int | None = None
        stop_sent = False
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=check_s)
            if stop.is_set() and not stop_sent:
                self.stop()
                stop_sent = True
            for ref in ready:
                index, shard, attempts = pending.pop(ref)
                try:
                    _add_counts(totals, ray.get(ref))
                except RayActorError as error:
                    self.restarts += 1
                    totals["actor_restarts"] += 1
                    if stop.is_set() or attempts >= MAX_RESUBMITS:
                        continue
                    log.warning(
                        "poller died, resubscribing its shard",
                        extra={"poller": index, "error": type(error).__name__},
                    )
                    pending[self.pollers[index].live.remote(shard, ws_urls, live_options)] = (
                        index,
                        shard,
                        attempts + 1,
                    )
            try:
                writer = ray.get(self.writer.stats.remote(), timeout=5)
            except Exception:  # a writer restarting: ask again next time
                continue
            stored = int(writer.get("stored_live", 0)) + int(writer.get("stored_reconciled", 0))
            if last_stored is not None and stored > last_stored and on_stored is not None:
                on_stored(stored - last_stored)
            last_stored = stored
        return totals

    def _in_progress(self, pending: dict[Any, tuple[int, list[str], int]]) -> int:
        """Wallets finished inside shards that are still running (best effort, for the progress bar)."""
        import ray

        refs = [self.pollers[index].progress.remote() for index, _, _ in pending.values()]
        try:
            return sum(p["done"] for p in ray.get(refs, timeout=2))
        except Exception:
            return 0

    def _rpc_stats(self) -> dict[str, float]:
        import ray

        totals: dict[str, float] = {}
        try:
            for progress in ray.get([p.progress.remote() for p in self.pollers], timeout=10):
                for key, value in (progress.get("rpc") or {}).items():
                    if isinstance(value, int | float):
                        totals[key] = totals.get(key, 0) + value
        except Exception:  # stats are informative; a dead poller's are lost with it
            pass
        return totals


def active_wallets(database_url: str) -> list[str]:
    return [k.wallet for k in list_kols(upgrade(database_url), active_only=True)]


def sync_once(
    options: TrackerOptions | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> SyncSummary:
    """Sync every active wallet once with a fresh pool of actors, then release them."""
    options = options or TrackerOptions.from_settings()
    wallets = active_wallets(options.database_url)
    with Tracker(options) as tracker:
        summary = tracker.sync(wallets, on_progress=on_progress, stop=stop)
    _record_run(options.database_url, "track", summary)
    return summary


def run_forever(
    options: TrackerOptions | None = None,
    interval_s: float = 60.0,
    on_cycle: Callable[[int, SyncSummary], None] | None = None,
    stop: threading.Event | None = None,
    max_cycles: int | None = None,
) -> int:
    """Poll every ``interval_s`` until ``stop`` is set (SIGINT/SIGTERM set it when this runs in the
    main thread). Wallets added or paused between cycles are picked up at the next one. Returns the
    number of cycles run."""
    options = options or TrackerOptions.from_settings()
    stop = stop or threading.Event()
    restore = _install_signal_handlers(stop)
    cycles = 0
    try:
        with Tracker(options) as tracker:
            while not stop.is_set() and (max_cycles is None or cycles < max_cycles):
                tracker.start_market()
                started = time.time()
                summary = tracker.sync(active_wallets(options.database_url), stop=stop)
                cycles += 1
                _record_run(options.database_url, "track", summary)
                if on_cycle is not None:
                    on_cycle(cycles, summary)
                stop.wait(max(0.0, interval_s - (time.time() - started)))
            tracker.stop_market()
    finally:
        restore()
    return cycles


MARKET_CHECK_S = 30.0  # how often live tracking checks that its market stage still runs


@contextlib.contextmanager
def market_watchdog(tracker: Any, every_s: float = MARKET_CHECK_S) -> Iterator[None]:
    """While the block runs, start the tracker's market stage again whenever it has ended (a crash,
    or Ray restarting its actor): live tracking has no cycles to do it at, as continuous tracking
    does. The watchdog is stopped and joined before the block's exit, so it never races
    ``stop_market``."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(every_s):
            try:
                tracker.start_market()
            except Exception:  # a failed restart is tried again at the next check
                log.exception("could not restart the market stage")

    thread = threading.Thread(target=watch, name="kolray-market-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def run_live(
    options: TrackerOptions | None = None,
    ws_urls: list[str] | None = None,
    live_options: LiveOptions | None = None,
    on_stored: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Track live (``kolray track --live``): subscriptions on ``ws_urls`` (default: each RPC URL's
    pubsub, ``https`` → ``wss``), the pollers as reconcilers, until ``stop`` (SIGINT/SIGTERM in the
    main thread). Returns the summed live stats, also recorded as a ``track`` run."""
    options = options or TrackerOptions.from_settings()
    stop = stop or threading.Event()
    urls = ws_urls or [ws_url_of(u) for u in options.rpc_urls]
    live_options = live_options or LiveOptions(
        policy=options.policy, wallet_concurrency=options.wallet_concurrency
    )
    restore = _install_signal_handlers(stop)
    try:
        with Tracker(options) as tracker:
            tracker.start_market()
            with market_watchdog(tracker):
                totals = tracker.live(
                    active_wallets(options.database_url), urls, live_options, stop, on_stored
                )
            market = tracker.stop_market()
            if market:
                totals["market"] = market
    finally:
        restore()
    record_run("track", "ok", {"mode": "live", **totals}, options.database_url)
    return totals


def run_market(options: TrackerOptions, stop: threading.Event | None = None) -> MarketSummary:
    """The market stage alone (``kolray market``): its actor, in the cluster-wide rate budget, until
    ``stop`` (SIGINT/SIGTERM in the main thread)."""
    import ray

    if options.market is None:
        raise ValueError("run_market needs options.market")
    stop = stop or threading.Event()
    restore = _install_signal_handlers(stop)
    init_ray(namespace="kolray", log_to_driver=False)
    actor = market_actor(options.market, options.rps, options.burst)
    try:
        run = keep_running(actor, None)
        while not stop.wait(0.5):
            run = keep_running(actor, run)
        actor.stop.remote()
        summary = MarketSummary.model_validate(ray.get(run, timeout=30))
    finally:
        restore()
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)
    record_run("market", "ok", summary.model_dump(), options.database_url)
    return summary


def _add_counts(totals: dict[str, Any], stats: dict[str, Any]) -> None:
    for key, value in stats.items():
        if isinstance(value, dict):
            _add_counts(totals.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            totals[key] = totals.get(key, 0) + value


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: object) -> None:
        log.info("stopping after the batches in hand", extra={"signal": signal.Signals(signum).name})
        if stop.is_set():  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _record_run(database_url: str, kind: str, summary: SyncSummary) -> None:
    record_run(kind, "ok" if not summary.wallet_errors else "partial", summary.model_dump(), database_url)
