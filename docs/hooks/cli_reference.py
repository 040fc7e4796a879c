"""MkDocs hook: the CLI reference page shows what ``kolray <command> --help`` prints.

Rendered at build time from the typer application itself, so the page cannot drift from the
options, their defaults or the commands that exist (a hand-written copy did).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from kolray.cli import app

MARKER = "<!-- kolray-cli-reference -->"
WIDTH = 100


def _commands(command: Any, path: list[str]) -> list[list[str]]:
    # Typer ships its own copy of click: walk groups by their ``commands`` mapping.
    found: list[list[str]] = []
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if sub.hidden:
            continue
        found.append([*path, name])
        found.extend(_commands(sub, [*path, name]))
    return found


def _help(args: list[str]) -> str:
    result = CliRunner().invoke(
        app,
        [*args, "--help"],
        env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH), "NO_COLOR": "1", "TERM": "dumb"},
        terminal_width=WIDTH,
    )
    if result.exit_code != 0:
        raise RuntimeError(f"kolray {' '.join(args)} --help exited {result.exit_code}: {result.output}")
    return "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())


def render() -> str:
    sections = []
    for args in _commands(typer.main.get_command(app), []):
        title = "kolray " + " ".join(args)
        sections.append(f"## `{title}`\n\n```text\n{_help(args)}\n```\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
