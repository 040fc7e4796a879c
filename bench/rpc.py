"""Fetching transactions: kolray's RpcClient against solana-py's AsyncClient, same local server.

A uvicorn server in another process answers ``getTransaction`` (single calls and JSON-RPC batches)
with real mainnet results from ``../shared/fixtures/mainnet`` (those solders can parse, so that
solana-py is measured on what it accepts), repeated to ``--transactions`` distinct signatures.
Three clients fetch them all, ``--concurrency`` requests in flight:

- ``kolray_batched``: :class:`kolray.chain.rpc.RpcClient`, 100 calls per HTTP request (the default);
- ``kolray_single``: the same client, one call per request (isolates the client's own cost);
- ``solana_py``: ``solana.rpc.async_api.AsyncClient.get_transaction``, one call per request (it has no
  batch API), answers parsed into solders objects.

Best of ``--rounds``; the last line is one JSON object with transactions per second and the ratios.

    .venv/bin/python bench/rpc.py [--transactions 2000] [--concurrency 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kolray.chain.rpc import RpcClient  # noqa: E402

FIXTURES = Path(os.environ.get("KOLRAY_SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures" / "mainnet"))


def signature(i: int) -> str:
    from solders.signature import Signature

    return str(Signature((i + 1).to_bytes(64, "big")))


def parseable_results() -> list[bytes]:
    """Compact JSON of every fixture that solders' GetTransactionResp accepts."""
    from solders.errors import SerdeJSONError
    from solders.rpc.responses import GetTransactionResp

    results = []
    for path in sorted(FIXTURES.glob("*.json")):
        if path.name == "MANIFEST.json":
            continue
        raw = orjson.dumps(orjson.loads(path.read_bytes()))
        try:
            parsed = GetTransactionResp.from_json('{"jsonrpc":"2.0","id":1,"result":' + raw.decode() + "}")
        except SerdeJSONError:  # solders refuses some real results (e.g. without slot/blockTime)
            continue
        if isinstance(parsed, GetTransactionResp) and parsed.value is not None:
            results.append(raw)
    return results


def serve(port: int, count: int) -> None:
    """The server process: answers getTransaction for ``count`` signatures."""
    import uvicorn

    results = parseable_results()
    table = {signature(i).encode(): results[i % len(results)] for i in range(count)}

    def answer(call: dict[str, Any]) -> bytes:
        result = table.get(call["params"][0].encode(), b"null")
        return b'{"jsonrpc":"2.0","id":' + json.dumps(call["id"]).encode() + b',"result":' + result + b"}"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        payload = orjson.loads(body)
        if isinstance(payload, list):
            out = b"[" + b",".join(answer(c) for c in payload) + b"]"
        else:
            out = answer(payload)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", lifespan="off", access_log=False)


async def kolray_fetch(url: str, signatures: list[str], batch_size: int, concurrency: int) -> int:
    async with RpcClient([url], batch_size=batch_size, max_concurrency=concurrency, timeout_s=60) as rpc:
        got = await rpc.get_transactions(signatures)
    return sum(tx is not None for tx in got)


async def solana_py_fetch(url: str, signatures: list[str], concurrency: int) -> int:
    from solana.rpc.async_api import AsyncClient
    from solders.signature import Signature

    gate = asyncio.Semaphore(concurrency)
    async with AsyncClient(url, timeout=60) as client:

        async def one(s: str) -> bool:
            async with gate:
                response = await client.get_transaction(
                    Signature.from_string(s), encoding="json", max_supported_transaction_version=0
                )
            return response.value is not None

        got = await asyncio.gather(*(one(s) for s in signatures))
    return sum(got)


def best_rate(run: Any, items: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fetched = asyncio.run(run())
        best = min(best, time.perf_counter() - started)
        if fetched != items:
            raise SystemExit(f"bench/rpc.py: fetched {fetched} of {items}")
    return items / best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if not (FIXTURES / "MANIFEST.json").is_file():
        raise SystemExit(f"bench/rpc.py: shared fixtures not found at {FIXTURES}")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(port, args.transactions), daemon=True
    )
    server.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or not server.is_alive():
                raise SystemExit("bench/rpc.py: the local server did not start") from None
            time.sleep(0.1)

    n, c = args.transactions, args.concurrency
    signatures = [signature(i) for i in range(n)]
    try:
        batched = best_rate(lambda: kolray_fetch(url, signatures, 100, c), n, args.rounds)
        single = best_rate(lambda: kolray_fetch(url, signatures, 1, c), n, args.rounds)
        solana_py = best_rate(lambda: solana_py_fetch(url, signatures, c), n, args.rounds)
    finally:
        server.terminate()
        server.join(5)

    result = {
        "benchmark": "rpc",
        "transactions": n,
        "concurrency": c,
        "distinct_fixture_results": len(parseable_results()),
        "kolray_batched_tx_per_s": round(batched),
        "kolray_single_tx_per_s": round(single),
        "solana_py_tx_per_s": round(solana_py),
        "batched_over_solana_py": round(batched / solana_py, 2),
        "single_over_solana_py": round(single / solana_py, 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
