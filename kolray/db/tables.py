"""The database schema (SQLAlchemy 2.x). Changes need an Alembic migration in ``db/migrations``.

Times are unix seconds (``BigInteger``) as the chain reports them: the same on SQLite and
PostgreSQL, cheap to compare, and what Arrow/Parquet pipelines read fastest. Raw token amounts are
u64 on chain, beyond a signed 64-bit column: they use :class:`RawAmount`.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for big tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def now_s() -> int:
    return int(time.time())


class RawAmount(TypeDecorator[int]):
    """A raw token amount (u64 on chain, summed up to ~u128): NUMERIC(39,0) on PostgreSQL, TEXT on
    SQLite (whose NUMERIC would round values above 2**63 to a float). Python sees ``int``."""

    impl = String(40)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(39, 0))
        return dialect.type_descriptor(String(40))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        number = int(value)
        return number if dialect.name == "postgresql" else str(number)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class Base(DeclarativeBase):
    pass


class Kol(Base):
    """A tracked wallet."""

    __tablename__ = "kols"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    wallet: Mapped[str] = mapped_column(String(44), unique=True, nullable=False)
    name: Mapped[str | None] = mapped_column(String(120))
    links: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    added_at: Mapped[int] = mapped_column(BigInteger, default=now_s, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)


class SwapRow(Base):
    """One :class:`kolray.chain.types.Swap`; unique on (signature, wallet, mint)."""

    __tablename__ = "swaps"
    __table_args__ = (
        UniqueConstraint("signature", "wallet", "mint", name="uq_swaps_sig_wallet_mint"),
        Index("ix_swaps_wallet_time", "wallet", "block_time"),
        Index("ix_swaps_mint_time", "mint", "block_time"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    signature: Mapped[str] = mapped_column(String(88), nullable=False)
    slot: Mapped[int | None] = mapped_column(BigInteger)
    block_time: Mapped[int | None] = mapped_column(BigInteger)
    wallet: Mapped[str] = mapped_column(String(44), nullable=False)
    mint: Mapped[str] = mapped_column(String(44), nullable=False)
    side: Mapped[str] = mapped_column(String(4), nullable=False)
    token_amount: Mapped[int] = mapped_column(RawAmount, nullable=False)
    token_decimals: Mapped[int] = mapped_column(Integer, nullable=False)
    sol_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    dex: Mapped[str] = mapped_column(String(32), nullable=False)
    program_id: Mapped[str | None] = mapped_column(String(44))
    quote_mint: Mapped[str | None] = mapped_column(String(44))
    quote_amount: Mapped[int | None] = mapped_column(RawAmount)
    quote_decimals: Mapped[int | None] = mapped_column(Integer)
    fee: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    rent: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    tips: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    price_sol: Mapped[float | None] = mapped_column(Float)
    market_cap_sol: Mapped[float | None] = mapped_column(Float)
    ingested_at: Mapped[int] = mapped_column(BigInteger, default=now_s, nullable=False)


class Cursor(Base):
    """How far a wallet's history has been ingested. Moves only in the transaction that writes the
    swaps it covers (exactly once)."""

    __tablename__ = "cursors"

    wallet: Mapped[str] = mapped_column(String(44), primary_key=True)
    # Newest signature whose transaction and every older one (within the backfill) is stored.
    newest_signature: Mapped[str | None] = mapped_column(String(88))
    newest_slot: Mapped[int | None] = mapped_column(BigInteger)
    newest_block_time: Mapped[int | None] = mapped_column(BigInteger)
    # Backfill pages backwards from here until done (first sight of a wallet).
    backfill_before: Mapped[str | None] = mapped_column(String(88))
    backfill_done: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    signatures_seen: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    swaps_stored: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    failed_txs: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    non_trade_txs: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    last_polled_at: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_s, onupdate=now_s, nullable=False)


class PositionRow(Base):
    """A position per (wallet, mint, seq): opened by a buy, closed when what is left is dust.

    Written by the analyzer (``kolray.analyzer``), following docs/analysis.md "Position rules". The
    ``*_lamports`` columns are the exact integer sums; the ``*_sol`` floats are derived from them.
    """

    __tablename__ = "positions"
    __table_args__ = (
        UniqueConstraint("wallet", "mint", "seq", name="uq_positions_wallet_mint_seq"),
        Index("ix_positions_wallet_exit", "wallet", "exit_time"),
        Index("ix_positions_entry", "entry_time"),
        Index("ix_positions_exit", "exit_time"),
        Index("ix_positions_mint_status", "mint", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    wallet: Mapped[str] = mapped_column(String(44), nullable=False)
    mint: Mapped[str] = mapped_column(String(44), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False)  # open | closed
    entry_time: Mapped[int] = mapped_column(BigInteger, nullable=False)
    exit_time: Mapped[int | None] = mapped_column(BigInteger)
    entry_signature: Mapped[str] = mapped_column(String(88), nullable=False)
    exit_signature: Mapped[str | None] = mapped_column(String(88))  # the sell that closed it
    entry_dex: Mapped[str] = mapped_column(String(32), nullable=False)
    entry_price_sol: Mapped[float | None] = mapped_column(Float)
    entry_market_cap_sol: Mapped[float | None] = mapped_column(Float)
    token_decimals: Mapped[int] = mapped_column(Integer, nullable=False)
    tokens_bought: Mapped[int] = mapped_column(RawAmount, nullable=False)
    tokens_sold: Mapped[int] = mapped_column(RawAmount, nullable=False)  # tracked: from the lots
    tokens_untracked: Mapped[int] = mapped_column(RawAmount, nullable=False)  # sold beyond the lots
    cost_lamports: Mapped[int] = mapped_column(BigInteger, nullable=False)
    proceeds_lamports: Mapped[int] = mapped_column(BigInteger, nullable=False)
    untracked_lamports: Mapped[int] = mapped_column(BigInteger, nullable=False)  # kept out of PnL
    fees_lamports: Mapped[int] = mapped_column(BigInteger, nullable=False)
    cost_sol: Mapped[float] = mapped_column(Float, nullable=False)
    proceeds_sol: Mapped[float] = mapped_column(Float, nullable=False)
    fees_sol: Mapped[float] = mapped_column(Float, nullable=False)
    realised_pnl_sol: Mapped[float | None] = mapped_column(Float)
    multiple: Mapped[float | None] = mapped_column(Float)
    hold_s: Mapped[int | None] = mapped_column(BigInteger)
    hold_weighted_s: Mapped[float | None] = mapped_column(Float)
    n_buys: Mapped[int] = mapped_column(Integer, nullable=False)
    n_sells: Mapped[int] = mapped_column(Integer, nullable=False)
    last_price_sol: Mapped[float | None] = mapped_column(Float)  # mark of an open position
    mark_time: Mapped[int | None] = mapped_column(BigInteger)  # when that price was seen
    unrealised_value_sol: Mapped[float | None] = mapped_column(Float)
    unrealised_pnl_sol: Mapped[float | None] = mapped_column(Float)  # value − cost of tokens held
    # The market around the position (kolray.analyzer.outcomes): filled by analyze.
    peak_multiple: Mapped[float | None] = mapped_column(Float)  # highest price ≤ 7 d after entry ÷ entry
    peak_time: Mapped[int | None] = mapped_column(BigInteger)
    drawdown: Mapped[float | None] = mapped_column(Float)  # largest fall from a running high, 0..1
    missed_gain_sol: Mapped[float | None] = mapped_column(Float)  # sold tokens at the post-exit peak
    copy_multiple: Mapped[float | None] = mapped_column(Float)  # a follower d seconds behind
    flags: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)


class KolStatRow(Base):
    """A KOL's statistics as of a time over a window, from positions closed before that time.

    The analyzer keeps one current snapshot per (wallet, window), all with the same ``as_of``;
    ``stats`` holds :class:`kolray.analyzer.KolStats` without its key fields.
    """

    __tablename__ = "kol_stats"
    __table_args__ = (UniqueConstraint("wallet", "as_of", "window", name="uq_kol_stats_wallet_asof_window"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    wallet: Mapped[str] = mapped_column(String(44), nullable=False)
    as_of: Mapped[int] = mapped_column(BigInteger, nullable=False)
    window: Mapped[str] = mapped_column(String(4), nullable=False)  # 7d | 30d | all
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class Meta(Base):
    """Small key/value state: watermarks of incremental stages, schema facts."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=False)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_s, onupdate=now_s, nullable=False)


