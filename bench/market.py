"""The market stage's RPC cost against the chain twin, and what it leaves the tracker, in one run.

(a) cost at the real cadence: the twin's clock runs in real time from the middle of the world; the
    stage watches every token bought within 7 days with its default cadence (2 s after a move, up
    to 60 s while still) for ``--seconds``: RPC calls per watched token per hour.
(b) the worst case: ``--tokens`` (1,000) tokens all read every 2 s (as if every one were moving):
    calls per second, and their share of a 100 calls/s plan (goal ≤ 20%).
(c) the tracker's ingest utilisation under a rate limit (``bench/ingest.py`` (a): the twin allows R
    calls/s, ideal time = the tracker's calls ÷ R) alone, then with the market stage beside it in
    the same limiter, reading every watched token every 2 s: both utilisations, the market's calls,
    and every swap stored exactly once.

The twin's accounts follow its true tapes, so the prices read are checked too (worst error).
The history backfill (``kolray.market.history``) is off here, so these are the live reads' costs
alone; ``bench/market_history.py`` measures the history.
Prints progress to stderr and one JSON object on the last line of stdout.

    python bench/market.py [--kols 60] [--days 10] [--seconds 60] [--tokens 1000] [--rps 100] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
from sqlalchemy import text

from kolray.chain.rpc import RpcClient
from kolray.kols import KolIn, upsert_kols
from kolray.market.stage import MarketOptions, MarketWatcher
from kolray.market.store import read_tape
from kolray.market.watch import watched_mints
from kolray.sim.server import start_server
from kolray.sim.world import World, generate_world, load_world
from kolray.testing.market_world import database_with_world_swaps, true_prices
from kolray.tracker.poller import PollPolicy
from kolray.tracker.supervisor import Tracker, TrackerOptions

EVERYTHING = PollPolicy(batch_size=100, backfill_seconds=10**10, backfill_max_signatures=10**7)
BUDGET_RPS = 100.0


def say(message: str) -> None:
    print(f"[market] {message}", file=sys.stderr, flush=True)


async def watch_for(options: MarketOptions, engine, seconds: float) -> MarketWatcher:
    async with RpcClient(options.rpc_urls, **options.client_options) as rpc:
        watcher = MarketWatcher(options, rpc, engine)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await watcher.run(stop)
    return watcher


def worst_error(world: World, engine) -> float:
    tape = read_tape(engine)
    priced = tape[tape["price_sol"].notna()]
    if priced.empty:
        return float("nan")
    return float(np.nanmax(np.abs(priced["price_sol"].to_numpy() / true_prices(world, priced) - 1)))


def measure_cadence(world: World, root: Path, seconds: float) -> dict:
    engine = database_with_world_swaps(f"sqlite:///{root / 'cadence.db'}", world)
    offset = (world.end - world.start) * 0.6
    with start_server(world, rps=None, clock="realtime", speed=1.0, clock_offset_s=offset) as twin:
        options = MarketOptions(rpc_urls=[twin.url], database_url=str(engine.url), history=False)
        watcher = asyncio.run(watch_for(options, engine, seconds))
    s = watcher.summary
    token_hours = max(s.watched, 1) * seconds / 3600
    result = {
        "seconds": seconds,
        "watched_tokens": s.watched,
        "reads": s.reads,
        "rpc_calls": s.rpc_calls,
        "calls_per_token_hour": round(s.rpc_calls / token_hours, 2),
        "tape_rows": s.points_stored,
        "gaps": s.gaps,
        "worst_price_error": worst_error(world, engine),
    }
    say(f"(a) {result}")
    return result


def measure_worst_case(world: World, root: Path, tokens: int, seconds: float) -> dict:
    engine = database_with_world_swaps(f"sqlite:///{root / 'worst.db'}", world)
    with start_server(world, rps=None) as twin:  # the world's end: every token exists
        chain_end = world.end
        mints = watched_mints(engine, chain_end, horizon_s=10**9)
        options = MarketOptions(
            rpc_urls=[twin.url], database_url=str(engine.url), fast_s=2.0, slow_s=2.0, history=False
        )

        async def run() -> tuple[int, float]:
            async with RpcClient([twin.url]) as rpc:
                watcher = MarketWatcher(options, rpc, engine)
                wanted = (mints * (tokens // max(len(mints), 1) + 1))[
                    :tokens
                ]  # repeat if the world has fewer
                started = time.perf_counter()
                rounds = 0
                while time.perf_counter() - started < seconds:
                    await watcher.reader.read(wanted)
                    rounds += 1
                    await asyncio.sleep(max(0.0, started + rounds * 2.0 - time.perf_counter()))
                return watcher.reader.calls, time.perf_counter() - started

        calls, elapsed = asyncio.run(run())
    per_s = calls / elapsed
    result = {
        "tokens": tokens,
        "distinct_mints": len(set(mints)),
        "read_every_s": 2.0,
        "calls_per_s": round(per_s, 2),
        "budget_rps": BUDGET_RPS,
        "budget_share": round(per_s / BUDGET_RPS, 4),
    }
    say(f"(b) {result}")
    return result


def tracked_sync(world: World, root: Path, name: str, rps: float, latency_ms: float, market: bool) -> dict:
    wallets = list(world.kols().wallet)
    engine = database_with_world_swaps(f"sqlite:///{root / (name + '-swaps.db')}", world)  # the watch list
    tracker_db = f"sqlite:///{root / (name + '.db')}"
    from kolray.db.migrate import upgrade

    tracking = upgrade(tracker_db)
    upsert_kols(tracking, [KolIn(wallet=w) for w in wallets])
    with start_server(world, rps=rps, method_share=1.0, latency_ms=latency_ms) as twin:
        market_options = (
            MarketOptions(
                rpc_urls=[twin.url],
                database_url=str(engine.url),
                fast_s=2.0,
                slow_s=2.0,
                refresh_s=5.0,
                history=False,
            )
            if market
            else None
        )
        options = TrackerOptions(
            rpc_urls=[twin.url], database_url=tracker_db, actors=2, rps=rps * 0.97, burst=1, policy=EVERYTHING,
            market=market_options,
        )  # fmt: skip
        with Tracker(options) as tracker:
            tracker.wait_ready()
            tracker.start_market()
            time.sleep(3.0 if market else 0.0)  # the market stage's first rounds are under way
            before = twin.stats()
            started = time.perf_counter()
            summary = tracker.sync(wallets)
            elapsed = time.perf_counter() - started
            after = twin.stats()
            market_summary = tracker.stop_market()
    calls = after["calls"] - before["calls"]
    with tracking.connect() as conn:
        stored = [tuple(r) for r in conn.execute(text("SELECT signature, wallet, mint FROM swaps"))]
    trades = world.trades()
    truth = set(zip(trades.signature, trades.wallet, trades.mint, strict=True))
    tracker_calls = int(summary.rpc.get("calls", 0))
    result = {
        "seconds": round(elapsed, 2),
        "calls_all": calls,
        "calls_tracker": tracker_calls,
        "calls_market": calls - tracker_calls if market else 0,
        "utilisation_tracker": round(tracker_calls / rps / elapsed, 3),
        "utilisation_budget": round(calls / rps / elapsed, 3),
        "swaps_lost": len(truth - set(stored)),
        "swaps_duplicated": len(stored) - len(set(stored)),
        "responses_429": after["rate_limited"] - before["rate_limited"],
        "market_reads": int(market_summary.get("reads", 0)),
    }
    say(f"(c) market {'on' if market else 'off'}: {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kols", type=int, default=60)
    parser.add_argument("--days", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--rps", type=float, default=BUDGET_RPS)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--quick", action="store_true", help="a small world and short windows (CI smoke)")
    args = parser.parse_args()
    if args.quick:
        args.kols, args.days, args.seconds, args.tokens = 20, 4.0, 15.0, 300
    with tempfile.TemporaryDirectory(prefix="kolray-bench-market-") as tmp:
        root = Path(tmp)
        say(f"world: {args.kols} KOLs × {args.days:g} days")
        generate_world(root / "world", kols=args.kols, days=args.days, seed=args.seed)
        world = load_world(root / "world")
        cadence = measure_cadence(world, root, args.seconds)
        worst = measure_worst_case(world, root, args.tokens, min(args.seconds, 30.0))
        alone = tracked_sync(world, root, "alone", args.rps, args.latency_ms, market=False)
        beside = tracked_sync(world, root, "beside", args.rps, args.latency_ms, market=True)
    print(
        json.dumps(
            {
                "bench": "market",
                "world": {"kols": args.kols, "days": args.days, "seed": args.seed},
                "cadence": cadence,
                "worst_case": worst,
                "tracker_alone": alone,
                "tracker_with_market": beside,
                "calls_per_token_hour": cadence["calls_per_token_hour"],
                "budget_share_1000_tokens": worst["budget_share"],
                "utilisation_tracker_alone": alone["utilisation_tracker"],
                "utilisation_budget_with_market": beside["utilisation_budget"],
                "utilisation_tracker_with_market": beside["utilisation_tracker"],
                "exactly_once": alone["swaps_lost"] == beside["swaps_lost"] == 0
                and alone["swaps_duplicated"] == beside["swaps_duplicated"] == 0,
            }
        )
    )


if __name__ == "__main__":
    main()
