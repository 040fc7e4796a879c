"""``kolray track``: poll the tracked wallets into the database (``--live``: pubsub subscriptions, the
poller reconciling)."""

from __future__ import annotations

from typing import Annotated

import typer

from kolray.alerts import tracking_hook
from kolray.commands._common import RpcUrls, Rps, console, default_of, fail, out, settings
from kolray.commands._database import database
from kolray.config import Settings
from kolray.market.stage import MarketOptions
from kolray.secrets import redact_url, register_secret
from kolray.tracker.live import LiveOptions
from kolray.tracker.supervisor import TrackerOptions, active_wallets, run_forever, run_live, sync_once


def track(
    once: Annotated[
        bool, typer.Option("--once", help="Sync every wallet once, print a summary and exit.")
    ] = False,
    rpc_url: RpcUrls = None,
    actors: Annotated[
        int | None, typer.Option(min=1, help="Poller actors. Default: KOLRAY_TRACKER_ACTORS.")
    ] = None,
    rps: Rps = None,
    interval: Annotated[
        float | None,
        typer.Option(
            min=0.1, help="Seconds between polls (continuous mode). Default: KOLRAY_POLL_INTERVAL_S."
        ),
    ] = None,
    backfill_days: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="History read on a wallet's first sight, in days back from now. Default: "
            f"KOLRAY_BACKFILL_DAYS ({default_of(Settings, 'backfill_days'):g}).",
        ),
    ] = None,
    backfill_max_signatures: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="At most this many signatures per wallet on first sight. Default: "
            f"KOLRAY_BACKFILL_MAX_SIGNATURES ({default_of(Settings, 'backfill_max_signatures')}).",
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print summaries as JSON lines.")] = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Learn of each wallet's transactions within a slot or two from pubsub subscriptions "
            "(logsSubscribe over WebSocket), store their swaps at once and wake the alerts straight "
            "away; polling stays on as the reconciler that fills every gap.",
        ),
    ] = False,
    ws_url: Annotated[
        list[str] | None,
        typer.Option(
            "--ws-url",
            help="--live: pubsub endpoint (repeatable; connections spread over them). Default: each "
            "RPC URL with ws(s):// for http(s)://.",
        ),
    ] = None,
    reconcile_interval: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="--live: seconds between reconciliations of every wallet (what subscriptions "
            "missed). Default: 10 × the poll interval.",
        ),
    ] = None,
    alerts: Annotated[
        bool,
        typer.Option(
            "--alerts/--no-alerts",
            help="Continuous mode: evaluate alert rules and deliver alerts after each cycle, in the "
            "background (kolray.alerts; never holds tracking back).",
        ),
    ] = True,
    market: Annotated[
        bool,
        typer.Option(
            "--market/--no-market",
            help="Continuous and --live modes: run the market stage beside the pollers (`kolray market`: "
            "each traded token's price tape from its curve or pool), in the same rate budget.",
        ),
    ] = True,
) -> None:
    """Poll the tracked wallets into the database: new signatures since each wallet's cursor,
    transactions in batches, swaps extracted and stored exactly once. Continuous unless --once;
    Ctrl-C or SIGTERM stops after the batches in hand (a second Ctrl-C stops at once)."""
    from dataclasses import replace
    from urllib.parse import urlsplit

    config = settings()
    database()  # migrate (and fail clearly) before any actor starts
    urls = rpc_url or config.rpc_url_values
    for url in urls:
        register_secret(url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            fail(f"--rpc-url {redact_url(url)}: not an http(s) URL")
    options = TrackerOptions.from_settings(config, rpc_urls=urls, actors=actors, rps=rps)
    if market and not once:
        options.market = MarketOptions.from_settings(config, rpc_urls=urls)
    if backfill_days is not None:
        options.policy = replace(options.policy, backfill_seconds=backfill_days * 86400)
    if backfill_max_signatures is not None:
        options.policy = replace(options.policy, backfill_max_signatures=backfill_max_signatures)
    wallets = active_wallets(options.database_url)
    if not wallets:
        fail("no wallets to track: add some with `kolray kols add WALLET` or `kolray kols import FILE`")
    endpoints = ", ".join(redact_url(u) for u in urls)
    console.print(
        f"tracking {len(wallets)} wallets with {options.actors} poller actors at {options.rps:g} req/s "
        f"per endpoint ({endpoints})"
    )

    if once:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("syncing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("wallets"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("sync", total=len(wallets))
            summary = sync_once(
                options, on_progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
        _print_summary(summary, json_)
        if summary.wallet_errors:
            raise typer.Exit(1)
        return

    def on_cycle(cycle: int, summary) -> None:
        if json_:
            out.print_json(summary.model_dump_json())
        else:
            console.print(
                f"cycle {cycle}: {summary.wallets} wallets, {summary.swaps} new swaps, "
                f"{summary.signatures} signatures, {summary.wallet_errors} errors in {summary.elapsed_s:.1f}s"
            )
        if summary.wallets_outside_backfill:  # the other notes are the normal quiet of a cycle
            _print_notes(summary.notes()[:1])

    if live:
        _track_live(options, config, alerts, ws_url, interval, reconcile_interval, json_)
        return

    with tracking_hook(config, enabled=alerts) as alert_cycle:

        def on_cycle_and_alerts(cycle: int, summary) -> None:
            on_cycle(cycle, summary)
            if alert_cycle is not None:
                alert_cycle(cycle, summary)  # only wakes the alert runner's thread

        cycles = run_forever(
            options, interval_s=interval or config.poll_interval_s, on_cycle=on_cycle_and_alerts
        )
    console.print(f"stopped after {cycles} cycles")


def _track_live(
    options: TrackerOptions,
    config: Settings,
    alerts: bool,
    ws_urls: list[str] | None,
    interval: float | None,
    reconcile_interval: float | None,
    json_: bool,
) -> None:
    import json

    poll_interval = interval or config.poll_interval_s
    for url in ws_urls or []:
        register_secret(url)
    live_options = LiveOptions(
        poll_interval_s=poll_interval,
        reconcile_interval_s=reconcile_interval or 10 * poll_interval,
        policy=options.policy,
        wallet_concurrency=options.wallet_concurrency,
    )
    console.print(
        f"live: subscriptions, reconciling uncovered wallets every {live_options.poll_interval_s:g} s and "
        f"every wallet every {live_options.reconcile_interval_s:g} s"
    )
    with tracking_hook(config, enabled=alerts) as alert_cycle:

        def on_stored(count: int) -> None:
            if alert_cycle is not None:
                alert_cycle(0, None)  # straight through: the alert runner evaluates now

        totals = run_live(options, ws_urls, live_options, on_stored=on_stored)
    if json_:
        out.print_json(json.dumps(totals))
    else:
        console.print(
            f"stopped: {totals.get('stored_live', 0)} swaps stored live, "
            f"{totals.get('stored_reconcile', 0)} by reconciliation"
        )


def _print_notes(notes: list[str]) -> None:
    from rich.markup import escape

    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def _print_summary(summary, json_: bool) -> None:
    if json_:
        out.print_json(summary.model_dump_json())
        _print_notes(summary.notes())
        return
    from rich.table import Table

    rpc = summary.rpc
    table = Table("", "", title="track --once", show_header=False)
    for label, value in (
        ("wallets", summary.wallets),
        ("signatures", summary.signatures),
        ("transactions fetched", summary.fetched),
        ("swaps stored", summary.swaps),
        ("failed transactions", summary.failed_txs),
        ("non-trade transactions", summary.non_trade_txs),
        ("not yet available (retried next poll)", summary.unavailable),
        ("wallets with errors", summary.wallet_errors),
        ("poller restarts", summary.actor_restarts),
        ("RPC requests", int(rpc.get("requests", 0))),
        ("RPC retries", int(rpc.get("retries", 0))),
        ("HTTP 429s", int(rpc.get("errors_http_429", 0))),
        ("elapsed", f"{summary.elapsed_s:.1f}s"),
    ):
        table.add_row(label, str(value))
    out.print(table)
    from rich.markup import escape

    for error in summary.errors[:5]:
        console.print(f"[yellow]warning:[/] {escape(error)}")
    _print_notes(summary.notes())
