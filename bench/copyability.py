"""Positions' market outcomes and the farming flag against the twin's truth, with and without a tape.

On a generated twin world, the analyzer runs twice over the same KOL swaps:

- ``swaps``: the KOLs' own swaps only (what kolray knew before the market stage);
- ``tape``: the same swaps plus a market tape in ``market_tape``. The tape here is the twin's true
  price at each of its change points (``tapes.parquet``), stored as the market stage would store
  it: a stand-in for a recording, since reading a whole month of world through the RPC twin takes
  hours. What the stage itself records is measured elsewhere against the same truth (worst price
  error 3e-9 live, ``tests/integration/test_market.py``; peaks from a history backfill per call
  budget, ``bench/market_history.py``). A drift segment (a dead pool's slide) is stored at its
  change points only, so between them the stand-in is higher than the truth.

Measured, side by side for both runs:

- **farming flag** (``kolray.analyzer.stats``, window ``all`` as of the world's end) against the
  twin's KOL styles: precision and recall of ``farming`` for ``style == "farmer"``;
- **copyability**: median ``copy_roi`` of farmers and of the other KOLs;
- **position peaks**: per position whose 7-day window lies inside the world, ``peak_multiple``
  against the twin's ``tape_max_multiple_7d`` (the true tape's peak over the pool price the
  opening swap left, the analyzer's entry price): the share within 5%, and the share agreeing on
  ≥ 3x.

Prints progress to stderr and one JSON object on the last line of stdout.

    python bench/copyability.py [--kols 60] [--days 10] [--seed 7] [--world DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from kolray.analyzer import analyze
from kolray.db.tables import KolStatRow, PositionRow, TapePointRow
from kolray.sim.market import price_of
from kolray.sim.params import (
    GENESIS_SLOT,
    LABEL_HORIZON_S,
    LAMPORTS_PER_SOL,
    SLOTS_PER_SECOND,
    TOKEN_DECIMALS,
)
from kolray.sim.world import World, generate_world, load_world
from kolray.testing.market_world import database_with_world_swaps

PEAK_TOLERANCE = 0.05


def say(message: str) -> None:
    print(f"[copyability] {message}", file=sys.stderr, flush=True)


def stand_in_tape(world: World) -> list[dict[str, Any]]:
    """The twin's true tape as ``market_tape`` rows: one per change point (the last of a slot)."""
    tapes = world.tapes()
    scale = 10**TOKEN_DECIMALS / LAMPORTS_PER_SOL
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for mint in tapes.mints:
        begin, end = tapes.ranges[mint]
        for t, level, pool in zip(
            tapes.time[begin:end].tolist(),
            tapes.level[begin:end].tolist(),
            tapes.pool[begin:end].tolist(),
            strict=True,
        ):
            slot = GENESIS_SLOT + math.floor((t - world.start) * SLOTS_PER_SECOND)
            rows[(mint, slot)] = {
                "mint": mint,
                "slot": slot,
                "time": int(t),
                "price_sol": price_of(level) * scale,
                "market_cap_sol": None,
                "liquidity_sol": None,
                "venue": "pumpswap" if pool else "pumpfun",
                "graduated": bool(pool),
                "source": "live",
                "note": None,
            }
    return list(rows.values())


def analysed(url: str, world: World, tape: list[dict[str, Any]] | None) -> Engine:
    engine = database_with_world_swaps(url, world)
    if tape:
        with engine.begin() as conn:
            for index in range(0, len(tape), 20_000):
                conn.execute(insert(TapePointRow), tape[index : index + 20_000])
    analyze(engine, full=True)
    return engine


