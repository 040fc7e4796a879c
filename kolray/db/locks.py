"""One process at a time per database for a named job: a PostgreSQL advisory lock, or a lock file
beside the SQLite database. Both are released by the server or the OS if the process dies."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text


@contextlib.contextmanager
def database_lock(engine: Engine, *, pg_key: int, file_suffix: str, busy: Exception) -> Iterator[None]:
    """Hold the lock for the block; raise ``busy`` at once if another process holds it. An in-memory
    or non-file SQLite database has no other process to exclude: the block runs unlocked."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            if not conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": pg_key}):
                raise busy
            conn.commit()
            try:
                yield
            finally:
                # A failed unlock means a broken connection, whose session (and lock) the server ends.
                with contextlib.suppress(Exception):
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": pg_key})
                    conn.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    import fcntl

    path = Path(database).expanduser()
    with open(path.with_name(path.name + file_suffix), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
