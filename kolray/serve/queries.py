"""What the API reads from the database: the analyzer's tables, shaped for the routes.

Plain synchronous functions of an engine (the routes run them in a thread pool): the leaderboard
(``kol_stats`` joined with ``kols``), one KOL's record (statistics, positions, the cumulative PnL
curve, the unrealised PnL of its open positions), the latest swaps with the position each belongs
to, one token's market (its tape, gaps, and the KOLs' swaps and positions in it), and the data's
own clock (the newest swap), which is the default "now" of a replayed world.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, or_, select, tuple_
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from kolray.analyzer.positions import SWAP_FIELDS, swap_price_sol
from kolray.db.tables import Kol, KolStatRow, PositionRow, SwapRow, TapePointRow
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
    unrealised_pnl_sol: float | None
    positions: list[dict[str, Any]]
    pnl_curve: list[tuple[int, float]]


def unrealised_by_wallet(conn: Connection, wallets: list[str]) -> dict[str, float]:
    """Each wallet's unrealised PnL summed over its open, marked positions (the analyzer's
    ``unrealised_pnl_sol``: the value at the mark less the cost of the tokens still held); wallets
    without one are absent."""
    if not wallets:
        return {}
    rows = conn.execute(
        select(PositionRow.wallet, func.sum(PositionRow.unrealised_pnl_sol))
        .where(
            PositionRow.wallet.in_(sorted(set(wallets))),
            PositionRow.status == "open",
            PositionRow.unrealised_pnl_sol.is_not(None),
        )
        .group_by(PositionRow.wallet)
    ).all()
    return {wallet: float(total) for wallet, total in rows if total is not None}


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


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
        "unrealised_pnl_sol": _finite(row.unrealised_pnl_sol),
        "peak_multiple": _finite(row.peak_multiple),
        "peak_time": iso(row.peak_time),
        "time_to_peak_s": None if row.peak_time is None else int(row.peak_time) - int(row.entry_time),
        "drawdown": _finite(row.drawdown),
        "missed_gain_sol": _finite(row.missed_gain_sol),
        "copy_multiple": _finite(row.copy_multiple),
        "flags": list(row.flags or []),
    }


def kol_record(engine: Engine, wallet: str, limit: int = 100) -> KolRecord | None:
    """Everything the KOL page shows; None when kolray knows nothing of the wallet (neither
    tracked nor with a position)."""
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
        unrealised = unrealised_by_wallet(session.connection(), [wallet]).get(wallet)
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
            unrealised_pnl_sol=unrealised,
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


# One token's market


@dataclass
class TapeGap:
    """Consecutive tape reads without a price, for the same reason."""

    start: int
    end: int
    reads: int
    reason: str


@dataclass
class TokenRecord:
    """Everything ``GET /v1/tokens/{mint}`` shows, with times in unix seconds."""

    points: list[dict[str, Any]]  # the priced tape points kept (downsampled when too many)
    points_total: int
    latest: dict[str, Any] | None  # the newest priced point in the window
    gaps: list[TapeGap]
    trades: list[dict[str, Any]]
    trades_truncated: bool
    positions: list[dict[str, Any]]
    first_entry: tuple[int, float | None] | None  # the first KOL buy ever: time, price
    peak: tuple[float, int] | None  # the highest price at or after the first buy: price, time


TAPE_FIELDS = ("slot", "time", "price_sol", "market_cap_sol", "liquidity_sol", "venue", "graduated", "source")
MAX_TOKEN_POSITIONS = 1000
# What a swap's price is computed from (kolray.analyzer.positions.swap_price_sol).
SWAP_COLUMNS = tuple(getattr(SwapRow, name) for name in SWAP_FIELDS)


def _window(column: Any, since: int | None, until: int | None) -> list[Any]:
    """SQL conditions for ``since <= column <= until`` (an absent bound: no condition)."""
    conditions = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column <= until)
    return conditions


def split_tape(rows: list[Any]) -> tuple[list[Any], list[TapeGap]]:
    """Tape rows in time order → the priced rows and the gaps; consecutive gap rows with the same
    note are one gap (a token whose curve is missing fails every read, for the same reason)."""
    points: list[Any] = []
    gaps: list[TapeGap] = []
    open_gap: TapeGap | None = None
    for row in rows:
        if row.price_sol is None or not math.isfinite(row.price_sol):
            reason = row.note or "no price read"
            if open_gap is not None and open_gap.reason == reason:
                open_gap.end, open_gap.reads = int(row.time), open_gap.reads + 1
            else:
                open_gap = TapeGap(int(row.time), int(row.time), 1, reason)
                gaps.append(open_gap)
            continue
        open_gap = None
        points.append(row)
    return points, gaps


def _tape_point(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in TAPE_FIELDS}


def downsample(times: np.ndarray, prices: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` of the points, in time order: the span cut into equal
    time buckets, each keeping its lowest and its highest price (peaks and troughs survive a
    stride), and always the first and the newest point."""
    n = len(times)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, (max_points - 2) // 2)
    span = int(times[-1]) - int(times[0]) + 1
    bucket = ((times - times[0]) * buckets // span).astype(np.int64)
    order = np.lexsort((np.arange(n), prices, bucket))  # by bucket, then price, then time
    starts = np.flatnonzero(np.r_[True, bucket[order][1:] != bucket[order][:-1]])
    ends = np.r_[starts[1:], n] - 1
    keep = np.unique(np.r_[order[starts], order[ends], 0, n - 1])
    return keep


def _tape(conn: Any, mint: str, since: int | None, until: int | None) -> list[Any]:
    return list(
        conn.execute(
            select(*(getattr(TapePointRow, name) for name in TAPE_FIELDS), TapePointRow.note)
            .where(TapePointRow.mint == mint, *_window(TapePointRow.time, since, until))
            .order_by(TapePointRow.time, TapePointRow.slot)
        ).all()
    )


def _trades(conn: Any, mint: str, since: int | None, until: int | None, cap: int) -> list[Any]:
    rows = conn.execute(
        select(*SWAP_COLUMNS, Kol.name)
        .join(Kol, Kol.wallet == SwapRow.wallet, isouter=True)
        .where(
            SwapRow.mint == mint, SwapRow.block_time.is_not(None), *_window(SwapRow.block_time, since, until)
        )
        .order_by(SwapRow.block_time.desc(), SwapRow.id.desc())
        .limit(cap + 1)
    ).all()
    return list(reversed(rows))


def _trade_out(row: Any) -> dict[str, Any]:
    return {
        "signature": row.signature,
        "time": int(row.block_time),
        "wallet": row.wallet,
        "name": row.name,
        "side": row.side,
        "price_sol": swap_price_sol(row),
        "sol_amount": row.sol_amount / LAMPORTS_PER_SOL,
        "token_amount": int(row.token_amount) / 10 ** int(row.token_decimals),
        "dex": row.dex,
    }


def _positions_in(conn: Any, mint: str, since: int | None, until: int | None) -> list[dict[str, Any]]:
    """The positions in ``mint`` that overlap the window: entered by ``until``, open or closed
    at or after ``since``."""
    conditions = [PositionRow.mint == mint]
    if until is not None:
        conditions.append(PositionRow.entry_time <= until)
    if since is not None:
        conditions.append(or_(PositionRow.exit_time.is_(None), PositionRow.exit_time >= since))
    # A Session on the connection: an ORM entity in a select comes back whole, not as columns.
    rows = (
        Session(bind=conn)
        .execute(
            select(PositionRow, Kol.name)
            .join(Kol, Kol.wallet == PositionRow.wallet, isouter=True)
            .where(*conditions)
            .order_by(PositionRow.entry_time.desc(), PositionRow.seq.desc(), PositionRow.id.desc())
            .limit(MAX_TOKEN_POSITIONS)
        )
        .all()
    )
    return [{**_position_out(position), "wallet": position.wallet, "name": name} for position, name in rows]


def _first_entry(conn: Any, mint: str) -> tuple[int, float | None] | None:
    row = conn.execute(
        select(*SWAP_COLUMNS)
        .where(SwapRow.mint == mint, SwapRow.side == "buy", SwapRow.block_time.is_not(None))
        .order_by(SwapRow.block_time, SwapRow.id)
        .limit(1)
    ).first()
    return None if row is None else (int(row.block_time), swap_price_sol(row))


def _peak(
    times: np.ndarray, prices: np.ndarray, trades: list[dict[str, Any]], since: int | None
) -> tuple[float, int] | None:
    """The highest price at or after ``since`` over the tape (``times``, ``prices``, in time
    order) and the swaps; the earliest on ties."""
    if since is None:
        return None
    candidates = [
        (t["price_sol"], t["time"]) for t in trades if t["time"] >= since and t["price_sol"] is not None
    ]
    after = np.flatnonzero(times >= since)
    if len(after):
        best = after[np.argmax(prices[after])]  # argmax: the first, so the earliest of equal highs
        candidates.append((float(prices[best]), int(times[best])))
    if not candidates:
        return None
    price, time_ = max(candidates, key=lambda c: (c[0], -c[1]))
    return float(price), int(time_)


def known_mint(engine: Engine, mint: str) -> bool:
    """Whether kolray has anything on ``mint``: a tape row or a swap."""
    with engine.connect() as conn:
        tape = conn.execute(select(TapePointRow.id).where(TapePointRow.mint == mint).limit(1)).first()
        swap = None if tape else conn.execute(select(SwapRow.id).where(SwapRow.mint == mint).limit(1)).first()
    return tape is not None or swap is not None


def token_market(
    engine: Engine, mint: str, since: int | None, until: int | None, max_points: int, max_trades: int
) -> TokenRecord | None:
    """The token's tape (priced points, downsampled to ``max_points``, and gaps), the KOLs' swaps
    and positions in the window; None when kolray has neither a tape row nor a swap of it."""
    if not known_mint(engine, mint):
        return None
    with engine.connect() as conn:
        points, gaps = split_tape(_tape(conn, mint, since, until))
        trade_rows = _trades(conn, mint, since, until, max_trades)
        positions = _positions_in(conn, mint, since, until)
        first_entry = _first_entry(conn, mint)
    truncated = len(trade_rows) > max_trades
    trades = [_trade_out(r) for r in trade_rows[-max_trades:]]
    # Arrays for the whole tape, dicts only for the points kept: a long tape is mostly dropped.
    times = np.fromiter((p.time for p in points), dtype=np.int64, count=len(points))
    prices = np.fromiter((p.price_sol for p in points), dtype=np.float64, count=len(points))
    return TokenRecord(
        points=[_tape_point(points[i]) for i in downsample(times, prices, max_points)],
        points_total=len(points),
        latest=_tape_point(points[-1]) if points else None,
        gaps=gaps,
        trades=trades,
        trades_truncated=truncated,
        positions=positions,
        first_entry=first_entry,
        peak=_peak(times, prices, trades, None if first_entry is None else first_entry[0]),
    )


def token_choices(engine: Engine, limit: int) -> list[tuple[str, int]]:
    """The most recently traded tokens, newest trade first: (mint, KOLs that traded it)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(SwapRow.mint, func.count(func.distinct(SwapRow.wallet)))
            .where(SwapRow.block_time.is_not(None))
            .group_by(SwapRow.mint)
            .order_by(func.max(SwapRow.block_time).desc(), SwapRow.mint)
            .limit(limit)
        ).all()
    return [(mint, int(kols)) for mint, kols in rows]
