"""Live tracking against a realtime twin: with subscriptions on, every swap of the world is stored
exactly once, on SQLite and PostgreSQL, while the twin drops connections and misses notifications
(the reconciler fills what they lost); the fast road stores most swaps, and fetches no transaction
twice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from kolray.chain.pubsub import ws_url_of
from kolray.db.migrate import upgrade
from kolray.sim.params import slot_start
from kolray.sim.server import start_server
from kolray.sim.world import World, generate_world, load_world
from kolray.tracker.latency import LatencyRecorder, latency_summary
from kolray.tracker.live import EngineStore, LiveOptions, LiveTracker, StoredSwaps, may_trade
from kolray.tracker.poller import PollPolicy
from kolray.tracker.source import RpcChainSource

FIELDS = ("signature", "wallet", "mint", "side", "token_amount", "token_decimals", "sol_amount", "fee", "rent",
          "tips", "dex")  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    path: Path = tmp_path_factory.mktemp("live") / "world"
    generate_world(path, kols=30, days=1, seed=31)
    return load_world(path)


def normalise(row: tuple) -> tuple:
    signature, wallet, mint, side, *amounts, dex = row
    return (signature, wallet, mint, side, *(int(a) for a in amounts), dex)


def truth(world: World) -> set[tuple]:
    return {normalise(tuple(r)) for r in world.trades()[list(FIELDS)].itertuples(index=False)}


def stored(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [normalise(tuple(r)) for r in conn.execute(text(f"SELECT {', '.join(FIELDS)} FROM swaps"))]


def test_may_trade_reads_invoked_programs() -> None:
    transfer = [
        "Program 11111111111111111111111111111111 invoke [1]",
        "Program 11111111111111111111111111111111 success",
    ]
    swap = ["Program ComputeBudget111111111111111111111111111111 invoke [1]",
            "Program 6EF8rrecthR5Dkzon8Nwu78hRvfCKubJ14M5uBEwF6P invoke [1]"]  # fmt: skip
    assert not may_trade(transfer)
    assert may_trade(swap)
    assert may_trade([]) and may_trade([*transfer, "Log truncated"])


def run_live(
    world: World, engine, twin_url: str, seconds_after_end: float, twin
) -> tuple[LiveTracker, list[StoredSwaps]]:
    wallets = [str(w) for w in world.kols().wallet]
    batches: list[StoredSwaps] = []

    async def main() -> LiveTracker:
        source = RpcChainSource.create(
            [twin_url], timeout_s=2.0, max_retries=10, backoff_base_s=0.05, backoff_max_s=0.5
        )
        live = LiveTracker(
            source,
            EngineStore(engine),
            [ws_url_of(twin_url)],
            wallets,
            LiveOptions(
                poll_interval_s=0.5,
                reconcile_interval_s=10**6,  # no full sweep during the run: the final one below
                per_connection=8,
                policy=PollPolicy(batch_size=50, backfill_seconds=10**9, backfill_max_signatures=10**6),
            ),
            on_stored=batches.append,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(live.run(stop))
        while twin.server.sim_time() < world.end + seconds_after_end:
            await asyncio.sleep(0.2)
        # The periodic full sweep, once the world has unfolded: what the subscriptions missed.
        await live.reconcile(wallets)
        stop.set()
        await task
        await source.aclose()
        return live

    return asyncio.run(main()), batches


@pytest.mark.slow
def test_every_swap_stored_once_under_drops_and_missed_notifications(world: World, db_url: str) -> None:
    engine = upgrade(db_url)
    speed = (world.end - world.start) / 12.0  # the day unfolds in 12 s
    with start_server(
        world, rps=None, clock="realtime", speed=speed, ws_drop_rate=0.03, ws_miss_rate=0.1, seed=7
    ) as twin:
        live, batches = run_live(world, engine, twin.url, 60, twin)
        pubsub = twin.stats()["pubsub"]
        methods = twin.stats()["methods"]
    rows = stored(engine)
    assert len(rows) == len(set(rows)), "a swap was stored twice"
    assert set(rows) == truth(world), "stored swaps differ from the twin's ground truth"
    stats = live.stats()
    assert pubsub["dropped"] >= 1 and pubsub["missed"] >= 1, pubsub
    assert stats["pubsub"]["disconnects"] >= pubsub["dropped"]
    assert stats.get("stored_reconcile", 0) >= 1, "the reconciler filled nothing: the faults tested nothing"
    # The first sight of each wallet is a backfill (reconciler); after that, the fast road leads.
    assert stats["stored_live"] > len(rows) / 2, stats
    # Every stored swap was told to on_stored once, by the road that stored it.
    told = [(s.signature, s.wallet, s.mint) for b in batches for s in b.swaps]
    assert len(told) == len(set(told)) == len(rows)
    # No transaction fetched twice by kolray: the reconciler read the fast road's from memory.
    fetched = stats["rpc_calls"]["transactions"]
    assert methods["getTransaction"] >= fetched and stats["notices"] >= stats["stored_live"]


def test_without_faults_the_fast_road_stores_each_swap_within_a_second(world: World, sqlite_url: str) -> None:
    engine = upgrade(sqlite_url)
    speed = 600.0  # ten simulated minutes per second: a few swaps a second
    with start_server(world, rps=None, clock="realtime", speed=speed, latency_ms=5, seed=1) as twin:
        wallets = [str(w) for w in world.kols().wallet]
        batches: list[StoredSwaps] = []

        async def main() -> LiveTracker:
            source = RpcChainSource.create([twin.url], timeout_s=2.0)
            live = LiveTracker(source, EngineStore(engine), [ws_url_of(twin.url)], wallets,
                               LiveOptions(reconcile_interval_s=10**6), on_stored=batches.append,
                               latency=recorder, latency_engine=engine)  # fmt: skip
            stop = asyncio.Event()
            task = asyncio.create_task(live.run(stop))
            await asyncio.sleep(6)
            stop.set()
            await task
            await source.aclose()
            return live

        recorder = LatencyRecorder("test")
        started = time.time() - twin.server.sim_time() / speed  # wall time = started + sim / speed
        live = asyncio.run(main())
    lags = [
        b.stored_at - (started + slot_start(world.start, s.slot or 0) / speed)
        for b in batches
        if b.road == "live"
        for s in b.swaps
    ]
    assert len(lags) >= 5, live.stats()
    lags.sort()
    assert lags[len(lags) // 2] < 1.0, lags
    assert set(stored(engine)) <= truth(world)
    # The same swaps, in kolray's own record (from blockTime: whole seconds of simulated time).
    recorder.flush(engine, force=True)
    summary = latency_summary(engine)
    assert summary["stored"].n == len(lags) + sum(len(b.swaps) for b in batches if b.road != "live")


@pytest.mark.slow
def test_ray_pollers_hold_subscriptions_and_wake_alerts(ray_session, world: World, sqlite_url: str) -> None:
    """``kolray track --live``'s machinery: the poller actors hold the subscriptions, the writer
    actor stores, the supervisor hears of stored swaps at once; then a poll pass finds nothing left."""
    import threading

    from kolray.kols import KolIn, upsert_kols
    from kolray.tracker.supervisor import Tracker, TrackerOptions

    engine = upgrade(sqlite_url)
    wallets = [str(w) for w in world.kols().wallet]
    upsert_kols(engine, [KolIn(wallet=w) for w in wallets])
    speed = (world.end - world.start) / 15.0
    policy = PollPolicy(batch_size=50, backfill_seconds=10**9, backfill_max_signatures=10**6)
    options = TrackerOptions(
        rpc_urls=[], database_url=sqlite_url, actors=2, rps=2000, burst=200, policy=policy,
        client_options={"timeout_s": 2.0, "max_retries": 10, "backoff_base_s": 0.05, "backoff_max_s": 0.5},
    )  # fmt: skip
    woken: list[int] = []
    with start_server(world, rps=None, clock="realtime", speed=speed, ws_drop_rate=0.02, seed=4) as twin:
        options.rpc_urls = [twin.url]
        with Tracker(options) as tracker:
            stop = threading.Event()
            threading.Timer(12.0, stop.set).start()
            totals = tracker.live(
                wallets, [ws_url_of(twin.url)], LiveOptions(policy=policy), stop, woken.append
            )
            while twin.server.sim_time() < world.end + 60:
                time.sleep(0.2)
            after = tracker.sync(wallets)
    rows = stored(engine)
    assert len(rows) == len(set(rows)), "a swap was stored twice"
    assert set(rows) == truth(world)
    assert totals["stored_live"] > 0 and sum(woken) >= totals["stored_live"]
    assert totals["pubsub"]["subscriptions"] >= len(wallets)
    # What the live run stored, the poll pass found stored: at most the swaps after the stop.
    assert after.swaps < len(rows) / 2, after
    summary = latency_summary(engine, window_s=3600)
    assert summary["stored"].n > 0
