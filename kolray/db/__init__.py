"""Database: schema, engines, migrations."""

from kolray.db.engine import dispose_engines, get_engine, make_engine, normalize_url, session_scope
from kolray.db.migrate import upgrade

__all__ = ["dispose_engines", "get_engine", "make_engine", "normalize_url", "session_scope", "upgrade"]
