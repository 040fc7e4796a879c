"""``kolray backtest``: simulated copy-trading on the test period, strategies side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from kolray.backtest import (
    BacktestError,
    BacktestOptions,
    BacktestReport,
    Execution,
    StrategySpec,
    backtest_stage,
    coverage_text,
    delay_table_text,
    table_text,
    tapes_table_text,
)
from kolray.backtest.report import trades_csv
from kolray.commands._common import console, default_of, fail, settings
from kolray.commands._database import database
from kolray.secrets import redact_text

# Option name on the command line for each Execution field (for error messages).
_OPTION = {
    "delay_s": "--delay-s",
    "slippage_bps": "--slippage-bps",
    "fee_bps": "--fee-bps",
    "tx_fee_sol": "--tx-fee-sol",
    "stake_sol": "--stake-sol",
    "take_profit": "--take-profit",
    "stop_loss": "--stop-loss",
    "max_hold_s": "--max-hold-hours",
    "capital_sol": "--capital-sol",
}


def backtest(
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            "--strategy",
            "-s",
            help="Repeatable: copy_all, top_kols[:K], model[:THRESHOLD], oracle[:THRESHOLD]. "
            "Default: all four (model at its own threshold, oracle at the model's).",
        ),
    ] = None,
    dataset_version: Annotated[
        str | None, typer.Option(help="Token dataset whose test period is replayed. Default: the latest.")
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Token model of the model strategy. Default: the champion.")
    ] = None,
    delay_s: Annotated[int, typer.Option(help="Seconds from a KOL's trade to the copy's fill.")] = default_of(
        Execution, "delay_s"
    ),
    delays: Annotated[
        str | None,
        typer.Option(
            "--delays",
            help="Also replay every strategy's same copies at each of these delays (comma-separated "
            "seconds, e.g. 0,2,10,30,60,300) and print return per trade at each: what latency is worth.",
        ),
    ] = None,
    slippage_bps: Annotated[float, typer.Option(help="Price impact per fill, basis points.")] = default_of(
        Execution, "slippage_bps"
    ),
    fee_bps: Annotated[float, typer.Option(help="Trading fee per fill, basis points.")] = default_of(
        Execution, "fee_bps"
    ),
    tx_fee_sol: Annotated[
        float, typer.Option(help="Network + priority fee per transaction (SOL).")
    ] = default_of(Execution, "tx_fee_sol"),
    stake_sol: Annotated[float, typer.Option(help="SOL per copy.")] = default_of(Execution, "stake_sol"),
    capital_sol: Annotated[
        float | None,
        typer.Option(
            help="Capital for total return and drawdown. Default: each strategy's peak SOL deployed."
        ),
    ] = None,
    take_profit: Annotated[
        float | None, typer.Option(help="Sell all at this multiple of the entry price (e.g. 3).")
    ] = None,
    stop_loss: Annotated[
        float | None, typer.Option(help="Sell all at this fraction of the entry price (e.g. 0.5).")
    ] = None,
    max_hold_hours: Annotated[float | None, typer.Option(help="Sell all this long after entry.")] = None,
    stack: Annotated[
        bool, typer.Option("--stack", help="Copy a token again while a copy of it is still open.")
    ] = not default_of(Execution, "one_per_token"),
    top_kols_window: Annotated[
        Literal["7d", "30d", "all"], typer.Option(help="top_kols: the PnL window KOLs are ranked by.")
    ] = default_of(BacktestOptions, "top_kols_window"),
    min_scored: Annotated[
        int, typer.Option(help="top_kols: closed positions a KOL needs before it can rank.")
    ] = default_of(BacktestOptions, "top_kols_min_scored"),
    tape: Annotated[
        Literal["market", "trades", "both"] | None,
        typer.Option(
            "--tape",
            help="The prices copies fill on: market (each token's own curve or pool, recorded by the market "
            "stage), trades (prices revealed by tracked wallets' swaps) or both, side by side. Default: both "
            "when the database has a market tape for the signals' tokens, else trades (a line says why).",
        ),
    ] = None,
    allow_lookahead: Annotated[
        bool,
        typer.Option(
            "--allow-lookahead",
            help="Run the model strategy even if its model may have been trained on the period (flagged).",
        ),
    ] = default_of(BacktestOptions, "allow_lookahead"),
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Also write report.json, equity.png and trades.csv into this directory."),
    ] = None,
    save: Annotated[
        bool, typer.Option("--save/--no-save", help="Keep the report under <storage>/reports/backtest/.")
    ] = True,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Replay the test period of the token dataset: each KOL opening buy is a signal, each strategy
    decides from what was known then whether to copy it; copies fill after --delay-s with slippage
    and fees and exit with the KOL (mirroring its sells), by take-profit / stop-loss / max-hold, or
    at the end of the data, on the market tape, the trades tape or both. Prints the strategies side
    by side; the model strategy refuses a model trained on data from the replayed period
    (walk-forward check)."""
    from pydantic import ValidationError

    config = settings()
    try:
        specs = [StrategySpec.parse(text) for text in strategy] if strategy else None
    except ValueError as error:
        fail(f"--strategy: {error}")
    if max_hold_hours is not None and max_hold_hours <= 0:
        fail("--max-hold-hours must be > 0")
    if min_scored < 1:
        fail("--min-scored must be >= 1")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        fail(f"--out: {out_dir} is not a directory")
    try:
        delays_s = [int(d) for d in delays.split(",") if d.strip()] if delays else []
    except ValueError:
        fail(f"--delays: whole seconds separated by commas, e.g. 0,2,10,30,60,300 (got {delays!r})")
    if any(d < 0 for d in delays_s):
        fail("--delays: delays must be >= 0 seconds")
    try:
        execution = Execution(
            delay_s=delay_s,
            slippage_bps=slippage_bps,
            fee_bps=fee_bps,
            tx_fee_sol=tx_fee_sol,
            stake_sol=stake_sol,
            capital_sol=capital_sol,
            take_profit=take_profit,
            stop_loss=stop_loss,
            max_hold_s=None if max_hold_hours is None else round(max_hold_hours * 3600),
            one_per_token=not stack,
        )
        options = BacktestOptions(
            strategies=specs or BacktestOptions().strategies,
            dataset_version=dataset_version,
            model_version=model_version,
            execution=execution,
            top_kols_window=top_kols_window,
            top_kols_min_scored=min_scored,
            allow_lookahead=allow_lookahead,
            delays_s=delays_s,
            tape=tape,
        )
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][-1]) if item.get("loc") else "option"
            problems.append(f"{_OPTION.get(field, '--' + field.replace('_', '-'))}: {item['msg']}")
        fail("; ".join(problems))

    database()  # migrated, or a one-line failure
    progress = (lambda message: None) if json_ else (lambda message: console.print(f"[dim]{message}[/]"))
    try:
        stage = backtest_stage(
            options,
            database_url=config.database_url,
            storage_uri=config.storage_uri,
            progress=progress,
            save=save,
        )
    except BacktestError as error:
        fail(redact_text(str(error)), 1)
    run, report, location = stage.run, stage.run.report, stage.location
    if not stage.recorded:
        console.print("[yellow]warning:[/] run not recorded in the database (see the log)")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(report.model_dump_json(indent=1))
        (out_dir / "equity.png").write_bytes(run.png)
        (out_dir / "trades.csv").write_bytes(trades_csv(run.trades))

    if json_:
        payload = report.model_dump(mode="json")
        payload["saved_to"] = location
        typer.echo(json.dumps(payload))
        return
    _print(report)
    if location:
        console.print(f"report and equity curve: {location}")
    if out_dir is not None:
        console.print(f"copies in {out_dir}")


