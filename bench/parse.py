"""How fast swap extraction is, against the floor of decoding the same JSON.

Runs on one core (pinned where the OS allows) over the shared mainnet fixtures
(``../shared/fixtures/mainnet``, or ``$KOLRAY_SHARED_FIXTURES``), each file with its MANIFEST signer:

- ``loads``: ``orjson.loads`` of the file's bytes (the floor: any extractor has to decode them);
- ``extract``: ``extract_swaps`` on the decoded object;
- ``end_to_end``: both, as the tracker does per transaction.

Each is timed over many repetitions of the whole set, best of several rounds (the least disturbed
by other processes). The goal is ``extract_over_loads <= 2``. The last line is one JSON object.

    .venv/bin/python bench/parse.py [--rounds 7] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kolray.chain.swaps import MalformedTransaction, extract_swaps  # noqa: E402

FIXTURES = Path(os.environ.get("KOLRAY_SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures" / "mainnet"))


def load_cases() -> list[tuple[str, bytes, str, str]]:
    """``(file, raw bytes, signer, encoding)`` of every valid fixture."""
    manifest = json.loads((FIXTURES / "MANIFEST.json").read_text())
    cases = []
    for entry in manifest:
        if entry["kind"] == "malformed":
            continue
        cases.append(
            (entry["file"], (FIXTURES / entry["file"]).read_bytes(), entry["signer"], entry["encoding"])
        )
    return cases


def best_rate(work: Callable[[], None], items: int, rounds: int, seconds: float) -> float:
    """Items per second of ``work`` (which handles ``items`` items), best of ``rounds`` rounds."""
    work()  # warm caches
    started = time.perf_counter()
    work()
    once = max(time.perf_counter() - started, 1e-6)
    repeats = max(1, int(seconds / once))
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            work()
        best = min(best, (time.perf_counter() - started) / repeats)
    return items / best


def measure(cases: list[tuple[str, bytes, str, str]], rounds: int, seconds: float) -> dict[str, float]:
    raws = [raw for _, raw, _, _ in cases]
    decoded = [(orjson.loads(raw), signer) for _, raw, signer, _ in cases]
    pairs = [(raw, signer) for _, raw, signer, _ in cases]
    loads = orjson.loads

    def decode_all() -> None:
        for raw in raws:
            loads(raw)

    def extract_all() -> None:
        for tx, signer in decoded:
            extract_swaps(tx, signer)

    def both() -> None:
        for raw, signer in pairs:
            extract_swaps(loads(raw), signer)

    n = len(cases)
    loads_rate = best_rate(decode_all, n, rounds, seconds)
    extract_rate = best_rate(extract_all, n, rounds, seconds)
    both_rate = best_rate(both, n, rounds, seconds)
    return {
        "loads_tx_per_s": round(loads_rate),
        "extract_tx_per_s": round(extract_rate),
        "end_to_end_tx_per_s": round(both_rate),
        # time(extract) / time(loads): the goal is <= 2
        "extract_over_loads": round(loads_rate / extract_rate, 3),
        "end_to_end_over_loads": round(loads_rate / both_rate, 3),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per round and measurement")
    args = parser.parse_args(argv)
    if not (FIXTURES / "MANIFEST.json").is_file():
        raise SystemExit(f"bench/parse.py: shared fixtures not found at {FIXTURES}")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    cases = load_cases()
    for name, raw, signer, _ in cases:  # a bench of an extractor that fails proves nothing
        try:
            extract_swaps(orjson.loads(raw), signer)
        except MalformedTransaction as error:
            raise SystemExit(f"bench/parse.py: {name} does not parse: {error}") from None

    result: dict[str, Any] = {"benchmark": "parse", "transactions": len(cases)}
    result.update(measure(cases, args.rounds, args.seconds))
    by_encoding = {}
    for encoding in sorted({c[3] for c in cases}):
        subset = [c for c in cases if c[3] == encoding]
        numbers = measure(subset, max(3, args.rounds // 2), args.seconds / 2)
        by_encoding[encoding] = {"transactions": len(subset), **numbers}
    result["by_encoding"] = by_encoding
    result["bytes_mean"] = round(sum(len(c[1]) for c in cases) / len(cases))
    result["python"] = platform.python_version()
    result["goal_extract_over_loads"] = 2.0
    result["goal_met"] = result["extract_over_loads"] <= 2.0
    for encoding, numbers in by_encoding.items():
        print(f"{encoding:>10}: {numbers}", file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
