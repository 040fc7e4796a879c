"""The learning stage, orchestrated: train and register a model, evaluate a version, and the
continuous cycle (features → tune → evaluate → promote if better) on a schedule.

- :func:`train_and_register`: search (:mod:`kolray.learn.tune`) → best checkpoint → calibration and
  threshold on validation → baselines → one evaluation on the test split
  (:mod:`kolray.learn.evaluate`) → registry candidate → report → promote if it beats the champion →
  prune (:mod:`kolray.learn.registry`).
- :func:`evaluate_version`: the report of a registered version, again.
- :func:`train_cycle` and :func:`run_schedule`: the continuous cycle. A new candidate replaces the
  champion only when it beats it on the same frozen test split. Nothing here talks to Serve: a
  running app watches the registry, and the caller may pass ``after_cycle`` to do more (e.g. tell
  Serve at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from kolray import storage
from kolray.analyzer import analyze
from kolray.config import get_settings
from kolray.datasets import LoadedDataset, load_dataset
from kolray.db.migrate import upgrade
from kolray.db.runs import record_run
from kolray.features.build import BuildOptions, build_features
from kolray.learn import registry
from kolray.learn.baselines import KOLBaseline, TokenBaseline
from kolray.learn.evaluate import evaluate_kol, evaluate_token, write_report
from kolray.learn.families import KolPredictor, TokenPredictor, family_kol_forecaster, finalize_family_token
from kolray.learn.metrics import SELECTION_METRIC
from kolray.learn.registry import MODEL_KINDS, ModelKind
from kolray.learn.train import (
    KOLArrays,
    TokenArrays,
    TrainError,
    fit_kol_baselines,
    fit_token_baselines,
    kol_arrays,
    token_arrays,
)
from kolray.learn.tune import Progress, SearchOutcome, TuneOptions, run_search
from kolray.learn.versions import code_version, new_version

log = logging.getLogger(__name__)


# Train and register


@dataclass
class TrainOutcome:
    """What :func:`train_and_register` made: the candidate, its report, the promotion decision."""

    model: str
    version: str
    dataset_version: str
    report: dict[str, Any]
    report_locations: list[str]
    decision: registry.PromotionDecision | None
    pruned: list[str]
    search: SearchOutcome
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """One row for tables and logs."""
        test = self.report["test"]
        keys = (
            ("roc_auc", "pr_auc", "brier", "precision", "recall")
            if self.model == "token"
            else ("rmse_7d", "r2_7d", "rmse_30d", "r2_30d")
        )
        return {
            "model": self.model,
            "version": self.version,
            "dataset_version": self.dataset_version,
            **{k: test.get(k) for k in keys},
            "verdict": self.report["comparison"].get("verdict"),
            "promoted": bool(self.decision and self.decision.promoted),
            "decision": self.decision.reason if self.decision else "auto-promotion off",
            "target": self.report.get("target"),
            "family": self.search.family,
            "val_by_family": {f: b.val_metric for f, b in self.search.families.items()},
            "trials": len(self.search.trials),
            "on_gpu": self.search.on_gpu,
        }


def train_and_register(
    model: ModelKind,
    dataset_version: str | None = None,
    options: TuneOptions | None = None,
    storage_uri: str | None = None,
    local_report_dir: Path | None = None,
    progress: Progress | None = None,
    dataset: LoadedDataset | None = None,
) -> TrainOutcome:
    """Search → evaluate once on test → register a candidate → report → promote if better → prune."""
    options = options or TuneOptions()
    say = progress or (lambda _message: None)
    if storage_uri is None:
        storage_uri = get_settings().storage_uri
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(model, dataset_version, storage_uri)
    target_note = None
    if model == "token":
        data: TokenArrays | KOLArrays
        try:
            data = token_arrays(ds, options.target)
        except TrainError as error:
            if options.target == "label_3x":
                raise
            # The follower's label needs its whole window inside each split: a short dataset may
            # not have it. The KOL's own label is the fallback, and the report says why.
            target_note = f"target {options.target} not usable ({error}); trained on label_3x instead"
            say(f"{model}: {target_note}")
            data = token_arrays(ds, "label_3x")
    else:
        data = kol_arrays(ds)
    say(f"{model}: dataset {ds.version} (train {len(ds.train)}, val {len(ds.val)}, test {len(ds.test)} rows)")
    version = new_version()
    timings["load_s"] = time.perf_counter() - t0

    say(
        f"{model}: searching {options.trials} trials over {', '.join(options.families)} "
        f"(cpu {options.cpus_per_trial:g}, gpu {options.gpus_per_trial:g} each)"
    )
    search = run_search(model, data, options, storage_uri, f"{model}-{version}", progress)
    timings["search_s"] = search.seconds
    metric_name = SELECTION_METRIC[model][0]
    say(
        f"{model}: best {metric_name} per family: "
        + ", ".join(f"{f} {b.val_metric:.4f}" for f, b in search.families.items())
        + f"; serving {search.family}"
    )

    # Calibration, threshold and baselines: validation only; then the single look at test.
    t0 = time.perf_counter()
    threads = max(1, int(options.cpus_per_trial))
    val_metrics = {f: b.val_metric for f, b in search.families.items()}
    if model == "token":
        assert isinstance(data, TokenArrays)
        token_families = {
            f: finalize_family_token(b, data, options.calibration, options.min_precision)
            for f, b in search.families.items()
        }
        predictor: Any = token_families[search.family]
        baselines: Any = fit_token_baselines(
            data, options.seed, options.calibration, options.min_precision, threads
        )
        report, images = evaluate_token(
            predictor,
            baselines,
            ds,
            version=version,
            n_boot=options.n_boot,
            seed=options.seed,
            families=token_families,
            val_metrics=val_metrics,
        )
        if target_note:
            report["target_note"] = target_note
    else:
        assert isinstance(data, KOLArrays)
        kol_families = {f: family_kol_forecaster(b, data) for f, b in search.families.items()}
        predictor = kol_families[search.family]
        baselines = fit_kol_baselines(data)
        report, images = evaluate_kol(
            predictor,
            baselines,
            ds,
            version=version,
            n_boot=options.n_boot,
            seed=options.seed,
            families=kol_families,
            val_metrics=val_metrics,
        )
    report["code_version"] = code_version()
    report["search"] = {
        "run": search.run_uri,
        "trials": len(search.trials),
        "families": list(search.families),
        "family": search.family,
        "best_params": search.best_params,
        f"best_{metric_name}": search.best_metric,
        f"best_{metric_name}_per_family": val_metrics,
        "chosen_on": f"validation {metric_name}",
        "on_gpu": search.on_gpu,
    }
    timings["evaluate_s"] = time.perf_counter() - t0

    no_ci = {k: v for k, v in report["test"].items() if k != "ci95"}
    registry.register(
        predictor,
        dataset_version=ds.version,
        baselines=baselines,
        metrics={
            "test": no_ci,
            "val": {metric_name: search.best_metric, "per_family": val_metrics},
            "baselines": {
                n: {k: v for k, v in b.items() if k != "ci95"} for n, b in report["baselines"].items()
            },
            "comparison": report["comparison"],
        },
        train_config=search.best_train_config,
        tune_info={
            "run": search.run_uri,
            "best_params": search.best_params,
            "trials": len(search.trials),
            "family": search.family,
            "families": val_metrics,
            "on_gpu": search.on_gpu,
        },
        version=version,
        storage_uri=storage_uri,
    )
    locations = write_report(report, images, storage_uri, local_report_dir)
    say(f"{model}: registered candidate {version}; report {locations[-1]}")

    decision = None
    if options.auto_promote:
        decision = registry.promote_if_better(model, version, storage_uri, dataset=ds)
        say(f"{model}: {'promoted to champion' if decision.promoted else 'not promoted'} ({decision.reason})")
    pruned = registry.prune(model, options.keep, storage_uri)
    for old in pruned:
        storage.remove(storage.join(storage_uri, "tune", f"{model}-{old}"))
    if pruned:
        say(f"{model}: pruned {len(pruned)} old versions")
    outcome = TrainOutcome(model, version, ds.version, report, locations, decision, pruned, search, timings)
    record_run("tune", "ok", outcome.summary())  # for `kolray status`, whoever called the stage
    return outcome


# Evaluate a registered version


def evaluate_version(
    model: str,
    version: str | None = None,
    storage_uri: str | None = None,
    n_boot: int = 500,
    seed: int = 0,
    local_dir: Path | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Re-evaluate a registered version (default: the champion, else the newest) on its dataset's
    test split with its stored baselines; write the report. Returns (report, locations)."""
    if version is None:
        version = registry.champion_version(model, storage_uri)
        if version is None:
            versions = registry.list_versions(model, storage_uri)
            if not versions:
                raise registry.VersionNotFound(f"no {model} model registered yet: run `kolray tune`")
            version = versions[-1].version
    loaded = registry.load_version(model, version, storage_uri, with_baselines=True)
    ds = load_dataset(model, loaded.dataset_version, storage_uri)
    if isinstance(loaded.predictor, TokenPredictor):
        token_baselines = {n: b for n, b in loaded.baselines.items() if isinstance(b, TokenBaseline)}
        report, images = evaluate_token(
            loaded.predictor, token_baselines, ds, version=version, n_boot=n_boot, seed=seed
        )
    else:
        assert isinstance(loaded.predictor, KolPredictor)
        kol_baselines = {n: b for n, b in loaded.baselines.items() if isinstance(b, KOLBaseline)}
        report, images = evaluate_kol(
            loaded.predictor, kol_baselines, ds, version=version, n_boot=n_boot, seed=seed
        )
    report["code_version"] = loaded.meta.code_version
    return report, write_report(report, images, storage_uri, local_dir)


