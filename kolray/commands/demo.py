"""``kolray demo``: the whole pipeline offline on the chain twin, then serve it.

Ctrl-C (SIGINT) or SIGTERM at any point stops it cleanly within seconds: the stage or the serving
loop ends, Serve and the demo's Ray instance are shut down (the twin server only runs during the
``track`` stage), and the exit status is 128 + the signal's number (130 for Ctrl-C, as a shell
reports an interrupted command; 143 for SIGTERM), so that a script never mistakes a stopped demo
for a finished one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import httpx
import typer

from kolray.cluster import init_ray
from kolray.commands._common import console, default_of, fail, help_of, out
from kolray.config import default_data_dir, get_settings
from kolray.pipeline import PipelineOptions, PipelineResult, run_pipeline
from kolray.serve import deploy
from kolray.serve.names import ServeControlError
from kolray.sim.world import load_world

DEMO_DIRNAME = "demo"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def demo(
    exit_after: Annotated[
        bool,
        typer.Option("--exit-after", help="Stop after a smoke check of the served API instead of serving."),
    ] = False,
    kols: Annotated[int, typer.Option(min=2, help=help_of(PipelineOptions, "kols"))] = default_of(
        PipelineOptions, "kols"
    ),
    days: Annotated[
        float, typer.Option(min=1, help="Days of market in the twin world (the KOL model needs ≥ ~111).")
    ] = default_of(PipelineOptions, "days"),
    seed: Annotated[int, typer.Option(help=help_of(PipelineOptions, "seed"))] = default_of(
        PipelineOptions, "seed"
    ),
    trials: Annotated[int, typer.Option(min=1, help=help_of(PipelineOptions, "trials"))] = default_of(
        PipelineOptions, "trials"
    ),
    max_epochs: Annotated[int, typer.Option(min=1, help=help_of(PipelineOptions, "max_epochs"))] = default_of(
        PipelineOptions, "max_epochs"
    ),
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

    mode = deploy.prepare_environment(None, None)
    console.print(f"  Serve mode: {mode}")
    import ray

    started = time.perf_counter()
    # Always a Ray of its own ("local": loopback-only, reaped if the demo is killed): attached to a
    # running cluster, the demo's replicas and trials would not see its database and storage settings.
    info = init_ray("local", namespace="kolray", log_to_driver=False)
    dashboard = info.dashboard_url
    # After ray.init, which sets a SIGTERM handler of its own (sys.exit(15)): both signals stop
    # whatever runs (a stage, the deploy, the serving loop) by KeyboardInterrupt, and every path
    # below ends with Serve and Ray shut down.
    with _stop_signals() as received:
        console.print(f"[bold]kolray demo[/]: {kols} KOLs × {days:g} days, state in {state}")
        options = PipelineOptions(
            world_dir=root / f"world-{kols}k-{days:g}d-s{seed}",
            kols=kols,
            days=days,
            seed=seed,
            trials=trials,
            max_epochs=max_epochs,
            backtest=True,
        )
        try:
            result = run_pipeline(options, say=lambda message: console.print(f"  {message}"))
        except KeyboardInterrupt:  # ours, or Tune's: a Ctrl-C that ended a search comes out as one
            ray.shutdown()
            stopped(received[0] if received else signal.SIGINT, "during the pipeline")
        except Exception as error:  # a stage failed: say which and why, in one line
            ray.shutdown()
            fail(f"demo pipeline failed: {type(error).__name__}: {error}", 1)
        _print_summary(result, time.perf_counter() - started)

        smoke: dict[str, dict[str, Any]] = {}
        stop = threading.Event()

        def ready(urls: dict[str, str | None]) -> None:
            urls = {
                **urls,
                "ray dashboard": f"http://{dashboard}" if dashboard else urls.get("ray dashboard"),
            }
            out.print(f"[bold green]kolray is serving[/] ({mode}) after {time.perf_counter() - started:.0f}s")
            for name, url in urls.items():
                if url:
                    out.print(f"  {name:<14} {url}")
            if exit_after:
                wallet = str(load_world(options.world_dir).kols().wallet[0])
                base = f"http://{settings.serve_host}:{settings.serve_port}"
                with httpx.Client(base_url=base, timeout=60) as client:
                    smoke.update(smoke_check(client, wallet, result.skipped))
                stop.set()
            else:
                out.print("Ctrl-C to stop.")

        signalled: int | None = None
        try:
            # While it runs, SIGTERM is run_blocking's (it returns it) and Ctrl-C ours; either ends
            # it by KeyboardInterrupt (in the deploy, the smoke check or the wait), and it shuts
            # Serve down before returning.
            signalled = deploy.run_blocking(
                None,
                settings.serve_host,
                settings.serve_port,
                on_ready=ready,
                stop=stop,
                progress=lambda message: console.print(f"  serve: {message}"),
            )
        except ServeControlError as error:
            fail(f"serving failed: {error}", 1)
        except Exception as error:  # a Serve actor failed to start (a RayTaskError with its traceback)
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            fail(f"serving failed: {type(error).__name__}: {lines[-1] if lines else ''}", 1)
        finally:
            if ray.is_initialized():
                ray.shutdown()
        if received or signalled or (stop.is_set() and not smoke):  # a signal, not the smoke check
            stopped(received[0] if received else signalled or signal.SIGTERM, "")
        if exit_after:
            failed = [name for name, check in smoke.items() if check["status"] == "FAILED"]
            for name, check in smoke.items():
                out.print(f"  smoke {name:<22} {check['status']}  {check['detail']}")
            if failed or not smoke:
                fail(f"smoke check failed: {', '.join(failed) or 'the app never became ready'}", 1)
            out.print(f"demo finished in {time.perf_counter() - started:.0f}s")
            _quick_exit()


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """SIGINT and SIGTERM raise KeyboardInterrupt inside the block (whatever it is doing then) and
    are recorded in the list yielded; the previous handlers are back afterwards."""
    received: list[int] = []

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)


def stopped(signum: int, when: str) -> NoReturn:
    """Report a demo stopped by a signal (Serve and Ray are down by now) and exit 128 + signum."""
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    console.print(f"kolray demo stopped ({name}{', ' + when if when else ''}): Serve and Ray are shut down")
    _quick_exit()
    raise typer.Exit(128 + signum)


def _quick_exit() -> None:
    """Let the interpreter end in about a second instead of 6-9 s (2 cores): at exit it garbage-
    collects every object of the modules the demo loaded (torch, Ray, pandas, Gradio...) while
    tearing them down; frozen objects are left out of those collections. Only before exiting."""
    import gc

    gc.freeze()


def smoke_check(client: httpx.Client, wallet: str, skipped: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Call the served API as a user would: health, leaderboard, a KOL, a what-if prediction, the
    models, the backtest. ``skipped``: what the pipeline left out and why
    (:attr:`PipelineResult.skipped`): without a token model the prediction must be the 503 that
    says so, reported as skipped with the pipeline's reason; anything else is a failure.

    Each check: ``status`` (ok, skipped or FAILED) and ``detail``."""
    checks: dict[str, dict[str, Any]] = {}

    def check(
        name: str,
        method: str,
        path: str,
        body: Any = None,
        expect: Any = None,
        skipped_as: tuple[str, int, str] | None = None,
    ) -> None:
        """``skipped_as``: (what the pipeline skipped, the status and detail text the API gives
        for it); when the pipeline skipped that, only that answer passes, as skipped."""
        left_out = skipped_as is not None and skipped_as[0] in skipped
        try:
            response = client.request(method, path, json=body)
            payload = response.json()
            detail = f"HTTP {response.status_code}"
            if left_out:
                _, status, says = skipped_as  # type: ignore[misc]
                answer = str(payload.get("detail", "")) if isinstance(payload, dict) else ""
                ok = response.status_code == status and says in answer
                detail += f", {answer}" if ok else f", expected {status} ({says}): {str(payload)[:200]}"
            else:
                ok = response.status_code == 200 and (expect is None or expect(payload))
                if name == "predict" and response.status_code == 200:
                    p = payload["predictions"][0]
                    detail += f", p_3x={p['p_3x']:.4f}, model {payload['model_version']}"
                elif not ok:
                    detail += f": {str(payload)[:200]}"
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as error:
            ok, detail = False, f"{type(error).__name__}: {error}"
        if ok and left_out:
            what = skipped_as[0]  # type: ignore[index]
            checks[name] = {"status": "skipped", "detail": f"{what} skipped: {skipped[what]} ({detail})"}
        else:
            checks[name] = {"status": "ok" if ok else "FAILED", "detail": detail}

    check("healthz", "GET", "/healthz")
    check("leaderboard", "GET", "/v1/kols?window=all&limit=5", expect=lambda p: bool(p.get("kols")))
    check("kol detail", "GET", f"/v1/kols/{wallet}")
    check(
        "predict",
        "POST",
        "/v1/predict/token",
        body={"items": [{"wallet": wallet, "amount_sol": 1.5, "entry_time": "2026-01-01T12:00:00Z"}]},
        expect=lambda p: 0.0 <= p["predictions"][0]["p_3x"] <= 1.0,
        skipped_as=("token", 503, "no token model"),
    )
    check("models", "GET", "/v1/models")
    check(
        "backtest",
        "GET",
        "/v1/backtests/latest",
        expect=lambda p: bool(p.get("strategies")),
        skipped_as=("backtest", 404, "no backtest yet"),
    )
    return checks


