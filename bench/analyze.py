"""Benchmark: the analyzer's database stage on 1M synthetic swaps.

    .venv/bin/python bench/analyze.py [--swaps 1000000] [--wallets 2000] [--db-url EMPTY_SCRATCH_DB_URL]

Generates a synthetic history (wallets opening, adding to, partly and fully exiting positions,
re-entering, with untracked sells and open positions left), stores it in a database (a temporary
SQLite file by default), then measures, each in a fresh process so that peak RSS is its own:

- ``stream``: ``analyze(engine, full=True)``, the stage as shipped (batches of whole wallets);
- ``naive``: the load-everything baseline: read every swap into memory, build every position and
  statistic, write them in one transaction;
- ``sql_read``: a plain SQL read of the same rows in the same order (the I/O floor);
- ``incremental``: after the full run, 1% more swaps arrive (a tenth of them backfilled old
  ones) and ``analyze(engine)`` catches up;
- ``base``: a process that imports the same modules and opens the database, to subtract.

With ``--scale`` (default on) the stream and naive runs repeat on a quarter of the swaps: bounded
memory means the stream's peak barely moves while the naive one grows with the data.
The last line is one JSON object with the figures and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

T0 = 1_700_000_000
SOL = 1_000_000_000


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so a child
    would report the parent's peak (the parent held the generated swaps)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux; bytes on macOS


def _name(prefix: str, n: int, width: int) -> str:
    return (prefix + format(n, "x")).ljust(width, "z")[:width]  # z is not a hex digit: names stay unique


def synthetic_swaps(n: int, wallets: int, seed: int = 7, start_id: int = 0) -> list[dict[str, Any]]:
    """``n`` swaps: per wallet a run of positions in popular and fresh mints over ~60 days."""
    rng = random.Random(seed)
    mints = max(1, n // 20)
    rows: list[dict[str, Any]] = []
    clocks = [T0 + rng.randrange(86_400) for _ in range(wallets)]
    serial = start_id
    while len(rows) < n:
        w = rng.randrange(wallets)
        wallet = _name("W", w, 44)
        # 30% of positions in a "hot" mint (log-uniform rank among the top 1,000: the hottest takes
        # ~3% of all positions), the rest spread over every mint (~20 swaps each).
        hot = rng.random() < 0.3
        mint = _name("M", int(min(1_000, mints) ** rng.random()) - 1 if hot else rng.randrange(mints), 44)
        t = clocks[w] = clocks[w] + rng.randrange(60, 3_000)
        bought = 0
        legs: list[tuple[str, int, int]] = []
        if rng.random() < 0.03:  # an airdrop sold: an untracked sell
            legs.append(("sell", rng.randrange(1, 10**9), rng.randrange(1, SOL)))
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            tokens = rng.randrange(10**6, 10**12)
            bought += tokens
            legs.append(("buy", tokens, rng.randrange(SOL // 100, 5 * SOL)))
        left = bought
        for _ in range(rng.choice((1, 1, 2, 3, 4))):
            part = left if rng.random() < 0.5 else left // 2
            if part:
                legs.append(("sell", part, int(rng.lognormvariate(0, 1.2) * SOL * part / bought)))
                left -= part
        for side, tokens, lamports in legs:
            serial += 1
            t += rng.randrange(1, 20_000)
            dex = rng.choice(("pumpfun", "raydium", "jupiter"))
            rows.append(
                {
                    "signature": _name("S", serial, 88),
                    "slot": t * 2,
                    "block_time": t,
                    "wallet": wallet,
                    "mint": mint,
                    "side": side,
                    "token_amount": tokens,
                    "token_decimals": 6,
                    "sol_amount": lamports,
                    "dex": dex,
                    # A pump event's pool price (SOL per whole token): the market outcomes'
                    # price path reads these, as on real data where most trades carry one.
                    "price_sol": lamports / SOL / (tokens / 1e6) if dex == "pumpfun" and lamports else None,
                    "fee": 5_000,
                    "tips": rng.choice((0, 0, 100_000)),
                }
            )
        clocks[w] = t
    return rows[:n]


def populate(url: str, rows: list[dict[str, Any]]) -> None:
    from sqlalchemy import insert

    from kolray.db.migrate import upgrade
    from kolray.db.tables import SwapRow

    engine = upgrade(url)
    for i in range(0, len(rows), 50_000):
        with engine.begin() as conn:
            conn.execute(insert(SwapRow), rows[i : i + 50_000])


def _swap_count(url: str) -> int:
    from sqlalchemy import func, select

    from kolray.db.migrate import upgrade
    from kolray.db.tables import SwapRow

    with upgrade(url).connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(SwapRow)) or 0)


def reset(url: str) -> None:
    """Forget any analysis so that each measured run starts from the same state."""
    from sqlalchemy import delete

    from kolray.db.migrate import upgrade
    from kolray.db.tables import KolStatRow, Meta, PositionRow

    engine = upgrade(url)
    with engine.begin() as conn:
        conn.execute(delete(PositionRow))
        conn.execute(delete(KolStatRow))
        conn.execute(delete(Meta).where(Meta.key == "analyzer"))


# One measured phase per process


def phase_base(url: str) -> dict[str, Any]:
    from sqlalchemy import func, select

    from kolray.analyzer import analyze  # noqa: F401  (the same imports as the real runs)
    from kolray.db.migrate import upgrade
    from kolray.db.tables import SwapRow

    with upgrade(url).connect() as conn:
        conn.scalar(select(func.count()).select_from(SwapRow))
    return {}


def phase_stream(url: str) -> dict[str, Any]:
    from kolray.analyzer import analyze
    from kolray.db.migrate import upgrade

    summary = analyze(upgrade(url), full=True)
    return {
        "swaps": summary.swaps_read,
        "positions": summary.positions_written,
        "phases": summary.to_dict()["phase_seconds"],
    }


def phase_incremental(url: str) -> dict[str, Any]:
    from kolray.analyzer import analyze
    from kolray.db.migrate import upgrade

    summary = analyze(upgrade(url))
    assert summary.mode == "incremental", summary.reason
    return {
        "swaps": summary.swaps_read,
        "wallets": summary.wallets,
        "pairs": summary.pairs,
        "positions": summary.positions_written,
        "outcomes_updated": summary.outcomes_updated,
        "phases": summary.to_dict()["phase_seconds"],
    }


def phase_naive(url: str) -> dict[str, Any]:
    from sqlalchemy import delete, insert, select

    from kolray.analyzer import WINDOWS, build_ledger, kol_stats
    from kolray.analyzer.outcomes import attach_outcomes, paths_from_swaps
    from kolray.analyzer.stage import SWAP_COLUMNS
    from kolray.db.migrate import upgrade
    from kolray.db.tables import KolStatRow, PositionRow, SwapRow

    engine = upgrade(url)
    with engine.begin() as conn:
        rows = conn.execute(
            select(*SWAP_COLUMNS).order_by(SwapRow.wallet, SwapRow.mint, SwapRow.block_time)
        ).all()
        as_of = max(r.block_time for r in rows) + 1
    ledger = build_ledger(rows)
    attach_outcomes(ledger.positions, paths_from_swaps(rows))  # as the stage does
    by_wallet: dict[str, list] = {r.wallet: [] for r in rows}
    for position in ledger.positions:
        by_wallet[position.wallet].append(position)
    stats = [
        {
            "wallet": w,
            "as_of": as_of,
            "window": window,
            "stats": kol_stats(ps, as_of, window, wallet=w).snapshot(),
        }
        for w, ps in by_wallet.items()
        for window in WINDOWS
    ]
    with engine.begin() as conn:
        conn.execute(delete(PositionRow))
        conn.execute(delete(KolStatRow))
        conn.execute(insert(PositionRow), [p.to_row() for p in ledger.positions])
        conn.execute(insert(KolStatRow), stats)
    return {"swaps": len(rows), "positions": len(ledger.positions)}


def phase_sql_read(url: str) -> dict[str, Any]:
    from sqlalchemy import select

    from kolray.analyzer.stage import SWAP_COLUMNS
    from kolray.db.migrate import upgrade
    from kolray.db.tables import SwapRow

    n = 0
    with upgrade(url).connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=20_000).execute(
            select(*SWAP_COLUMNS).order_by(
                SwapRow.wallet, SwapRow.mint, SwapRow.block_time, SwapRow.slot, SwapRow.signature
            )
        )
        for partition in result.partitions():
            n += len(partition)
    return {"swaps": n}


PHASES = {
    "base": phase_base,
    "stream": phase_stream,
    "incremental": phase_incremental,
    "naive": phase_naive,
    "sql_read": phase_sql_read,
}


def measure(phase: str, url: str) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; its wall time and peak RSS."""
    done = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--db-url", url],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_phase(phase: str, url: str) -> None:
    started = time.perf_counter()
    extra = PHASES[phase](url)
    wall = time.perf_counter() - started
    print(
        json.dumps(
            {"phase": phase, "wall_s": round(wall, 3), "peak_rss_mb": round(_peak_rss_mb(), 1), **extra}
        )
    )


