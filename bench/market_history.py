"""How much of a position's peak a token's history recovers, per getTransaction budget.

On a twin world, every position's token gets its history backfilled (``kolray.market.history``: the
crowd's and other trades on its curve and PumpSwap pool, at most B getTransaction calls per token)
into a fresh database, for each budget B. Each position's peak multiple is then read from the stored
history tape and the tracked wallets' swaps (the analyzer's two sources; the history leaves the
swaps out, as their prices are stored already): the highest price at a slot after its entry's and
within 7 days, over the entry's
price as the chain shows it (the pool price its opening swap left, the analyzer's entry price; at
least 1), and held against the world's ``tape_max_multiple_7d`` (the highest price the token traded
at over the same 7 days, true tape and swaps, over the same entry price):

- ``within_5pct``: the share of positions whose history peak is within 5% of the true one;
- ``agree_3x``: the share on the same side of 3x; ``recall_3x``: of the positions whose true peak
  is ≥ 3x, the share the history also puts there (a history can only miss a peak, never invent one);
- ``calls_per_token`` and ``seconds``: what it cost.

``all`` is an unbounded budget (every trade read): what the method reaches when it misses nothing.
Measured on the twin only (its crowd trades are the tape's change points).
Prints progress to stderr and one JSON object on the last line of stdout.

    python bench/market_history.py [--kols 20] [--days 5] [--seed 3] [--budgets 20,50,200,all]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kolray.chain.rpc import RpcClient
from kolray.market.stage import MarketOptions, MarketSummary, MarketWatcher
from kolray.market.store import read_tape
from kolray.sim.market import price_of
from kolray.sim.params import LABEL_HORIZON_S, LAMPORTS_PER_SOL, TOKEN_DECIMALS, slot_start
from kolray.sim.server import start_server
from kolray.sim.world import World, generate_world, load_world
from kolray.testing.market_world import database_with_world_swaps

UNBOUNDED = 10**9


def say(message: str) -> None:
    print(f"[market-history] {message}", file=sys.stderr, flush=True)


def positions_with_entries(world: World) -> pd.DataFrame:
    """Positions with a true tape peak, their entry's slot and price (SOL per token: the pool price
    the opening swap left) and the highest price from that slot (true tape and later swaps)."""
    positions = world.positions()
    positions = positions[positions["tape_max_multiple_7d"].notna()]
    trades = world.trades()
    entries = trades[["signature", "slot", "price_sol"]].rename(
        columns={"signature": "entry_signature", "price_sol": "entry_price"}
    )
    positions = positions.merge(entries, on="entry_signature", how="inner")
    priced = trades[trades["price_sol"].notna()]
    swaps_by_mint = {m: g for m, g in priced.groupby("mint")}
    tapes = world.tapes()
    scale = 10**TOKEN_DECIMALS / LAMPORTS_PER_SOL
    peaks = []
    for mint, slot in zip(positions["mint"], positions["slot"], strict=True):
        at = slot_start(world.start, int(slot))
        if tapes.at(mint, at) is None:
            peaks.append(np.nan)
            continue
        peak = price_of(tapes.peak(mint, at, at + LABEL_HORIZON_S)) * scale
        swaps = swaps_by_mint.get(mint)
        if swaps is not None:
            later = swaps[(swaps["slot"] > slot) & (swaps["block_time"] <= at + LABEL_HORIZON_S)]
            peak = max(peak, float(later["price_sol"].max())) if len(later) else peak
        peaks.append(peak)
    tokens = world.tokens().set_index("mint")
    raydium = tokens["amm"].eq("raydium_amm_v4") & tokens["migration_time"].notna()
    positions = positions.assign(
        # The highest price from the entry's slot (the world's column starts at the simulated
        # trade's instant, which a signer's earlier transaction can push a slot or two before it).
        slot_max_multiple_7d=np.maximum(np.asarray(peaks) / positions["entry_price"].to_numpy(float), 1.0),
        raydium=positions["mint"].map(raydium).fillna(False).astype(bool),
    )
    usable = positions["entry_price"].notna() & positions["slot_max_multiple_7d"].notna()
    return positions[usable].reset_index(drop=True)


def agreement(peaks: np.ndarray, truth: np.ndarray) -> dict:
    big = truth >= 3.0
    return {
        "positions": len(truth),
        "within_5pct": round(float(np.mean(np.abs(peaks / truth - 1) <= 0.05)), 4) if len(truth) else None,
        "agree_3x": round(float(np.mean((peaks >= 3.0) == big)), 4) if len(truth) else None,
        "recall_3x": round(float(np.mean(peaks[big] >= 3.0)), 4) if big.any() else None,
        "positions_3x": int(big.sum()),
    }


def history_peaks(positions: pd.DataFrame, tape: pd.DataFrame, swaps: pd.DataFrame) -> np.ndarray:
    """Each position's peak multiple from the history tape and the swaps: max price after its
    entry's slot and within 7 days, over its entry price (1 when nothing is higher)."""
    prices = pd.concat([tape[["mint", "slot", "time", "price_sol"]], swaps], ignore_index=True)
    priced = prices[prices["price_sol"].notna()]
    by_mint = {m: g for m, g in priced.groupby("mint")}
    out = np.ones(len(positions))
    for i, p in enumerate(positions.itertuples(index=False)):
        rows = by_mint.get(p.mint)
        if rows is None:
            continue
        window = rows[(rows["slot"] > p.slot) & (rows["time"] <= p.entry_time + LABEL_HORIZON_S)]
        if len(window):
            out[i] = max(1.0, float(window["price_sol"].max()) / p.entry_price)
    return out


