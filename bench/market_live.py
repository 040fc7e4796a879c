"""How close the market stage's live reads come to each position's true peak (issue 21, live half).

A twin world is served on a realtime clock, ``--speed`` S simulated seconds per second, from
``--start-h`` hours into the world (in its own process). The world's KOL swaps are stored in a fresh
database as the chain's clock passes their block time plus ``--delay-s`` (a tracker's latency; 0:
a tracker that stores each swap the instant it lands), so the watch list learns of a token only
once a KOL's buy of it is on chain and stored. The real ``MarketWatcher`` runs its loop, live reads
only (``history=False``), for ``--window-h`` hours of world time, with its wall-clock cadence
divided by S so that in world time it is the default one: fast ``FAST_S``, slow ``SLOW_S``, the
watch list re-read every ``refresh_s`` (10 s; the heartbeat is in chain seconds already, so it
stays 300 s).

Every position whose entry falls inside the window and whose token was read live after the entry
gets a live peak multiple: the highest stored live tape price at a slot after the entry's and up to
the window's end, over the entry's price (the pool price its opening swap left, the analyzer's
entry price; at least 1). The truth is the twin's tape's peak over the same interval, over the same
price (at least 1). Reported, as in ``bench/market_history.py``:

- ``within_5pct``, ``agree_3x``, ``recall_3x``, ``median_ratio`` (live ÷ true peak), for the live
  tape alone and for the live tape with the KOL swaps' own prices (what the analyzer's
  ``PricePaths`` reads: swaps and tape);
- the misses (off by more than 5%): ``before_first_read`` (the true peak came before the
  watcher's first priced read of the token after the entry: a token joins the watch list only at
  the refresh after its buy is stored, and a token graduated to a Raydium pool is priced only once
  a stored swap names that pool; the history backfill exists for these; ``..._after_a_gap``: those
  whose first priced read came after a read that found no price), ``unpriced`` (a read around the
  peak found no price: a gap, such as that unknown Raydium pool, after which the watcher backs
  off as for a price that stands still) and ``between_reads`` (the cadence stepped over a short
  peak), with how long those peaks stood within 5% and how far apart the reads around them were;
  ``mints_missed``: on how many tokens (the positions cluster: one token can hold a dozen
  positions, so one read landing or not inside a 15 s peak moves the share by 5 points from run to
  run);
- ``live_no_raydium``: the figures without the positions on tokens that graduated to Raydium;
- ``unread``: positions in the window whose token was never priced after the entry (not in the
  figures; ``with_unread`` counts them as misses at a multiple of 1);
- whether the stage kept up: reads and RPC calls per token-hour of world time (``bench/market.py``
  measured 10.7 calls per token-hour at S = 1), how late reads started after they were due and
  how long a round took (world seconds), reads left out for want of a block time (``untimed``),
  gap rows by reason and the stage's errors.

Limits: this is the twin. Its true tape is a step function on a 5 s grid plus the lifts of the
SOL beyond the path's (crowds, the KOLs' own buys), its accounts are served from that tape exactly,
and a token's price is one number (no spread between venues). The KOL swaps' prices are the path's
at the trade's instant, not the tape's grid level: right after an entry the tape is within 5% of
the entry's price for about half of the positions only, and a swap can price above the tape's peak
(``with_swaps_above_truth``). The clock runs S times faster than real time, so the stage's own
overheads (a round's RPC round trips and database writes, the run loop's 0.05 s floor between
passes: 1.8 world seconds at S = 36) are S times longer in world time than at S = 1: a pessimistic
bias on the cadence. No rate limit. Prints progress to stderr and one JSON object on the last line
of stdout.

    python bench/market_live.py [--kols 200] [--days 1] [--seed 3] [--start-h 12] [--window-h 3]
                                [--speed 36] [--delay-s 0] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from kolray.chain.rpc import RpcClient
from kolray.market.read import Gap, MarketReader, TapePoint
from kolray.market.stage import FAST_S, SLOW_S, MarketOptions, MarketSummary, MarketWatcher
from kolray.market.store import read_tape
from kolray.sim.market import price_of
from kolray.sim.params import LAMPORTS_PER_SOL, TOKEN_DECIMALS, slot_start
from kolray.sim.tapes import Tapes
from kolray.sim.world import World, generate_world, load_world
from kolray.testing.market_live import SwapFeed, TwinProcess, empty_database

SCALE = 10**TOKEN_DECIMALS / LAMPORTS_PER_SOL  # the tape's price → SOL per whole token
REFRESH_S = MarketOptions.refresh_s  # the default watch-list re-read, world seconds
TOLERANCE = 0.05
ADDRESS = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")


def say(message: str) -> None:
    print(f"[market-live] {message}", file=sys.stderr, flush=True)


class LoggingReader(MarketReader):
    """The stage's reader, remembering the slot of every price it read (stored or not) and of every
    read that found no price (a gap)."""

    read_slots: dict[str, list[int]]
    gap_slots: dict[str, list[int]]

    async def read(self, mints: Sequence[str]) -> tuple[list[TapePoint], list[Gap]]:
        points, gaps = await super().read(mints)
        for p in points:
            self.read_slots.setdefault(p.mint, []).append(p.slot)
        for g in gaps:
            self.gap_slots.setdefault(g.mint, []).append(g.slot)
        return points, gaps


class RecordingWatcher(MarketWatcher):
    """The stage's watcher, timing each read against when it was due (monotonic seconds)."""

    def __init__(self, options: MarketOptions, rpc: RpcClient, engine: Engine) -> None:
        super().__init__(options, rpc, engine)
        self.logging_reader = LoggingReader(rpc, find_pool=self._find_pool)
        self.logging_reader.read_slots = {}
        self.logging_reader.gap_slots = {}
        self.reader = self.logging_reader
        self.lateness: list[float] = []  # per token read: start of the read − its due time
        self.durations: list[float] = []  # per round: how long the read and store took

    async def read(self, mints: list[str], now: float) -> int:
        started = time.monotonic()
        self.lateness += [started - self.cadence.due[m] for m in mints if m in self.cadence.due]
        stored = await super().read(mints, now)
        self.durations.append(time.monotonic() - started)
        return stored


