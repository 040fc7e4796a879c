"""Benchmark: the Ray Data feature build against a single-process pandas build, ≥ 1M positions.

    .venv/bin/python bench/features.py [--kols 1800] [--days 125] [--db-url URL] [--no-scale]

Generates a synthetic market shaped like the chain twin's (:mod:`kolray.testing.synthetic_market`;
about 575 positions per KOL over 125 days, so the KOL dataset has three splits too) into a
temporary SQLite database, runs the analyzer once (setup, not measured), then measures each build
in a fresh process:

- ``ray``: :func:`kolray.features.build_features` on a local Ray with ``num_cpus=2`` and a capped
  object store: wallet shards stream through ``read_sql`` → ``map_batches`` → Parquet parts;
- ``pandas``: the same datasets in one process the usual way: ``pandas.read_sql`` of every position
  and token entry, then the same feature functions over everything at once, then
  ``DataFrame.to_parquet`` per split. Same definitions and split plans (so the outputs must match,
  and the bench checks they do); the difference measured is streaming shards on Ray versus holding
  everything in memory;
- ``base``: each kind's idle footprint (Ray started and idle; pandas and kolray imported), to subtract.

Time is wall time and CPU seconds of the process tree: the machine is shared, and CPU seconds show
the work done whatever else runs (Ray's includes its own processes: GCS, raylet, Ray Data actors).

Memory is the peak **PSS** summed over the process tree (the driver, Ray's GCS, raylet and every
worker; PSS counts shared object-store pages once), sampled every 200 ms. With ``--scale`` (default)
both builds also run on a quarter of the KOLs: the Ray build's peak should barely move while the
pandas one grows with the data. The last line is one JSON object with the figures and ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OBJECT_STORE_MB = 512
SHARD_ROWS = 50_000


def _children() -> dict[int, list[int]]:
    """Parent pid → child pids, from /proc (Linux)."""
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (its own, not its children's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _tree() -> list[int]:
    children = _children()
    pids, stack = [], [os.getpid()]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return pids


def tree_cpu_s() -> float:
    """CPU seconds used so far by this process and its live descendants (Ray's workers stay alive
    for the whole phase, so a difference of two readings is the work done in between)."""
    return sum(_cpu_s(pid) for pid in _tree())


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Peak PSS of this process and all its descendants, sampled in a background thread."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def sample() -> float:
        return sum(_pss_kb(pid) for pid in _tree()) / 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeMemory:
        self.peak_mb = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.sample())


def _init_ray() -> None:
    import ray

    ray.init(
        num_cpus=2,
        object_store_memory=OBJECT_STORE_MB * 2**20,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    # Let the prestarted workers come up, so "base" is Ray idle, not Ray starting.
    ray.get([ray.remote(lambda: 0).remote() for _ in range(2)])
    time.sleep(2)


# Phases (each in a fresh interpreter)


def phase_ray_base(url: str, out: str) -> dict[str, Any]:
    import kolray.features  # noqa: F401

    _init_ray()
    return {"pss_mb": round(TreeMemory().sample(), 1)}


def phase_ray(url: str, out: str) -> dict[str, Any]:
    from kolray.features import BuildOptions, build_features

    _init_ray()
    cpu = tree_cpu_s()
    with TreeMemory() as memory:
        started = time.perf_counter()
        result = build_features(
            database_url=url, options=BuildOptions(storage_uri=out, shard_rows=SHARD_ROWS)
        )
        wall = time.perf_counter() - started
        cpu = tree_cpu_s() - cpu
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 1),
        "peak_pss_mb": round(memory.peak_mb, 1),
        "version": result.version,
        "shards": result.source["shards"],
        "rows": {n: {s: i.rows for s, i in m.splits.items()} for n, m in result.manifests.items()},
        "skipped": result.skipped,
    }


def phase_pandas_base(url: str, out: str) -> dict[str, Any]:
    import pandas  # noqa: F401

    import kolray.features  # noqa: F401

    return {"pss_mb": round(TreeMemory().sample(), 1)}


def phase_pandas(url: str, out: str) -> dict[str, Any]:
    cpu = tree_cpu_s()
    with TreeMemory() as memory:
        started = time.perf_counter()
        rows = pandas_build(url, out)
        wall = time.perf_counter() - started
        cpu = tree_cpu_s() - cpu
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 1),
        "peak_pss_mb": round(memory.peak_mb, 1),
        "rows": rows,
    }


def pandas_build(url: str, out: str) -> dict[str, dict[str, int]]:
    """Both datasets the single-process way: everything read into pandas, features computed over
    it at once, each split written with ``to_parquet``."""
    import pandas as pd
    from sqlalchemy import text

    from kolray.features import BuildOptions
    from kolray.features.build import kol_split_plan, token_split_plan
    from kolray.features.context import MintEntries, wallet_histories
    from kolray.features.rows import RESOLVE, kol_day_range, kol_rows, token_rows
    from kolray.features.source import frame_from_rows, positions_sql, read_engine, read_snapshot
    from kolray.features.splits import SPLIT_NAMES, assign_splits

    options = BuildOptions()
    snapshot = read_snapshot(url)
    cutoff = (snapshot.newest_swap_time or 0) + 1
    engine = read_engine(url)
    with engine.connect() as conn:
        positions = pd.read_sql(
            text(positions_sql(":w", "1 = 1").replace(":w", ":watermark")),
            conn,
            params={"watermark": snapshot.swap_watermark},
        )
        entries = pd.read_sql(text("SELECT mint, wallet, entry_time FROM positions"), conn)
        first = pd.read_sql(
            text("SELECT mint, MIN(block_time) AS t FROM swaps WHERE id <= :w GROUP BY mint"),
            conn,
            params={"w": snapshot.swap_watermark},
        )
    frame = frame_from_rows(positions)
    tokens = MintEntries.build(
        entries["mint"].to_numpy(object),
        entries["wallet"].to_numpy(object),
        entries["entry_time"].to_numpy(),
        dict(zip(first["mint"], first["t"].astype(float), strict=True)),
    )
    histories = wallet_histories(frame, options.horizon_s)
    counts: dict[str, dict[str, int]] = {}
    token = token_rows(frame, tokens, horizon_s=options.horizon_s, cutoff=cutoff, histories=histories)
    token_plan = token_split_plan(url, snapshot, options, cutoff)
    first_day, last_day = kol_day_range(snapshot.first_entry or cutoff, cutoff, options.horizon_s)
    kol = kol_rows(
        frame, horizon_s=options.horizon_s, first_day=first_day, last_day=last_day, histories=histories
    )
    kol_plan = kol_split_plan(url, options, first_day, last_day)
    for name, rows, time_column, plan in (
        ("token", token, "entry_time", token_plan),
        ("kol", kol, "day", kol_plan),
    ):
        codes = assign_splits(rows[time_column].to_numpy(), rows[RESOLVE].to_numpy(), plan)
        counts[name] = {}
        for code, split in enumerate(SPLIT_NAMES):
            part = rows[codes == code].drop(columns=[RESOLVE])
            target = Path(out) / name / split
            target.mkdir(parents=True, exist_ok=True)
            part.to_parquet(target / "part-00000.parquet", index=False)
            counts[name][split] = len(part)
    return counts


PHASES = {
    "ray_base": phase_ray_base,
    "ray": phase_ray,
    "pandas_base": phase_pandas_base,
    "pandas": phase_pandas,
}


def run_phase(phase: str, url: str, out: str) -> None:
    print(json.dumps({"phase": phase, **PHASES[phase](url, out)}), flush=True)


def measure(phase: str, url: str, out: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--db-url", url, "--out", out],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "RAY_DEDUP_LOGS": "0"},
    )
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# Output check: both builds wrote the same datasets


def compare(ray_out: str, ray_version: str, pandas_out: str) -> dict[str, Any]:
    """Row counts per split and a checksum of every feature and label column must agree."""
    import numpy as np
    import pandas as pd

    from kolray import datasets

    report: dict[str, Any] = {}
    for name in ("token", "kol"):
        loaded = datasets.load_dataset(name, ray_version, storage_uri=ray_out)
        columns = [*loaded.feature_columns, *loaded.manifest.label_columns]
        same = True
        for split in ("train", "val", "test"):
            ours = loaded.split(split)
            theirs = pd.read_parquet(Path(pandas_out) / name / split)
            theirs = theirs.sort_values(
                [loaded.manifest.time_column, *loaded.manifest.id_columns], kind="stable"
            )
            if len(ours) != len(theirs):
                same = False
                continue
            for column in columns:
                a = ours[column].to_numpy(dtype=np.float64)
                b = theirs[column].to_numpy(dtype=np.float64)
                if not np.array_equal(a, b, equal_nan=True):
                    same = False
        report[name] = same
    return report


def generate(url: str, kols: int, days: float) -> dict[str, Any]:
    os.environ.setdefault("KOLRAY_LOG_LEVEL", "WARNING")
    from kolray.analyzer import analyze
    from kolray.db.migrate import upgrade
    from kolray.testing.synthetic_market import MarketParams, populate

    engine = upgrade(url)
    started = time.perf_counter()
    counts = populate(engine, MarketParams(kols=kols, days=days, seed=1))
    generated = time.perf_counter() - started
    started = time.perf_counter()
    summary = analyze(engine, full=True)
    setup = {
        "swaps": counts["swaps"],
        "positions": summary.positions_written,
        "kols": kols,
        "days": days,
        "generate_s": round(generated, 1),
        "analyze_s": round(time.perf_counter() - started, 1),
    }
    print(f"setup: {json.dumps(setup)}", file=sys.stderr, flush=True)
    return setup


def bench_one(url: str, workdir: Path, label: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    ray_out, pandas_out = str(workdir / f"ray-{label}"), str(workdir / f"pandas-{label}")
    ray_base = measure("ray_base", url, ray_out)["pss_mb"]
    pandas_base = measure("pandas_base", url, pandas_out)["pss_mb"]
    ray = measure("ray", url, ray_out)
    ray["base_pss_mb"] = ray_base
    ray["over_base_mb"] = round(ray["peak_pss_mb"] - ray_base, 1)
    print(f"{label} ray: {json.dumps(ray)}", file=sys.stderr, flush=True)
    pandas = measure("pandas", url, pandas_out)
    pandas["base_pss_mb"] = pandas_base
    pandas["over_base_mb"] = round(pandas["peak_pss_mb"] - pandas_base, 1)
    print(f"{label} pandas: {json.dumps(pandas)}", file=sys.stderr, flush=True)
    results["ray"], results["pandas"] = ray, pandas
    results["identical_output"] = compare(ray_out, ray["version"], pandas_out)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kols", type=int, default=1_800, help="KOLs (about 575 positions each)")
    parser.add_argument("--days", type=float, default=125.0)
    parser.add_argument("--db-url", default=None, help="an analysed database to use as is")
    parser.add_argument("--no-scale", dest="scale", action="store_false", help="skip the quarter-size run")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("KOLRAY_LOG_LEVEL", "WARNING")
    if args.phase:
        run_phase(args.phase, args.db_url, args.out)
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="kolray-bench-features-"))
    results: dict[str, Any] = {"bench": "features", "cpus": 2, "object_store_mb": OBJECT_STORE_MB}
    try:
        url = args.db_url or f"sqlite:///{workdir / 'full.db'}"
        if args.db_url is None:
            results["setup"] = generate(url, args.kols, args.days)
        full = bench_one(url, workdir, "full")
        results.update(full)
        ray, pandas = full["ray"], full["pandas"]
        results["ratios"] = {
            "ray_over_pandas_time": round(ray["wall_s"] / pandas["wall_s"], 2),
            "ray_over_pandas_cpu": round(ray["cpu_s"] / max(pandas["cpu_s"], 0.1), 2),
            "pandas_over_ray_memory": round(pandas["over_base_mb"] / max(ray["over_base_mb"], 1.0), 2),
        }
        if args.scale and args.db_url is None:
            quarter_url = f"sqlite:///{workdir / 'quarter.db'}"
            results["quarter_setup"] = generate(quarter_url, math.ceil(args.kols / 4), args.days)
            quarter = bench_one(quarter_url, workdir, "quarter")
            results["quarter"] = {k: quarter[k] for k in ("ray", "pandas", "identical_output")}
            results["ratios"]["ray_memory_growth_4x_data"] = round(
                ray["over_base_mb"] / max(quarter["ray"]["over_base_mb"], 1.0), 2
            )
            results["ratios"]["pandas_memory_growth_4x_data"] = round(
                pandas["over_base_mb"] / max(quarter["pandas"]["over_base_mb"], 1.0), 2
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
