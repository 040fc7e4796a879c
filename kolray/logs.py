"""One place to configure logging: structured fields, console or JSON, secrets redacted.

Modules log through the standard library (``logging.getLogger(__name__)``) and pass fields with
``extra={"wallet": w, "swaps": n}``. The formatter renders those fields; the filter masks secrets in
the message, its arguments, the fields and exception texts, so nothing leaks whichever library logs.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kolray.config import get_settings
from kolray.secrets import redact_text

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _redact_arg(value: Any) -> Any:
    """Numbers stay numbers (``%d`` needs them); anything else is rendered and redacted: an HTTP
    client logs a URL object, whose text holds the key."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(value if isinstance(value, str) else str(value))


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(str(record.msg))
        if isinstance(record.args, Mapping):  # logger.info("%(url)s", {"url": ...})
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        elif record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_redact_arg(a) for a in args)
        for key, value in _fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact_text(value))
        # Another handler may have cached the unredacted traceback text on the record already.
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


# HTTP clients log request URLs, and an RPC provider's key is often in the URL's path.
HTTP_CLIENT_LOGGERS = ("httpx", "httpx2", "httpcore", "urllib3")


def redact_http_client_logs() -> None:
    """Redact at the HTTP clients' own loggers (idempotent): a filter there applies to every record
    they make, whichever handler (Ray's, a test runner's, the user's) ends up writing it."""
    for name in HTTP_CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(_fields(record))
        if record.exc_text:
            payload["exc"] = record.exc_text
        return json.dumps(payload, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}" + (
            f"  {fields}" if fields else ""
        )
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, not at install time.

    A CLI command run in-process (a test runner, a notebook) swaps ``sys.stderr`` for a buffer it
    later closes; a handler holding the old object would then fail on every record.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str | None = None, fmt: str | None = None, stream: Any = None) -> None:
    """Install the kolray handler on the root logger (idempotent; call in every process and actor)."""
    if level is None or fmt is None:
        try:
            settings = get_settings()
            level = level or settings.log_level
            fmt = fmt or settings.log_format
        except Exception:  # settings errors are reported by the caller; logging still works
            level, fmt = level or "INFO", fmt or "console"
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_kolray", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream) if stream is not None else CurrentStderrHandler()
    handler._kolray = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    # Handlers installed by others (Ray's, a test runner's) get the same redaction.
    for other in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in other.filters):
            other.addFilter(RedactingFilter())
    root.setLevel(level)
    redact_http_client_logs()
    # Chatty libraries stay at WARNING unless debugging.
    if level != "DEBUG":
        for name in (
            "httpx",
            "httpx2",
            "httpcore",
            "urllib3",
            "botocore",
            "s3fs",
            "asyncio",
            "filelock",
            "alembic",
        ):
            logging.getLogger(name).setLevel(logging.WARNING)
