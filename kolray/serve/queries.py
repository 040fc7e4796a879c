"""What the API reads from the database: the analyzer's tables, shaped for the routes.

Plain synchronous functions of an engine (the routes run them in a thread pool): the leaderboard
(``kol_stats`` joined with ``kols``), one KOL's record (statistics, positions, the cumulative PnL
curve), the latest swaps with the position each belongs to, and the data's own clock (the newest
swap), which is the default "now" of a replayed world.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.engine import Engine

from kolray.db.tables import Kol, KolStatRow, PositionRow, SwapRow
from kolray.serve.schemas import iso

LAMPORTS_PER_SOL = 1_000_000_000
TIME_FIELDS = ("last_entry_time", "last_exit_time")


def stats_out(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """A ``kol_stats.stats`` snapshot as the API shows it: times as ISO-8601, NaN as null."""
    if stats is None:
        return None
    out = dict(stats)
    for name in TIME_FIELDS:
        out[name] = iso(out.get(name))
    for name, value in out.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[name] = None
    return out


def _sort_value(stats: dict[str, Any], key: str) -> tuple[int, float]:
    value = stats.get(key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return (1, 0.0)  # unknown values go last whatever the direction
    return (0, -float(value))


@dataclass
class LeaderboardRows:
    """The leaderboard read: snapshot time, number of KOLs, and (wallet, name, statistics) rows."""

    as_of: int | None
    total: int
    rows: list[tuple[str, str | None, dict[str, Any]]]  # wallet, name, stats


def leaderboard(
    engine: Engine, window: str, sort: str, limit: int, search: str | None = None
) -> LeaderboardRows:
    """KOLs by ``sort`` (descending; unknown values last; wallet breaks ties), for one window.

    ``search``: case-insensitive substring of the name, or of the wallet."""
    with engine.connect() as conn:
        result = conn.execute(
            select(KolStatRow.wallet, KolStatRow.as_of, KolStatRow.stats, Kol.name)
            .join(Kol, Kol.wallet == KolStatRow.wallet, isouter=True)
            .where(KolStatRow.window == window)
        ).all()
    needle = (search or "").strip().lower()
    rows = [
        (r.wallet, r.name, r.stats, r.as_of)
        for r in result
        if not needle or needle in r.wallet.lower() or needle in (r.name or "").lower()
    ]
    rows.sort(key=lambda r: (*_sort_value(r[2], sort), r[0]))
    as_of = max((r.as_of for r in result), default=None)
    return LeaderboardRows(as_of=as_of, total=len(rows), rows=[(w, n, s) for w, n, s, _ in rows[:limit]])


def stats_as_of(engine: Engine) -> int | None:
    """The time of the current statistics snapshot (the analyzer writes one ``as_of`` for all)."""
    with engine.connect() as conn:
        return conn.execute(select(func.max(KolStatRow.as_of))).scalar()


def data_clock(engine: Engine) -> int | None:
    """One second after the newest swap: "now" for the data, whatever the wall clock says."""
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(SwapRow.block_time))).scalar()
    return None if newest is None else int(newest) + 1


@dataclass
class KolRecord:
    """Everything the database holds about one KOL for ``GET /v1/kols/{wallet}``."""

    wallet: str
    name: str | None
    links: list[str]
    tracked: bool
    as_of: int | None
    stats: dict[str, dict[str, Any] | None]
    open_positions: int
    positions: list[dict[str, Any]]
    pnl_curve: list[tuple[int, float]]


def _position_out(row: PositionRow) -> dict[str, Any]:
    return {
        "mint": row.mint,
        "seq": row.seq,
        "status": row.status,
        "entry_time": iso(row.entry_time),
        "exit_time": iso(row.exit_time),
        "entry_dex": row.entry_dex,
        "cost_sol": row.cost_sol,
        "proceeds_sol": row.proceeds_sol,
        "fees_sol": row.fees_sol,
        "realised_pnl_sol": row.realised_pnl_sol,
        "multiple": row.multiple,
        "hold_s": row.hold_s,
        "unrealised_value_sol": row.unrealised_value_sol,
        "flags": list(row.flags or []),
    }


def kol_record(engine: Engine, wallet: str, limit: int = 100) -> KolRecord | None:
    """Everything the KOL page shows; None when kolray knows nothing of the wallet (neither
    tracked nor with a position)."""
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        kol = session.execute(select(Kol).where(Kol.wallet == wallet)).scalar_one_or_none()
        stat_rows = session.execute(select(KolStatRow).where(KolStatRow.wallet == wallet)).scalars().all()
        # The newest snapshot per window (the analyzer keeps one; be robust to leftovers).
        latest: dict[str, KolStatRow] = {}
        for row in stat_rows:
            if row.window not in latest or row.as_of > latest[row.window].as_of:
                latest[row.window] = row
        positions = (
            session.execute(
                select(PositionRow)
                .where(PositionRow.wallet == wallet)
                .order_by(PositionRow.entry_time.desc(), PositionRow.seq.desc())
                .limit(limit)
            )
            .scalars()
            .all()
        )
        open_count = session.execute(
            select(func.count())
            .select_from(PositionRow)
            .where(PositionRow.wallet == wallet, PositionRow.status == "open")
        ).scalar_one()
        closed = session.execute(
            select(PositionRow.exit_time, PositionRow.realised_pnl_sol)
            .where(
                PositionRow.wallet == wallet,
                PositionRow.status == "closed",
                PositionRow.realised_pnl_sol.is_not(None),
            )
            .order_by(PositionRow.exit_time, PositionRow.id)
        ).all()
        if kol is None and not stat_rows and not positions:
            return None
        curve: list[tuple[int, float]] = []
        total = 0.0
        for exit_time, pnl in closed:
            # Both are set: the query keeps closed positions with a PnL, and closing sets exit_time.
            assert exit_time is not None and pnl is not None
            total += float(pnl)
            curve.append((int(exit_time), total))
        return KolRecord(
            wallet=wallet,
            name=kol.name if kol else None,
            links=list(kol.links or []) if kol else [],
            tracked=kol is not None,
            as_of=max((r.as_of for r in latest.values()), default=None),
            stats={w: stats_out(latest[w].stats) if w in latest else None for w in ("7d", "30d", "all")},
            open_positions=int(open_count),
            positions=[_position_out(p) for p in positions],
            pnl_curve=curve,
        )


@dataclass
class SwapView:
    """One swap of the recent-trades list, with its position's state."""

    signature: str
    time: int
    wallet: str
    name: str | None
    mint: str
    side: str
    sol_amount: float
    dex: str
    position_status: str | None = None
    multiple: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def recent_swaps(engine: Engine, limit: int, wallet: str | None = None) -> list[SwapView]:
    """The newest swaps (by block time), each with the position it belongs to: the position of
    the same (wallet, mint) whose span [entry, exit] holds the swap's time. Swaps newer than the
    last analyzer run belong to no position yet (status null)."""
    with engine.connect() as conn:
        query = (
            select(
                SwapRow.signature,
                SwapRow.block_time,
                SwapRow.wallet,
                SwapRow.mint,
                SwapRow.side,
                SwapRow.sol_amount,
                SwapRow.dex,
                Kol.name,
            )
            .join(Kol, Kol.wallet == SwapRow.wallet, isouter=True)
            .where(SwapRow.block_time.is_not(None))
            .order_by(SwapRow.block_time.desc(), SwapRow.id.desc())
            .limit(limit)
        )
        if wallet:
            query = query.where(SwapRow.wallet == wallet)
        swaps = conn.execute(query).all()
        pairs = sorted({(s.wallet, s.mint) for s in swaps})
        spans: dict[tuple[str, str], list[tuple[int, int | None, str, float | None]]] = defaultdict(list)
        if pairs:
            rows = conn.execute(
                select(
                    PositionRow.wallet,
                    PositionRow.mint,
                    PositionRow.entry_time,
                    PositionRow.exit_time,
                    PositionRow.status,
                    PositionRow.multiple,
                ).where(tuple_(PositionRow.wallet, PositionRow.mint).in_(pairs))
            ).all()
            for r in rows:
                spans[(r.wallet, r.mint)].append((r.entry_time, r.exit_time, r.status, r.multiple))
    views = []
    for s in swaps:
        view = SwapView(
            signature=s.signature,
            time=int(s.block_time),
            wallet=s.wallet,
            name=s.name,
            mint=s.mint,
            side=s.side,
            sol_amount=s.sol_amount / LAMPORTS_PER_SOL,
            dex=s.dex,
        )
        # A closing sell and a re-opening buy can share a second: a buy belongs to the latest
        # position entered by then, a sell to the earliest one still open then.
        candidates = [
            span
            for span in sorted(spans.get((s.wallet, s.mint), ()), key=lambda span: span[0])
            if span[0] <= view.time and (span[1] is None or view.time <= span[1])
        ]
        if candidates:
            _, _, view.position_status, view.multiple = candidates[-1 if s.side == "buy" else 0]
        views.append(view)
    return views


def kol_choices(engine: Engine) -> list[tuple[str, str | None]]:
    """Tracked KOLs (wallet, name), named ones first, for pickers."""
    with engine.connect() as conn:
        rows = conn.execute(select(Kol.wallet, Kol.name).where(Kol.active.is_(True))).all()
    return sorted(
        ((r.wallet, r.name) for r in rows), key=lambda r: (r[1] is None, (r[1] or "").lower(), r[0])
    )


def first_close_times(engine: Engine, wallets: list[str]) -> dict[str, int]:
    """Each wallet's earliest position close (wallets with none are absent): a buy at t has a
    record behind it exactly when t is after that time."""
    if not wallets:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(PositionRow.wallet, func.min(PositionRow.exit_time))
            .where(PositionRow.wallet.in_(sorted(set(wallets))), PositionRow.exit_time.is_not(None))
            .group_by(PositionRow.wallet)
        ).all()
    return {wallet: int(t) for wallet, t in rows if t is not None}
