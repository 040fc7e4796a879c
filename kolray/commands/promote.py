"""``kolray promote``."""

from __future__ import annotations

from typing import Annotated

import typer

from kolray.commands._common import fail, out, settings
from kolray.learn import registry
from kolray.serve.client import notify_serve


def promote(
    model: Annotated[str, typer.Argument(help="token or kol.")],
    version: Annotated[str, typer.Argument(help="A registered version (see the table after promoting).")],
    allow_archived: Annotated[
        bool,
        typer.Option(
            "--allow-archived",
            help="Allow a version in stage 'archived' (a former champion): rolling back to it.",
        ),
    ] = False,
) -> None:
    """Make a model version the champion that Serve uses.

    The version's artifacts are verified (sha256, no pickles) before the switch; the previous
    champion becomes 'archived'. A running `kolray serve` app switches its replicas to it at once.
    Rolling back to an archived version needs --allow-archived.
    """
    from rich.table import Table

    if model not in registry.MODEL_KINDS:
        fail(f"MODEL must be token or kol, not {model!r}")
    storage_uri = settings().storage_uri
    try:
        before = registry.champion_version(model, storage_uri)
        stage = registry.read_index(model, storage_uri).entry(version).stage
        if stage == "archived" and not allow_archived:
            fail(
                f"{model} {version} is archived (a former champion): pass --allow-archived to serve it again"
            )
        index = registry.promote(model, version, reason="manual (kolray promote)", storage_uri=storage_uri)
    except registry.RegistryError as error:
        fail(str(error), 1)
    if before == version:
        out.print(f"{model} {version} is already the champion")
    else:
        out.print(f"{model} champion: {before or 'none'} → {version}")
        # Running Serve replicas switch without a restart (kolray.serve.client).

        out.print(notify_serve()[1])
    table = Table("version", "stage", "dataset", "metric", title=f"{model} registry")
    for entry in reversed(index.versions):
        metric = entry.primary_metric
        value = metric.get("value")
        shown = f"{metric.get('name')} {value:.4f}" if isinstance(value, float) else ""
        table.add_row(entry.version, entry.stage, entry.dataset_version, shown)
    out.print(table)
