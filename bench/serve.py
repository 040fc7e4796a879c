"""Serving latency and throughput: the Ray Serve app against plain uvicorn + FastAPI, same model.

One run builds a sample world (KOLs, swaps, positions from the real analyzer) in a temporary
SQLite database and registers a token model, then measures ``POST /v1/predict/token`` on two
servers, one after the other so they never share the cores:

- ``fastapi``: one uvicorn process serving :func:`kolray.serve.api.build_app` with the model held
  in-process (:class:`~kolray.serve.service.LocalScorer`): the floor for this request path;
- ``serve``: the Ray Serve application (``kolray.serve.app:build``: HTTP proxy → ingress replica →
  batched ``TokenModel`` replica), deployed from a config exactly as ``kolray serve`` does.

Both run the same routes, coalescing, model and feature source, measured twice: ``database``, the
product path (point-in-time features computed from the database by :mod:`kolray.features`), and
``none`` (every feature unknown: no lookup work), which leaves the serving path itself — HTTP,
Serve's hops, batching, the model. Load: an aiohttp client in this process; single-item requests
at concurrency 1, 16 and 64, then 1000-item requests at concurrency 2; every item distinct (the
feature cache would answer repeats), each level ``--seconds`` after ``--warmup``. Serve runs as
``kolray serve`` runs it (``--serve-mode auto``: high-throughput mode when haproxy is installed).
At c=1 the bench also reads every process's CPU time from /proc, before and after, less its
idle rate: ``cpu_ms_per_request_c1`` says how many CPU ms each part (client, the FastAPI server;
Serve's ingress, model replicas, HAProxy, the rest of Ray) spent per request, i.e. what the
sequential c=1 latency is made of. The last line is one JSON object: p50/p99 latency (ms) and
requests/s per level, predictions/s batched, the CPU breakdown, Serve/FastAPI ratios, and the goals
met, per feature source.

    .venv/bin/python bench/serve.py [--seconds 5] [--warmup 1] [--features database|none|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

CONCURRENCY = (1, 16, 64)
BATCH_ITEMS = 1000
BATCH_CONCURRENCY = 2
GOALS = {
    "p99_ms_at_16": 50.0,
    "requests_per_s": 300.0,
    "batched_predictions_per_s": 50_000.0,
    "latency_ratio": 2.0,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str, timeout_s: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).json().get("status") == "ok":
                return
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/serve.py: {url} did not become healthy")
        time.sleep(0.2)


# Servers


def run_fastapi(port: int, env: dict[str, str], features: str) -> None:
    """The baseline: one uvicorn process, model in-process."""
    os.environ.update(env)
    import torch
    import uvicorn

    from kolray.serve.api import build_app
    from kolray.serve.holder import ModelHolder
    from kolray.serve.service import KolrayService, LocalScorer

    torch.set_num_threads(1)
    holders = {m: ModelHolder(m) for m in ("token", "kol")}
    for holder in holders.values():
        holder.configure(None)
    service = KolrayService(
        token=LocalScorer(holders["token"]), kol=LocalScorer(holders["kol"]), feature_source=features
    )
    uvicorn.run(
        build_app(service), host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools"
    )


def deploy_app(port: int, env: dict[str, str], features: str) -> None:
    """The app as `kolray serve` deploys it (declaratively), on this process's Ray."""
    from kolray.serve.deploy import deploy, wait_until_serving
    from kolray.testing import serving_world as sample

    deploy(sample.app_config(env, port, feature_source=features))
    wait_until_serving(f"http://127.0.0.1:{port}")


# Load


def bodies(world: Any, n: int, items: int, seed: int) -> list[bytes]:
    import numpy as np

    from kolray.serve.schemas import iso

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        batch = [
            {
                "wallet": world.wallets[int(rng.integers(len(world.wallets)))],
                "amount_sol": round(float(rng.lognormal(0, 0.7)), 4),
                "entry_time": iso(int(rng.integers(world.start + 86_400, world.end))),
            }
            for _ in range(items)
        ]
        out.append(json.dumps({"items": batch}).encode())
    return out


