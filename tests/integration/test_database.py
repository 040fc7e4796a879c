"""The schema on SQLite and PostgreSQL: migrations, big raw amounts, uniqueness, concurrent writers."""

import threading

import pytest
from sqlalchemy import func, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from kolray.db.engine import make_engine, session_scope
from kolray.db.migrate import current_revision, head_revision, upgrade
from kolray.db.tables import Base, SwapRow

U64_MAX = 2**64 - 1


def swap_values(signature: str, **overrides):
    values = dict(
        signature=signature,
        slot=1,
        block_time=1_700_000_000,
        wallet="W" * 44,
        mint="M" * 44,
        side="buy",
        token_amount=U64_MAX,
        token_decimals=6,
        sol_amount=1_000_000_000,
        dex="pumpfun",
    )
    values.update(overrides)
    return values


def test_migrations_build_the_whole_schema(db) -> None:
    assert current_revision(db) == head_revision()
    assert set(inspect(db).get_table_names()) >= set(Base.metadata.tables)


def test_migrations_match_the_models(db) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with db.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], "models changed without a migration: add one in kolray/db/migrations/versions"


def test_upgrade_keeps_existing_rows(db_url: str) -> None:
    engine = upgrade(db_url)
    with session_scope(engine) as session:
        session.execute(insert(SwapRow).values(**swap_values("sig-1")))
    engine2 = upgrade(db_url)  # a second start, same schema: nothing is dropped
    with session_scope(engine2) as session:
        assert session.scalar(select(func.count()).select_from(SwapRow)) == 1


def test_raw_amounts_beyond_int64_round_trip(db) -> None:
    with session_scope(db) as session:
        session.execute(insert(SwapRow).values(**swap_values("sig-big")))
    with session_scope(db) as session:
        assert session.scalar(select(SwapRow.token_amount)) == U64_MAX


def test_swap_key_is_unique(db) -> None:
    with session_scope(db) as session:
        session.execute(insert(SwapRow).values(**swap_values("sig-dup")))
    with pytest.raises(IntegrityError), session_scope(db) as session:
        session.execute(insert(SwapRow).values(**swap_values("sig-dup", sol_amount=5)))


def test_concurrent_writers_all_land(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(25):
                with session_scope(engine) as session:
                    session.execute(insert(SwapRow).values(**swap_values(f"sig-{n}-{i}")))
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(SwapRow)) == 100
    engine.dispose()