def measure(engine: Engine, world: World) -> dict[str, Any]:
    styles = world.kols().set_index("wallet")["style"]
    with engine.connect() as conn:
        stats = {
            wallet: values
            for wallet, values in conn.execute(
                select(KolStatRow.wallet, KolStatRow.stats).where(KolStatRow.window == "all")
            )
        }
        positions = pd.DataFrame(
            conn.execute(
                select(
                    PositionRow.entry_signature,
                    PositionRow.wallet,
                    PositionRow.peak_multiple,
                    PositionRow.entry_price_sol,
                )
            ).all(),
            columns=["entry_signature", "wallet", "peak_multiple", "entry_price_sol"],
        )
    farmer = {w for w, s in styles.items() if s == "farmer"}
    flagged = {w for w, v in stats.items() if v.get("farming")}
    hits = len(flagged & farmer)
    copy_roi = {w: v.get("copy_roi") for w, v in stats.items()}

    def median(wallets: set[str]) -> float | None:
        values = [copy_roi[w] for w in wallets if copy_roi.get(w) is not None]
        return float(np.median(values)) if values else None

    truth = world.positions()[["entry_signature", "wallet", "mint", "entry_time", "tape_max_multiple_7d"]]
    truth = truth[
        (truth["entry_time"] + LABEL_HORIZON_S <= world.end) & truth["tape_max_multiple_7d"].notna()
    ]
    joined = truth.merge(positions, on=["entry_signature", "wallet"], how="inner")
    ours = joined["peak_multiple"].to_numpy(np.float64)
    theirs = joined["tape_max_multiple_7d"].to_numpy(np.float64)
    priced = np.isfinite(ours)
    # Both multiples are over the pool price the opening swap left. The tape's price at the entry
    # instant is the one the buy met: their ratio is the KOL's own buy's lift.
    tapes = world.tapes()
    scale = 10**TOKEN_DECIMALS / LAMPORTS_PER_SOL
    tape_at_entry = np.array(
        [
            price_of(state[0]) * scale if (state := tapes.at(m, t)) is not None else np.nan
            for m, t in zip(joined["mint"], joined["entry_time"], strict=True)
        ]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        within = np.abs(ours / theirs - 1.0) <= PEAK_TOLERANCE
        entry_ratio = joined["entry_price_sol"].to_numpy(np.float64) / tape_at_entry
    return {
        "kols": len(styles),
        "farmers": len(farmer),
        "flagged": len(flagged),
        "flagged_farmers": hits,
        "precision": hits / len(flagged) if flagged else None,
        "recall": hits / len(farmer) if farmer else None,
        "copy_roi_median_farmers": median(farmer),
        "copy_roi_median_others": median(set(styles.index) - farmer),
        "positions_compared": len(joined),
        "positions_priced": int(priced.sum()),
        "peak_within_5pct": float(within.mean()) if len(joined) else None,
        "peak_3x_agreement": float(((np.nan_to_num(ours) >= 3) == (theirs >= 3)).mean())
        if len(joined)
        else None,
        "median_peak_ratio": float(np.nanmedian(ours / theirs)) if priced.any() else None,
        "median_entry_over_tape_at_entry": float(np.nanmedian(entry_ratio)) if len(joined) else None,
        "farmed_rate_farmers": sorted(
            round(v["copy_farmed_rate"], 3)
            for w, v in stats.items()
            if w in farmer and v.get("copy_farmed_rate") is not None
        ),
        # Each farmer's case for the flag: copies, farmed rate, the copier's PnL, flagged or not.
        "farmers_detail": sorted(
            (
                {
                    "copy_scored": v.get("copy_scored"),
                    "copy_farmed_rate": v.get("copy_farmed_rate"),
                    "copy_pnl_sol": v.get("copy_pnl_sol"),
                    "pnl_sol": v.get("total_pnl_sol"),
                    "farming": v.get("farming"),
                }
                for w, v in stats.items()
                if w in farmer
            ),
            key=lambda d: d["copy_farmed_rate"] or 0.0,
        ),
        "farmed_rate_others_max_20_copies": max(
            (
                v["copy_farmed_rate"]
                for w, v in stats.items()
                if w not in farmer and v.get("copy_farmed_rate") is not None and v.get("copy_scored", 0) >= 20
            ),
            default=None,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kols", type=int, default=60)
    parser.add_argument("--days", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--world", type=Path, help="an existing world directory (else one is generated)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        if args.world is None:
            directory = Path(scratch) / "world"
            say(f"generating a world: {args.kols} KOLs × {args.days} days, seed {args.seed}")
            generate_world(directory, kols=args.kols, days=args.days, seed=args.seed)
        else:
            directory = args.world
        world = load_world(directory)
        say(f"world ready in {time.perf_counter() - started:.1f} s")
        tape = stand_in_tape(world)
        say(f"stand-in tape: {len(tape)} points over {len({r['mint'] for r in tape})} mints")
        results = {}
        for name, rows in (("swaps", None), ("tape", tape)):
            clock = time.perf_counter()
            engine = analysed(f"sqlite:///{scratch}/{name}.db", world, rows)
            results[name] = measure(engine, world)
            engine.dispose()
            say(f"{name}: {json.dumps(results[name])} ({time.perf_counter() - clock:.1f} s)")
    print(
        json.dumps(
            {
                "bench": "copyability",
                "world": {"kols": args.kols, "days": args.days, "seed": args.seed}
                if args.world is None
                else str(args.world),
                "tape_source": "the twin's true tape as a stand-in for the market stage's recording",
                **{
                    f"{name}_{key}": value
                    for name, result in results.items()
                    for key, value in result.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