async def watch_live(
    twin: TwinProcess, engine: Engine, feed: SwapFeed, window_s: float
) -> tuple[RecordingWatcher, float, float, float]:
    """Run the watcher for ``window_s`` world seconds; returns it, the window's (start, end) in
    chain time and the token-hours (world) it watched."""
    speed = twin.speed
    options = MarketOptions(
        rpc_urls=[twin.url],
        database_url=str(engine.url),
        fast_s=FAST_S / speed,
        slow_s=SLOW_S / speed,
        refresh_s=REFRESH_S / speed,
        history=False,
    )
    stop = asyncio.Event()
    samples: list[tuple[float, int]] = []

    def on_round(summary: MarketSummary) -> None:
        samples.append((time.monotonic(), summary.watched))

    async def feed_loop() -> None:
        told = time.monotonic()
        while not stop.is_set():
            await asyncio.to_thread(feed.store_until, twin.sim_time())
            if time.monotonic() - told >= 30:
                told = time.monotonic()
                summary = watcher.summary
                say(
                    f"world hour {(twin.sim_time() - started) / 3600:.2f}: {feed.stored} swaps stored, "
                    f"{summary.watched} watched, {summary.reads} reads, {len(summary.errors)} errors"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0 / speed)  # one world second

    async with RpcClient([twin.url]) as rpc:
        watcher = RecordingWatcher(options, rpc, engine)
        started = twin.sim_time()
        await asyncio.to_thread(feed.store_until, started)
        asyncio.get_running_loop().call_later(window_s / speed, stop.set)
        feeder = asyncio.create_task(feed_loop())
        await watcher.run(stop, on_round)
        ended = twin.sim_time()
        await feeder
    token_hours = sum(
        watched * (b - a) * speed / 3600 for (a, watched), (b, _) in itertools.pairwise(samples)
    )
    return watcher, started, ended, token_hours