def _print(report: BacktestReport) -> None:
    """Plain text (a Markdown table): it never wraps, and pastes into a README as it is."""
    from datetime import UTC, datetime

    def day(t: int) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")

    ex = report.execution
    rules = [
        f"take-profit {ex.take_profit:g}x" if ex.take_profit else "",
        f"stop-loss {ex.stop_loss:g}x" if ex.stop_loss else "",
        f"max hold {ex.max_hold_s / 3600:g} h" if ex.max_hold_s else "",
    ]
    lines = [
        f"Backtest {report.id}: dataset {report.dataset_version}, test period {day(report.period_start)} → "
        f"{day(report.period_end)} UTC, {report.signals} signals",
        f"stake {ex.stake_sol:g} SOL, delay {ex.delay_s} s, slippage {ex.slippage_bps:g} bps, fee "
        f"{ex.fee_bps:g} bps + {ex.tx_fee_sol:g} SOL/tx; exit with the KOL"
        + "".join(f", {rule}" for rule in rules if rule)
        + ("" if ex.one_per_token else "; tokens stacked"),
        "fills on the "
        + " and ".join(report.tapes)
        + (" tapes, side by side" if report.other_tapes else " tape"),
        *coverage_text(report),
        "",
        tapes_table_text(report) if report.other_tapes else table_text(report),
        "",
    ]
    if report.by_delay:
        lines.extend(
            [
                f"Return per trade (copies) by delay, same decisions, {report.tape} tape:",
                "",
                delay_table_text(report),
                "",
            ]
        )
    for result in report.strategies:
        lines.append(f"- {result.name}: {result.description}" + (f" ({result.note})" if result.note else ""))
    for name, why in report.skipped.items():
        lines.append(f"- {name}: not run: {why}")
    lines.extend(f"note: {note}" for note in report.notes)
    typer.echo("\n".join(lines))
