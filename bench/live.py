"""Seconds from a KOL's buy to a stored swap and to a delivered webhook: live (pubsub) against
polling, on a realtime twin with RPC latency.

Two twins serve the same world on the same realtime clock (``--latency-ms`` added to every RPC
answer), one per contender, so each one's RPC calls are its own:

- **live**: :class:`kolray.tracker.live.LiveTracker` — ``logsSubscribe`` per wallet (1,000 per
  connection), batched ``getTransaction``, swaps stored at once, the poller as reconciler; each
  stored batch wakes an :class:`~kolray.alerts.runner.AlertRunner` at once (straight through), whose
  alerts go to a webhook receiver in this process;
- **poll**: the poller alone, every wallet every ``--poll-interval`` seconds (60, kolray's default),
  as ``kolray track --interval`` does.

The clock starts ``--history-hours`` into the world; both first read that history (a backfill, not
timed), then the window of ``--seconds`` is timed. The alert rule is ``dh`` with no bar
(``dh_min`` -1, one closed position), so every opening buy of a KOL with a closed position alerts:
the bench times the path, not the rule (positions come from one analyzer run over the history). Chain time is the exact start of the transaction's slot
(the twin knows it; ``blockTime`` is that, floored). Timed: swaps whose chain time is in the window
and at least ``--poll-interval`` + 5 s before its end (so polling had its chance too).

Reported, per contender: p50/p99 seconds from chain time to stored (and, live, to alert raised and
to webhook delivered), swaps timed and the share stored, RPC calls per stored swap in the window
(every call, batches counted per call), and, live, the calls a full reconciliation adds per swap at
the configured ``--reconcile-interval``. The last line is one JSON object.

    .venv/bin/python bench/live.py [--wallets 1000] [--seconds 300] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from kolray.alerts.detect import Evaluation
from kolray.alerts.rules import AlertRules
from kolray.alerts.runner import AlertRunner
from kolray.alerts.webhooks import webhooks_from_urls
from kolray.analyzer.stage import analyze
from kolray.chain.pubsub import ws_url_of
from kolray.chain.types import Swap
from kolray.config import Settings
from kolray.db.migrate import upgrade
from kolray.db.tables import AlertRow
from kolray.kols import KolIn, upsert_kols
from kolray.sim.params import slot_start
from kolray.sim.server import ServerHandle, start_server
from kolray.sim.world import World, generate_world, load_world
from kolray.tracker.live import EngineStore, LiveOptions, LiveTracker, StoredSwaps
from kolray.tracker.poller import PollPolicy, poll_wallet
from kolray.tracker.source import RpcChainSource
from kolray.tracker.store import CommitResult, WalletProgress

HISTORY_POLICY = PollPolicy(batch_size=100, backfill_seconds=10**9, backfill_max_signatures=10**6)


class Clock:
    """Chain time of a swap in this process's wall-clock time: when its slot began on the twin."""

    def __init__(self, twin: ServerHandle, world: World, speed: float) -> None:
        self.twin = twin
        self.start = world.start
        self.speed = speed

    def chain_wall(self, swap: Swap) -> float:
        now = time.time()
        behind = (self.twin.server.sim_time() - slot_start(self.start, swap.slot or 0)) / self.speed
        return now - behind


class Timeline:
    """Per swap (signature, wallet, mint): chain time, stored, and for alerts raised and delivered."""

    def __init__(self) -> None:
        self.chain: dict[tuple[str, str, str], float] = {}
        self.stored: dict[tuple[str, str, str], float] = {}
        self.road: dict[tuple[str, str, str], str] = {}
        self.delivered: dict[str, float] = {}  # signature → first webhook delivery
        self.raised: dict[int, float] = {}  # alert id → when the evaluation that made it returned
        self.lock = threading.Lock()

    def record(self, clock: Clock, batch: StoredSwaps) -> None:
        for swap in batch.swaps:
            key = (swap.signature, swap.wallet, swap.mint)
            self.chain[key] = clock.chain_wall(swap) - (time.time() - batch.stored_at)
            self.stored[key] = batch.stored_at
            self.road[key] = batch.road


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_s": None, "p99_s": None, "max_s": None}
    array = np.asarray(values)
    return {
        "n": len(values),
        "p50_s": round(float(np.percentile(array, 50)), 3),
        "p99_s": round(float(np.percentile(array, 99)), 3),
        "max_s": round(float(array.max()), 3),
    }


