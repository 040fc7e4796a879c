"""What every command shares: one-line failures, settings, the database, progress output."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console

from kolray.config import Settings, SettingsError, get_settings

console = Console(stderr=True)
out = Console()


class CommandError(Exception):
    """A failure to report to the user as one line, exit status 2 (bad input) or 1 (runtime)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> NoReturn:
    raise CommandError(message, code)


def settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as error:
        fail(str(error))


def database():
    """The configured database, migrated to the current schema."""
    from kolray.db.migrate import upgrade
    from kolray.secrets import redact_url

    config = settings()
    try:
        return upgrade(config.database_url)
    except Exception as error:  # connection refused, bad credentials, read-only file, ...
        from kolray.secrets import redact_text

        fail(
            f"cannot open database {redact_url(config.database_url)}: {redact_text(str(error).splitlines()[0])}",
            1,
        )


def not_yet(issue: int, what: str) -> NoReturn:
    """For commands whose stage has not landed: say so, exit non-zero."""
    typer.echo(f"kolray {what}: not available in this build yet (issue #{issue})", err=True)
    raise typer.Exit(3)


def echo_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