def positions_in(world: World, begin: float, end: float) -> pd.DataFrame:
    """Positions entered in [begin, end), with their entry's slot, time and price (SOL per token)."""
    trades = world.trades()[["signature", "slot", "price_sol"]].rename(
        columns={"signature": "entry_signature", "price_sol": "entry_price"}
    )
    positions = world.positions().merge(trades, on="entry_signature", how="inner")
    positions["entry_at"] = [slot_start(world.start, int(s)) for s in positions["slot"]]
    inside = (positions["entry_at"] >= begin) & (positions["entry_at"] < end)
    inside &= positions["entry_price"].notna() & (positions["entry_price"] > 0)
    return positions[inside].reset_index(drop=True)


def figures(peaks: np.ndarray, truth: np.ndarray) -> dict:
    big = truth >= 3.0
    n = len(truth)
    return {
        "positions": n,
        "within_5pct": round(float(np.mean(np.abs(peaks / truth - 1) <= TOLERANCE)), 4) if n else None,
        "agree_3x": round(float(np.mean((peaks >= 3.0) == big)), 4) if n else None,
        "recall_3x": round(float(np.mean(peaks[big] >= 3.0)), 4) if big.any() else None,
        "positions_3x": int(big.sum()),
        "median_ratio": round(float(np.median(peaks / truth)), 4) if n else None,
    }


def quantiles(values: Sequence[float], scale: float) -> dict:
    if not values:
        return {}
    v = np.asarray(values) * scale
    return {q: round(float(np.quantile(v, p)), 2) for q, p in (("p50", 0.5), ("p95", 0.95), ("max", 1.0))}


def near_peak(tapes: Tapes, mint: str, at: float, end: float) -> list[tuple[float, float]]:
    """The spans of [at, end] in which the true price is within 5% of its peak there (merged)."""
    first, stop = tapes.ranges[mint]
    times, levels = tapes.time[first:stop], tapes.level[first:stop]
    i0 = max(int(np.searchsorted(times, at, side="right")) - 1, 0)
    i1 = int(np.searchsorted(times, end, side="right"))
    starts = np.maximum(times[i0:i1], at)
    ends = np.r_[starts[1:], end]
    level = levels[i0:i1]
    keep = level >= level.max() + math.log(1 - TOLERANCE)
    spans: list[tuple[float, float]] = []
    for a, b in zip(starts[keep], ends[keep], strict=True):
        if spans and spans[-1][1] >= a:
            spans[-1] = (spans[-1][0], float(b))
        else:
            spans.append((float(a), float(b)))
    return spans