def _print_summary(result: PipelineResult, elapsed: float) -> None:
    from rich.table import Table

    stages = Table("stage", "seconds", "what", title="pipeline")
    for stage in result.stages:
        detail = stage.detail
        what = ", ".join(
            f"{k}={v}" for k, v in detail.items() if not isinstance(v, dict | list) and k != "line"
        )
        stages.add_row(stage.stage, f"{stage.seconds:.1f}", (detail.get("line") or what)[:90])
    out.print(stages)
    models = Table("model", "version", "serves", "test metrics", "promoted", "verdict", title="models")
    for model, summary in result.models.items():
        keys = (
            ("roc_auc", "pr_auc", "brier", "recall")
            if model == "token"
            else ("rmse_7d", "r2_7d", "rmse_30d", "r2_30d")
        )
        metrics = ", ".join(f"{k}={summary[k]:.3f}" for k in keys if isinstance(summary.get(k), int | float))
        # The family that won on validation, beside each family's validation metric.
        by_family = summary.get("val_by_family") or {}
        serves = f"{summary.get('family') or 'net'}" + (
            " (val " + ", ".join(f"{f} {v:.3f}" for f, v in by_family.items()) + ")" if by_family else ""
        )
        if summary.get("target"):
            serves += f" · {summary['target']}"
        models.add_row(
            model,
            summary["version"],
            serves,
            metrics,
            "yes" if summary["promoted"] else "no",
            str(summary.get("verdict") or "")[:60],
        )
    for name, why in result.skipped.items():
        models.add_row(name, "–", "", "", "", f"skipped: {why}")
    out.print(models)
    out.print(f"pipeline done in {elapsed:.0f}s")