class Stream:
    """Payloads in order, never reused while there are fresh ones (``reused`` says if they ran out)."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.i = 0

    def next(self) -> bytes:
        payload = self.payloads[self.i % len(self.payloads)]
        self.i += 1
        return payload

    @property
    def reused(self) -> bool:
        return self.i > len(self.payloads)


async def load(url: str, stream: Stream, concurrency: int, seconds: float, warmup: float) -> dict[str, Any]:
    import aiohttp
    import numpy as np

    latencies: list[float] = []
    errors = 0
    done = 0
    stop_at = time.perf_counter() + warmup + seconds
    measure_from = time.perf_counter() + warmup
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors, done
            while True:
                start = time.perf_counter()
                if start >= stop_at:
                    return
                async with session.post(url, data=stream.next(), headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
                end = time.perf_counter()
                if start >= measure_from:
                    latencies.append(end - start)
                    done += 1
                    errors += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    values = np.array(latencies) * 1000
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "requests_per_s": round(done / seconds, 1),
        "errors": errors,
    }


# Where a request's CPU goes: each process's CPU time (user + system) from /proc, before and after
# the c=1 level, less what it burns idle (Serve's replicas run background loops), divided by the
# requests answered. At c=1 the chain is sequential, so this is what the latency is made of.

SERVE_ROLES = (
    ("ServeReplica:kolray:KolrayApi", "ingress"),
    ("ServeReplica:kolray:TokenModel", "token_model"),
    ("ServeReplica:kolray:KolModel", "kol_model"),
    ("HAProxyManager", "haproxy_manager"),
    ("haproxy", "haproxy"),
    ("ray::", "ray_other"),
    ("ray/", "ray_other"),
)


def process_cpu_s() -> dict[int, tuple[str, float]]:
    """Every process's command line and CPU seconds so far (Linux /proc; empty elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        out[int(entry.name)] = (command, (int(fields[11]) + int(fields[12])) / ticks)
    return out


def role_of(pid: int, command: str, server_pid: int | None) -> str:
    if pid == os.getpid():
        return "client"
    if pid == server_pid:
        return "server"
    return next((role for marker, role in SERVE_ROLES if marker in command), "other")


def cpu_per_request(
    warm: Any, run: Any, seconds: float, server_pid: int | None, idle_s: float = 2.0
) -> tuple[dict[str, Any], dict[str, float]]:
    """``warm()`` then ``run()`` (one load level of ``seconds``, no warm-up of its own), with the
    CPU ms each role spent per request ``run`` answered. Idle rates are measured first, for
    ``idle_s``."""
    first = process_cpu_s()
    time.sleep(idle_s)
    idle_end = process_cpu_s()
    warm()
    before = process_cpu_s()
    started = time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - started
    after = process_cpu_s()
    requests = max(result["requests_per_s"] * seconds, 1.0)
    per_role: dict[str, float] = {}
    for pid, (command, cpu_s) in after.items():
        if pid not in before:
            continue
        idle_rate = (idle_end[pid][1] - first[pid][1]) / idle_s if pid in first and pid in idle_end else 0.0
        busy = max(cpu_s - before[pid][1] - idle_rate * elapsed, 0.0)
        role = role_of(pid, command, server_pid)
        per_role[role] = per_role.get(role, 0.0) + busy
    cpu = {role: round(busy * 1000 / requests, 3) for role, busy in sorted(per_role.items())}
    cpu["total"] = round(sum(cpu.values()), 3)
    return result, cpu