def peaks_of(
    world: World,
    positions: pd.DataFrame,
    tape: pd.DataFrame,
    read_slots: dict[str, list[int]],
    gap_slots: dict[str, list[int]],
    end: float,
) -> pd.DataFrame:
    """Per position: the true, live and live-with-swaps peak multiples over (entry, ``end``], the
    first live read after the entry and the true peak from it on."""
    tapes = world.tapes()
    tokens = world.tokens()
    raydium = set(tokens.loc[tokens["amm"].eq("raydium_amm_v4") & tokens["migration_time"].notna(), "mint"])
    live = tape[tape["price_sol"].notna() & tape["source"].eq("live")]
    by_mint = {
        m: (g["slot"].to_numpy(np.int64), g["price_sol"].to_numpy(float)) for m, g in live.groupby("mint")
    }
    swaps = world.trades()[["mint", "slot", "price_sol"]].dropna()
    swaps = swaps[swaps["price_sol"] > 0]
    swaps_by_mint = {
        m: (g["slot"].to_numpy(np.int64), g["price_sol"].to_numpy(float)) for m, g in swaps.groupby("mint")
    }
    rows = []
    for p in positions.itertuples(index=False):
        mint, slot, price, at = str(p.mint), int(p.slot), float(p.entry_price), float(p.entry_at)
        if mint not in tapes or tapes.at(mint, at) is None:
            continue
        truth = max(1.0, price_of(tapes.peak(mint, at, end)) * SCALE / price)
        live_peak, swap_peak = 1.0, 1.0
        if mint in by_mint:
            slots, prices = by_mint[mint]
            after = (slots > slot) & np.array([slot_start(world.start, int(s)) <= end for s in slots])
            if after.any():
                live_peak = max(1.0, float(prices[after].max()) / price)
        if mint in swaps_by_mint:
            slots, prices = swaps_by_mint[mint]
            after = (slots > slot) & np.array([slot_start(world.start, int(s)) <= end for s in slots])
            if after.any():
                swap_peak = max(1.0, float(prices[after].max()) / price)
        reads = read_slots.get(mint, [])
        i = bisect.bisect_right(reads, slot)
        first = reads[i] if i < len(reads) else None
        first_at = slot_start(world.start, first) if first is not None else np.nan
        from_first = (
            max(1.0, price_of(tapes.peak(mint, first_at, end)) * SCALE / price)
            if first is not None
            else np.nan
        )
        # How long the true price stood within 5% of its peak, and the reads around its longest stand.
        spans = near_peak(tapes, mint, at, end)
        a, b = max(spans, key=lambda span: span[1] - span[0])
        times = [slot_start(world.start, r) for r in reads]
        gaps = [slot_start(world.start, r) for r in gap_slots.get(mint, [])]
        j = bisect.bisect_left(times, a)
        before = times[j - 1] if j > 0 else at
        after_span = times[bisect.bisect_left(times, b)] if bisect.bisect_left(times, b) < len(times) else end
        rows.append(
            {
                "near_peak_s": sum(y - x for x, y in spans),
                "read_gap_s": after_span - before,
                # A read found no price between the entry and the first priced read, or between
                # the priced reads around the peak.
                "gap_before_first_read": any(at < t < first_at for t in gaps) if first is not None else True,
                "gap_near_peak": any(before < t < after_span for t in gaps),
                "mint": mint,
                "raydium": mint in raydium,
                "entry_at": at,
                "truth": truth,
                "live": live_peak,
                "with_swaps": max(live_peak, swap_peak),
                "first_read_after_s": first_at - at,
                "truth_from_first_read": from_first,
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kols", type=int, default=200)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--start-h", type=float, default=12.0, help="the clock's start, hours into the world")
    parser.add_argument("--window-h", type=float, default=3.0, help="world hours watched")
    parser.add_argument("--speed", type=float, default=36.0, help="simulated seconds per second")
    parser.add_argument(
        "--delay-s", type=float, default=0.0, help="a swap is stored this long after its block"
    )
    parser.add_argument("--quick", action="store_true", help="a small world and window (CI smoke)")
    args = parser.parse_args()
    if args.quick:
        args.kols, args.window_h = 100, 0.5
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kolray-bench-live-") as tmp:
        root = Path(tmp)
        say(f"world: {args.kols} KOLs × {args.days:g} days, seed {args.seed}")
        generate_world(root / "world", kols=args.kols, days=args.days, seed=args.seed)
        world = load_world(root / "world")
        engine = empty_database(f"sqlite:///{root / 'live.db'}")
        feed = SwapFeed(world, engine, args.delay_s)
        window_s = args.window_h * 3600
        say(
            f"watching {args.window_h:g} world hours from hour {args.start_h:g} at speed {args.speed:g} "
            f"(~{window_s / args.speed:.0f} s)"
        )
        with TwinProcess(
            root / "world", rps=None, clock="realtime", speed=args.speed, clock_offset_s=args.start_h * 3600
        ) as twin:
            watcher, begin, end, token_hours = asyncio.run(watch_live(twin, engine, feed, window_s))
        s = watcher.summary
        say(f"watcher: {s.model_dump_json()}")
        say(f"twin: {twin.stats.get('calls')} calls")
        positions = positions_in(world, begin, end)
        read_slots = {m: sorted(v) for m, v in watcher.logging_reader.read_slots.items()}
        gap_slots = watcher.logging_reader.gap_slots
        tape = read_tape(engine)
        result = peaks_of(world, positions, tape, read_slots, gap_slots, end)
    notes = tape.loc[tape["price_sol"].isna(), "note"].fillna("").map(lambda n: ADDRESS.sub("…", n))
    read = result["first_read_after_s"].notna() if len(result) else pd.Series(dtype=bool)
    seen = result[read]
    truth = seen["truth"].to_numpy(float)
    live = seen["live"].to_numpy(float)
    ratio = live / truth
    miss = np.abs(ratio - 1) > TOLERANCE
    early = seen["truth_from_first_read"].to_numpy(float) < truth * (1 - TOLERANCE)
    # A read around the peak found no price: a gap (a graduated token whose Raydium pool the stage
    # does not know yet, from a stored swap).
    unpriced = miss & ~early & seen["gap_near_peak"].to_numpy(bool)
    between = miss & ~early & ~unpriced & (ratio < 1)
    raydium = seen["raydium"].to_numpy(bool)
    all_truth = result["truth"].to_numpy(float) if len(result) else np.array([])
    all_live = np.where(read, result["live"], 1.0) if len(result) else np.array([])
    lateness = watcher.lateness
    for row in seen[miss].itertuples(index=False):
        say(
            f"miss {row.mint[:8]}: true {row.truth:.3f}, live {row.live:.3f}, first read "
            f"{row.first_read_after_s:.1f} s after entry (true peak from it {row.truth_from_first_read:.3f}), "
            f"{row.near_peak_s:.1f} s within 5% of the peak, reads {row.read_gap_s:.1f} s apart around it"
        )
    output = {
        "bench": "market_live",
        "world": {"kols": args.kols, "days": args.days, "seed": args.seed},
        "clock": {
            "speed": args.speed,
            "start_h": args.start_h,
            "window_h": round((end - begin) / 3600, 3),
            "swap_delay_s": args.delay_s,
        },
        "positions_in_window": len(result),
        "unread": int((~read).sum()),
        "live": figures(live, truth),
        "positions_on_raydium_tokens": int(raydium.sum()),
        "live_no_raydium": figures(live[~raydium], truth[~raydium]),
        "live_with_swaps": figures(seen["with_swaps"].to_numpy(float), truth),
        "with_swaps_above_truth": int((seen["with_swaps"].to_numpy(float) > truth * (1 + TOLERANCE)).sum()),
        "with_unread": figures(all_live, all_truth),
        "misses": {
            "total": int(miss.sum()),
            "before_first_read": int((miss & early).sum()),
            "before_first_read_after_a_gap": int(
                (miss & early & seen["gap_before_first_read"].to_numpy(bool)).sum()
            ),
            "unpriced": int(unpriced.sum()),
            "between_reads": int(between.sum()),
            "mints_missed": int(seen.loc[miss, "mint"].nunique()),
            "mints": int(seen["mint"].nunique()),
            "above_truth": int((miss & (ratio > 1)).sum()),
        },
        "between_reads_misses": {
            # How long their true price stood within 5% of its peak, and the interval between the
            # reads around that stand (world seconds).
            "near_peak_s": quantiles(list(seen["near_peak_s"][between]), 1.0),
            "read_gap_s": quantiles(list(seen["read_gap_s"][between]), 1.0),
        },
        "first_read_after_entry_s": quantiles(list(seen["first_read_after_s"]), 1.0),
        "stage": {
            "watched_tokens": s.watched,
            "token_hours": round(token_hours, 1),
            "reads": s.reads,
            "reads_per_token_hour": round(s.reads / max(token_hours, 1e-9), 2),
            "rpc_calls": s.rpc_calls,
            "calls_per_token_hour": round(s.rpc_calls / max(token_hours, 1e-9), 2),
            "tape_rows": s.points_stored,
            "gaps": s.gaps,
            "gap_rows": {str(k): int(v) for k, v in notes.value_counts().items()},
            "untimed": s.untimed,
            "errors": s.errors,
            "read_late_world_s": quantiles(lateness, args.speed),
            "round_world_s": quantiles(watcher.durations, args.speed),
        },
        "seconds": round(time.perf_counter() - wall, 1),
    }
    print(json.dumps(output))


if __name__ == "__main__":
    main()
