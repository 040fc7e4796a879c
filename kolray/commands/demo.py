"""``kolray demo``: the whole pipeline offline on the chain twin, then serve it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from kolray.commands._common import console, fail, out

DEMO_DIRNAME = "demo"


def demo(
    exit_after: Annotated[
        bool,
        typer.Option("--exit-after", help="Stop after a smoke check of the served API instead of serving."),
    ] = False,
    kols: Annotated[int, typer.Option(min=2, help="KOLs in the twin world.")] = 60,
    days: Annotated[
        float,
        typer.Option(min=1, help="Days of market in the twin world (the KOL model needs ≥ ~111)."),
    ] = 120,
    seed: Annotated[int, typer.Option(help="World seed.")] = 7,
    trials: Annotated[int, typer.Option(min=1, help="Tune trials per model.")] = 4,
    max_epochs: Annotated[int, typer.Option(min=1, help="Epochs per trial at most.")] = 25,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Where the demo keeps its world, database and models. Default: <data dir>/demo."
        ),
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Reuse the demo database and models of a previous run instead of starting clean."
        ),
    ] = False,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="HTTP port. Default: KOLRAY_SERVE_PORT.")
    ] = None,
) -> None:
    """Generate a twin world, serve it as Solana RPC on loopback, track its KOLs, analyze, build
    features, search both models with Ray Tune, evaluate, promote, then serve the API and the UI.

    Uses its own SQLite database and storage under --dir, never your configured ones. The twin
    world is cached there (same parameters, same world)."""
    from kolray.config import default_data_dir, get_settings

    root = (directory or default_data_dir() / DEMO_DIRNAME).expanduser().resolve()
    state = root / "state"
    if not keep and state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    # Before Ray starts: its workers (pollers, Tune trials, Serve replicas) inherit this environment.
    os.environ["KOLRAY_DATABASE_URL"] = f"sqlite:///{state / 'kolray.db'}"
    os.environ["KOLRAY_STORAGE_URI"] = str(state / "store")
    if port is not None:
        os.environ["KOLRAY_SERVE_PORT"] = str(port)
    get_settings.cache_clear()
    settings = get_settings()

    from kolray.pipeline import PipelineOptions, run_pipeline
    from kolray.serve import control

    mode = control.prepare_environment(None, None)
    import ray

    started = time.perf_counter()
    # Always a Ray of its own: attached to a running cluster, the demo's replicas and trials would
    # not see the demo's database and storage settings.
    info = ray.init(address="local", namespace="kolray", dashboard_host="127.0.0.1", log_to_driver=False)
    dashboard = info.dashboard_url
    console.print(f"[bold]kolray demo[/]: {kols} KOLs × {days:g} days, state in {state}")
    options = PipelineOptions(
        world_dir=root / f"world-{kols}k-{days:g}d-s{seed}",
        kols=kols,
        days=days,
        seed=seed,
        trials=trials,
        max_epochs=max_epochs,
    )
    try:
        result = run_pipeline(options, say=lambda message: console.print(f"  {message}"))
    except Exception as error:  # a stage failed: say which and why, in one line
        ray.shutdown()
        fail(f"demo pipeline failed: {type(error).__name__}: {error}", 1)
    _print_summary(result, time.perf_counter() - started)

    smoke: dict[str, Any] = {}

    def ready(urls: dict[str, str]) -> None:
        urls = {**urls, "ray dashboard": f"http://{dashboard}" if dashboard else urls.get("ray dashboard")}
        out.print(f"[bold green]kolray is serving[/] ({mode}) after {time.perf_counter() - started:.0f}s")
        for name, url in urls.items():
            if url:
                out.print(f"  {name:<14} {url}")
        if exit_after:
            smoke.update(smoke_check(f"http://{settings.serve_host}:{settings.serve_port}", options))
            stop.set()
        else:
            out.print("Ctrl-C to stop.")

    import threading

    stop = threading.Event()
    try:
        control.run_blocking(
            None,
            settings.serve_host,
            settings.serve_port,
            on_ready=ready,
            stop=stop,
            progress=lambda message: console.print(f"  serve: {message}"),
        )
    except control.ServeControlError as error:
        fail(f"serving failed: {error}", 1)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if exit_after:
        failed = [name for name, check in smoke.items() if not check["ok"]]
        for name, check in smoke.items():
            out.print(f"  smoke {name:<22} {'ok' if check['ok'] else 'FAILED'}  {check['detail']}")
        if failed or not smoke:
            fail(f"smoke check failed: {', '.join(failed) or 'the app never became ready'}", 1)
        out.print(f"demo finished in {time.perf_counter() - started:.0f}s")


def smoke_check(base: str, options: Any) -> dict[str, dict[str, Any]]:
    """Call the served API as a user would: health, leaderboard, a KOL, a what-if prediction."""
    import httpx

    from kolray.sim.world import load_world

    wallet = str(load_world(options.world_dir).kols().wallet[0])
    checks: dict[str, dict[str, Any]] = {}

    def check(name: str, method: str, path: str, body: Any = None, expect: Any = None) -> None:
        try:
            response = httpx.request(method, f"{base}{path}", json=body, timeout=60)
            payload = response.json()
            ok = response.status_code == 200 and (expect is None or expect(payload))
            detail = f"HTTP {response.status_code}"
            if name == "predict" and response.status_code == 200:
                detail += f", p_3x={payload['predictions'][0]['p_3x']:.4f}, model {payload['model_version']}"
        except (httpx.HTTPError, ValueError, KeyError) as error:
            ok, detail = False, f"{type(error).__name__}: {error}"
        checks[name] = {"ok": ok, "detail": detail}

    check("healthz", "GET", "/healthz")
    check("leaderboard", "GET", "/v1/kols?window=all&limit=5", expect=lambda p: bool(p.get("kols")))
    check("kol detail", "GET", f"/v1/kols/{wallet}")
    check(
        "predict",
        "POST",
        "/v1/predict/token",
        body={"items": [{"wallet": wallet, "amount_sol": 1.5, "entry_time": "2026-01-01T12:00:00Z"}]},
        expect=lambda p: 0.0 <= p["predictions"][0]["p_3x"] <= 1.0,
    )
    check("models", "GET", "/v1/models")
    return checks


def _print_summary(result: Any, elapsed: float) -> None:
    from rich.table import Table

    stages = Table("stage", "seconds", "what", title="pipeline")
    for stage in result.stages:
        detail = stage.detail
        what = ", ".join(
            f"{k}={v}" for k, v in detail.items() if not isinstance(v, dict | list) and k != "line"
        )
        stages.add_row(stage.stage, f"{stage.seconds:.1f}", (detail.get("line") or what)[:90])
    out.print(stages)
    models = Table("model", "version", "test metrics", "promoted", "verdict", title="models")
    for model, summary in result.models.items():
        keys = (
            ("roc_auc", "pr_auc", "brier", "recall")
            if model == "token"
            else ("rmse_7d", "r2_7d", "rmse_30d", "r2_30d")
        )
        metrics = ", ".join(f"{k}={summary[k]:.3f}" for k in keys if isinstance(summary.get(k), int | float))
        models.add_row(
            model,
            summary["version"],
            metrics,
            "yes" if summary["promoted"] else "no",
            str(summary.get("verdict") or "")[:60],
        )
    out.print(models)
    out.print(f"pipeline done in {elapsed:.0f}s")
