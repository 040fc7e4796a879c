"""``kolray market``: the price tapes of the tokens tracked KOLs trade, read from chain state."""

from __future__ import annotations

from typing import Annotated

import typer

from kolray.commands._common import RpcUrls, Rps, console, fail, out, settings
from kolray.commands._database import database
from kolray.market.history import HISTORY_BUDGET
from kolray.market.stage import FAST_S, SLOW_S, MarketOptions, MarketSummary, market_once
from kolray.secrets import redact_url, register_secret


def market(
    once: Annotated[
        bool, typer.Option("--once", help="Read every watched token once, print a summary and exit.")
    ] = False,
    rpc_url: RpcUrls = None,
    rps: Rps = None,
    fast: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds until a token whose price moved is read again."),
    ] = FAST_S,
    slow: Annotated[
        float,
        typer.Option(min=0.1, help="Most seconds between reads of a token whose price stands still."),
    ] = SLOW_S,
    history: Annotated[
        bool,
        typer.Option(
            "--history/--no-history",
            help="Fill each token's tape before the stage first read it (tracked buys from before) "
            "from the token's own trades on its curve and PumpSwap pool.",
        ),
    ] = True,
    history_budget: Annotated[
        int,
        typer.Option(min=2, help="Most getTransaction calls per token for its history."),
    ] = HISTORY_BUDGET,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Watch the market of every token a tracked KOL bought within 7 days or still holds: its
    pump.fun bonding curve, and once graduated its PumpSwap or Raydium pool, read with batched
    getMultipleAccounts and stored as a price tape (exactly once per token and slot). `kolray track`
    runs this beside the pollers; run it alone to watch without tracking. Continuous unless --once;
    Ctrl-C or SIGTERM stops after the round in hand."""
    if fast > slow:
        fail(f"--fast {fast:g} must not exceed --slow {slow:g}")
    config = settings()
    database()
    urls = rpc_url or config.rpc_url_values
    for url in urls:
        register_secret(url)
    options = MarketOptions.from_settings(
        config, rpc_urls=urls, fast_s=fast, slow_s=slow, history=history, history_budget=history_budget
    )
    endpoints = ", ".join(redact_url(u) for u in urls)
    if once:
        summary = market_once(options)
        _print(summary, json_)
        if summary.errors:
            raise typer.Exit(1)
        return
    from kolray.tracker.supervisor import TrackerOptions, run_market

    console.print(
        f"watching token markets at up to {rps or config.rpc_rps:g} req/s per endpoint ({endpoints})"
    )
    tracker_options = TrackerOptions.from_settings(config, rpc_urls=urls, rps=rps, market=options)
    summary = run_market(tracker_options)
    _print(summary, json_)


def _print(summary: MarketSummary, json_: bool) -> None:
    if json_:
        out.print_json(summary.model_dump_json())
        return
    console.print(
        f"{summary.watched} tokens watched, {summary.reads} reads in {summary.rounds} rounds, "
        f"{summary.points_stored} tape rows stored, {summary.gaps} gaps, {summary.rpc_calls} RPC calls "
        f"in {summary.elapsed_s:.1f}s"
    )
    if summary.history_tokens:
        console.print(
            f"history of {summary.history_tokens} tokens: {summary.history_points} prices from their trades, "
            f"{summary.history_gaps} gaps, {summary.history_transactions} transactions read"
        )
    from rich.markup import escape

    for error in summary.errors[-3:]:
        console.print(f"[yellow]warning:[/] {escape(error)}")
