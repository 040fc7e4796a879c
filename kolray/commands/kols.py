"""``kolray kols``: the tracked wallets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from kolray.commands._common import fail, out
from kolray.commands._database import database
from kolray.kols import InvalidWallet, KolFileError, KolIn, list_kols, parse_kol_file, set_active, upsert_kols

app = typer.Typer(help="Manage the tracked KOL wallets.", no_args_is_help=True)


@app.command("add")
def add(
    wallet: Annotated[str, typer.Argument(help="Wallet address (base58 public key).")],
    name: Annotated[str | None, typer.Option(help="Display name, e.g. the KOL's handle.")] = None,
    link: Annotated[list[str] | None, typer.Option(help="A profile link (repeatable).")] = None,
) -> None:
    """Track a wallet (or update its name/links if already tracked)."""

    try:
        item = KolIn(wallet=wallet, name=name, links=link or [])
    except (InvalidWallet, ValueError) as error:
        message = error.errors()[0]["msg"] if hasattr(error, "errors") else str(error)
        fail(message.removeprefix("Value error, "))
    added, updated = upsert_kols(database(), [item])
    what = "added" if added else ("updated" if updated else "already tracked")
    typer.echo(f"{item.wallet} {what}" + (f" ({item.name})" if item.name else ""))


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV with a 'wallet' column (and 'name', 'links'), or JSON.")],
) -> None:
    """Track every wallet in a CSV or JSON file. The whole file is validated first: nothing is written
    if any row is bad."""

    try:
        items = parse_kol_file(file)
    except KolFileError as error:
        fail(str(error))
    added, updated = upsert_kols(database(), items)
    typer.echo(
        f"{len(items)} KOLs in {file}: {added} added, {updated} updated, {len(items) - added - updated} unchanged"
    )


@app.command("list")
def list_(
    all_: Annotated[bool, typer.Option("--all", help="Include paused wallets.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the tracked wallets."""
    from rich.table import Table

    kols = list_kols(database(), active_only=not all_)
    if json_:
        import json

        typer.echo(json.dumps([k.model_dump() for k in kols], indent=1))
        return
    table = Table("wallet", "name", "added", "active", "links", title=f"{len(kols)} KOLs")
    for k in kols:
        added = datetime.fromtimestamp(k.added_at, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(k.wallet, k.name or "", added, "yes" if k.active else "no", " ".join(k.links))
    out.print(table)


def _set_active(wallet: str, active: bool) -> None:

    try:
        found = set_active(database(), wallet, active)
    except InvalidWallet as error:
        fail(str(error))
    if not found:
        fail(f"{wallet} is not tracked")
    typer.echo(f"{wallet} {'resumed' if active else 'paused'}")


@app.command("pause")
def pause(wallet: Annotated[str, typer.Argument(help="Wallet address.")]) -> None:
    """Stop polling a wallet (its history is kept)."""
    _set_active(wallet, False)


@app.command("resume")
def resume(wallet: Annotated[str, typer.Argument(help="Wallet address.")]) -> None:
    """Poll a paused wallet again."""
    _set_active(wallet, True)