def run_budget(world: World, root: Path, url: str, budget: int, label: str) -> tuple[pd.DataFrame, dict]:
    engine = database_with_world_swaps(f"sqlite:///{root / f'history-{label}.db'}", world)
    mints = sorted(set(world.positions()["mint"]))

    async def backfill() -> MarketSummary:
        async with RpcClient([url]) as rpc:
            options = MarketOptions(rpc_urls=[url], database_url=str(engine.url), history_budget=budget)
            watcher = MarketWatcher(options, rpc, engine)
            watcher.chain_now = world.end
            await watcher.backfill(mints)
        return watcher.summary

    started = time.perf_counter()
    summary = asyncio.run(backfill())
    seconds = time.perf_counter() - started
    tokens, fetched, pages = (
        summary.history_tokens,
        summary.history_transactions,
        summary.history_signature_calls,
    )
    return read_tape(engine, mints), {
        "budget": label,
        "tokens": tokens,
        "transactions": fetched,
        "signature_pages": pages,
        "calls_per_token": round((fetched + pages) / max(tokens, 1), 1),
        "gaps": summary.history_gaps,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kols", type=int, default=20)
    parser.add_argument("--days", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--budgets", default="20,50,200,all")
    parser.add_argument("--quick", action="store_true", help="a small world (CI smoke)")
    args = parser.parse_args()
    if args.quick:
        args.kols, args.days, args.budgets = 6, 2.0, "20,all"
    budgets = [(UNBOUNDED, "all") if b == "all" else (int(b), b) for b in args.budgets.split(",")]
    with tempfile.TemporaryDirectory(prefix="kolray-bench-history-") as tmp:
        root = Path(tmp)
        say(f"world: {args.kols} KOLs × {args.days:g} days, seed {args.seed}")
        generate_world(root / "world", kols=args.kols, days=args.days, seed=args.seed)
        world = load_world(root / "world")
        positions = positions_with_entries(world)
        truth = positions["tape_max_multiple_7d"].to_numpy(float)
        at_slot = positions["slot_max_multiple_7d"].to_numpy(float)
        reach = ~positions["raydium"].to_numpy(bool)
        swaps = world.trades()[["mint", "slot", "block_time", "price_sol"]].rename(
            columns={"block_time": "time"}
        )
        results = []
        with start_server(world, rps=None) as twin:  # the clock at the world's end
            for budget, label in budgets:
                tape, cost = run_budget(world, root, twin.url, budget, label)
                peaks = history_peaks(positions, tape, swaps)
                result = {
                    **cost,
                    "vs_tape_max_multiple_7d": agreement(peaks, truth),
                    "vs_peak_from_entry_slot": agreement(peaks, at_slot),
                    "vs_peak_from_entry_slot_no_raydium": agreement(peaks[reach], at_slot[reach]),
                    "median_peak_ratio": round(float(np.median(peaks / truth)), 4),
                }
                say(json.dumps(result))
                results.append(result)
    print(
        json.dumps(
            {
                "bench": "market_history",
                "world": {"kols": args.kols, "days": args.days, "seed": args.seed},
                "positions": len(positions),
                "positions_3x": int((truth >= 3.0).sum()),
                "positions_on_raydium_tokens": int((~reach).size - reach.sum()),
                "budgets": results,
                "within_5pct": {r["budget"]: r["vs_tape_max_multiple_7d"]["within_5pct"] for r in results},
                "agree_3x": {r["budget"]: r["vs_tape_max_multiple_7d"]["agree_3x"] for r in results},
                "within_5pct_no_raydium": {
                    r["budget"]: r["vs_peak_from_entry_slot_no_raydium"]["within_5pct"] for r in results
                },
            }
        )
    )


if __name__ == "__main__":
    main()