# The continuous cycle


class CycleOptions(BaseModel):
    """What one continuous-training cycle does: which models, how hard to search, and on what."""

    models: list[ModelKind] = Field(default_factory=lambda: list(MODEL_KINDS))
    # The search's own defaults: TuneOptions is where they are written.
    trials: int = Field(default=TuneOptions.model_fields["trials"].default, ge=1)
    max_epochs: int = Field(default=TuneOptions.model_fields["max_epochs"].default, ge=1)
    gpus_per_trial: float = Field(default=TuneOptions.model_fields["gpus_per_trial"].default, ge=0)
    cpus_per_trial: float = Field(default=TuneOptions.model_fields["cpus_per_trial"].default, gt=0)
    analyze_first: bool = Field(default=True, description="Bring positions up to date before the features.")
    oracle_world: str | None = None


class CycleResult(BaseModel):
    """One cycle's outcome: the dataset version, a summary row per model trained, and its duration."""

    dataset_version: str | None = None
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seconds: float = 0.0


AfterCycle = Callable[[CycleResult], None]


def train_cycle(
    options: CycleOptions,
    say: Callable[[str], None] = log.info,
    after_cycle: AfterCycle | None = None,
) -> CycleResult:
    """Analyze (optionally) → build features → train and register each model; record the run, then
    call ``after_cycle`` with the result."""
    started = time.perf_counter()
    result = CycleResult()
    if options.analyze_first:
        summary = analyze(upgrade(get_settings().database_url))
        say(summary.line())
    built = build_features(
        BuildOptions(
            datasets=[m for m in ("token", "kol") if m in options.models], oracle_world=options.oracle_world
        )
    )
    say(built.line())
    result.dataset_version = built.version
    for model in options.models:
        if model in built.skipped:
            say(f"{model}: no dataset this cycle ({built.skipped[model]}); the champion stays")
            continue
        outcome = train_and_register(
            model,
            dataset_version=built.version,
            options=TuneOptions(
                trials=options.trials,
                max_epochs=options.max_epochs,
                gpus_per_trial=options.gpus_per_trial,
                cpus_per_trial=options.cpus_per_trial,
            ),
            progress=_prefixed(say, model),
        )
        result.models[model] = outcome.summary()
        say(
            f"{model}: {outcome.version} {'promoted' if result.models[model]['promoted'] else 'kept as candidate'}"
            f" ({result.models[model]['decision']})"
        )
    result.seconds = round(time.perf_counter() - started, 1)
    record_run("continuous_train", "ok", result.model_dump())
    if after_cycle is not None:
        after_cycle(result)
    return result


def _prefixed(say: Callable[[str], None], prefix: str) -> Progress:
    return lambda message: say(f"{prefix}: {message}")


def run_schedule(
    options: CycleOptions,
    interval_s: float,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = log.info,
    max_cycles: int | None = None,
    after_cycle: AfterCycle | None = None,
) -> int:
    """Run :func:`train_cycle` every ``interval_s`` (measured start to start) until ``stop``. A cycle
    that fails is logged and the schedule goes on: a bad night must not end continuous training."""
    stop = stop or threading.Event()
    cycles = 0
    while not stop.is_set() and (max_cycles is None or cycles < max_cycles):
        began = time.time()
        try:
            train_cycle(options, say, after_cycle)
        except Exception as error:
            log.exception("training cycle failed", extra={"error": str(error)})
            say(f"cycle failed: {type(error).__name__}: {error}")
        cycles += 1
        stop.wait(max(0.0, interval_s - (time.time() - began)))
    return cycles
