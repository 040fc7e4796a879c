"""The configured database for a command: migrated, or a one-line failure."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from kolray.commands._common import fail, settings
from kolray.db.migrate import upgrade
from kolray.secrets import redact_text, redact_url


def database() -> Engine:
    """The configured database, migrated to the current schema."""
    config = settings()
    try:
        return upgrade(config.database_url)
    except Exception as error:  # connection refused, bad credentials, read-only file, ...
        reason = redact_text(str(error).splitlines()[0])
        fail(f"cannot open database {redact_url(config.database_url)}: {reason}", 1)
