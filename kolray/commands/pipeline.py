"""``kolray pipeline``: the whole pipeline on a chain-twin world, against the configured database
and storage (what ``jobs/pipeline.py`` runs under ``ray job submit``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from kolray.commands._common import console, default_of, fail, help_of, settings
from kolray.learn.registry import MODEL_KINDS, ModelKind
from kolray.pipeline import PipelineOptions, run_pipeline


def pipeline(
    kols: Annotated[int, typer.Option(min=2, help=help_of(PipelineOptions, "kols"))] = default_of(
        PipelineOptions, "kols"
    ),
    days: Annotated[float, typer.Option(min=1, help=help_of(PipelineOptions, "days"))] = default_of(
        PipelineOptions, "days"
    ),
    seed: Annotated[int, typer.Option(help=help_of(PipelineOptions, "seed"))] = default_of(
        PipelineOptions, "seed"
    ),
    trials: Annotated[int, typer.Option(min=1, help=help_of(PipelineOptions, "trials"))] = default_of(
        PipelineOptions, "trials"
    ),
    max_epochs: Annotated[int, typer.Option(min=1, help=help_of(PipelineOptions, "max_epochs"))] = default_of(
        PipelineOptions, "max_epochs"
    ),
    models: Annotated[str, typer.Option(help="Models to train, comma-separated (token,kol).")] = ",".join(
        default_of(PipelineOptions, "models")
    ),
    backtest: Annotated[
        bool, typer.Option("--backtest/--no-backtest", help=help_of(PipelineOptions, "backtest"))
    ] = default_of(PipelineOptions, "backtest"),
    world_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the twin world lives (generated when missing). Default: a temporary directory."
        ),
    ] = None,
) -> None:
    """World → track → analyze → features → tune (→ backtest) on a chain-twin world.

    Uses the configured database and storage (KOLRAY_DATABASE_URL, KOLRAY_STORAGE_URI). Prints
    each stage's progress on stderr and one JSON summary line on stdout at the end.
    """
    chosen = [name.strip() for name in models.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in MODEL_KINDS]
    if unknown or not chosen:
        fail(f"--models: a comma-separated list of {', '.join(MODEL_KINDS)}, not {models!r}")
    kinds: list[ModelKind] = [kind for name in chosen for kind in MODEL_KINDS if kind == name]
    settings()  # a bad setting is one line, before any stage starts
    with tempfile.TemporaryDirectory(prefix="kolray-world-") as tmp:
        options = PipelineOptions(
            world_dir=world_dir or Path(tmp) / "world",
            kols=kols,
            days=days,
            seed=seed,
            trials=trials,
            max_epochs=max_epochs,
            models=kinds,
            backtest=backtest,
        )
        result = run_pipeline(
            options, say=lambda message: console.print(message, markup=False, highlight=False)
        )
    typer.echo(json.dumps(result.model_dump(), default=str))
