"""The market tape in the database: points and gaps, exactly once on (mint, slot)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from kolray.db.engine import insert_ignoring_duplicates, session_scope
from kolray.db.tables import TapePointRow
from kolray.market.read import Gap, TapePoint

TAPE_COLUMNS = [
    "mint",
    "slot",
    "time",
    "price_sol",
    "market_cap_sol",
    "liquidity_sol",
    "venue",
    "graduated",
    "source",
    "note",
]


def store_tape(engine: Engine, points: Sequence[TapePoint], gaps: Sequence[Gap], source: str = "live") -> int:
    """Insert ``points`` and ``gaps`` (one transaction); returns the rows really inserted (a slot
    already stored for a mint is skipped, so a re-read or a retried write adds nothing)."""
    rows = [
        {
            "mint": p.mint, "slot": p.slot, "time": p.time, "price_sol": p.price_sol,
            "market_cap_sol": p.market_cap_sol, "liquidity_sol": p.liquidity_sol, "venue": p.venue,
            "graduated": p.graduated, "source": source, "note": None,
        }
        for p in points
    ] + [
        {
            "mint": g.mint, "slot": g.slot, "time": g.time, "price_sol": None, "market_cap_sol": None,
            "liquidity_sol": None, "venue": None, "graduated": None, "source": source, "note": g.reason[:500],
        }
        for g in gaps
    ]  # fmt: skip
    with session_scope(engine) as session:
        return insert_ignoring_duplicates(session, TapePointRow, rows, ("mint", "slot"))


def read_tape(engine: Engine, mints: Sequence[str] | None = None, since: int | None = None) -> pd.DataFrame:
    """The stored tape (gaps included, ``price_sol`` NaN), sorted by mint and time."""
    query = select(*(getattr(TapePointRow, c) for c in TAPE_COLUMNS))
    if since is not None:
        query = query.where(TapePointRow.time >= since)
    frames = []
    chunks = [list(mints[i : i + 500]) for i in range(0, len(mints), 500)] if mints is not None else [None]
    with engine.connect() as conn:
        for chunk in chunks:
            q = query if chunk is None else query.where(TapePointRow.mint.in_(chunk))
            frames.append(pd.DataFrame(conn.execute(q).all(), columns=TAPE_COLUMNS))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TAPE_COLUMNS)
    frame["price_sol"] = pd.to_numeric(frame["price_sol"], errors="coerce")
    return frame.sort_values(["mint", "time", "slot"], kind="stable").reset_index(drop=True)
