"""Benchmark: the default backtest on the market tape beside the trades tape, on a twin world.

    .venv/bin/python bench/backtest.py [--data-dir DIR --world-dir WORLD] [--kols N --days D --seed S]
                                       [--take-profit X] [--stop-loss Y]

``DIR`` is the ``KOLRAY_DATA_DIR`` of a ``kolray pipeline --world-dir WORLD`` run (its
``kolray.db``, its ``store`` with the token dataset and the champion token model). Without them,
``kolray pipeline --models token`` first runs on a world of ``--kols`` KOLs over ``--days`` days
(seed ``--seed``) in a scratch directory.

The market tape is the world's true tape of the test period's tokens stored into ``market_tape``
with the market stage's own ``store_tape`` (:mod:`kolray.testing.backtest_twin`: each token from
its first tracked buy to 7 days after its last), a stand-in for what ``kolray market`` records from the twin (held to the
twin's price within 3e-9 elsewhere); a database that already has a market tape keeps it. Then the
default strategies run once with the default execution (exit with the KOL) and once with the
take-profit and stop-loss given (default 3x and none), both tapes side by side. Measured on the
twin only. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run_pipeline_into(data_dir: Path, world_dir: Path, kols: int, days: float, seed: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KOLRAY_DATA_DIR": str(data_dir)}
    for name in ("KOLRAY_DATABASE_URL", "KOLRAY_STORAGE_URI", "KOLRAY_CONFIG"):
        env.pop(name, None)
    command = [sys.executable, "-m", "kolray", "pipeline", "--world-dir", str(world_dir)]
    command += ["--kols", str(kols), "--days", str(days), "--seed", str(seed), "--models", "token"]
    subprocess.run([*command, "--no-backtest"], env=env, check=True)


def figures(report: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Per strategy and tape: trades, hit rate, return per trade, total return, drawdown, exits."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for tape in report.tapes:
        results = report.strategies if tape == report.tape else report.other_tapes[tape]
        for result in results:
            m = result.metrics
            out.setdefault(result.name, {})[tape] = {
                "trades": m.trades,
                "hit_rate": m.hit_rate,
                "return_per_trade": m.return_per_trade,
                "total_return": m.total_return,
                "total_pnl_sol": m.total_pnl_sol,
                "max_drawdown": m.max_drawdown,
                "hits_3x": m.hits_3x,
                "exits": m.exits,
                "gap_fills": m.gap_fills,
            }
    return out


def measure(data_dir: Path, world_dir: Path, take_profit: float | None, stop_loss: float | None) -> None:
    from sqlalchemy import func, select

    from kolray.backtest import BacktestOptions, Execution, coverage_text, run_backtest, tapes_table_text
    from kolray.config import get_settings
    from kolray.datasets import load_dataset
    from kolray.db.migrate import upgrade
    from kolray.db.tables import TapePointRow
    from kolray.sim.world import load_world
    from kolray.testing.backtest_twin import store_true_tape

    os.environ["KOLRAY_DATA_DIR"] = str(data_dir)
    for name in ("KOLRAY_DATABASE_URL", "KOLRAY_STORAGE_URI"):
        os.environ.pop(name, None)
    get_settings.cache_clear()
    settings = get_settings()
    engine = upgrade(settings.database_url)
    world = load_world(world_dir)
    with engine.connect() as conn:
        existing = conn.scalar(select(func.count()).select_from(TapePointRow)) or 0
    started = time.perf_counter()
    # Only the test period's tokens: the backtest reads no other (a long world's full tape is millions of rows).
    dataset = load_dataset("token", None, settings.storage_uri)
    stored = 0 if existing else store_true_tape(engine, world, mints=set(dataset.test["mint"]))
    store_s = time.perf_counter() - started

    runs: dict[str, Any] = {}
    for label, execution in (
        ("exit_with_kol", Execution()),
        ("rules", Execution(take_profit=take_profit, stop_loss=stop_loss)),
    ):
        started = time.perf_counter()
        report = run_backtest(
            BacktestOptions(execution=execution),
            database_url=settings.database_url,
            storage_uri=settings.storage_uri,
        ).report
        seconds = time.perf_counter() - started
        rules = ", ".join(
            f"{name} {value:g}x"
            for name, value in (("take-profit", take_profit), ("stop-loss", stop_loss))
            if value
        )
        print(
            f"\n{label}: delay {execution.delay_s} s"
            + (f", {rules}" if label == "rules" else ", exit with the KOL")
        )
        print("\n".join(coverage_text(report)))
        print(tapes_table_text(report))
        runs[label] = {
            "execution": execution.model_dump(exclude_none=True),
            "seconds": round(seconds, 2),
            "strategies": figures(report),
        }
        period = (report.period_start, report.period_end, report.signals, report.dataset_version)
        coverage = {tape: c.model_dump() for tape, c in report.coverage.items()}

    params = world.params
    result = {
        "world": {"kols": params.kols, "days": params.days, "seed": params.seed},
        "period": {"start": period[0], "end": period[1], "signals": period[2], "dataset_version": period[3]},
        "market_tape": {"rows_stored": stored, "rows_before": existing, "store_s": round(store_s, 1)},
        "coverage": coverage,
        "runs": runs,
        "ratios": {
            label: {
                name: (
                    tapes["market"]["trades"] / tapes["trades"]["trades"]
                    if "market" in tapes and tapes["trades"]["trades"]
                    else None
                )
                for name, tapes in run["strategies"].items()
            }
            for label, run in runs.items()
        },
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, help="KOLRAY_DATA_DIR of a `kolray pipeline` run")
    parser.add_argument("--world-dir", type=Path, help="that run's --world-dir")
    parser.add_argument("--kols", type=int, default=30)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--take-profit", type=float, default=3.0)
    parser.add_argument("--stop-loss", type=float, default=None)
    args = parser.parse_args()
    if (args.data_dir is None) != (args.world_dir is None):
        parser.error("--data-dir and --world-dir go together")
    if args.data_dir is not None:
        measure(args.data_dir, args.world_dir, args.take_profit, args.stop_loss)
        return
    with tempfile.TemporaryDirectory(prefix="kolray-bench-backtest-") as scratch:
        data_dir, world_dir = Path(scratch) / "data", Path(scratch) / "world"
        run_pipeline_into(data_dir, world_dir, args.kols, args.days, args.seed)
        measure(data_dir, world_dir, args.take_profit, args.stop_loss)


if __name__ == "__main__":
    main()
