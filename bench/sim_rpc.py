"""How fast the chain twin serves ``getTransaction``, against a trivial call on the same server.

The twin server (``kolray sim serve --rps 0``) runs in its own process pinned to one CPU core; a
load generator in another process (pinned to another core when there is one) keeps
``--connections`` keep-alive HTTP connections busy for ``--seconds`` per workload:

- ``health``: ``getHealth``, the baseline — the same HTTP and JSON-RPC stack doing no work;
- ``tx_json``, ``tx_json_parsed``, ``tx_base64``: ``getTransaction`` of distinct signatures of the
  world (``maxSupportedTransactionVersion: 0``), one call per HTTP request;
- ``tx_batch50``: ``getTransaction`` in JSON-RPC batches of 50 calls (calls per second).

A world (40 KOLs, 5 days) is generated in a temporary directory unless ``--world`` names one. The
last line is one JSON object: calls per second per workload and their ratio to the baseline.

    .venv/bin/python bench/sim_rpc.py [--world DIR] [--seconds 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kolray.sim.world import generate_world, load_world

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signatures(world: Path, n: int) -> list[str]:
    trades = load_world(world).trades()
    return list(trades["signature"].drop_duplicates().head(n))


def request(body: bytes) -> bytes:
    return (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


async def _drive(
    port: int, bodies: list[bytes], connections: int, seconds: float, calls_per_request: int
) -> dict:
    """Keep ``connections`` connections busy for ``seconds``; returns calls/s and bytes/s."""
    done = 0
    received = 0
    stop_at = time.perf_counter() + seconds
    errors = 0

    async def worker(offset: int) -> None:
        nonlocal done, received, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while time.perf_counter() < stop_at:
            writer.write(request(bodies[i % len(bodies)]))
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
            body = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200") or b'"error"' in body[:40]:
                errors += 1
            done += 1
            received += len(body)
            i += connections
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(connections)))
    elapsed = time.perf_counter() - started
    return {
        "calls_per_s": done * calls_per_request / elapsed,
        "mb_per_s": received / elapsed / 1e6,
        "errors": errors,
    }


def _client(
    port: int, bodies: list[bytes], connections: int, seconds: float, calls: int, out: multiprocessing.Queue
) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.put(asyncio.run(_drive(port, bodies, connections, seconds, calls)))


def measure(port: int, bodies: list[bytes], connections: int, seconds: float, calls: int = 1) -> dict:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=_client, args=(port, bodies, connections, seconds, calls, queue))
    process.start()
    result = queue.get(timeout=seconds + 60)
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, help="a world directory (default: generate a small one)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = args.world
        if world is None:
            world = Path(tmp) / "world"
            print("generating a world (40 KOLs, 5 days)...", flush=True)
            generate_world(world, kols=40, days=5, seed=1)
        sigs = signatures(world, 5000)
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "kolray",
            "sim",
            "serve",
            "--world",
            str(world),
            "--port",
            str(port),
            "--rps",
            "0",
        ]
        preexec = (lambda: os.sched_setaffinity(0, {0})) if hasattr(os, "sched_setaffinity") else None
        server = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=preexec
        )
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise SystemExit("the twin server did not start")

            def tx(sig: str, encoding: str) -> bytes:
                return json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "getTransaction",
                        "params": [sig, {"encoding": encoding, "maxSupportedTransactionVersion": 0}],
                    },
                    separators=(",", ":"),
                ).encode()

            health = [b'{"jsonrpc":"2.0","id":1,"method":"getHealth"}']
            workloads = {
                "health": (health, 1),
                "tx_json": ([tx(s, "json") for s in sigs], 1),
                "tx_json_parsed": ([tx(s, "jsonParsed") for s in sigs], 1),
                "tx_base64": ([tx(s, "base64") for s in sigs], 1),
                "tx_batch50": (
                    [
                        b"[" + b",".join(tx(s, "json") for s in sigs[i : i + 50]) + b"]"
                        for i in range(0, len(sigs) - 49, 50)
                    ],
                    50,
                ),
            }
            results = {}
            for name, (bodies, calls) in workloads.items():
                results[name] = measure(port, bodies, args.connections, args.seconds, calls)
                r = results[name]
                print(
                    f"{name:15s} {r['calls_per_s']:9.0f} calls/s  {r['mb_per_s']:7.1f} MB/s  errors {r['errors']}",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(10)
    base = results["health"]["calls_per_s"]
    summary = {
        "bench": "sim_rpc",
        "connections": args.connections,
        "seconds": args.seconds,
        "server_cores": 1,
        "baseline_get_health_per_s": round(base),
        **{f"{name}_per_s": round(r["calls_per_s"]) for name, r in results.items() if name != "health"},
        **{
            f"{name}_ratio_to_baseline": round(r["calls_per_s"] / base, 3)
            for name, r in results.items()
            if name != "health"
        },
        "errors": sum(r["errors"] for r in results.values()),
        "target_get_transaction_per_s": 2000,
        "meets_target": results["tx_json"]["calls_per_s"] >= 2000,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