def receiver(timeline: Timeline) -> ThreadingHTTPServer:
    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            now = time.time()
            with timeline.lock:
                timeline.delivered.setdefault(body["signature"], now)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class TimedRunner(AlertRunner):
    """Notes when each alert was raised (its evaluation returned)."""

    timeline: Timeline

    def evaluate_once(self) -> Evaluation:
        result = super().evaluate_once()
        now = time.time()
        for alert_id in result.new_ids:
            self.timeline.raised[alert_id] = now
        return result


def world_for(args: argparse.Namespace) -> World:
    days = args.history_hours / 24 + max(args.seconds, 600) / 86400 + 0.05
    path = Path(args.cache) / f"live-world-{args.wallets}-{days:.3f}-{args.seed}"
    if not (path / "world.json").is_file():
        generate_world(
            path, kols=args.wallets, days=days, seed=args.seed, workers=args.workers, overwrite=True
        )
    return load_world(path)


async def run_live(
    args: argparse.Namespace, world: World, twin: ServerHandle, wallets: list[str], workdir: Path
) -> dict[str, Any]:
    url = f"sqlite:///{workdir / 'live.db'}"
    engine = upgrade(url)
    upsert_kols(engine, [KolIn(wallet=w) for w in wallets])
    clock = Clock(twin, world, args.speed)
    timeline = Timeline()
    hook = receiver(timeline)
    settings = Settings(data_dir=workdir / "live-data", database_url=url)
    runner = TimedRunner(
        settings,
        rules=AlertRules(rules=("dh",), dh_min=-1, dh_min_positions=1, max_age_s=0),
        webhooks=webhooks_from_urls([f"http://127.0.0.1:{hook.server_address[1]}/hook"]),
        database_url=url,
        interval_s=30,
        use_model=False,
    )
    runner.timeline = timeline
    started = False

    def on_stored(batch: StoredSwaps) -> None:
        timeline.record(clock, batch)
        if started:
            runner.notify()  # straight through: evaluate now, not at the next timer

    source = RpcChainSource.create([twin.url], timeout_s=10.0, max_retries=8, max_concurrency=32)
    live = LiveTracker(
        source,
        EngineStore(engine),
        [ws_url_of(twin.url)],
        wallets,
        LiveOptions(
            reconcile_interval_s=args.reconcile_interval,
            per_connection=1000,
            policy=HISTORY_POLICY,
            wallet_concurrency=64,
        ),
        on_stored=on_stored,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(live.run(stop))
    # The history: the first reconciliation of every wallet (their subscriptions' first gap).
    while live.counts.get("gap_reconciles", 0) < 1 or live.gaps or live.gap_event.is_set():
        await asyncio.sleep(0.2)
    while len(live.reconcile_results) < len(wallets):
        await asyncio.sleep(0.2)
    # Positions from the history, so the Diamond Hand rule has closed positions to read.
    await asyncio.to_thread(analyze, engine)
    runner.start()
    started = True
    window = await timed_window(args, twin)
    stop.set()
    await task
    await source.aclose()
    await asyncio.sleep(args.drain_s)  # deliveries in flight land
    runner.stop()
    hook.shutdown()
    with engine.connect() as conn:
        alerts = dict(conn.execute(select(AlertRow.id, AlertRow.signature)).all())
    return summarize("live", args, timeline, window, alerts) | {"tracker": live.stats()}


async def run_poll(
    args: argparse.Namespace, world: World, twin: ServerHandle, wallets: list[str], workdir: Path
) -> dict[str, Any]:
    url = f"sqlite:///{workdir / 'poll.db'}"
    store = EngineStore(upgrade(url))
    clock = Clock(twin, world, args.speed)
    timeline = Timeline()
    source = RpcChainSource.create([twin.url], timeout_s=10.0, max_retries=8, max_concurrency=32)
    semaphore = asyncio.Semaphore(64)

    async def commit(progress: WalletProgress) -> CommitResult:
        outcome, fresh = await store.commit(progress)
        if fresh:
            timeline.record(clock, StoredSwaps(fresh, time.time(), {}, "poll"))
        return outcome

    async def sync() -> None:
        cursors = await store.cursors(wallets)

        async def one(wallet: str) -> None:
            async with semaphore:
                await poll_wallet(source, wallet, cursors.get(wallet), commit, HISTORY_POLICY)

        await asyncio.gather(*(one(w) for w in wallets))

    await sync()  # the history
    window_task = asyncio.create_task(timed_window(args, twin))
    while not window_task.done():
        began = time.monotonic()
        await sync()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.shield(window_task), max(0.0, args.poll_interval - (time.monotonic() - began))
            )
    await source.aclose()
    return summarize("poll", args, timeline, window_task.result(), {})


