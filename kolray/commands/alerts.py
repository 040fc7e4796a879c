"""``kolray alerts``: run the alert rules on their own, list alerts, try the webhooks."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from kolray.alerts import (
    RULES,
    AlertConfigError,
    AlertPayload,
    AlertRunner,
    AlertsBusy,
    recent_alerts,
    render,
    run_forever,
    run_once,
    webhooks_from_urls,
)
from kolray.alerts.webhooks import post
from kolray.commands._common import console, fail, out, settings
from kolray.commands._database import database
from kolray.features.source import read_engine

app = typer.Typer(
    help="Buy alerts: rules on tracked KOLs' opening buys (P(3x), Diamond Hand, consensus), stored, "
    "streamed at /v1/alerts/stream and sent to KOLRAY_WEBHOOK_URLS.",
    no_args_is_help=True,
)


def _runner(from_start: bool, interval: float | None) -> AlertRunner:

    config = settings()
    database()  # migrated, or a one-line failure
    try:
        return AlertRunner(config, from_start=from_start, interval_s=interval)
    except AlertConfigError as error:
        fail(str(error))


@app.command("run")
def run(
    once: Annotated[
        bool,
        typer.Option("--once", help="Evaluate once, deliver what is due (with retries, up to 30 s), exit."),
    ] = False,
    from_start: Annotated[
        bool,
        typer.Option(
            "--from-start",
            help="Evaluate every stored swap, not only new ones (stored alerts are not repeated).",
        ),
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(min=0.1, help="Seconds between evaluations. Default: KOLRAY_ALERT_INTERVAL_S."),
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="Print the evaluation summary as JSON (--once).")
    ] = False,
) -> None:
    """Evaluate the alert rules on new swaps and deliver alerts: continuously (Ctrl-C stops), or
    once. `kolray track` does the same after each cycle; only one process per database does it."""
    import signal
    import threading

    runner = _runner(from_start, interval)
    rules = ", ".join(runner.rules.rules)
    hooks = ", ".join(f"{w.id} {w.redacted}" for w in runner.webhooks) or "no webhooks (KOLRAY_WEBHOOK_URLS)"
    console.print(f"alerts: rules {rules}; {hooks}")
    if once:
        try:
            result = run_once(runner)
        except AlertsBusy as error:
            fail(f"{error} (a running `kolray track` or `kolray alerts run`)", 1)
        deliverer = runner.deliverer
        if json_:
            typer.echo(
                json.dumps(
                    {
                        "swaps": result.swaps,
                        "opening_buys": result.opening_buys,
                        "alerts": result.alerts,
                        "by_rule": result.by_rule,
                        "duplicates": result.duplicates,
                        "watermark": result.watermark,
                        "delivered": deliverer.sent,
                        "failed": deliverer.failed,
                        "p3x_unavailable": result.p3x_unavailable,
                    }
                )
            )
        else:
            typer.echo(result.line())
            typer.echo(f"deliveries: {deliverer.sent} delivered, {deliverer.failed} given up")
        return

    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        run_forever(runner, stop)
    except AlertsBusy as error:
        fail(f"{error} (a running `kolray track` or `kolray alerts run`)", 1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(
        f"stopped after {runner.evaluations} evaluations; {runner.deliverer.sent} delivered, "
        f"{runner.deliverer.failed} given up"
    )


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many (newest first).")] = 20,
    rule: Annotated[str | None, typer.Option(help="Only this rule: p3x, dh or consensus.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The latest alerts and their delivery state."""

    if rule is not None and rule not in RULES:
        fail(f"--rule must be one of {', '.join(RULES)}, not {rule!r}")
    database()
    alerts = recent_alerts(read_engine(settings().database_url), limit, rule)
    if json_:
        typer.echo(json.dumps([a.model_dump(mode="json") for a in alerts]))
        return
    if not alerts:
        console.print("no alerts yet")
        return
    from rich.table import Table

    # The message shortens addresses for reading; the wallet and mint columns keep them whole, so
    # that `kolray alerts list | grep WALLET` finds the rows.
    table = Table("id", "time (UTC)", "rule", "alert", "wallet", "mint", "delivered")
    for alert in alerts:
        states = [d.state for d in alert.deliveries.values()]
        delivered = f"{states.count('delivered')}/{len(states)}" if states else "–"
        time_ = alert.time.replace("T", " ").rstrip("Z")
        table.add_row(str(alert.id), time_, alert.rule, alert.message, alert.wallet, alert.mint, delivered)
    out.print(table)


@app.command("test-webhooks")
def test_webhooks() -> None:
    """POST a sample alert to every configured webhook once and show each answer (nothing stored)."""
    import asyncio

    import httpx

    config = settings()
    try:
        hooks = webhooks_from_urls(u.get_secret_value() for u in config.webhook_urls)
    except AlertConfigError as error:
        fail(str(error))
    if not hooks:
        fail("no webhooks configured: set KOLRAY_WEBHOOK_URLS")
    sample = AlertPayload(
        rule="p3x",
        title="kolray test alert",
        wallet="7rhxnLV8C77o6d8oz26AgK8x8m5ePsdeRawjqvojbjnQ",
        kol_name="test",
        mint="So11111111111111111111111111111111111111112",
        signature="1" * 88,
        time=0,
        amount_sol=1.0,
        p_3x=0.5,
        threshold=0.3,
    )

    async def send() -> list[tuple[str, str]]:
        async with httpx.AsyncClient(timeout=config.webhook_timeout_s) as client:
            results = await asyncio.gather(
                *(post(client, hook, render(hook, 0, sample, "kolray-test"), "kolray-test") for hook in hooks)
            )
        return [
            # The id (kind and a hash of the URL) tells apart targets whose redacted URLs match.
            (f"{hook.id} {hook.redacted}", "ok" if r.ok else (r.error or "failed"))
            for hook, r in zip(hooks, results, strict=True)
        ]

    failed = 0
    for target, outcome in asyncio.run(send()):
        failed += outcome != "ok"
        typer.echo(f"{target}: {outcome}")
    if failed:
        raise typer.Exit(1)
