"""``kolray train-continuous``: the continuous training cycle, once or on a schedule (what
``jobs/continuous_train.py`` runs under ``ray job submit``)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import BaseModel, Field

from kolray.commands._common import console, default_of, fail, help_of, settings
from kolray.learn.registry import MODEL_KINDS
from kolray.learn.stage import CycleOptions, CycleResult, run_schedule, train_cycle
from kolray.serve.client import notify_serve


class ScheduleOptions(BaseModel):
    """How often the cycle runs."""

    interval_hours: float = Field(default=6.0, gt=0, description="Hours between cycle starts.")


def train_continuous(
    interval_hours: Annotated[
        float, typer.Option(help=help_of(ScheduleOptions, "interval_hours"))
    ] = default_of(ScheduleOptions, "interval_hours"),
    once: Annotated[bool, typer.Option("--once", help="Run one cycle, print its summary and exit.")] = False,
    model: Annotated[
        Literal["token", "kol", "all"], typer.Option(help="Which model: token, kol or all.")
    ] = "all",
    trials: Annotated[int, typer.Option(min=1, help="Tune trials per model and cycle.")] = default_of(
        CycleOptions, "trials"
    ),
    max_epochs: Annotated[int, typer.Option(min=1, help="Epoch cap per trial.")] = default_of(
        CycleOptions, "max_epochs"
    ),
    gpus_per_trial: Annotated[
        float, typer.Option(min=0, help="GPUs per trial; fractions (0.25) pack trials on one GPU.")
    ] = default_of(CycleOptions, "gpus_per_trial"),
    cpus_per_trial: Annotated[
        float, typer.Option(min=0.1, help="CPUs per trial (torch threads).")
    ] = default_of(CycleOptions, "cpus_per_trial"),
    oracle_world: Annotated[
        Path | None,
        typer.Option(help="A twin world directory: add its oracle_p3x to the datasets (evaluation only)."),
    ] = None,
) -> None:
    """Analyze → features → tune both models → evaluate → promote if better → tell Serve, every
    --interval-hours (start to start) until Ctrl-C or SIGTERM, or --once.

    A new candidate replaces the champion only when it beats it on the same frozen test split; a
    cycle that fails is reported and the schedule goes on. After each cycle the running Serve app
    (if any) is asked to reload the champions.
    """
    try:
        schedule = ScheduleOptions(interval_hours=interval_hours)
    except ValueError:
        fail("--interval-hours must be > 0")
    settings()  # a bad setting is one line, before any stage starts
    options = CycleOptions(
        models=list(MODEL_KINDS) if model == "all" else [kind for kind in MODEL_KINDS if kind == model],
        trials=trials,
        max_epochs=max_epochs,
        gpus_per_trial=gpus_per_trial,
        cpus_per_trial=cpus_per_trial,
        oracle_world=None if oracle_world is None else str(oracle_world),
    )

    def say(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    serve_said: list[str] = []

    def tell_serve(_result: CycleResult) -> None:
        _reached, message = notify_serve()  # not running is fine: it loads the champion at start
        serve_said[:] = [message]
        say(message)

    if once:
        result = train_cycle(options, say, after_cycle=tell_serve)
        typer.echo(json.dumps({**result.model_dump(), "serve": "".join(serve_said)}, default=str))
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    cycles = run_schedule(options, schedule.interval_hours * 3600, stop=stop, say=say, after_cycle=tell_serve)
    say(f"stopped after {cycles} cycles")