def bench(n: int, wallets: int, url: str | None, scale: bool) -> dict[str, Any]:
    from kolray.secrets import redact_url

    workdir = Path(tempfile.mkdtemp(prefix="kolray-bench-"))
    results: dict[str, Any] = {
        "bench": "analyze",
        "swaps": n,
        "wallets": wallets,
        "database": "sqlite" if url is None else url.split(":")[0],
    }

    def database(name: str, rows: int) -> str:
        target = url or f"sqlite:///{workdir / name}"
        if url is not None and _swap_count(url):
            # The bench deletes positions and adds swaps: never on a database that holds real ones.
            raise SystemExit(f"--db-url must name an empty scratch database; {redact_url(url)} has swaps")
        started = time.perf_counter()
        populate(target, synthetic_swaps(rows, wallets))
        print(f"generated {rows:,} swaps in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return target

    def figures(phase: str, target: str) -> dict[str, Any]:
        reset(target) if phase in ("stream", "naive") else None
        result = measure(phase, target)
        result["rss_over_base_mb"] = round(result["peak_rss_mb"] - base["peak_rss_mb"], 1)
        if result.get("swaps"):
            result["swaps_per_s"] = round(result["swaps"] / result["wall_s"])
        print(f"{phase}: {json.dumps(result)}", file=sys.stderr)
        return result

    main_db = database("big.db", n)
    base = measure("base", main_db)
    results["base"] = base
    for phase in ("sql_read", "naive", "stream"):
        results[phase] = figures(phase, main_db)
    # 1% new swaps, a tenth of them old ones backfilled late, then an incremental catch-up.
    extra = synthetic_swaps(max(1, n // 100), wallets, seed=8, start_id=10 * n)
    for row in extra[: len(extra) // 10]:
        row["block_time"] -= 30 * 86_400
        row["slot"] = row["block_time"] * 2
    populate(main_db, extra)
    results["incremental"] = figures("incremental", main_db)
    stream, naive, read = results["stream"], results["naive"], results["sql_read"]
    results["ratios"] = {
        "naive_over_stream_rss": round(naive["rss_over_base_mb"] / max(stream["rss_over_base_mb"], 1.0), 2),
        "stream_over_naive_time": round(stream["wall_s"] / naive["wall_s"], 2),
        "stream_over_sql_read_time": round(stream["wall_s"] / read["wall_s"], 2),
        "full_over_incremental_time": round(stream["wall_s"] / results["incremental"]["wall_s"], 1),
    }
    if scale and url is None:
        quarter_db = database("quarter.db", n // 4)
        base = measure("base", quarter_db)
        quarter = {phase: figures(phase, quarter_db) for phase in ("naive", "stream")}
        results["quarter"] = quarter
        results["ratios"]["stream_rss_growth_4x_data"] = round(
            stream["rss_over_base_mb"] / max(quarter["stream"]["rss_over_base_mb"], 1.0), 2
        )
        results["ratios"]["naive_rss_growth_4x_data"] = round(
            naive["rss_over_base_mb"] / max(quarter["naive"]["rss_over_base_mb"], 1.0), 2
        )
    if url is None:
        for file in workdir.iterdir():
            file.unlink()
        workdir.rmdir()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=1_000_000)
    parser.add_argument("--wallets", type=int, default=2_000)
    parser.add_argument(
        "--db-url", default=None, help="an existing database to use as is (default: a temporary SQLite)"
    )
    parser.add_argument(
        "--no-scale", dest="scale", action="store_false", help="skip the quarter-size memory check"
    )
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("KOLRAY_LOG_LEVEL", "WARNING")
    if args.phase:
        run_phase(args.phase, args.db_url)
        return 0
    print(json.dumps(bench(args.swaps, args.wallets, args.db_url, args.scale)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
