"""Writing rows exactly once (``INSERT ... ON CONFLICT DO NOTHING RETURNING id``): kolray's
:func:`kolray.db.engine.insert_ignoring_duplicates` against the form it replaced, in one process.

Both insert the same ``--rows`` market tape points (``tape_points``, what the market stage and the
backtest's stand-in tape write) in one transaction, then the same rows again (all duplicates, as a
retried batch): the baseline builds one multi-row ``VALUES`` statement per 400 rows, which
SQLAlchemy compiles afresh each time; kolray executes one statement for all the parameter sets,
batched by the driver layer from one compiled form. Each is run ``--repeats`` times, alternating;
the best time of each counts. Both must report the same counts (every row once, then none).

Prints progress to stderr and one JSON object on the last line of stdout.

    python bench/store_insert.py [--rows 50000] [--repeats 2] [--database-url URL]

Without ``--database-url`` it runs on a fresh SQLite file; give a PostgreSQL URL (an empty
database) for the other backend.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kolray.db.engine import insert_ignoring_duplicates, session_scope
from kolray.db.migrate import upgrade
from kolray.db.tables import TapePointRow

UNIQUE = ("mint", "slot")


def per_chunk_values(
    session: Session, table: type[Any], rows: Sequence[dict[str, Any]], unique: Sequence[str]
) -> int:
    """The baseline: one ``.values(chunk)`` statement per 400 rows (kolray's form until 2026-12-03)."""
    dialect_insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    inserted = 0
    for start in range(0, len(rows), 400):
        statement = dialect_insert(table).values(list(rows[start : start + 400]))
        statement = statement.on_conflict_do_nothing(index_elements=list(unique))
        inserted += len(session.execute(statement.returning(table.id)).all())
    return inserted


def tape_rows(tag: str, n: int) -> list[dict[str, Any]]:
    """``n`` tape points over 50 mints, distinct from every other ``tag``'s."""
    return [
        {
            "mint": f"{tag}-mint-{i % 50}",
            "slot": i,
            "time": 1_740_000_000 + i,
            "price_sol": 2.8e-8 * (1 + (i % 97) / 10),
            "market_cap_sol": 28.0 * (1 + (i % 97) / 10),
            "liquidity_sol": 30.0,
            "venue": "pumpfun",
            "graduated": False,
            "source": "live",
            "note": None,
        }
        for i in range(n)
    ]


def timed(engine: Any, insert: Callable[..., int], rows: list[dict[str, Any]]) -> tuple[float, int, int]:
    started = time.perf_counter()
    with session_scope(engine) as session:
        first = insert(session, TapePointRow, rows, UNIQUE)
    with session_scope(engine) as session:
        again = insert(session, TapePointRow, rows, UNIQUE)
    return time.perf_counter() - started, first, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    if args.rows < 1 or args.repeats < 1:
        parser.error("--rows and --repeats must be at least 1")

    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'bench.db'}"
        engine = upgrade(url)
        contenders = {"baseline_per_chunk_values": per_chunk_values, "kolray": insert_ignoring_duplicates}
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        for repeat in range(args.repeats):
            for name, insert in contenders.items():
                elapsed, first, again = timed(engine, insert, tape_rows(f"{name}-{repeat}", args.rows))
                if (first, again) != (args.rows, 0):
                    raise SystemExit(f"{name} inserted {first} then {again}, expected {args.rows} then 0")
                seconds[name].append(elapsed)
                print(f"{name}: {elapsed:.2f} s (repeat {repeat + 1})", file=sys.stderr)
        best = {name: min(values) for name, values in seconds.items()}
        print(
            json.dumps(
                {
                    "bench": "store_insert",
                    "backend": engine.dialect.name,
                    "rows": args.rows,
                    "seconds_best": {name: round(value, 3) for name, value in best.items()},
                    "rows_per_s": {name: round(2 * args.rows / value) for name, value in best.items()},
                    "speedup_over_baseline": round(best["baseline_per_chunk_values"] / best["kolray"], 2),
                }
            )
        )


if __name__ == "__main__":
    main()
