"""The analyzer's database stage: swaps → positions → KOL statistic snapshots, incrementally.

One run:

1. **Snapshot.** ``W`` = the largest swap id such that every swap with an id ≤ W is committed (on
   PostgreSQL a brief ``SHARE`` lock on ``swaps`` waits out in-flight inserts, whose sequence ids
   may commit out of order; SQLite writers are serialised already). Everything below reads only
   swaps with ``id <= W``, so a run is a function of that snapshot, whatever the tracker does
   meanwhile.
2. **Positions.** A full run rebuilds every wallet; an incremental one only the (wallet, mint)
   pairs that have swaps with ``previous W < id <= W`` (a late-arriving, older swap lands there
   too and rebuilds its pair from scratch). Positions depend only on their pair's swaps, so this
   is exact. Wallets go in batches; a wallet's positions and statistics are replaced in one
   transaction, so readers never see half a wallet.
3. **Statistics.** Snapshots per wallet for windows 7d/30d/all, as of ``T``: by default one second
   after the newest swap (the data's own clock, so a replayed world gets a meaningful leaderboard
   and a rerun gives the same result). Wallets whose positions changed are recomputed; when ``T``
   moved, so are the wallets with a position entered or closed in the span a window slid over;
   every other wallet's statistics are provably unchanged and only get the new ``as_of``.
4. **Marks.** Open positions are marked with the last price of their mint (any wallet); only mints
   with new swaps (or newly written open positions) can have a new mark.
5. **Watermark.** ``meta['analyzer']`` records W, T and the definitions version, last, in its own
   transaction. A run marks the state incomplete before it writes anything, so after a crash the
   next run rebuilds in full (wallets left at the dead run's as-of time cannot be trusted to slide).

Swaps are append-only (the tracker's exactly-once contract). After deleting or editing swaps by
hand, run a full rebuild (``kolray analyze --full``); a change of ``ANALYZER_VERSION`` forces one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    String,
    and_,
    bindparam,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
    values,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import aliased

from kolray.analyzer.outcomes import (
    PEAK_HORIZON_S,
    PRICED_SWAP_SQL,
    TAPE_PRICE_SQL,
    PricePaths,
    attach_outcomes,
    outcome_of,
)
from kolray.analyzer.positions import (
    SWAP_FIELDS,
    Position,
    build_ledger,
    is_sol_valued,
    leg_from_values,
    swap_price_sol,
    unrealised_pnl,
    unrealised_value,
)
from kolray.analyzer.stats import WINDOWS, kol_stats_windows
from kolray.chain.types import WSOL_MINT
from kolray.db.locks import database_lock
from kolray.db.tables import KolStatRow, Meta, PositionRow, Run, SwapRow, TapePointRow, now_s

log = logging.getLogger(__name__)

# Bump when a definition in positions.py / stats.py changes: stored rows are then rebuilt in full.
ANALYZER_VERSION = "2"  # 2: positions carry their market outcome (kolray.analyzer.outcomes)
META_KEY = "analyzer"
# Any 64-bit constant: the PostgreSQL advisory lock that keeps two analyze runs apart.
PG_LOCK_KEY = 0x6B6F6C_616E61
# Up to this many swaps (whole wallets) or (wallet, mint) pairs are rebuilt per transaction.
BATCH_SWAPS = 20_000
BATCH_PAIRS = 400
BATCH_WALLETS = 200
# Beyond this many changed pairs an incremental run rebuilds the changed wallets whole, so that
# memory stays bounded by the number of wallets rather than pairs.
MAX_PAIRS = 20_000

Progress = Callable[[str, int, int], None]  # (phase, done, total)

# In SWAP_FIELDS order, so that rows turn into legs without attribute lookups.
SWAP_COLUMNS = tuple(getattr(SwapRow, name) for name in SWAP_FIELDS)
_CHAIN_ORDER = (SwapRow.block_time, SwapRow.slot, SwapRow.signature)


class AnalyzeBusy(RuntimeError):
    """Another analyze run holds the database."""


@dataclass
class AnalyzeSummary:
    """What one run did (also stored in ``runs.summary``)."""

    mode: str  # full | incremental
    reason: str  # why this mode
    swap_watermark: int  # W: every swap with id <= W was analysed
    previous_watermark: int | None
    as_of: int | None  # T of the statistic snapshots (None: no swaps yet)
    wallets: int = 0  # wallets whose positions were rebuilt (whole or some pairs)
    pairs: int | None = None  # (wallet, mint) pairs rebuilt (None: whole wallets)
    swaps_read: int = 0
    positions_written: int = 0
    open_positions_written: int = 0
    untracked_sells: int = 0
    skipped_swaps: int = 0
    stats_wallets: int = 0  # wallets whose statistics were recomputed
    marks_updated: int = 0
    outcomes_updated: int = 0  # positions not rebuilt whose market outcome moved with new prices
    seconds: float = 0.0
    run_id: int | None = None
    _times: dict[str, float] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("_times")
        values["phase_seconds"] = {k: round(v, 3) for k, v in self._times.items()}
        return values

    def line(self) -> str:
        from datetime import UTC, datetime

        when = "no swaps yet"
        if self.as_of is not None:
            when = "stats as of " + datetime.fromtimestamp(self.as_of, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        pairs = "" if self.pairs is None else f" ({self.pairs} pairs)"
        return (
            f"analyze {self.mode}: {self.wallets} wallets{pairs}, {self.swaps_read} swaps → "
            f"{self.positions_written} positions ({self.open_positions_written} open), "
            f"{self.untracked_sells} untracked sells; {self.stats_wallets} wallets' stats, "
            f"{self.marks_updated} marks, {self.outcomes_updated} outcomes; {when}; {self.seconds:.2f} s"
        )


@dataclass
class _Unit:
    """A wallet to rebuild: all its mints (``mints is None``) or some."""

    wallet: str
    mints: list[str] | None
    weight: int


# Entry point


def analyze(
    engine: Engine,
    full: bool = False,
    *,
    as_of: int | None = None,
    progress: Progress | None = None,
) -> AnalyzeSummary:
    """Bring ``positions`` and ``kol_stats`` up to date with ``swaps``.

    Incremental by default (only what changed since the last run); ``full`` rebuilds everything.
    Both give the same rows. ``as_of`` fixes the statistics' time (default: one second after the
    newest swap). Raises :class:`AnalyzeBusy` when another run holds the database. The run is
    recorded in ``runs`` (kind ``analyze``).
    """
    started = time.perf_counter()
    with analyzer_lock(engine):
        with engine.begin() as conn:
            run_id = conn.execute(
                insert(Run).values(kind="analyze", started_at=now_s(), status="running").returning(Run.id)
            ).scalar_one()
        try:
            summary = _analyze(engine, full, as_of, progress or (lambda phase, done, total: None))
        except BaseException as error:
            with engine.begin() as conn:
                conn.execute(
                    update(Run)
                    .where(Run.id == run_id)
                    .values(
                        status="failed",
                        finished_at=now_s(),
                        summary={"error": f"{type(error).__name__}: {error}"[:500]},
                    )
                )
            raise
        summary.seconds = time.perf_counter() - started
        summary.run_id = run_id
        with engine.begin() as conn:
            conn.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(status="ok", finished_at=now_s(), summary=summary.to_dict())
            )
    log.info(summary.line())
    return summary


def _analyze(engine: Engine, full: bool, as_of: int | None, progress: Progress) -> AnalyzeSummary:
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    # 1. Snapshot
    with engine.begin() as conn:
        state = _read_state(conn)
        watermark = committed_watermark(conn)
        tape_watermark = int(conn.scalar(select(func.max(TapePointRow.id))) or 0)
    reason = "requested" if full else "incremental"
    if not full:
        if state is None:
            full, reason = True, "first run"
        elif state.get("version") != ANALYZER_VERSION:
            full, reason = True, f"definitions changed ({state.get('version')} → {ANALYZER_VERSION})"
        elif not state.get("complete", False):
            # A run that died half-way left some wallets at its own as-of time; start clean.
            full, reason = True, "the previous run did not finish"
    # The state an incremental run continues from (None: a full run).
    base = None if full else state
    previous = None if base is None else int(base["swap_id"])
    with engine.begin() as conn:
        if base is None:
            newest = conn.scalar(select(func.max(SwapRow.block_time)).where(SwapRow.id <= watermark))
            data_as_of = None if newest is None else int(newest) + 1
        else:
            newest = conn.scalar(
                select(func.max(SwapRow.block_time)).where(SwapRow.id > previous, SwapRow.id <= watermark)
            )
            # Swaps are append-only, so the newest block time so far is the old one or a new one.
            candidates = [base.get("data_as_of"), None if newest is None else int(newest) + 1]
            data_as_of = max((c for c in candidates if c is not None), default=None)
    target = as_of if as_of is not None else data_as_of
    summary = AnalyzeSummary(
        mode="full" if full else "incremental",
        reason=reason,
        swap_watermark=watermark,
        previous_watermark=previous,
        as_of=target,
    )
    summary._times = timings
    if state is not None:
        with engine.begin() as conn:
            _write_state(conn, {**state, "complete": False})
    lap("snapshot")

    # 2. Positions (+ statistics of the wallets rebuilt)
    units = (
        _full_units(engine, watermark) if previous is None else _changed_units(engine, previous, watermark)
    )
    summary.wallets = len(units)
    if not full and all(unit.mints is not None for unit in units):
        summary.pairs = sum(len(unit.mints or ()) for unit in units)
    marked_mints: set[str] = set()
    done = 0
    # Popular tokens are in many wallets, so in many batches: read each mint's prices once.
    with engine.begin() as conn:
        if previous is None:
            paths = read_price_paths(conn, None, watermark, tape_watermark)
        else:
            # The mints of the pairs rebuilt (whole wallets: every mint they traded), read once:
            # batches share popular tokens.
            whole = [unit.wallet for unit in units if unit.mints is None]
            needed = {mint for unit in units for mint in unit.mints or ()}
            for index in range(0, len(whole), BATCH_WALLETS):
                needed.update(
                    conn.scalars(
                        select(SwapRow.mint)
                        .where(
                            SwapRow.wallet.in_(whole[index : index + BATCH_WALLETS]), SwapRow.id <= watermark
                        )
                        .distinct()
                    )
                )
            paths = read_price_paths(conn, sorted(needed), watermark, tape_watermark)
    lap("prices")
    for batch in _batches(units):
        with engine.begin() as conn:
            _rebuild_batch(conn, batch, watermark, target, summary, marked_mints, paths)
        done += len(batch)
        progress("positions", done, len(units))
    lap("positions")
    rebuilt = {unit.wallet for unit in units}

    if full:
        # Wallets whose swaps are gone (hand edits) keep no rows.
        with engine.begin() as conn:
            known = select(SwapRow.wallet).where(SwapRow.id <= watermark).distinct()
            conn.execute(delete(PositionRow).where(PositionRow.wallet.not_in(known)))
            conn.execute(delete(KolStatRow).where(KolStatRow.wallet.not_in(known)))

    # 3. Statistics of wallets whose windows slid over a position's entry or exit
    previous_as_of = None if full or state is None else state.get("as_of")
    if target is not None and previous_as_of is not None and previous_as_of != target:
        moved = [w for w in _wallets_touched_by_time(engine, int(previous_as_of), target) if w not in rebuilt]
        for index in range(0, len(moved), BATCH_WALLETS):
            chunk = moved[index : index + BATCH_WALLETS]
            with engine.begin() as conn:
                positions = _read_positions(conn, chunk)
                _write_stats(conn, chunk, positions, target)
            summary.stats_wallets += len(chunk)
            progress("stats", index + len(chunk), len(moved))
        with engine.begin() as conn:
            # Every other snapshot is the same as of the new time (see _wallets_touched_by_time).
            conn.execute(update(KolStatRow).where(KolStatRow.as_of != target).values(as_of=target))
    lap("stats")

    # 4. Marks
    mints: list[str]
    if full:
        with engine.begin() as conn:
            mints = list(
                conn.scalars(
                    select(PositionRow.mint)
                    .where(PositionRow.status == "open")
                    .distinct()
                    .order_by(PositionRow.mint)
                ).all()
            )
    else:
        with engine.begin() as conn:
            new_mints = conn.scalars(
                select(SwapRow.mint).where(SwapRow.id > previous, SwapRow.id <= watermark).distinct()
            ).all()
            # Open positions whose token's market (kolray.market) moved on since their mark.
            market_moved = conn.scalars(
                select(PositionRow.mint)
                .join(TapePointRow, TapePointRow.mint == PositionRow.mint)
                .where(
                    PositionRow.status == "open",
                    TapePointRow.price_sol.is_not(None),
                    TapePointRow.time > func.coalesce(PositionRow.mark_time, 0),
                )
                .distinct()
            ).all()
        mints = sorted(marked_mints.union(new_mints, market_moved))
    for index in range(0, len(mints), BATCH_PAIRS):
        chunk = mints[index : index + BATCH_PAIRS]
        with engine.begin() as conn:
            summary.marks_updated += _refresh_marks(conn, chunk, watermark)
        progress("marks", index + len(chunk), len(mints))
    lap("marks")

    # 4b. Outcomes of positions not rebuilt whose mint has new prices: a swap of another wallet, a
    # late-arriving old swap, or new tape points (a history backfill can add them long after).
    if base is not None:
        with engine.begin() as conn:
            # Per mint, the earliest new price: positions whose window and exit both end before it
            # cannot change.
            new_since: dict[str, int] = {}
            new_prices = (
                select(SwapRow.mint, func.min(SwapRow.block_time))
                .where(SwapRow.id > previous, SwapRow.id <= watermark, SwapRow.block_time.is_not(None))
                .group_by(SwapRow.mint),
                select(TapePointRow.mint, func.min(TapePointRow.time))
                .where(TapePointRow.id > int(base.get("tape_id", 0)), TapePointRow.id <= tape_watermark)
                .group_by(TapePointRow.mint),
            )
            for query in new_prices:
                for mint, since in conn.execute(query):
                    if since is not None:
                        new_since[mint] = min(int(since), new_since.get(mint, int(since)))
        moved_mints = sorted(new_since)
        changed_wallets: set[str] = set()
        for index in range(0, len(moved_mints), BATCH_PAIRS):
            chunk = moved_mints[index : index + BATCH_PAIRS]
            with engine.begin() as conn:
                updated, wallets = _refresh_outcomes(
                    conn, {mint: new_since[mint] for mint in chunk}, watermark, tape_watermark
                )
            summary.outcomes_updated += updated
            changed_wallets |= wallets
            progress("outcomes", index + len(chunk), len(moved_mints))
        # A follower's result feeds the statistics (copyability): recompute where it moved (none
        # without a time to take them at).
        if target is not None:
            restat = sorted(changed_wallets - rebuilt)
            for index in range(0, len(restat), BATCH_WALLETS):
                chunk = restat[index : index + BATCH_WALLETS]
                with engine.begin() as conn:
                    _write_stats(conn, chunk, _read_positions(conn, chunk), target)
                summary.stats_wallets += len(chunk)
    lap("outcomes")

    # 5. Watermark
    with engine.begin() as conn:
        _write_state(
            conn,
            {
                "version": ANALYZER_VERSION,
                "swap_id": watermark,
                "tape_id": tape_watermark,
                "as_of": target,
                "data_as_of": data_as_of,
                "complete": True,
            },
        )
    lap("watermark")
    return summary


def iter_wallet_positions(
    engine: Engine, wallets: Sequence[str] | None = None, *, batch_wallets: int = BATCH_WALLETS
) -> Iterator[tuple[str, list[Position]]]:
    """Stored positions, one wallet at a time in wallet order (all wallets with positions, or
    ``wallets``), each list in (mint, seq) order: for the feature pipeline and backtests, in
    memory bounded by a batch of wallets (build a :class:`KolStatsIndex` per wallet)."""
    if wallets is None:
        with engine.begin() as conn:
            wallets = conn.scalars(select(PositionRow.wallet).distinct().order_by(PositionRow.wallet)).all()
    else:
        wallets = sorted(set(wallets))
    columns = [column for column in PositionRow.__table__.columns if column.name != "id"]
    for index in range(0, len(wallets), batch_wallets):
        chunk = list(wallets[index : index + batch_wallets])
        grouped: dict[str, list[Position]] = {wallet: [] for wallet in chunk}
        with engine.begin() as conn:
            for row in conn.execute(
                select(*columns)
                .where(PositionRow.wallet.in_(chunk))
                .order_by(PositionRow.wallet, PositionRow.mint, PositionRow.seq)
            ):
                grouped[row.wallet].append(Position.from_row(row))
        yield from grouped.items()


def parse_as_of(value: str) -> int:
    """A time for ``--as-of``: unix seconds, ISO-8601 (UTC when it has no zone) or ``now``."""
    from datetime import UTC, datetime

    text_value = value.strip()
    if text_value.lower() == "now":
        return int(time.time())
    if text_value.lstrip("-").isdigit():
        return int(text_value)
    try:
        parsed = datetime.fromisoformat(text_value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not unix seconds, an ISO-8601 time or 'now'") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


# Snapshot and work


def analyzer_lock(engine: Engine) -> contextlib.AbstractContextManager[None]:
    """One analyze run per database at a time: a PostgreSQL advisory lock, or a lock file beside
    the SQLite database (both released by the OS/server if the process dies). Other stages hold it
    to keep positions still while they read them; raises :class:`AnalyzeBusy` if held."""
    return database_lock(
        engine,
        pg_key=PG_LOCK_KEY,
        file_suffix="-analyze.lock",
        busy=AnalyzeBusy("another kolray analyze is running on this database"),
    )


def _read_state(conn: Connection) -> dict[str, Any] | None:
    value = conn.scalar(select(Meta.value).where(Meta.key == META_KEY))
    return value if isinstance(value, dict) else None


def _write_state(conn: Connection, value: dict[str, Any]) -> None:
    if conn.scalar(select(func.count()).select_from(Meta).where(Meta.key == META_KEY)):
        conn.execute(update(Meta).where(Meta.key == META_KEY).values(value=value, updated_at=now_s()))
    else:
        conn.execute(insert(Meta).values(key=META_KEY, value=value, updated_at=now_s()))


def committed_watermark(conn: Connection) -> int:
    """The largest swap id below which nothing can still appear."""
    if conn.dialect.name == "postgresql":
        # Sequence ids are handed out before commit: a transaction holding id 7 may commit after one
        # holding id 8. SHARE mode waits for every open inserter and keeps new ones out for the
        # instant of the read, so max(id) then covers every id below it.
        conn.execute(text("SET LOCAL lock_timeout = '120s'"))
        conn.execute(text("LOCK TABLE swaps IN SHARE MODE"))
    return int(conn.scalar(select(func.max(SwapRow.id))) or 0)


def _full_units(engine: Engine, watermark: int) -> list[_Unit]:
    with engine.begin() as conn:
        rows = conn.execute(
            select(SwapRow.wallet, func.count())
            .where(SwapRow.id <= watermark)
            .group_by(SwapRow.wallet)
            .order_by(SwapRow.wallet)
        ).all()
    return [_Unit(wallet, None, count) for wallet, count in rows]


def _changed_units(engine: Engine, previous: int, watermark: int) -> list[_Unit]:
    new = and_(SwapRow.id > previous, SwapRow.id <= watermark)
    with engine.begin() as conn:
        per_wallet = conn.execute(
            select(SwapRow.wallet, func.count(SwapRow.mint.distinct()))
            .where(new)
            .group_by(SwapRow.wallet)
            .order_by(SwapRow.wallet)
        ).all()
        if sum(count for _, count in per_wallet) <= MAX_PAIRS:
            mints_of: dict[str, list[str]] = {}
            for wallet, mint in conn.execute(
                select(SwapRow.wallet, SwapRow.mint)
                .where(new)
                .distinct()
                .order_by(SwapRow.wallet, SwapRow.mint)
            ):
                mints_of.setdefault(wallet, []).append(mint)
            return [_Unit(wallet, mints, len(mints)) for wallet, mints in mints_of.items()]
    changed = {wallet for wallet, _ in per_wallet}
    return [unit for unit in _full_units(engine, watermark) if unit.wallet in changed]


def _batches(units: Sequence[_Unit]) -> Iterator[list[_Unit]]:
    """Whole wallets per batch, up to BATCH_SWAPS swaps (whole-wallet units) or BATCH_PAIRS pairs."""
    batch: list[_Unit] = []
    weight = 0
    for unit in units:
        limit = BATCH_SWAPS if unit.mints is None else BATCH_PAIRS
        if batch and (weight + unit.weight > limit or len(batch) >= BATCH_WALLETS):
            yield batch
            batch, weight = [], 0
        batch.append(unit)
        weight += unit.weight
    if batch:
        yield batch


# Rebuilding


def _rebuild_batch(
    conn: Connection,
    batch: list[_Unit],
    watermark: int,
    as_of: int | None,
    summary: AnalyzeSummary,
    marked_mints: set[str],
    paths: PricePaths,
) -> None:
    whole = [unit.wallet for unit in batch if unit.mints is None]
    pairs = [(unit.wallet, mint) for unit in batch for mint in unit.mints or ()]
    rows: list[Any] = []
    if whole:
        rows += conn.execute(
            select(*SWAP_COLUMNS)
            .where(SwapRow.wallet.in_(whole), SwapRow.id <= watermark)
            .order_by(SwapRow.wallet, SwapRow.mint, *_CHAIN_ORDER)
        ).all()
    for index in range(0, len(pairs), BATCH_PAIRS):
        chunk = pairs[index : index + BATCH_PAIRS]
        rows += conn.execute(
            select(*SWAP_COLUMNS).where(
                tuple_(SwapRow.wallet, SwapRow.mint).in_(chunk), SwapRow.id <= watermark
            )
        ).all()
    # Marks come last, for every open position of a mint at once (see _refresh_marks).
    legs = [leg_from_values(*row) for row in rows]
    summary.swaps_read += len(rows)
    del rows
    placed = [leg for leg in legs if leg is not None]
    summary.skipped_swaps += len(legs) - len(placed)
    del legs
    ledger = build_ledger(placed, marks={})
    summary.untracked_sells += len(ledger.untracked_sells)

    attach_outcomes(ledger.positions, paths)

    if whole:
        conn.execute(delete(PositionRow).where(PositionRow.wallet.in_(whole)))
    for index in range(0, len(pairs), BATCH_PAIRS):
        chunk = pairs[index : index + BATCH_PAIRS]
        conn.execute(delete(PositionRow).where(tuple_(PositionRow.wallet, PositionRow.mint).in_(chunk)))
    if ledger.positions:
        conn.execute(insert(PositionRow), [position.to_row() for position in ledger.positions])
    summary.positions_written += len(ledger.positions)
    for position in ledger.positions:
        if not position.closed:
            summary.open_positions_written += 1
            marked_mints.add(position.mint)

    if as_of is None:
        return
    wallets = [unit.wallet for unit in batch]
    if pairs:
        # Only some pairs were rebuilt: the statistics need the wallets' other positions too.
        positions = _read_positions(conn, wallets)
    else:
        positions = {wallet: [] for wallet in wallets}
        for position in ledger.positions:
            positions[position.wallet].append(position)
    _write_stats(conn, wallets, positions, as_of)
    summary.stats_wallets += len(wallets)


# What kol_stats reads of a position: enough to rebuild statistics without the other columns.
_STATS_COLUMNS = (
    PositionRow.wallet,
    PositionRow.mint,
    PositionRow.seq,
    PositionRow.status,
    PositionRow.entry_time,
    PositionRow.exit_time,
    PositionRow.cost_lamports,
    PositionRow.proceeds_lamports,
    PositionRow.fees_lamports,
    PositionRow.hold_weighted_s,
    PositionRow.flags,
    PositionRow.copy_multiple,
)


def _read_positions(conn: Connection, wallets: Sequence[str]) -> dict[str, list[Position]]:
    """The stored positions of ``wallets``, with the fields statistics use (the rest default)."""
    positions: dict[str, list[Position]] = {wallet: [] for wallet in wallets}
    for wallet, mint, seq, status, entry, exit_, cost, proceeds, fees, hold_w, flags, copy in conn.execute(
        select(*_STATS_COLUMNS).where(PositionRow.wallet.in_(list(wallets)))
    ):
        positions[wallet].append(
            Position(
                wallet=wallet,
                mint=mint,
                seq=seq,
                status="closed" if status == "closed" else "open",
                entry_time=entry,
                exit_time=exit_,
                entry_signature="",
                entry_dex="",
                token_decimals=0,
                cost_lamports=cost,
                proceeds_lamports=proceeds,
                fees_lamports=fees,
                hold_weighted_s=hold_w,
                flags=list(flags),
                copy_multiple=copy,
            )
        )
    return positions


def _write_stats(
    conn: Connection, wallets: Sequence[str], positions: dict[str, list[Position]], as_of: int
) -> None:
    conn.execute(delete(KolStatRow).where(KolStatRow.wallet.in_(list(wallets))))
    rows = [
        {"wallet": wallet, "as_of": as_of, "window": window, "stats": stats.snapshot()}
        for wallet in wallets
        for window, stats in kol_stats_windows(positions[wallet], as_of, WINDOWS, wallet=wallet).items()
    ]
    if rows:
        conn.execute(insert(KolStatRow), rows)


def _wallets_touched_by_time(engine: Engine, before: int, after: int) -> list[str]:
    """Wallets whose statistics can differ between as-of ``before`` and ``after``.

    A window [T − w, T) moving from ``before`` to ``after`` gains or loses exactly the positions
    whose exit (closed counts, sums, recent form, last exit) or entry (trades, last entry) lies in
    [min − w, max − w) or [min, max); a wallet with none there has the same statistics.
    """
    low, high = min(before, after), max(before, after)
    spans = [(low, high)] + [(low - span, high - span) for span in WINDOWS.values() if span is not None]
    touched = or_(
        *(
            or_(
                and_(PositionRow.exit_time >= a, PositionRow.exit_time < b),
                and_(PositionRow.entry_time >= a, PositionRow.entry_time < b),
            )
            for a, b in spans
        )
    )
    with engine.begin() as conn:
        return list(
            conn.scalars(select(PositionRow.wallet).where(touched).distinct().order_by(PositionRow.wallet))
        )


def _refresh_marks(conn: Connection, mints: Sequence[str], watermark: int) -> int:
    """Mark every open position in ``mints`` with its mint's last price: its last swap's (same rule as
    :func:`kolray.analyzer.positions.last_prices`), or the market tape's where that is newer (the
    token's own market, :mod:`kolray.market`); returns how many positions were updated."""
    # Per mint, the newest swap that reveals a price: a correlated LIMIT 1 per mint walks the
    # (mint, block_time) index backwards, so the cost does not grow with a mint's history.
    wanted = values(column("mint", String), name="wanted").data([(mint,) for mint in mints]).cte("wanted")
    other = aliased(SwapRow)
    newest = (
        select(other.id)
        .where(
            other.mint == wanted.c.mint,
            other.id <= watermark,
            other.block_time.is_not(None),
            other.token_amount != 0,
            or_(
                other.price_sol.is_not(None),
                and_(or_(other.quote_mint.is_(None), other.quote_mint == WSOL_MINT), other.sol_amount > 0),
            ),
        )
        .order_by(other.block_time.desc(), other.slot.desc().nulls_last(), other.signature.desc())
        .limit(1)
        .correlate(wanted)
        .scalar_subquery()
    )
    marks: dict[str, tuple[float, int]] = {}
    for row in conn.execute(select(*SWAP_COLUMNS).where(SwapRow.id.in_(select(newest).select_from(wanted)))):
        price = swap_price_sol(row)
        if price is not None:
            marks[row.mint] = (price, int(row.block_time))
    # The token's own market, where the market stage has read it later than the last swap.
    newest_tape = (
        select(TapePointRow.mint, func.max(TapePointRow.time).label("time"))
        .where(TapePointRow.mint.in_(list(mints)), TapePointRow.price_sol.is_not(None))
        .group_by(TapePointRow.mint)
        .subquery()
    )
    tape_marks = conn.execute(
        select(TapePointRow.mint, TapePointRow.time, TapePointRow.price_sol)
        .join(
            newest_tape,
            and_(TapePointRow.mint == newest_tape.c.mint, TapePointRow.time == newest_tape.c.time),
        )
        .where(TapePointRow.price_sol.is_not(None))
    )
    for mint, tape_time, tape_price in tape_marks:
        if tape_price is not None and (mint not in marks or int(tape_time) > marks[mint][1]):
            marks[mint] = (float(tape_price), int(tape_time))
    updates = []
    for position_id, mint, bought, sold, decimals, cost, flags in conn.execute(
        select(
            PositionRow.id,
            PositionRow.mint,
            PositionRow.tokens_bought,
            PositionRow.tokens_sold,
            PositionRow.token_decimals,
            PositionRow.cost_lamports,
            PositionRow.flags,
        ).where(PositionRow.status == "open", PositionRow.mint.in_(list(mints)))
    ):
        mark = marks.get(mint)
        price = None if mark is None else mark[0]
        seen = None if mark is None else mark[1]
        value = None if price is None else unrealised_value(bought - sold, decimals, price)
        sol_valued = is_sol_valued(flags or [], cost)
        updates.append(
            {
                "pid": position_id,
                "price": price,
                "seen": seen,
                "value": value,
                "pnl": unrealised_pnl(value, cost, bought, bought - sold)
                if value is not None and sol_valued
                else None,
            }
        )
    if updates:
        conn.execute(
            update(PositionRow)
            .where(PositionRow.id == bindparam("pid"))
            .values(
                last_price_sol=bindparam("price"),
                mark_time=bindparam("seen"),
                unrealised_value_sol=bindparam("value"),
                unrealised_pnl_sol=bindparam("pnl"),
            ),
            updates,
        )
    return len(updates)


