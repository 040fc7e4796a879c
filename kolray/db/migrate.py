"""Schema migrations (Alembic), run programmatically so users never need an alembic.ini.

Every entry point calls :func:`upgrade` before touching the database: a new database gets the whole
schema, an existing one is brought forward in place and keeps its rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from kolray.db.engine import get_engine, normalize_url

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_upgraded: set[str] = set()


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in URL-encoded passwords.
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade(url: str | None = None) -> Engine:
    """Bring the database at ``url`` (default: configured) to the newest schema; return its engine."""
    engine = get_engine(url)
    key = str(engine.url)
    if key in _upgraded:
        return engine
    if current_revision(engine) != head_revision():
        from alembic import command

        config = alembic_config(engine.url.render_as_string(hide_password=False))
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    _upgraded.add(key)
    return engine
