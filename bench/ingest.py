"""Tracker ingestion against the chain twin, measured three ways in one run.

(a) utilisation under a rate limit: the twin allows R calls/s (sliding 10 s window, as mainnet
    providers count: every call of a batch counts) and adds L ms of latency; ideal time = calls ÷ R;
    utilisation = ideal ÷ measured sync time. 429s are counted; every swap must still land once.
(b) speed-up over the seed's way: one wallet after another, one call per request, same twin
    (same R and L), same world, same extraction and database writes.
(c) freshness at scale, unthrottled twin: the largest number of wallets whose steady-state poll
    cycle (every wallet listed once, new transactions fetched) finishes within 60 s on this machine.

Prints progress to stderr and one JSON object on the last line of stdout.

    python bench/ingest.py [--kols 40] [--days 2] [--rps 100] [--latency-ms 50] [--quick]
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

from sqlalchemy import text

from kolray.chain.rpc import RpcClient
from kolray.chain.swaps import extract_swaps
from kolray.db.migrate import upgrade
from kolray.kols import KolIn, upsert_kols
from kolray.sim.server import start_server
from kolray.sim.world import generate_world, load_world
from kolray.tracker.poller import PollPolicy
from kolray.tracker.store import CursorPosition, WalletProgress, commit_progress
from kolray.tracker.supervisor import Tracker, TrackerOptions

FRESHNESS_TARGET_S = 60.0
EVERYTHING = PollPolicy(batch_size=100, backfill_seconds=10**10, backfill_max_signatures=10**7)


def say(message: str) -> None:
    print(f"[ingest] {message}", file=sys.stderr, flush=True)


def swap_keys(engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT signature, wallet, mint FROM swaps"))]


def truth_keys(world) -> set[tuple[str, str, str]]:
    trades = world.trades()
    return set(zip(trades.signature, trades.wallet, trades.mint, strict=True))


def new_database(root: Path, name: str, wallets: list[str]):
    engine = upgrade(f"sqlite:///{root / name}.db")
    upsert_kols(engine, [KolIn(wallet=w) for w in wallets])
    return engine


# (a) utilisation under a rate limit


def measure_rate_limited(world, root: Path, rps: float, latency_ms: float, actors: int) -> dict:
    wallets = list(world.kols().wallet)
    engine = new_database(root, "limited", wallets)
    url = str(engine.url)
    with start_server(world, rps=rps, method_share=1.0, latency_ms=latency_ms) as twin:
        # 3% under the plan: the limiter's reservations and the server's sliding window then never
        # disagree by a batch, even with scheduling jitter on a loaded machine.
        options = TrackerOptions(
            rpc_urls=[twin.url], database_url=url, actors=actors, rps=rps * 0.97, burst=1, policy=EVERYTHING
        )
        with Tracker(options) as tracker:
            tracker.wait_ready()  # actors up before the clock starts
            before = twin.stats()
            started = time.perf_counter()
            summary = tracker.sync(wallets)
            elapsed = time.perf_counter() - started
        after = twin.stats()
    calls = after["calls"] - before["calls"]
    limited = after["rate_limited"] - before["rate_limited"]
    stored = swap_keys(engine)
    lost = len(truth_keys(world) - set(stored))
    duplicated = len(stored) - len(set(stored))
    ideal = calls / rps
    say(
        f"(a) {calls} calls in {elapsed:.1f}s at R={rps:g}/s (ideal {ideal:.1f}s), 429s {limited}, lost {lost}"
    )
    return {
        "rps": rps,
        "latency_ms": latency_ms,
        "calls": calls,
        "http_requests": after["requests"] - before["requests"],
        "seconds": round(elapsed, 2),
        "ideal_seconds": round(ideal, 2),
        "utilisation": round(ideal / elapsed, 3),
        "responses_429": limited,
        "swaps": summary.swaps,
        "swaps_lost": lost,
        "swaps_duplicated": duplicated,
    }


# (b) the seed's sequential poller


async def sequential_poll(url: str, engine, wallets: list[str]) -> int:
    """One wallet after another; each transaction its own request; each wallet committed at once."""
    calls = 0
    async with RpcClient([url], batch_size=1, max_concurrency=1, max_retries=20) as client:
        for wallet in wallets:
            infos = await client.signatures_since(wallet, None)
            calls += max(1, (len(infos) + 999) // 1000)
            swaps = []
            for info in reversed(infos):
                if info.failed:
                    continue
                tx = await client.get_transaction(info.signature)
                calls += 1
                if tx is None:  # the twin serves every transaction it listed
                    raise RuntimeError(f"the twin has no transaction {info.signature}")
                swaps.extend(extract_swaps(tx, wallet))
            newest = infos[0] if infos else None
            position = CursorPosition(newest.signature, newest.slot, newest.block_time) if newest else None
            commit_progress(engine, [WalletProgress(wallet, None, position, swaps)])
    return calls


def measure_sequential(world, root: Path, rps: float, latency_ms: float) -> dict:
    wallets = list(world.kols().wallet)
    engine = new_database(root, "sequential", wallets)
    with start_server(world, rps=rps, method_share=1.0, latency_ms=latency_ms) as twin:
        started = time.perf_counter()
        calls = asyncio.run(sequential_poll(twin.url, engine, wallets))
        elapsed = time.perf_counter() - started
    lost = len(truth_keys(world) - set(swap_keys(engine)))
    say(f"(b) sequential: {calls} calls in {elapsed:.1f}s, lost {lost}")
    return {"seconds": round(elapsed, 2), "calls": calls, "swaps_lost": lost}


# (c) freshness at scale


def quiet_wallets(n: int, seed: int = 99) -> list[str]:
    """Valid wallets with no history: in steady state most KOLs have nothing new in a minute, so a
    cycle is mostly one getSignaturesForAddress per wallet."""
    from solders.keypair import Keypair

    return [
        str(Keypair.from_seed(seed.to_bytes(8, "little") + i.to_bytes(24, "little")).pubkey())
        for i in range(n)
    ]


def measure_freshness(world, root: Path, sizes: list[int], actors: int) -> dict:
    kol_wallets = list(world.kols().wallet)
    extra = quiet_wallets(max(sizes))
    results = []
    with start_server(world, rps=None, clock="realtime", speed=60.0) as twin:
        for size in sizes:
            wallets = (kol_wallets + extra)[:size]
            engine = new_database(root, f"fresh{size}", wallets)
            options = TrackerOptions(
                rpc_urls=[twin.url],
                database_url=str(engine.url),
                actors=actors,
                rps=1e6,
                burst=1e6,
                policy=EVERYTHING,
                wallet_concurrency=64,
            )
            with Tracker(options) as tracker:
                tracker.sync(wallets)  # first sight: backfill
                started = time.perf_counter()
                summary = tracker.sync(wallets)  # steady state: what a poll cycle costs
                cycle = time.perf_counter() - started
            rate = size / cycle
            say(
                f"(c) {size} wallets: steady cycle {cycle:.1f}s ({rate:.0f} wallets/s), {summary.swaps} new swaps"
            )
            results.append({"wallets": size, "cycle_s": round(cycle, 2), "wallets_per_s": round(rate, 1)})
            if cycle > FRESHNESS_TARGET_S:
                break
    within = [r for r in results if r["cycle_s"] <= FRESHNESS_TARGET_S]
    best = max(within, key=lambda r: r["wallets"]) if within else None
    # A cycle grows linearly with the wallets (one listing each): the rate measured at the largest
    # size says how many wallets a 60 s cycle holds (between the sizes measured, when one missed).
    estimate = int(results[-1]["wallets_per_s"] * FRESHNESS_TARGET_S)
    return {
        "target_s": FRESHNESS_TARGET_S,
        "measured": results,
        "largest_measured_within_target": best["wallets"] if best else 0,
        "estimated_max_wallets": estimate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kols", type=int, default=40)
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--rps", type=float, default=100.0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--sizes", default="1000,4000,12000,24000", help="wallet counts for (c)")
    parser.add_argument("--quick", action="store_true", help="smaller world and sizes (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.kols, args.days, args.sizes = 12, 1.0, "500,1500"
    sizes = [int(s) for s in args.sizes.split(",")]

    import ray

    ray.init(
        num_cpus=2,
        object_store_memory=256 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
        namespace="kolray",
    )
    with tempfile.TemporaryDirectory(prefix="kolray-bench-ingest-") as tmp:
        root = Path(tmp)
        say(f"generating a twin world: {args.kols} KOLs, {args.days:g} days")
        generate_world(root / "world", kols=args.kols, days=args.days, seed=21)
        world = load_world(root / "world")
        limited = measure_rate_limited(world, root, args.rps, args.latency_ms, args.actors)
        sequential = measure_sequential(world, root, args.rps, args.latency_ms)
        freshness = measure_freshness(world, root, sizes, args.actors)
    ray.shutdown()
    result = {
        "bench": "ingest",
        "world": {"kols": args.kols, "days": args.days},
        "rate_limited": limited,
        "sequential": sequential,
        "speedup_vs_sequential": round(sequential["seconds"] / limited["seconds"], 2),
        "freshness": freshness,
        "utilisation": limited["utilisation"],
        "max_wallets_within_60s": freshness["estimated_max_wallets"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
