"""The whole pipeline in one call: twin world → tracked swaps → positions → features → models
(→ backtest).

Used by ``kolray demo`` (then serves the result), ``jobs/pipeline.py`` (``ray job submit``) and the
tests. Each stage is the same plain function its own command calls; this module only chains them
and reports progress. A model without a dataset, or with one it cannot be trained on (a split
without positives, an empty split: small worlds), is skipped with the reason and the rest goes
on; so is a backtest that cannot run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kolray.analyzer import analyze
from kolray.backtest import BacktestError, BacktestOptions
from kolray.backtest import backtest_stage as run_backtest_stage
from kolray.config import get_settings
from kolray.db.migrate import upgrade
from kolray.db.runs import record_run
from kolray.features.build import BuildOptions, build_features
from kolray.kols import KolIn, upsert_kols
from kolray.learn.registry import MODEL_KINDS, ModelKind
from kolray.learn.stage import train_and_register
from kolray.learn.train import TrainError
from kolray.learn.tune import TuneOptions
from kolray.sim.server import start_server
from kolray.sim.world import generate_world, load_world
from kolray.tracker.poller import PollPolicy
from kolray.tracker.supervisor import TrackerOptions, sync_once

Say = Callable[[str], None]


class PipelineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    world_dir: Path = Field(description="Where the twin world lives (generated when missing).")
    # 120 days: the KOL dataset's three purged splits of 30-day targets (+ 7-day horizon) need ~111.
    kols: int = Field(default=60, ge=2, description="KOLs in the twin world.")
    days: float = Field(default=120, gt=0, description="Days of market in the twin world.")
    seed: int = Field(default=7, description="World seed.")
    trials: int = Field(default=4, ge=1, description="Tune trials per model.")
    max_epochs: int = Field(default=25, ge=1, description="Epochs per trial at most.")
    tracker_actors: int = Field(default=2, ge=1)
    twin_rps: float = Field(default=2000.0, gt=0, description="Rate the tracker may use against the twin.")
    models: list[ModelKind] = Field(default_factory=lambda: list(MODEL_KINDS), description="Models to train.")
    backtest: bool = Field(
        default=False, description="Backtest the token dataset's test period after tuning (the demo does)."
    )


class StageResult(BaseModel):
    stage: str
    seconds: float
    detail: dict[str, Any] = Field(default_factory=dict)


class PipelineResult(BaseModel):
    stages: list[StageResult] = Field(default_factory=list)
    dataset_version: str | None = None
    skipped: dict[str, str] = Field(
        default_factory=dict,
        description="Model (no dataset, or one it cannot be trained on) or backtest left out, and why.",
    )
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def stage(self, name: str) -> StageResult:
        return next(s for s in self.stages if s.stage == name)


@contextlib.contextmanager
def _timed(result: PipelineResult, name: str, say: Say) -> Iterator[dict[str, Any]]:
    say(f"{name}: started")
    started = time.perf_counter()
    detail: dict[str, Any] = {}
    yield detail
    seconds = time.perf_counter() - started
    result.stages.append(StageResult(stage=name, seconds=round(seconds, 2), detail=detail))
    say(f"{name}: done in {seconds:.1f}s")


def ensure_world(options: PipelineOptions, say: Say) -> dict[str, Any]:
    """Generate the twin world unless one with the same parameters is already there."""

    if (options.world_dir / "world.json").is_file():
        params = load_world(options.world_dir).params
        if (params.kols, params.days, params.seed) == (options.kols, options.days, options.seed):
            say(f"world: reusing {options.world_dir}")
            return {"reused": True, "kols": params.kols, "days": params.days}
    summary = generate_world(
        options.world_dir,
        kols=options.kols,
        days=options.days,
        seed=options.seed,
        overwrite=True,
        progress=_world_progress(say),
    )
    keep = ("kols", "days", "trades", "positions", "closed_3x_rate", "calls_reaching_2x", "calls_reaching_5x")
    return {"reused": False, **{k: summary[k] for k in keep if k in summary}}


def run_pipeline(options: PipelineOptions, say: Say = print) -> PipelineResult:
    """Run every stage against the configured database and storage (set them before calling)."""

    settings = get_settings()
    engine = upgrade(settings.database_url)
    result = PipelineResult()

    with _timed(result, "world", say) as detail:
        detail.update(ensure_world(options, say))
    world = load_world(options.world_dir)

    with _timed(result, "kols", say) as detail:
        kols = world.kols()
        names = [f"kol{int(i):03d}-{style}" for i, style in zip(kols.kol_index, kols["style"], strict=True)]
        added, updated = upsert_kols(
            engine, [KolIn(wallet=w, name=n) for w, n in zip(kols.wallet, names, strict=True)]
        )
        detail.update(added=added, updated=updated)

    # The twin stands in for mainnet: everything at once, no rate limit, on loopback.
    with (
        start_server(world, host="127.0.0.1", port=0, clock="end", rps=None) as twin,
        _timed(result, "track", say) as detail,
    ):
        tracker = TrackerOptions.from_settings(
            settings,
            rpc_urls=[twin.url],
            actors=options.tracker_actors,
            rps=options.twin_rps,
            burst=options.twin_rps,
            # the whole world is history: backfill all of it
            policy=PollPolicy(
                batch_size=100, backfill_seconds=10 * 365 * 86400, backfill_max_signatures=10**7
            ),
        )
        summary = sync_once(tracker, on_progress=_every(say, "track", 0.1))
        detail.update(
            summary.model_dump(include={"wallets", "signatures", "swaps", "wallet_errors", "elapsed_s"})
        )
        if summary.wallet_errors:
            raise RuntimeError(f"tracking failed for {summary.wallet_errors} wallets: {summary.errors[:3]}")

    with _timed(result, "analyze", say) as detail:
        analyzed = analyze(engine, full=False)
        detail.update(analyzed.to_dict())

    with _timed(result, "features", say) as detail:
        built = build_features(BuildOptions(oracle_world=str(options.world_dir)))
        result.dataset_version = built.version
        result.skipped = dict(built.skipped)
        detail.update(version=built.version, line=built.line())
        if all(model in built.skipped for model in options.models):
            raise RuntimeError(
                f"no dataset for the models asked for ({', '.join(options.models)}): {built.skipped}"
            )

    for model in options.models:
        if model in built.skipped:
            say(f"tune:{model}: skipped, no dataset ({built.skipped[model]})")
            continue
        tune_stage(model, built.version, options, result, say)
    if options.backtest:
        if "token" in built.skipped:
            result.skipped["backtest"] = "no token dataset"
            say("backtest: skipped, no token dataset")
        else:
            backtest_stage(built.version, result, say)

    record_run(
        "pipeline",
        "ok",
        {
            "stages": {s.stage: s.seconds for s in result.stages},
            "dataset_version": result.dataset_version,
            "skipped": result.skipped,
            "models": {m: s["version"] for m, s in result.models.items()},
        },
        engine,
    )
    return result


def tune_stage(
    model: ModelKind, dataset_version: str, options: PipelineOptions, result: PipelineResult, say: Say
) -> None:
    """``tune:<model>``: :func:`kolray.learn.tune.train_and_register` on the dataset. A dataset the model
    cannot be trained on (:class:`~kolray.learn.train.TrainError`: no positive label in a split, an empty
    split; a short world's) skips the model with the reason, as a missing dataset does: the
    pipeline goes on with what it has, and Serve answers for the model with a 503 that says so."""
    try:
        with _timed(result, f"tune:{model}", say) as detail:
            outcome = train_and_register(
                model,
                dataset_version=dataset_version,
                options=TuneOptions(trials=options.trials, max_epochs=options.max_epochs, n_boot=200),
                progress=lambda message: say(f"tune:{model}: {message}"),
            )
            result.models[model] = {**outcome.summary(), "reports": outcome.report_locations}
            detail.update(version=outcome.version, promoted=result.models[model]["promoted"])
    except TrainError as error:
        result.skipped[model] = str(error)
        say(f"tune:{model}: skipped, {error}")


def backtest_stage(dataset_version: str | None, result: PipelineResult, say: Say) -> None:
    """``backtest``: :func:`kolray.backtest.backtest_stage` (what ``kolray backtest`` runs, with its
    defaults) on the token dataset's test period; the report is stored where the API and the UI's
    Backtest tab read it. A backtest that cannot run (no signals in the period...) is skipped with
    the reason."""
    try:
        with _timed(result, "backtest", say) as detail:
            stage = run_backtest_stage(
                BacktestOptions(dataset_version=dataset_version),
                progress=lambda message: say(f"backtest: {message}"),
            )
            report = stage.run.report
            detail.update(
                id=report.id,
                signals=report.signals,
                strategies={s.name: round(s.metrics.total_pnl_sol, 2) for s in report.strategies},
                line=", ".join(f"{s.name} {s.metrics.total_pnl_sol:+.2f} SOL" for s in report.strategies),
            )
    except BacktestError as error:
        result.skipped["backtest"] = str(error)
        say(f"backtest: skipped, {error}")


def _world_progress(say: Say) -> Callable[[str, int, int], None]:
    """World generation reports per stage (simulate, render): speak every 10% of each."""
    reporters: dict[str, Callable[[int, int], None]] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in reporters:
            reporters[stage] = _every(say, f"world: {stage}", 0.1, unit="")
        reporters[stage](done, total)

    return report


def _every(say: Say, label: str, fraction: float, unit: str = " wallets") -> Callable[[int, int], None]:
    """A progress callback that speaks every ``fraction`` of the way, not on every tick."""
    last = [-1.0]

    def report(done: int, total: int) -> None:
        if total and done / total - last[0] >= fraction:
            last[0] = done / total
            say(f"{label}: {done}/{total}{unit}")

    return report
