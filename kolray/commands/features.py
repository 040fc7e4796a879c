"""``kolray features``."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import typer

from kolray import storage
from kolray.analyzer import AnalyzeBusy, parse_as_of
from kolray.commands._common import console, default_of, fail, settings
from kolray.commands._database import database
from kolray.features.build import BuildOptions, build_features
from kolray.features.source import FeatureError
from kolray.features.splits import SplitFractions
from kolray.secrets import redact_text

_PHASES = {
    "plan": "planning (snapshot, shards, splits)",
    "shards": "token and KOL rows (wallet shards)",
}

# The model holds the shares; the option spells them as it takes them.
_DEFAULT_SPLIT = ",".join(f"{share:g}" for share in default_of(BuildOptions, "fractions").as_tuple())


def features(
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Storage URI to write under (a directory or s3://bucket/prefix). "
            "Default: KOLRAY_STORAGE_URI.",
        ),
    ] = None,
    dataset: Annotated[
        Literal["token", "kol", "all"], typer.Option("--dataset", help="Which dataset(s) to build.")
    ] = "all",
    horizon_hours: Annotated[
        float,
        typer.Option("--horizon-hours", help="Label horizon H: a buy is a 3x if it realises it within H."),
    ] = default_of(BuildOptions, "horizon_s") / 3600,
    embargo_hours: Annotated[
        float, typer.Option("--embargo-hours", help="Gap between train, validation and test.")
    ] = default_of(BuildOptions, "embargo_s") / 3600,
    split: Annotated[
        str, typer.Option("--split", help="Shares of train,val,test after purging (time order).")
    ] = _DEFAULT_SPLIT,
    cutoff: Annotated[
        str | None,
        typer.Option(
            "--cutoff",
            help="Build as of this time (unix seconds or ISO-8601 UTC): only rows whose outcome is known "
            "by then. Default: one second after the newest swap.",
        ),
    ] = None,
    oracle_world: Annotated[
        Path | None,
        typer.Option("--oracle-world", help="A twin world directory: add its oracle_p3x (evaluation only)."),
    ] = None,
    shard_rows: Annotated[
        int, typer.Option("--shard-rows", help="Positions per Ray task (whole wallets; memory follows it).")
    ] = default_of(BuildOptions, "shard_rows"),
    json_: Annotated[bool, typer.Option("--json", help="Print the build summary as JSON.")] = False,
) -> None:
    """Build the versioned token and KOL feature datasets (Ray Data).

    Point in time: a buy's features use only positions closed and buys made before it.
    A buy becomes a row once its outcome is known (entry + horizon before the cutoff).
    Splits are by time, with purging and an embargo. Run `kolray analyze` first.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    if horizon_hours <= 0:
        fail("--horizon-hours must be > 0")
    if embargo_hours < 0:
        fail("--embargo-hours must be >= 0")
    if shard_rows < 1:
        fail("--shard-rows must be >= 1")
    try:
        fractions = SplitFractions.parse(split)
    except ValueError as error:
        fail(f"--split: {str(error).splitlines()[-1] if 'validation error' in str(error) else error}")
    when = None
    if cutoff is not None:
        try:
            when = parse_as_of(cutoff)
        except ValueError as error:
            fail(f"--cutoff: {error}")
    if out is not None and "://" in out and not out.startswith(("s3://", "file://")):
        fail(f"--out: {out!r} is neither a directory nor s3://bucket/prefix")
    if oracle_world is not None and not oracle_world.is_dir():
        fail(f"--oracle-world: {oracle_world} is not a directory")
    options = BuildOptions(
        storage_uri=out,
        datasets=["token", "kol"] if dataset == "all" else [dataset],
        horizon_s=round(horizon_hours * 3600),
        embargo_s=round(embargo_hours * 3600),
        cutoff=when,
        fractions=fractions,
        oracle_world=None if oracle_world is None else str(oracle_world.resolve()),
        shard_rows=shard_rows,
    )
    url = settings().database_url
    root = out or settings().storage_uri  # a storage URI holds no secret (credentials are apart)
    try:
        # Before Ray starts: unwritable storage would otherwise surface as a task failure with
        # Ray Data's stack trace, after the snapshot and the planning.
        storage.check_writable(root)
    except OSError as error:
        fail(f"cannot write to {root}: {_reason(error)}", 1)

    database()  # migrated, or a one-line failure
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(_PHASES.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)
            if not console.is_terminal and done == total:
                console.print(f"{_PHASES.get(phase, phase)}: {done}/{total}")

        try:
            result = build_features(options, database_url=url, progress=progress)
        except (FeatureError, AnalyzeBusy) as error:
            fail(redact_text(str(error)), 1)
        except Exception as error:
            cause = _write_error(error)
            if cause is None:
                raise
            fail(f"cannot write to {root}: {redact_text(_reason(cause))}", 1)
    for name, why in result.skipped.items():
        console.print(f"[yellow]{name} dataset not written:[/] {why}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    typer.echo(json.dumps(result.to_dict(), default=str) if json_ else result.line())
    if not result.manifests:
        raise typer.Exit(1)


# What a failed write raises (a full disk, a directory made read-only or replaced by a file during
# the build); a refused connection to the database is no storage error.
_WRITE_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR}
)


# How Python prints an OSError in a traceback: "NotADirectoryError: [Errno 20] Cannot create ...".
_OS_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?\w+Error: \[Errno (\d+)\] (.+)$", re.MULTILINE)


def _write_error(error: BaseException) -> OSError | None:
    """The storage write error behind ``error``: raised here (or chained to it), or in a Ray Data
    task, whose error reaches the driver as a ``RayTaskError(UserCodeException)`` that keeps the
    task's exception only as traceback text."""
    from ray.exceptions import RayTaskError

    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, RayTaskError):
            found = _OS_ERROR_LINE.findall(str(current))
            if found and int(found[-1][0]) in _WRITE_ERRNOS:
                return OSError(int(found[-1][0]), found[-1][1])
        elif isinstance(current, OSError) and current.errno in _WRITE_ERRNOS:
            return current
        pending += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return None


def _reason(error: OSError) -> str:
    """One line: the OS's words for the errno (and the path, when it is not the storage root's)."""
    if error.errno is None:
        return (str(error).splitlines() or ["unknown error"])[0]
    text = os.strerror(error.errno)
    detail = (error.strerror or "").splitlines()[0] if error.strerror else ""
    if detail and detail != text:
        return f"{text} ({detail})"
    return text