async def timed_window(args: argparse.Namespace, twin: ServerHandle) -> dict[str, float]:
    """Sleeps through the timed window; its wall-clock bounds and the twin's calls inside it."""
    calls_before = twin.stats()["calls"]
    begin = time.time()
    await asyncio.sleep(args.seconds)
    return {"begin": begin, "end": time.time(), "calls": twin.stats()["calls"] - calls_before}


def summarize(
    name: str, args: argparse.Namespace, timeline: Timeline, window: dict[str, float], alerts: dict[int, str]
) -> dict[str, Any]:
    last_chain = window["end"] - args.poll_interval - 5
    timed = [k for k, t in timeline.chain.items() if window["begin"] <= t <= last_chain]
    stored_in_window = sum(1 for t in timeline.stored.values() if window["begin"] <= t <= window["end"])
    out: dict[str, Any] = {
        "stored": percentiles([timeline.stored[k] - timeline.chain[k] for k in timed]),
        "swaps_stored_in_window": stored_in_window,
        "rpc_calls_in_window": window["calls"],
        "rpc_calls_per_stored_swap": round(window["calls"] / stored_in_window, 3)
        if stored_in_window
        else None,
    }
    if name == "live":
        out["stored_by_road"] = {
            road: sum(1 for k in timed if timeline.road[k] == road) for road in ("live", "reconcile")
        }
        by_signature = {k[0]: k for k in timed}
        raised, delivered = [], []
        for alert_id, signature in alerts.items():
            key = by_signature.get(signature)
            if key is None:
                continue
            if alert_id in timeline.raised:
                raised.append(timeline.raised[alert_id] - timeline.chain[key])
            if signature in timeline.delivered:
                delivered.append(timeline.delivered[signature] - timeline.chain[key])
        out["alert_raised"] = percentiles(raised)
        out["webhook_delivered"] = percentiles(delivered)
        swaps_per_s = stored_in_window / max(window["end"] - window["begin"], 1e-9)
        # A full reconciliation lists every wallet once (one call each when nothing was missed).
        out["full_reconcile_calls_per_swap"] = (
            round(args.wallets / (swaps_per_s * args.reconcile_interval), 3) if swaps_per_s else None
        )
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    world = world_for(args)
    wallets = [str(w) for w in world.kols().wallet]
    server_options = dict(
        rps=None,
        clock="realtime",
        speed=args.speed,
        clock_offset_s=args.history_hours * 3600,
        latency_ms=args.latency_ms,
        seed=args.seed,
    )
    with (
        tempfile.TemporaryDirectory(prefix="kolray-live-") as tmp,
        start_server(world, **server_options) as live_twin,
        start_server(world, **server_options) as poll_twin,
    ):
        workdir = Path(tmp)
        live, poll = await asyncio.gather(
            run_live(args, world, live_twin, wallets, workdir),
            run_poll(args, world, poll_twin, wallets, workdir),
        )
    return {
        "bench": "live",
        "wallets": len(wallets),
        "seconds": args.seconds,
        "latency_ms": args.latency_ms,
        "speed": args.speed,
        "poll_interval_s": args.poll_interval,
        "reconcile_interval_s": args.reconcile_interval,
        "live": live,
        "poll": poll,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wallets", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=300.0, help="timed window (wall clock)")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second")
    parser.add_argument("--history-hours", type=float, default=3.0)
    parser.add_argument("--poll-interval", type=float, default=60.0)
    parser.add_argument("--reconcile-interval", type=float, default=600.0)
    parser.add_argument("--drain-s", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--workers", type=int, default=1, help="processes generating the world")
    parser.add_argument("--cache", default=os.environ.get("KOLRAY_BENCH_CACHE", tempfile.gettempdir()))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(asyncio.run(main_async(args))), flush=True)


if __name__ == "__main__":
    main()