def measure(
    base: str,
    single: list[bytes],
    batched: list[bytes],
    seconds: float,
    warmup: float,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Every level, then the batches; each server gets the same payloads in the same order. The
    c=1 level also says where each request's CPU went (``cpu_ms_per_request_c1``)."""
    url = base + "/v1/predict/token"
    singles, batches = Stream(single), Stream(batched)
    out: dict[str, Any] = {}
    for c in CONCURRENCY:
        if c == 1:
            out["c1"], out["cpu_ms_per_request_c1"] = cpu_per_request(
                lambda: asyncio.run(load(url, singles, 1, warmup, 0.0)),
                lambda: asyncio.run(load(url, singles, 1, seconds, 0.0)),
                seconds,
                server_pid,
            )
            continue
        out[f"c{c}"] = asyncio.run(load(url, singles, c, seconds, warmup))
    result = asyncio.run(load(url, batches, BATCH_CONCURRENCY, seconds, warmup))
    result["predictions_per_s"] = round(result["requests_per_s"] * BATCH_ITEMS)
    out[f"batch{BATCH_ITEMS}"] = result
    out["payloads_reused"] = singles.reused or batches.reused
    return out


FEATURE_SOURCES = {
    # The product path: point-in-time features from the database (kolray.features).
    "database": "kolray.serve.lookup:database_features",
    # Every feature unknown (the model's training means): no lookup work at all, so what is left
    # is the serving path itself — HTTP, Serve's hops, coalescing and batching, the model.
    "none": "kolray.testing.serving_world:unknown_features",
}


def compare(served: dict[str, Any], fastapi: dict[str, Any]) -> dict[str, float]:
    ratios: dict[str, float] = {}
    for c in CONCURRENCY:
        key = f"c{c}"
        ratios[f"p50_{key}"] = round(served[key]["p50_ms"] / fastapi[key]["p50_ms"], 2)
        ratios[f"p99_{key}"] = round(served[key]["p99_ms"] / fastapi[key]["p99_ms"], 2)
        ratios[f"rps_{key}"] = round(served[key]["requests_per_s"] / fastapi[key]["requests_per_s"], 2)
    batch = f"batch{BATCH_ITEMS}"
    ratios["predictions_per_s_batched"] = round(
        served[batch]["predictions_per_s"] / fastapi[batch]["predictions_per_s"], 2
    )
    return ratios


def goals(served: dict[str, Any], ratios: dict[str, float]) -> dict[str, bool]:
    batch = f"batch{BATCH_ITEMS}"
    return {
        "p99_ms_at_16_le_50": served["c16"]["p99_ms"] <= GOALS["p99_ms_at_16"],
        "requests_per_s_ge_300": max(served[f"c{c}"]["requests_per_s"] for c in CONCURRENCY)
        >= GOALS["requests_per_s"],
        "batched_predictions_per_s_ge_50000": served[batch]["predictions_per_s"]
        >= GOALS["batched_predictions_per_s"],
        "latency_over_fastapi_le_2x": max(ratios["p50_c1"], ratios["p50_c16"]) <= GOALS["latency_ratio"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each level")
    parser.add_argument("--kols", type=int, default=30)
    parser.add_argument(
        "--features", choices=[*FEATURE_SOURCES, "both"], default="both", help="feature source(s) to measure"
    )
    parser.add_argument(
        "--serve-mode",
        choices=["auto", "high-throughput", "standard"],
        default="auto",
        help="Ray Serve data path (auto: high-throughput when haproxy is installed, as `kolray serve`)",
    )
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from kolray.db import upgrade
    from kolray.serve.deploy import prepare_environment
    from kolray.testing import serving_world as sample

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    modes = list(FEATURE_SOURCES) if args.features == "both" else [args.features]
    tmp = Path(tempfile.mkdtemp(prefix="kolray-bench-serve-"))
    env = {
        "KOLRAY_DATA_DIR": str(tmp),
        "KOLRAY_DATABASE_URL": f"sqlite:///{tmp / 'kolray.db'}",
        "KOLRAY_STORAGE_URI": str(tmp / "store"),
        "KOLRAY_API_KEY": "",
    }
    os.environ.update(env)
    world = sample.populate(upgrade(env["KOLRAY_DATABASE_URL"]), n_kols=args.kols, seed=1)
    sample.register_models(env["KOLRAY_STORAGE_URI"], versions=1, reports=False)
    # Distinct items throughout (the feature cache would answer repeats): the miss path is measured.
    single = bodies(world, 60_000, 1, seed=2)
    batched = bodies(world, 800, BATCH_ITEMS, seed=3)
    setup_s = time.perf_counter() - started

    # Plain FastAPI first, alone on the machine.
    fastapi: dict[str, Any] = {}
    for mode in modes:
        port = free_port()
        server = multiprocessing.get_context("spawn").Process(
            target=run_fastapi, args=(port, env, FEATURE_SOURCES[mode]), daemon=True
        )
        server.start()
        try:
            wait_for(f"http://127.0.0.1:{port}")
            fastapi[mode] = measure(
                f"http://127.0.0.1:{port}", single, batched, args.seconds, args.warmup, server.pid
            )
        finally:
            server.terminate()
            server.join(10)

    # Then Ray Serve, deployed as `kolray serve` deploys it.
    choice = {"auto": None, "high-throughput": True, "standard": False}[args.serve_mode]
    serve_mode = prepare_environment(choice)
    served: dict[str, Any] = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024**2)
    port = free_port()  # Serve's HTTP options are fixed once it runs: one port, apps redeployed
    try:
        for mode in modes:
            deploy_app(port, env, FEATURE_SOURCES[mode])
            served[mode] = measure(f"http://127.0.0.1:{port}", single, batched, args.seconds, args.warmup)
    finally:
        serve.shutdown()
        ray.shutdown()

    results: dict[str, Any] = {}
    for mode in modes:
        ratios = compare(served[mode], fastapi[mode])
        results[mode] = {
            "serve": served[mode],
            "fastapi": fastapi[mode],
            "serve_over_fastapi": ratios,
            "goals": goals(served[mode], ratios),
        }
    result = {
        "benchmark": "serve",
        "cpus": os.cpu_count(),
        "serve_mode": serve_mode,
        "seconds_per_level": args.seconds,
        "load_average_before": round(load_before, 2),
        "features": results,
        "errors": sum(
            v["errors"]
            for mode in modes
            for side in (served[mode], fastapi[mode])
            for v in side.values()
            if isinstance(v, dict) and "errors" in v
        ),
        "setup_s": round(setup_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
