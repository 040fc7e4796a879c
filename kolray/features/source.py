"""Reading the database for features: snapshot, wallet shards, shard queries, online look-ups.

Reads never take a write lock: kolray's own SQLite engine begins every transaction with
``BEGIN IMMEDIATE`` (right for writers), so feature reads use a separate read-only engine per
process. Every read is pinned to the analyzer's snapshot: swaps with ``id <= W`` (the watermark
the ``positions`` table was built from), so a build is a function of one state of the database
even while the tracker keeps inserting.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url

from kolray.chain.types import WSOL_MINT
from kolray.db.engine import SQLITE_BUSY_TIMEOUT_MS, normalize_url
from kolray.features.context import POSITION_COLUMNS, MintEntries, normalise_position_frame
from kolray.secrets import redact_url

ANALYZER_META_KEY = "analyzer"  # kolray.analyzer.stage.META_KEY: {"swap_id": W, "as_of": T, ...}


class FeatureError(RuntimeError):
    """The features cannot be built from this database as it is; the message says why and what to do."""


# Engines


_read_engines: dict[str, Engine] = {}
_read_lock = threading.Lock()


def read_engine(url: str) -> Engine:
    """A process-wide engine for reading ``url`` that never locks out writers."""
    url = normalize_url(url)
    with _read_lock:
        engine = _read_engines.get(url)
        if engine is None:
            engine = _read_engines[url] = _make_read_engine(url)
        return engine


def _make_read_engine(url: str) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise FeatureError("an in-memory SQLite database cannot be shared with Ray workers: use a file")
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_conn: Any, _record: Any) -> None:
            # Autocommit reads (no implicit BEGIN) and a guarantee that feature code writes nothing.
            dbapi_conn.isolation_level = None
            dbapi_conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            dbapi_conn.execute("PRAGMA query_only=ON")

        return engine
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4).execution_options(
            postgresql_readonly=True
        )
    raise FeatureError(f"unsupported database URL {redact_url(url)}")


class ConnectionFactory:
    """A DB-API connection to the database (``read_sql``'s ``connection_factory`` contract), made in
    whichever process runs the read task. Picklable; its repr hides the URL's password."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)

    def __call__(self) -> Any:
        return read_engine(self.url).raw_connection()

    def __repr__(self) -> str:
        return f"ConnectionFactory({redact_url(self.url)})"

    def placeholder(self) -> str:
        """The DB-API parameter marker of the driver (``?`` for sqlite3, ``%s`` for psycopg)."""
        return "?" if make_url(self.url).get_backend_name() == "sqlite" else "%s"


# Snapshot


@dataclass(frozen=True)
class Snapshot:
    """The state of the database a build reads (recorded in the manifest's ``source``)."""

    database: str  # redacted URL
    dialect: str
    swap_watermark: int  # W: positions were built from swaps with id <= W
    max_swap_id: int  # the newest swap now (> W: the tracker stored swaps the analyzer has not seen)
    swaps: int  # swaps with id <= W
    positions: int
    open_positions: int
    wallets: int
    first_entry: int | None
    newest_swap_time: int | None  # block time of the newest swap with id <= W
    analyzer_as_of: int | None

    @property
    def stale_swaps(self) -> int:
        return max(self.max_swap_id - self.swap_watermark, 0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stale_swaps"] = self.stale_swaps
        return out


def read_snapshot(url: str) -> Snapshot:
    """What the analyzer last produced. Raises :class:`FeatureError` when it never ran."""
    engine = read_engine(url)
    with engine.connect() as conn:
        meta = conn.execute(text("SELECT value FROM meta WHERE key = :k"), {"k": ANALYZER_META_KEY}).scalar()
        if isinstance(meta, str):  # SQLite returns JSON as text through a raw text() query
            import json

            meta = json.loads(meta)
        if not isinstance(meta, dict) or "swap_id" not in meta:
            raise FeatureError("no positions yet: run `kolray analyze` first (features read its positions)")
        watermark = int(meta["swap_id"])
        swaps, newest = conn.execute(
            text("SELECT COUNT(*), MAX(block_time) FROM swaps WHERE id <= :w"), {"w": watermark}
        ).one()
        max_id = conn.execute(text("SELECT MAX(id) FROM swaps")).scalar() or 0
        positions, open_positions, wallets, first_entry = conn.execute(
            text(
                "SELECT COUNT(*), SUM(CASE WHEN status = 'open' THEN 1 ELSE 0 END), "
                "COUNT(DISTINCT wallet), MIN(entry_time) FROM positions"
            )
        ).one()
    return Snapshot(
        database=redact_url(url),
        dialect=engine.dialect.name,
        swap_watermark=watermark,
        max_swap_id=int(max_id),
        swaps=int(swaps),
        positions=int(positions),
        open_positions=int(open_positions or 0),
        wallets=int(wallets),
        first_entry=None if first_entry is None else int(first_entry),
        newest_swap_time=None if newest is None else int(newest),
        analyzer_as_of=None if meta.get("as_of") is None else int(meta["as_of"]),
    )


# Shards: contiguous wallet ranges holding whole wallets


@dataclass(frozen=True)
class WalletShard:
    index: int
    first_wallet: str  # inclusive bounds, in the database's own string order
    last_wallet: str
    positions: int
    wallets: int


def plan_shards(url: str, target_rows: int) -> list[WalletShard]:
    """Wallets in the database's order, packed into ranges of about ``target_rows`` positions. A
    wallet is never split (its statistics need all its positions); the bounds come from the
    database's ``ORDER BY``, so range queries use the same collation."""
    if target_rows < 1:
        raise ValueError("target_rows must be >= 1")
    with read_engine(url).connect() as conn:
        counts = conn.execute(
            text("SELECT wallet, COUNT(*) FROM positions GROUP BY wallet ORDER BY wallet")
        ).all()
    shards: list[WalletShard] = []
    start: str | None = None
    rows, wallets = 0, 0
    previous = ""  # the last wallet counted (set before any shard is cut)
    for wallet, n in counts:
        if start is not None and rows + n > target_rows:
            shards.append(WalletShard(len(shards), start, previous, rows, wallets))
            start, rows, wallets = None, 0, 0
        if start is None:
            start = wallet
        rows += int(n)
        wallets += 1
        previous = wallet
    if start is not None:
        shards.append(WalletShard(len(shards), start, previous, rows, wallets))
    return shards


# The shard query and its rows

_POSITION_SELECT = (
    "p.wallet, p.mint, p.seq, p.status, p.entry_time, p.exit_time, p.entry_signature, p.entry_dex, "
    "p.entry_market_cap_sol AS entry_mcap_sol, p.cost_lamports, p.proceeds_lamports, "
    "p.fees_lamports, p.hold_weighted_s, CAST(p.flags AS TEXT) AS flags, p.copy_multiple, "
    "s.sol_amount AS entry_lamports, s.quote_mint AS entry_quote_mint"
)
NO_WATERMARK = 2**62  # online reads: every stored swap


def positions_sql(mark: str, where: str, shard: WalletShard | None = None) -> str:
    """Positions with their opening buy's SOL leg (joined on the entry signature), for a WHERE
    clause on ``p``; the first parameter is the swap watermark. With a shard, its number and
    expected row count ride along as literal columns (integers, formatted by ``int``), so the batch
    function can prove it got the whole shard in one block."""
    head = "SELECT "
    if shard is not None:
        head += f"{int(shard.index)} AS shard, {int(shard.positions)} AS shard_rows, "
    return (
        f"{head}{_POSITION_SELECT} FROM positions p LEFT JOIN swaps s ON s.signature = p.entry_signature "
        f"AND s.wallet = p.wallet AND s.mint = p.mint AND s.id <= {mark} WHERE {where}"
    )


def shard_sql(factory: ConnectionFactory, shard: WalletShard, watermark: int) -> tuple[str, tuple[Any, ...]]:
    """``(sql, params)``: every position of the shard's wallets (DB-API placeholders)."""
    mark = factory.placeholder()
    sql = positions_sql(mark, f"p.wallet >= {mark} AND p.wallet <= {mark}", shard)
    return sql, (int(watermark), shard.first_wallet, shard.last_wallet)


def read_shard(factory: ConnectionFactory, shard: WalletShard, watermark: int) -> list[pa.Table]:
    """One shard's rows as one Arrow block (a :class:`PositionShards` read task)."""
    sql, params = shard_sql(factory, shard, watermark)
    table = _fetch_table(factory, sql, params)
    if table is None:
        raise FeatureError(f"shard {shard.index} ({shard.first_wallet}..{shard.last_wallet}) came back empty")
    return [table]


def _fetch_table(factory: ConnectionFactory, sql: str, params: tuple[Any, ...]) -> pa.Table | None:
    """Run a query on a DB-API connection; an Arrow table of the rows (None when there are none)."""
    connection = factory()
    try:
        cursor = connection.cursor()
        cursor.execute(sql, params)
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    finally:
        connection.close()
    if not rows:
        return None
    return pa.Table.from_pydict({n: [r[i] for r in rows] for i, n in enumerate(names)})


def _column(table: pa.Table, name: str) -> pa.ChunkedArray:
    return table.column(name)


def _floats(table: pa.Table, name: str) -> np.ndarray:
    column = _column(table, name)
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


def _ints(table: pa.Table, name: str) -> np.ndarray:
    column = pc.cast(_column(table, name), pa.int64())
    if column.null_count:
        raise FeatureError(f"column {name!r} has nulls")
    return column.to_numpy(zero_copy_only=False)


def _strings(table: pa.Table, name: str) -> np.ndarray:
    column = _column(table, name)
    if pa.types.is_null(column.type):
        return np.full(len(column), None, dtype=object)
    return np.asarray(column.to_pylist(), dtype=object)


def frame_from_rows(table: pa.Table) -> pd.DataFrame:
    """A position frame from :func:`shard_sql` rows (an Arrow table, or a pandas frame)."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    flags = _strings(table, "flags")
    flag_text = np.array(["" if f is None else str(f) for f in flags], dtype=object)
    lamports = _floats(table, "entry_lamports")
    quote = _strings(table, "entry_quote_mint")
    frame = pd.DataFrame(
        {
            "wallet": _strings(table, "wallet"),
            "mint": _strings(table, "mint"),
            "seq": _ints(table, "seq"),
            "closed": _strings(table, "status") == "closed",
            "entry_time": _ints(table, "entry_time"),
            "exit_time": _floats(table, "exit_time"),
            "entry_signature": _strings(table, "entry_signature"),
            "entry_dex": _strings(table, "entry_dex"),
            "entry_mcap_sol": _floats(table, "entry_mcap_sol"),
            "cost_lamports": _ints(table, "cost_lamports"),
            "proceeds_lamports": _ints(table, "proceeds_lamports"),
            "fees_lamports": _ints(table, "fees_lamports"),
            "hold_weighted_s": _floats(table, "hold_weighted_s"),
            # flags is a JSON list of names: a quoted name cannot match inside another one.
            "non_sol_leg": np.array(['"non_sol_leg"' in f for f in flag_text], dtype=bool),
            "untracked_sell": np.array(['"untracked_sell"' in f for f in flag_text], dtype=bool),
            "copy_multiple": _floats(table, "copy_multiple"),
            "entry_lamports": lamports,
            "entry_sol": (np.nan_to_num(lamports, nan=0.0) > 0)
            & np.array([q is None or q == WSOL_MINT for q in quote], dtype=bool),
            "oracle_p3x": np.full(table.num_rows, np.nan),
        }
    )
    return normalise_position_frame(frame)


# Token context of a shard: every entry in the tokens its wallets bought


def shard_tokens(url: str, shard: WalletShard, watermark: int) -> MintEntries:
    """Entries by every KOL in the mints the shard's wallets bought, and each mint's first swap."""
    touched = "SELECT p.mint FROM positions p WHERE p.wallet >= :lo AND p.wallet <= :hi"
    params = {"lo": shard.first_wallet, "hi": shard.last_wallet, "w": watermark}
    with read_engine(url).connect() as conn:
        entries = conn.execute(
            text(f"SELECT q.mint, q.wallet, q.entry_time FROM positions q WHERE q.mint IN ({touched})"),
            params,
        ).all()
        first = conn.execute(
            text(
                "SELECT s.mint, MIN(s.block_time) FROM swaps s "
                f"WHERE s.mint IN ({touched}) AND s.id <= :w AND s.block_time IS NOT NULL GROUP BY s.mint"
            ),
            params,
        ).all()
    return _mint_entries(entries, first)


def _mint_entries(entries: Sequence[Any], first: Sequence[Any]) -> MintEntries:
    mints = [r[0] for r in entries]
    wallets = [r[1] for r in entries]
    times = np.array([int(r[2]) for r in entries], dtype=np.int64)
    return MintEntries.build(mints, wallets, times, {m: float(t) for m, t in first})


# Whole-database reads (the in-memory baseline, tests) and online look-ups


def read_all_positions(url: str, watermark: int) -> pd.DataFrame:
    """Every position as one position frame (loads everything: small databases and baselines)."""
    factory = ConnectionFactory(url)
    table = _fetch_table(factory, positions_sql(factory.placeholder(), "1 = 1"), (int(watermark),))
    return empty_frame() if table is None else frame_from_rows(table)


def empty_frame() -> pd.DataFrame:
    return normalise_position_frame(pd.DataFrame(columns=list(POSITION_COLUMNS)))


def read_all_tokens(url: str, watermark: int) -> MintEntries:
    with read_engine(url).connect() as conn:
        entries = conn.execute(text("SELECT mint, wallet, entry_time FROM positions")).all()
        first = conn.execute(
            text(
                "SELECT mint, MIN(block_time) FROM swaps WHERE id <= :w AND block_time IS NOT NULL GROUP BY mint"
            ),
            {"w": watermark},
        ).all()
    return _mint_entries(entries, first)


def read_wallet_positions(url: str, wallets: Sequence[str]) -> pd.DataFrame:
    """Every position of some wallets (online: a request's KOLs), as a position frame."""
    if not wallets:
        return empty_frame()
    factory = ConnectionFactory(url)
    mark = factory.placeholder()
    sql = positions_sql(mark, f"p.wallet IN ({', '.join([mark] * len(wallets))})")
    table = _fetch_table(factory, sql, (NO_WATERMARK, *wallets))
    return empty_frame() if table is None else frame_from_rows(table)
