"""``kolray analyze``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from kolray.analyzer import AnalyzeBusy, parse_as_of
from kolray.analyzer import analyze as run_analyze
from kolray.commands._common import console, fail
from kolray.commands._database import database

_PHASES = {
    "positions": "rebuilding positions (wallets)",
    "stats": "sliding stat windows (wallets)",
    "marks": "marking open positions (mints)",
}


def analyze(
    full: Annotated[
        bool, typer.Option("--full", help="Rebuild every wallet from scratch instead of only what changed.")
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Time of the statistic snapshots: unix seconds, ISO-8601 (UTC without a zone) or 'now'. "
            "Default: one second after the newest swap.",
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Swaps → positions → KOL statistics (incremental).

    Only wallets with new swaps since the last run are rebuilt (late, older swaps included); the
    result equals a full rebuild. Statistics use positions closed before the as-of time.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    when = None
    if as_of is not None:
        try:
            when = parse_as_of(as_of)
        except ValueError as error:
            fail(f"--as-of: {error}")
    engine = database()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(_PHASES.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)

        try:
            summary = run_analyze(engine, full=full, as_of=when, progress=progress)
        except AnalyzeBusy as error:
            fail(str(error), 1)
    typer.echo(json.dumps(summary.to_dict()) if json_ else summary.line())
