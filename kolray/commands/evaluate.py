"""``kolray evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kolray.commands._common import console, fail, out, settings
from kolray.commands.tune import fmt, models_for
from kolray.datasets import DatasetError
from kolray.learn.registry import RegistryError, list_versions
from kolray.learn.stage import evaluate_version

TOKEN_COLUMNS = ("roc_auc", "pr_auc", "brier", "precision", "recall", "f1", "threshold", "n_pos")
SHORT = {"precision": "prec", "threshold": "thresh", "roc_auc": "roc_auc", "n_pos": "pos"}
KOL_COLUMNS = ("rmse_7d", "mae_7d", "r2_7d", "rmse_30d", "mae_30d", "r2_30d", "n")


def evaluate(
    model: Annotated[str, typer.Option(help="Which model: token, kol or all.")] = "all",
    version: Annotated[
        str | None,
        typer.Option(help="Registered version (one --model only). Default: the champion, else the newest."),
    ] = None,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Local copy: <OUT>/<model>/<version>/report.json + PNGs (default ./reports). "
            "The report is always written under <storage_uri>/reports/ too.",
        ),
    ] = Path("reports"),
    n_boot: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the 95% intervals.")] = 500,
) -> None:
    """Write the evaluation report of a model version.

    Scores the version and the baselines stored with it on the test split of the dataset version it
    was trained on (plus the oracle on twin data): ROC-AUC, PR-AUC, Brier, precision/recall/F1 at
    the validation-chosen threshold, precision@k, with bootstrap 95% intervals; KOL: RMSE, MAE, R².
    """

    chosen = models_for(model)
    if version and len(chosen) > 1:
        fail("--version names one model's version: use it with --model token or --model kol")
    storage_uri = settings().storage_uri
    for kind in chosen:
        if model == "all" and not list_versions(kind, storage_uri):
            console.print(f"[yellow]{kind}: no model registered yet, skipped[/]")
            continue
        console.print(f"[dim]{kind}: evaluating {version or 'the champion'}…[/]")
        try:
            report, locations = evaluate_version(kind, version, storage_uri, n_boot=n_boot, local_dir=out_dir)
        except (RegistryError, DatasetError) as error:
            fail(str(error), 1)
        print_report(report)
        for location in locations:
            out.print(f"report: {location}", soft_wrap=True)


def print_report(report: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    columns = TOKEN_COLUMNS if report["model"] == "token" else KOL_COLUMNS
    # Compact: the table must fit an 80-column terminal with the longest predictor name.
    table = Table(
        title=f"{report['model']} {report['version']} on test of {report['dataset_version']}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("predictor", no_wrap=True)
    for column in columns:
        table.add_column(SHORT.get(column, column), justify="right", no_wrap=True)
    rows = [("model", report["test"]), *report["baselines"].items()]
    if report.get("oracle"):
        rows.append(("oracle", report["oracle"]))
    for name, block in rows:
        table.add_row(name, *(fmt(block.get(c), 3) for c in columns))
    out.print(table)
    verdict = report.get("comparison", {}).get("verdict")
    if verdict:
        out.print(verdict)
