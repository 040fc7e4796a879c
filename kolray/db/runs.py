"""The run log ``kolray status`` reads: one row per finished run of a stage."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Engine

from kolray.config import get_settings
from kolray.db.engine import session_scope
from kolray.db.migrate import upgrade
from kolray.db.tables import Run, now_s

log = logging.getLogger(__name__)


def record_run(kind: str, status: str, summary: dict[str, Any], database: Engine | str | None = None) -> bool:
    """Add a finished run of ``kind`` (``track``, ``tune``, ``pipeline``, ...) to the ``runs`` table
    of ``database`` (default: the configured one, migrated first). Returns whether it was written:
    the run log is informative, so a database problem is logged, never raised — the run's real
    output (swaps, models, reports) is already stored."""

    try:
        if database is None:
            database = upgrade(get_settings().database_url)
        with session_scope(database) as session:
            session.add(Run(kind=kind, finished_at=now_s(), status=status, summary=_json_safe(summary)))
        return True
    except Exception as error:
        log.warning("run not recorded in the database", extra={"kind": kind, "error": str(error)})
        return False


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
