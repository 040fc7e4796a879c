"""``kolray tune``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from kolray.commands._common import console, default_of, fail, help_of, out, settings
from kolray.datasets import DatasetError, latest_version, read_manifest
from kolray.db.runs import record_run as record
from kolray.learn.families import FAMILIES
from kolray.learn.registry import MODEL_KINDS, ModelKind, RegistryError
from kolray.learn.stage import train_and_register
from kolray.learn.train import TrainError
from kolray.learn.tune import TuneFailed, TuneOptions


def models_for(model: str) -> list[ModelKind]:
    """The models ``--model`` names (``all``: every kind)."""
    if model == "all":
        return list(MODEL_KINDS)
    if model not in MODEL_KINDS:
        fail(f"--model must be token, kol or all, not {model!r}")
    return [kind for kind in MODEL_KINDS if kind == model]


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


def record_run(kind: str, status: str, summary: dict[str, Any]) -> None:
    """Log a run for ``kolray status``; a database problem only warns (the models and reports are
    already stored)."""

    if not record(kind, status, summary):
        console.print("[yellow]warning:[/] run not recorded in the database (see the log)")


def tune(
    model: Annotated[
        Literal["token", "kol", "all"], typer.Option(help="Which model: token, kol or all.")
    ] = "all",
    trials: Annotated[
        int, typer.Option(min=1, help="Trials per model (samples of the search space).")
    ] = default_of(TuneOptions, "trials"),
    gpus_per_trial: Annotated[
        float, typer.Option(min=0, help="GPUs per trial; fractions (0.25) pack trials on one GPU.")
    ] = default_of(TuneOptions, "gpus_per_trial"),
    cpus_per_trial: Annotated[
        float, typer.Option(min=0.1, help="CPUs per trial (torch threads).")
    ] = default_of(TuneOptions, "cpus_per_trial"),
    max_concurrent: Annotated[
        int | None, typer.Option(min=1, help="Trials at once. Default: what the Ray cluster fits.")
    ] = default_of(TuneOptions, "max_concurrent"),
    dataset_version: Annotated[
        str | None, typer.Option(help="Dataset version to train on (one --model only). Default: the latest.")
    ] = None,
    max_epochs: Annotated[int, typer.Option(min=1, help="Epoch cap per trial (ASHA's max_t).")] = default_of(
        TuneOptions, "max_epochs"
    ),
    seed: Annotated[
        int, typer.Option(help="Seed for sampling, initialisation and batch order.")
    ] = default_of(TuneOptions, "seed"),
    target: Annotated[
        Literal["peak_3x", "label_3x"],
        typer.Option(
            help="Token model's label: peak_3x, P(the token trades at >= 3x the entry price within 7 days); "
            "label_3x, P(the KOL's own position realises 3x)."
        ),
    ] = default_of(TuneOptions, "target"),
    family: Annotated[
        list[str] | None,
        typer.Option(
            metavar="net|gbt|linear",
            help="Model family to search (repeat for several): net (PyTorch network), gbt (LightGBM), "
            "linear (logistic regression for tokens, ridge for KOLs). "
            "Default: all three, side by side; the best on validation is served.",
        ),
    ] = None,
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
    ] = not default_of(TuneOptions, "auto_promote"),
    keep: Annotated[int, typer.Option(min=0, help=help_of(TuneOptions, "keep"))] = default_of(
        TuneOptions, "keep"
    ),
    json_: Annotated[
        bool, typer.Option("--json", help="Print one JSON line per model instead of the tables.")
    ] = False,
) -> None:
    """Search, train, evaluate and register the models.

    Per model: a Ray Tune search on the training split over the model families (PyTorch network,
    LightGBM and linear side by side; ASHA early stopping on validation for the networks), the family
    whose best trial is best on validation calibrated and thresholded on validation, baselines
    fitted on the same splits, one evaluation on the test split (every family's best beside it),
    a registry candidate, a report, and promotion to champion only if it beats the current
    champion on the same test split. With --gpus-per-trial the network trials train on CUDA
    (on_gpu in the summary).
    """
    chosen = models_for(model)
    if dataset_version and len(chosen) > 1:
        fail("--dataset-version names one dataset: use it with --model token or --model kol")
    families = family or list(default_of(TuneOptions, "families"))
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        fail(f"--family must be one of {', '.join(FAMILIES)}, not {', '.join(unknown)}")
    options = TuneOptions(
        target=target,
        families=families,  # type: ignore[arg-type]  # checked against FAMILIES above
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
                kind,
                dataset_version=dataset_version,
                options=options,
                storage_uri=config.storage_uri,
                local_report_dir=out_dir,
                progress=lambda message: console.print(f"[dim]{message}[/]"),
            )
        except (DatasetError, TrainError, RegistryError, TuneFailed) as error:
            record_run("tune", "error", {"model": kind, "error": str(error)})
            fail(str(error), 1)
        except ValueError as error:  # e.g. more GPUs per trial than the cluster has
            fail(str(error))
        summaries.append(outcome.summary())  # train_and_register logged the run
        if json_:
            typer.echo(json.dumps(outcome.summary(), default=str))
    if not json_:
        print_summary(summaries)


def print_summary(summaries: list[dict[str, Any]]) -> None:
    from rich.table import Table

    for row in summaries:
        table = Table("metric", "value", title=f"{row['model']} model {row['version']}")
        for key, value in row.items():
            if key not in ("model", "version"):
                table.add_row(key, fmt(value))
        out.print(table)