# Market outcomes (kolray.analyzer.outcomes)


def read_price_paths(
    conn: Connection, mints: Sequence[str] | None, watermark: int, tape_watermark: int | None = None
) -> PricePaths:
    """Every price of ``mints`` (``None``: of every mint) in the snapshot: priced swaps with
    ``id <= watermark`` and tape points with ``id <= tape_watermark`` (all when ``None``). Held as
    four numeric columns (about 28 bytes a price), mints as codes."""
    tape_bound = "" if tape_watermark is None else " AND t.id <= :tw"
    in_mints = "" if mints is None else " AND {alias}.mint IN :mints"
    sql = text(
        "SELECT s.mint, s.block_time, s.price_sol, s.slot FROM swaps s "
        f"WHERE s.id <= :w AND {PRICED_SWAP_SQL}{in_mints.format(alias='s')} "
        "UNION ALL SELECT t.mint, t.time, t.price_sol, t.slot FROM market_tape t "
        f"WHERE {TAPE_PRICE_SQL}{tape_bound}{in_mints.format(alias='t')}"
    )
    if mints is not None:
        sql = sql.bindparams(bindparam("mints", expanding=True))
    chunks = (
        [None]
        if mints is None
        else [list(mints[i : i + BATCH_PAIRS]) for i in range(0, len(mints), BATCH_PAIRS)]
    )
    codes_of: dict[str, int] = {}
    codes: list[int] = []
    times: list[int] = []
    prices: list[float] = []
    slots: list[int] = []
    for chunk in chunks:
        params: dict[str, Any] = {"w": watermark}
        if chunk is not None:
            params["mints"] = chunk
        if tape_watermark is not None:
            params["tw"] = tape_watermark
        for mint, when, price, slot in conn.execute(sql, params):
            codes.append(codes_of.setdefault(mint, len(codes_of)))
            times.append(when)
            prices.append(price)
            slots.append(-1 if slot is None else slot)
    return PricePaths.from_codes(
        list(codes_of),
        np.array(codes, dtype=np.int64),
        np.array(times, dtype=np.int64),
        np.array(prices, dtype=np.float64),
        np.array(slots, dtype=np.int64),
    )[0]


