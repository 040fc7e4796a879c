"""The ``kolray`` command line.

Each stage's command lives in ``kolray/commands/<stage>.py``; this module only assembles them and
turns failures into one line on stderr with a non-zero exit status. ``jobs/*.py`` call :func:`main`
too, so a Ray job takes the same options as the command it runs.
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup

from kolray import __version__
from kolray.commands._common import CommandError
from kolray.config import SettingsError
from kolray.logs import configure_logging
from kolray.secrets import redact_text

if TYPE_CHECKING:  # typer builds its commands with the click it bundles
    from typer._click import Command, Context, HelpFormatter


class CommandSpec(NamedTuple):
    module: str  # under kolray.commands
    attribute: str  # a command function, or a typer app of subcommands
    summary: str  # its line in ``kolray --help``


COMMANDS: dict[str, CommandSpec] = {
    "track": CommandSpec("track", "track", "Poll the tracked wallets into the database."),
    "market": CommandSpec(
        "market", "market", "Price tapes of the tokens tracked KOLs trade, from chain state."
    ),
    "analyze": CommandSpec("analyze", "analyze", "Swaps → positions → KOL statistics (incremental)."),
    "features": CommandSpec(
        "features", "features", "Build the versioned token and KOL feature datasets (Ray Data)."
    ),
    "tune": CommandSpec("tune", "tune", "Search, train, evaluate and register the models."),
    "train-continuous": CommandSpec(
        "train_continuous",
        "train_continuous",
        "Continuous training: analyze → features → tune → promote if better, on a schedule.",
    ),
    "evaluate": CommandSpec("evaluate", "evaluate", "Write the evaluation report of a model version."),
    "promote": CommandSpec("promote", "promote", "Make a model version the champion that Serve uses."),
    "serve": CommandSpec("serve", "serve", "Run the Serve app: HTTP API, UI at /ui, API docs at /docs."),
    "backtest": CommandSpec(
        "backtest",
        "backtest",
        "Replay the token dataset's test period: copy-trading strategies side by side.",
    ),
    "pipeline": CommandSpec(
        "pipeline",
        "pipeline",
        "The whole pipeline on a twin world: world → track → analyze → features → tune.",
    ),
    "demo": CommandSpec("demo", "demo", "The whole pipeline offline on the chain twin, then serve it."),
    "status": CommandSpec(
        "status", "status", "Tracker lag, last analyze/features/tune runs, champion models, Serve health."
    ),
    "sim": CommandSpec(
        "sim", "app", "The chain twin: generate a simulated market and serve it as Solana JSON-RPC."
    ),
    "kols": CommandSpec("kols", "app", "Manage the tracked KOL wallets."),
    "alerts": CommandSpec(
        "alerts", "app", "Buy alerts on tracked KOLs' opening buys: rules, stream, webhooks."
    ),
}


def load_command(name: str) -> Command:
    """The click command of ``name``, its module imported now."""
    spec = COMMANDS[name]
    target = getattr(importlib.import_module(f"kolray.commands.{spec.module}"), spec.attribute)
    holder = typer.Typer(add_completion=False)  # completion options belong to no subcommand
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
        group = typer.main.get_command(holder)
        assert isinstance(group, TyperGroup)
        command = group.commands[name]
    else:
        holder.command(name=name)(target)
        command = typer.main.get_command(holder)
    command.short_help = spec.summary
    return command


class LazyCommands(TyperGroup):
    """Imports a command's module only when that command runs or shows its help.

    Measured with every command imported at start: ``kolray --help`` took over 10 s (the commands'
    modules import the stages, which import pandas, torch, Ray Tune, Ray Serve) against 0.3 s with
    this; ``kolray status --help`` imports only ``kolray.commands.status``. The list in
    ``kolray --help`` shows each command's summary from :data:`COMMANDS`.
    """

    listing = False  # while ``kolray --help`` prints: summaries only, nothing imported

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in COMMANDS:
            return None
        if self.listing:
            return TyperCommand(cmd_name, help=COMMANDS[cmd_name].summary)
        return load_command(cmd_name)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


app = typer.Typer(
    name="kolray",
    cls=LazyCommands,
    help="Track Solana KOL wallets, rebuild their trades, predict which buys run to 3x, serve it on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kolray {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    configure_logging()


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        # Without standalone mode click returns the exit code of typer.Exit instead of raising it.
        code: Any = app(args=argv, standalone_mode=False)
    except CommandError as error:
        print(f"error: {redact_text(str(error))}", file=sys.stderr)
        return error.code
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        # Usage errors of typer's bundled click: they know how to show themselves.
        if hasattr(error, "show") and hasattr(error, "exit_code"):
            if type(error).__name__ != "NoArgsIsHelpError":  # help was printed already
                error.show()
            return int(error.exit_code)
        print(f"error: {redact_text(f'{type(error).__name__}: {error}')}", file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0


def run() -> None:
    """Console-script entry point."""
    code = main()
    # The interpreter's last garbage collections walk every object of the torch, Ray and pandas
    # modules it tears down (5-8 s here); the process ends now and the OS takes the memory back.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    sys.exit(main())
