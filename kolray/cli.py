"""The ``kolray`` command line.

Each stage's command lives in ``kolray/commands/<stage>.py``; this module only assembles them and
turns failures into one line on stderr with a non-zero exit status.
"""

from __future__ import annotations

import gc
import sys

import typer

from kolray.commands import (
    alerts,
    analyze,
    backtest,
    demo,
    evaluate,
    features,
    kols,
    promote,
    serve,
    sim,
    status,
    track,
    tune,
)

app = typer.Typer(
    name="kolray",
    help="Track Solana KOL wallets, rebuild their trades, predict which buys run to 3x, serve it on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.add_typer(sim.app, name="sim")
app.add_typer(kols.app, name="kols")
app.add_typer(alerts.app, name="alerts")
for command in (
    track.track,
    analyze.analyze,
    features.features,
    tune.tune,
    evaluate.evaluate,
    promote.promote,
    serve.serve,
    backtest.backtest,
    demo.demo,
    status.status,
):
    app.command(name=command.__name__)(command)


def _print_version(value: bool) -> None:
    if value:
        from kolray import __version__

        typer.echo(f"kolray {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    from kolray.logs import configure_logging

    configure_logging()


def main(argv: list[str] | None = None) -> int:
    from kolray.commands._common import CommandError
    from kolray.config import SettingsError
    from kolray.secrets import redact_text

    try:
        # Without standalone mode click returns the exit code of typer.Exit instead of raising it.
        code = app(args=argv, standalone_mode=False)
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
            return error.exit_code
        print(f"error: {redact_text(f'{type(error).__name__}: {error}')}", file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    code = main()
    # The interpreter's last garbage collections walk every object of the torch, Ray and pandas
    # modules it tears down (5-8 s here); the process ends now and the OS takes the memory back.
    gc.freeze()
    sys.exit(code)