_OUTCOME_FIELDS = ("peak_multiple", "peak_time", "drawdown", "missed_gain_sol", "copy_multiple")


def _refresh_outcomes(
    conn: Connection, since: dict[str, int], watermark: int, tape_watermark: int
) -> tuple[int, set[str]]:
    """Recompute the market outcome of the positions in ``since``'s mints that a new price at or
    after ``since[mint]`` can change (their 7-day window or their exit reaches it, or they are
    open); returns how many rows changed and the wallets whose ``copy_multiple`` did (their
    statistics read it)."""
    paths = read_price_paths(conn, sorted(since), watermark, tape_watermark)
    moved = values(column("mint", String), column("since", BigInteger), name="moved").data(
        list(since.items())
    )
    moved_cte = moved.cte("moved")
    reached = or_(
        PositionRow.entry_time + PEAK_HORIZON_S >= moved_cte.c.since,
        PositionRow.exit_time.is_(None),
        PositionRow.exit_time >= moved_cte.c.since,
    )
    columns = (
        PositionRow.id,
        PositionRow.wallet,
        PositionRow.mint,
        PositionRow.entry_time,
        PositionRow.entry_price_sol,
        PositionRow.exit_time,
        PositionRow.tokens_sold,
        PositionRow.token_decimals,
        PositionRow.proceeds_sol,
        *(getattr(PositionRow, name) for name in _OUTCOME_FIELDS),
    )
    updates: list[dict[str, Any]] = []
    wallets: set[str] = set()
    for row in conn.execute(
        select(*columns).join(moved_cte, PositionRow.mint == moved_cte.c.mint).where(reached)
    ):
        outcome = outcome_of(paths, row)
        old = tuple(getattr(row, name) for name in _OUTCOME_FIELDS)
        new = tuple(getattr(outcome, name) for name in _OUTCOME_FIELDS)
        if old != new:
            updates.append(
                {
                    "pid": row.id,
                    **{f"o_{name}": value for name, value in zip(_OUTCOME_FIELDS, new, strict=True)},
                }
            )
            if old[-1] != new[-1]:
                wallets.add(row.wallet)
    if updates:
        conn.execute(
            update(PositionRow)
            .where(PositionRow.id == bindparam("pid"))
            .values({name: bindparam(f"o_{name}") for name in _OUTCOME_FIELDS}),
            updates,
        )
    return len(updates), wallets


__all__ = [
    "ANALYZER_VERSION",
    "AnalyzeBusy",
    "AnalyzeSummary",
    "analyze",
    "analyzer_lock",
    "iter_wallet_positions",
    "parse_as_of",
    "read_price_paths",
]
