"""What every command shares: one-line failures, settings, options' defaults, output.

Light on purpose (no database, no Ray): ``kolray --help`` imports it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.segment import Segment, SegmentLines
from rich.table import Table
from rich.text import Text

from kolray.config import Settings, SettingsError, get_settings

# A base58 run as long as a public key (32-44 characters) or a signature (up to 88): wallets, mints,
# programs, signatures. Shorter runs (versions, hashes with a 0 in them) are ordinary words.
_ADDRESS = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,88}")
_NATURAL_WIDTH = 100_000  # "unbounded" for measuring a table's one-line-per-row width
_MIN_FOLDED = 8  # the narrowest a column other than an address column is squeezed to


class CliConsole(Console):
    """A rich console whose output never cuts an address, a mint or a signature.

    rich lays a table out to the terminal's width, or to 80 columns when the output is not a
    terminal, and cuts what does not fit with "…": ``kolray kols list | grep WALLET`` found nothing.
    Here a table's columns that hold addresses are never narrower than the longest one (and never
    wrapped when they hold nothing else); other columns fold instead of being cut. Piped, a table
    is laid out at its natural width (one line per row, as ``grep`` wants) and text is not wrapped.
    In a terminal too narrow for the addresses, lines run past its edge rather than lose characters.
    """

    def print(self, *objects: Any, **options: Any) -> None:
        if len(objects) == 1 and isinstance(objects[0], Table) and not options:
            self._print_table(objects[0])
            return
        if not self.is_terminal and options.get("soft_wrap") is None:
            options["soft_wrap"] = True  # a pipe has no width: a long line stays one line
        super().print(*objects, **options)

    def _print_table(self, table: Table) -> None:
        keep_whole(table)
        width = self.width
        if not self.is_terminal:
            width = self.measure(table, options=self.options.update_width(_NATURAL_WIDTH)).maximum
        lines = Segment.split_lines(self.render(table, self.options.update_width(width)))
        # Not cropped to the console's width: an address column may be wider than a narrow terminal.
        super().print(SegmentLines(lines, new_lines=True), crop=False)


def keep_whole(table: Table) -> Table:
    """Make ``table``'s address columns at least as wide as their longest address (unwrapped when
    that is all they hold) and let every other column fold rather than end in "…"."""
    for column in table.columns:
        texts = [_plain(cell) for cell in column.cells]
        longest = max((len(m) for text in texts if text for m in _ADDRESS.findall(text)), default=0)
        if longest:
            column.min_width = max(column.min_width or 0, longest)
            if all(not text or not _ADDRESS.sub("", text).strip() for text in texts):
                column.no_wrap = True
        elif column.min_width is None:
            # rich would squeeze the other columns to nothing beside wide addresses: keep a few
            # characters of each, so a cell folds into readable pieces.
            words = [len(w) for text in [_plain(column.header), *texts] if text for w in text.split()]
            column.min_width = min(max(words, default=1), _MIN_FOLDED)
        if column.overflow == "ellipsis":
            column.overflow = "fold"
    return table


def _plain(cell: Any) -> str | None:
    if isinstance(cell, Text):
        return cell.plain
    return cell if isinstance(cell, str) else None


console = CliConsole(stderr=True)
out = CliConsole()


class CommandError(Exception):
    """A failure to report to the user as one line, exit status 2 (bad input) or 1 (runtime)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> NoReturn:
    raise CommandError(message, code)


def settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as error:
        fail(str(error))


def default_of(options: type[BaseModel], name: str) -> Any:
    """The default of an options model's field: a command option that sets the field takes its
    default from here, so that the model is the one place it is written."""
    return options.model_fields[name].get_default(call_default_factory=True)


def help_of(options: type[BaseModel], name: str, more: str = "") -> str:
    """The description of an options model's field as an option's help (``more`` appended)."""
    description = options.model_fields[name].description or ""
    return f"{description} {more}".strip()


# Options that the commands reading the chain share.
RpcUrls = Annotated[
    list[str] | None,
    typer.Option("--rpc-url", help="RPC endpoint (repeatable; failover in order). Default: KOLRAY_RPC_URLS."),
]
Rps = Annotated[
    float | None, typer.Option(min=0.001, help="Requests/s per endpoint. Default: KOLRAY_RPC_RPS.")
]
