"""``kolray sim``: the chain twin."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from kolray.commands._common import console, fail
from kolray.sim.calibrate import MarketFactsError, format_table, write_calibration
from kolray.sim.calibrate import calibrate as calibrate_twin
from kolray.sim.server import ServerConfig, TwinServer
from kolray.sim.server import serve as serve_twin
from kolray.sim.world import WorldError, generate_world, load_world

app = typer.Typer(
    help="The chain twin: generate a simulated market and serve it as Solana JSON-RPC.", no_args_is_help=True
)


@app.command("generate")
def generate(
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write the world to (must be empty or absent).")
    ],
    kols: Annotated[int, typer.Option(help="Number of KOL wallets.")] = 100,
    days: Annotated[float, typer.Option(help="Simulated days.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same bytes.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing twin world at --out.")
    ] = False,
    workers: Annotated[
        int, typer.Option(help="Processes simulating communities of 250 KOLs in parallel (same output).")
    ] = 1,
    start: Annotated[
        str | None,
        typer.Option(
            help="When the world starts: an ISO-8601 date/time (UTC when no offset), or 'now' for a "
            "world that ends now (its history then lies within the tracker's first-sight backfill). "
            "Default 2025-03-01."
        ),
    ] = None,
) -> None:
    """Write a twin world: ground truth (Parquet) and its transactions (served by `kolray sim serve`)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if kols < 1:
        fail(f"--kols must be at least 1 (got {kols})")
    if not 0 < days <= 3650:
        fail(f"--days must be > 0 and ≤ 3650 (got {days})")
    if seed < 0:
        fail(f"--seed must be ≥ 0 (got {seed})")
    if workers < 1:
        fail(f"--workers must be at least 1 (got {workers})")
    overrides = {} if start is None else {"start": _parse_start(start, days)}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("simulating", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            label = {"simulate": "communities", "render": "transactions"}.get(stage, stage)
            bar.update(task, description=label, completed=done, total=total)

        try:
            summary = generate_world(
                out,
                kols=kols,
                days=days,
                seed=seed,
                overwrite=overwrite,
                progress=progress,
                workers=workers,
                **overrides,
            )
        except WorldError as error:
            fail(str(error))
    rate = summary["closed_3x_rate"]
    typer.echo(
        f"world written to {out}: {summary['kols']} KOLs, {summary['days']:g} days, {summary['trades']} trades, "
        f"{summary['positions']} positions, {summary['transactions']} transactions in {summary['generation_s']} s"
    )
    typer.echo(
        f"calibration: {summary['trades_per_kol_day']:.1f} trades/KOL/day; closed positions ≥3x "
        f"{(rate or 0) * 100:.2f}%; calls reaching 2x {(summary['calls_reaching_2x'] or 0) * 100:.1f}%, "
        f"5x {(summary['calls_reaching_5x'] or 0) * 100:.2f}% (against the real market: kolray sim calibrate)"
    )


def _parse_start(text: str, days: float) -> int:
    import time
    from datetime import UTC, datetime

    if text.strip().lower() == "now":
        return int(time.time() - days * 86_400)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"--start must be an ISO-8601 date/time or 'now' (got {text!r})")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


@app.command("serve")
def serve(
    world: Annotated[Path, typer.Option("--world", help="A directory written by `kolray sim generate`.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 8899,
    rps: Annotated[
        float,
        typer.Option(
            help="Requests per second per client (window of 10 s; 40% of it per method); 0: no limit."
        ),
    ] = 10.0,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", help="Latency added to every response (±50%).")
    ] = 0.0,
    fault_rate: Annotated[
        float,
        typer.Option(
            "--fault-rate", help="Share of requests that get a fault (5xx, hang, drop, truncated, ...)."
        ),
    ] = 0.0,
    clock: Annotated[
        str, typer.Option(help="'end': serve everything; 'realtime': unfold the world over time.")
    ] = "end",
    speed: Annotated[float, typer.Option(help="Simulated seconds per second with --clock realtime.")] = 1.0,
    hang_s: Annotated[
        float, typer.Option("--hang-s", help="How long a 'hang' fault holds a request.")
    ] = 30.0,
    seed: Annotated[int, typer.Option(help="Seed of the fault and latency draws.")] = 0,
) -> None:
    """Serve a twin world as Solana JSON-RPC (blocks until interrupted)."""

    if not 0 <= port <= 65535:
        fail(f"--port must be between 0 and 65535 (got {port})")
    try:
        loaded = load_world(world)
        config = ServerConfig(
            rps=rps or None,
            latency_ms=latency_ms,
            fault_rate=fault_rate,
            clock=clock,
            speed=speed,
            hang_s=hang_s,
            seed=seed,
        )
    except FileNotFoundError as error:
        fail(str(error))
    except (WorldError, ValueError) as error:
        fail(str(error))

    def ready(server: TwinServer, url: str) -> None:
        summary = loaded.summary
        console.print(
            f"serving {world} ({summary['kols']} KOLs, {summary['transactions']} transactions) at {url} "
            f"— clock {clock}{f' ×{speed:g}' if clock == 'realtime' else ''}, "
            f"limit {f'{rps:g} req/s per client' if rps else 'off'}, faults {fault_rate:g}; Ctrl-C stops"
        )

    def report(server: TwinServer) -> None:
        stats = server.stats
        faults = sum(stats.faults.values())
        console.print(
            f"slot {server.current_slot()}: {stats.requests} requests, {stats.calls} calls, "
            f"{stats.rate_limited} rate-limited, {faults} faults"
        )

    served: dict[str, TwinServer] = {}

    def ready_and_keep(server: TwinServer, url: str) -> None:
        served["server"] = server
        ready(server, url)

    try:
        serve_twin(loaded, host=host, port=port, on_ready=ready_and_keep, report=report, **asdict(config))
    except OSError as error:
        fail(f"cannot listen on {host}:{port}: {error.strerror or error}", 1)
    if "server" in served:
        stats = served["server"].stats
        console.print(f"stopped after {stats.requests} requests ({stats.calls} calls)")


@app.command("calibrate")
def calibrate(
    world: Annotated[Path, typer.Argument(help="A directory written by `kolray sim generate`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON (for machines).")] = False,
    facts: Annotated[
        Path | None,
        typer.Option(
            "--facts",
            help="Folder with FACTS.md and smugcalls-calls.jsonl (default: $KOLRAY_MARKET_FACTS_DIR, "
            "else ../shared/market beside the repository).",
        ),
    ] = None,
) -> None:
    """The world's figures beside the real market's, with tolerances; also written into world.json."""
    import json

    try:
        loaded = load_world(world)
        table = calibrate_twin(loaded, facts_dir=facts)
    except (FileNotFoundError, WorldError, MarketFactsError) as error:
        fail(str(error))
    write_calibration(loaded, table)
    if as_json:
        typer.echo(json.dumps(table.model_dump(), indent=1))
    else:
        for line in format_table(table):
            typer.echo(line)
