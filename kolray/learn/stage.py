"""Continuous training: features → tune → evaluate → promote if better → tell Serve, on a schedule.

One cycle is :func:`train_cycle`; ``jobs/continuous_train.py`` runs it every ``--interval-hours``
(or ``--once``). A new candidate replaces the champion only when it beats it on the same frozen
test split (:mod:`kolray.learn.registry`); either way Serve is told, so a promotion made by any writer
reaches the replicas at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


class CycleOptions(BaseModel):
    models: list[str] = Field(default_factory=lambda: ["token", "kol"])
    trials: int = Field(default=8, ge=1)
    max_epochs: int = Field(default=40, ge=1)
    gpus_per_trial: float = Field(default=0.0, ge=0)
    cpus_per_trial: float = Field(default=1.0, gt=0)
    analyze_first: bool = Field(default=True, description="Bring positions up to date before the features.")
    oracle_world: str | None = None


class CycleResult(BaseModel):
    dataset_version: str | None = None
    models: dict[str, dict] = Field(default_factory=dict)
    serve: str = ""
    seconds: float = 0.0


def train_cycle(options: CycleOptions, say: Callable[[str], None] = log.info) -> CycleResult:
    from kolray.analyzer import analyze
    from kolray.config import get_settings
    from kolray.db.migrate import upgrade
    from kolray.features import BuildOptions, build_features
    from kolray.learn.tune import TuneOptions, train_and_register
    from kolray.serve.control import notify_serve

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
            progress=lambda message, _m=model: say(f"{_m}: {message}"),
        )
        result.models[model] = outcome.summary()
        say(
            f"{model}: {outcome.version} {'promoted' if result.models[model]['promoted'] else 'kept as candidate'}"
            f" ({result.models[model]['decision']})"
        )
    _reached, message = notify_serve()  # not running is fine: it loads the champion at start
    result.serve = message
    say(message)
    result.seconds = round(time.perf_counter() - started, 1)
    from kolray.db.runs import record_run

    record_run("continuous_train", "ok", result.model_dump())
    return result


def run_schedule(
    options: CycleOptions,
    interval_s: float,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = log.info,
    max_cycles: int | None = None,
) -> int:
    """Run :func:`train_cycle` every ``interval_s`` (measured start to start) until ``stop``. A cycle
    that fails is logged and the schedule goes on: a bad night must not end continuous training."""
    stop = stop or threading.Event()
    cycles = 0
    while not stop.is_set() and (max_cycles is None or cycles < max_cycles):
        began = time.time()
        try:
            train_cycle(options, say)
        except Exception as error:
            log.exception("training cycle failed", extra={"error": str(error)})
            say(f"cycle failed: {type(error).__name__}: {error}")
        cycles += 1
        stop.wait(max(0.0, interval_s - (time.time() - began)))
    return cycles
