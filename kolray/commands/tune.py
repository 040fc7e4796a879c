"""``kolray tune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kolray.commands._common import console, fail, out, settings

MODELS = ("token", "kol")


def models_for(model: str) -> list[str]:
    if model == "all":
        return list(MODELS)
    if model not in MODELS:
        fail(f"--model must be token, kol or all, not {model!r}")
    return [model]


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


def record_run(kind: str, status: str, summary: dict[str, Any]) -> None:
    """Log a run for ``kolray status``; a database problem only warns (the models and reports are
    already stored)."""
    from kolray.db.runs import record_run as record

    if not record(kind, status, summary):
        console.print("[yellow]warning:[/] run not recorded in the database (see the log)")


def tune(
    model: Annotated[str, typer.Option(help="Which model: token, kol or all.")] = "all",
    trials: Annotated[int, typer.Option(min=1, help="Trials per model (samples of the search space).")] = 8,
    gpus_per_trial: Annotated[
        float, typer.Option(min=0, help="GPUs per trial; fractions (0.25) pack trials on one GPU.")
    ] = 0.0,
    cpus_per_trial: Annotated[float, typer.Option(min=0.1, help="CPUs per trial (torch threads).")] = 1.0,
    max_concurrent: Annotated[
        int | None, typer.Option(min=1, help="Trials at once. Default: what the Ray cluster fits.")
    ] = None,
    dataset_version: Annotated[
        str | None, typer.Option(help="Dataset version to train on (one --model only). Default: the latest.")
    ] = None,
    max_epochs: Annotated[int, typer.Option(min=1, help="Epoch cap per trial (ASHA's max_t).")] = 40,
    seed: Annotated[int, typer.Option(help="Seed for sampling, initialisation and batch order.")] = 0,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Local copy of the reports: <OUT>/<model>/<version>/report.json + PNGs. "
            "They are always written under <storage_uri>/reports/ too.",
        ),
    ] = Path("reports"),
    no_promote: Annotated[
        bool, typer.Option("--no-promote", help="Register as candidate only; never switch the champion.")
    ] = False,
    keep: Annotated[int, typer.Option(min=0, help="Registry pruning: non-champion versions kept.")] = 10,
) -> None:
    """Search, train, evaluate and register the models.

    Per model: a Ray Tune search on the training split (ASHA early stopping on validation), the best
    trial calibrated and thresholded on validation, baselines fitted on the same splits, one
    evaluation on the test split, a registry candidate, a report, and promotion to champion only if
    it beats the current champion on the same test split.
    """
    from kolray.datasets import DatasetError
    from kolray.learn.registry import RegistryError
    from kolray.learn.train import TrainError
    from kolray.learn.stage import train_and_register
    from kolray.learn.tune import TuneFailed, TuneOptions

    chosen = models_for(model)
    if dataset_version and len(chosen) > 1:
        fail("--dataset-version names one dataset: use it with --model token or --model kol")
    options = TuneOptions(
        trials=trials,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_concurrent=max_concurrent,
        max_epochs=max_epochs,
        seed=seed,
        auto_promote=not no_promote,
        keep=keep,
    )
    config = settings()
    from kolray.datasets import latest_version, read_manifest

    # Every dataset first: a missing one should stop the command before an hour of searching.
    for kind in chosen:
        try:
            read_manifest(
                kind, dataset_version or latest_version(kind, config.storage_uri), config.storage_uri
            )
        except DatasetError as error:
            fail(str(error), 1)
    summaries = []
    for kind in chosen:
        try:
            outcome = train_and_register(
                kind,  # type: ignore[arg-type]
                dataset_version=dataset_version,
                options=options,
                storage_uri=config.storage_uri,
                local_report_dir=out_dir,
                progress=lambda message: console.print(f"[dim]{message}[/]"),
            )
        except (DatasetError, TrainError, RegistryError) as error:
            record_run("tune", "error", {"model": kind, "error": str(error)})
            fail(str(error), 1)
        except TuneFailed as error:
            record_run("tune", "error", {"model": kind, "error": str(error)})
            fail(str(error), 1)
        except ValueError as error:  # e.g. more GPUs per trial than the cluster has
            fail(str(error))
        summaries.append(outcome.summary())  # train_and_register logged the run
    print_summary(summaries)


def print_summary(summaries: list[dict[str, Any]]) -> None:
    from rich.table import Table

    for row in summaries:
        table = Table("metric", "value", title=f"{row['model']} model {row['version']}")
        for key, value in row.items():
            if key not in ("model", "version"):
                table.add_row(key, fmt(value))
        out.print(table)