class Run(Base):
    """One run of a stage (track, analyze, features, tune, ...) for ``kolray status``."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_kind_started", "kind", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    started_at: Mapped[int] = mapped_column(BigInteger, default=now_s, nullable=False)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="running", nullable=False)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)


class AlertRow(Base):
    """An alert that fired; ``dedupe_key`` makes the same alert fire once."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_created", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    rule: Mapped[str] = mapped_column(String(64), nullable=False)
    wallet: Mapped[str] = mapped_column(String(44), nullable=False)
    mint: Mapped[str] = mapped_column(String(44), nullable=False)
    signature: Mapped[str] = mapped_column(String(88), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    deliveries: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    message: Mapped[str | None] = mapped_column(Text)


class TapePointRow(Base):
    """A token's market at one slot, read from chain state by the market stage (``kolray.market``);
    unique on (mint, slot), so a re-read never duplicates. A row with no price is a gap: the
    market could not be read then, ``note`` says why."""

    __tablename__ = "market_tape"
    __table_args__ = (
        UniqueConstraint("mint", "slot", name="uq_market_tape_mint_slot"),
        Index("ix_market_tape_mint_time", "mint", "time"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    mint: Mapped[str] = mapped_column(String(44), nullable=False)
    slot: Mapped[int] = mapped_column(BigInteger, nullable=False)
    time: Mapped[int] = mapped_column(BigInteger, nullable=False)
    price_sol: Mapped[float | None] = mapped_column(Float)
    market_cap_sol: Mapped[float | None] = mapped_column(Float)
    liquidity_sol: Mapped[float | None] = mapped_column(Float)
    venue: Mapped[str | None] = mapped_column(String(32))
    graduated: Mapped[bool | None] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(8), nullable=False)  # live (accounts) | history (trades)
    note: Mapped[str | None] = mapped_column(Text)
