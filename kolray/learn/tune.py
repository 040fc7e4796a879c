"""Hyper-parameter search with Ray Tune over model families: the best model of a dataset version.

- Families (:mod:`kolray.learn.families`): the PyTorch networks (``net``), LightGBM (``gbt``) and
  linear models (``linear``: logistic regression for tokens, ridge for KOLs) are trials of the same search, on the same arrays, scored by the same validation metric; the
  family is a grid axis, so each gets ``ceil(trials / families)`` samples. The champion is the
  family whose best trial is best on validation; test is never read here.
- Search spaces: :func:`token_search_space`, :func:`kol_search_space` (widths/depth or attention
  sizes, dropout, learning rate, weight decay, batch size, and for tokens the imbalance handling
  and the periodic feature embeddings), LightGBM's (leaves, learning rate, leaf size,
  subsampling, L2, class weight) and the linear family's (feature transform; its L2 strength is
  walked inside the trial and chosen on validation).
- ASHA stops weak network trials early (on validation PR-AUC for tokens, validation RMSE for
  KOLs); each trial also stops itself after ``patience`` epochs without improvement. A LightGBM
  trial stops itself on the same validation metric and reports once; so does a linear trial.
- Trial resources ``{"cpu": c, "gpu": g}``; fractional ``g`` packs several trials on one GPU. The
  trial trains on ``cuda`` whenever Ray gave it a GPU, else on CPU: same code.
- ``max_concurrent_trials`` defaults to what the cluster can run at once (CPUs / c, GPUs / g), so
  a 2-CPU machine runs two 1-CPU trials, not a queue of pending actors.
- The training arrays go to the object store once (``tune.with_parameters``); trials never re-read
  the dataset.
- Results and checkpoints (safetensors of the best epoch, or LightGBM's model text) go to
  ``<storage_uri>/tune/<model>-<version>/`` on a local path or ``s3://``. Tune keeps its own
  experiment state there too (``tuner.pkl``, ``params.pkl``); kolray never loads those.

:func:`run_search` returns the best trial of each family and the champion family; :func:`kolray.learn.stage.train_and_register`
turns it into a registered, evaluated candidate.
"""

from __future__ import annotations

import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray.tune import Callback

from kolray import storage
from kolray.cluster import init_ray
from kolray.learn.calibration import DEFAULT_MIN_PRECISION, CalibrationMethod
from kolray.learn.families import (
    FAMILIES,
    FAMILY_KEY,
    Family,
    FamilyBest,
    booster_config,
    booster_search_space,
    champion_family,
    fit_booster,
    fit_linear,
    linear_config,
    linear_search_space,
    read_booster_checkpoint,
    read_linear_checkpoint,
    write_booster_checkpoint,
    write_linear_checkpoint,
)
from kolray.learn.metrics import SELECTION_METRIC
from kolray.learn.nets import build_network
from kolray.learn.registry import ModelKind
from kolray.learn.targets import DEFAULT_TOKEN_TARGET, TokenTarget
from kolray.learn.train import (
    KOLArrays,
    KOLTrainConfig,
    TokenArrays,
    TokenTrainConfig,
    train_kol_network,
    train_token_network,
)

Progress = Callable[[str], None]


_STORAGE_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
)


class TuneFailed(RuntimeError):
    """No trial of a search finished with a usable checkpoint."""


class TuneOptions(BaseModel):
    """The search (trials, resources, epochs) and what follows it (calibration, report, promotion)."""

    model_config = ConfigDict(extra="forbid")

    trials: int = Field(default=8, ge=1, description="Trials (samples of the search space).")
    cpus_per_trial: float = Field(default=1.0, gt=0)
    gpus_per_trial: float = Field(default=0.0, ge=0, description="Fractions share a GPU between trials.")
    max_concurrent: int | None = Field(default=None, ge=1, description="Default: what the cluster fits.")
    max_epochs: int = Field(default=40, ge=1)
    grace_period: int = Field(default=3, ge=1, description="ASHA: epochs before a trial can be stopped.")
    patience: int = Field(default=6, ge=1)
    seed: int = 0
    calibration: CalibrationMethod = "platt"
    min_precision: float = Field(default=DEFAULT_MIN_PRECISION, gt=0, le=1)
    fixed: dict[str, Any] = Field(default_factory=dict, description="Search-space entries pinned to a value.")
    families: list[Family] = Field(
        default_factory=lambda: list(FAMILIES),
        min_length=1,
        description="Model families searched side by side: net (PyTorch), gbt (LightGBM), "
        "linear (logistic regression for tokens, ridge for KOLs).",
    )
    target: TokenTarget = Field(
        default=DEFAULT_TOKEN_TARGET,
        description="Token model's label: peak_3x (the token trades at >= 3x the entry within 7 days) "
        "or label_3x (the KOL's own position realises 3x).",
    )
    n_boot: int = Field(default=500, ge=0, description="Bootstrap resamples for the report's intervals.")
    keep: int = Field(default=10, ge=0, description="Registry pruning: non-champion versions kept.")
    auto_promote: bool = True


# Search spaces


def token_search_space() -> dict[str, Any]:
    """The token MLP's search space: width, depth, dropout, optimiser, batch, imbalance handling."""
    from ray import tune

    return {
        "width": tune.choice([32, 64, 128, 256]),
        "depth": tune.choice([1, 2, 3]),
        "dropout": tune.uniform(0.0, 0.4),
        "lr": tune.loguniform(3e-4, 5e-3),
        "weight_decay": tune.loguniform(1e-6, 1e-2),
        "batch_size": tune.choice([128, 256, 512]),
        "imbalance": tune.choice(["none", "pos_weight", "focal"]),
        "focal_gamma": tune.choice([1.0, 2.0, 3.0]),
        "embed_dim": tune.choice([0, 4, 8]),
    }


def kol_search_space() -> dict[str, Any]:
    """The KOL transformer's search space: attention sizes, depth, dropout, optimiser, batch."""
    from ray import tune

    return {
        "d_model": tune.choice([16, 32, 64]),
        "n_heads": tune.choice([2, 4]),
        "n_layers": tune.choice([1, 2, 3]),
        "ff_mult": tune.choice([2, 4]),
        "dropout": tune.uniform(0.0, 0.3),
        "lr": tune.loguniform(3e-4, 5e-3),
        "weight_decay": tune.loguniform(1e-6, 1e-2),
        "batch_size": tune.choice([128, 256, 512]),
    }


def search_space(
    model: str, fixed: dict[str, Any] | None = None, families: list[Family] | None = None
) -> dict[str, Any]:
    """The model's search space over ``families`` (default: all), with ``fixed`` entries pinned
    (unknown names are an error). The family is a grid axis, so every family gets the same number
    of samples; each trial reads the parameters of its own family."""
    from ray import tune

    families = list(families or FAMILIES)
    space = token_search_space() if model == "token" else kol_search_space()
    if "gbt" in families:
        space.update(booster_search_space(model))
    if "linear" in families:
        space.update(linear_search_space())
    space[FAMILY_KEY] = tune.grid_search(families)
    unknown = set(fixed or {}) - set(space)
    if unknown:
        raise ValueError(f"fixed values for unknown {model} search parameters: {sorted(unknown)}")
    return {**space, **(fixed or {})}


def samples_per_family(options: TuneOptions) -> int:
    """Tune's ``num_samples``: the trials shared among the families (at least one each)."""
    if FAMILY_KEY in options.fixed:
        return options.trials
    return max(1, math.ceil(options.trials / len(options.families)))


def train_config(
    model: str, params: dict[str, Any], options: TuneOptions
) -> TokenTrainConfig | KOLTrainConfig:
    """A trial's sampled parameters → the training config (widths taper by half per layer)."""
    common: dict[str, Any] = {
        "dropout": float(params["dropout"]),
        "lr": float(params["lr"]),
        "weight_decay": float(params["weight_decay"]),
        "batch_size": int(params["batch_size"]),
        "max_epochs": options.max_epochs,
        "patience": options.patience,
        "seed": options.seed,
    }
    if model == "token":
        width, depth = int(params["width"]), int(params["depth"])
        return TokenTrainConfig(
            widths=[max(16, width // 2**i) for i in range(depth)],
            embed_dim=int(params.get("embed_dim", 0)),
            imbalance=params["imbalance"],
            focal_gamma=float(params["focal_gamma"]),
            calibration=options.calibration,
            min_precision=options.min_precision,
            **common,
        )
    return KOLTrainConfig(
        d_model=int(params["d_model"]),
        n_heads=int(params["n_heads"]),
        n_layers=int(params["n_layers"]),
        ff_mult=int(params["ff_mult"]),
        **common,
    )


# The trial


def _trial(
    params: dict[str, Any],
    *,
    model: str,
    data: TokenArrays | KOLArrays,
    options: TuneOptions,
    threads: int,
    storage_env: dict[str, str] | None = None,
) -> None:
    """One Tune trial: train, report every epoch, checkpoint (safetensors) when validation improves."""
    import torch
    from ray import tune
    from safetensors.torch import save_file

    # Object-store credentials of the driver, for the checkpoint uploads this process makes, unless
    # the worker has its own (a cluster node's environment wins).
    for name, value in (storage_env or {}).items():
        os.environ.setdefault(name, value)
    torch.set_num_threads(threads)
    if params.get(FAMILY_KEY, "net") == "gbt":
        _booster_trial(params, model=model, data=data, options=options, threads=threads)
        return
    if params.get(FAMILY_KEY, "net") == "linear":
        _linear_trial(params, model=model, data=data, options=options)
        return
    config = train_config(model, params, options)
    on_gpu = 1.0 if torch.cuda.is_available() else 0.0

    def on_epoch(epoch: int, metrics: dict[str, float], network: Any, improved: bool) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        clean["on_gpu"] = on_gpu
        if not improved:
            tune.report(clean)
            return
        with tempfile.TemporaryDirectory() as directory:
            state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
            save_file(state, os.path.join(directory, "model.safetensors"))
            Path(directory, "network.json").write_text(
                json.dumps(
                    {
                        "class": type(network).__name__,
                        "hparams": network.hparams(),
                        "epoch": epoch,
                        "train_config": config.model_dump(),
                    }
                )
            )
            tune.report(clean, checkpoint=tune.Checkpoint.from_directory(directory))

    if model == "token":
        assert isinstance(data, TokenArrays) and isinstance(config, TokenTrainConfig)
        train_token_network(data, config, on_epoch)
    else:
        assert isinstance(data, KOLArrays) and isinstance(config, KOLTrainConfig)
        train_kol_network(data, config, on_epoch)


def _booster_trial(
    params: dict[str, Any], *, model: str, data: TokenArrays | KOLArrays, options: TuneOptions, threads: int
) -> None:
    """A LightGBM trial: it stops itself on validation (the networks' metric) and reports once,
    with the best round's model text as its checkpoint."""
    from ray import tune

    config = booster_config(params, seed=options.seed, threads=threads, patience=options.patience)
    best: dict[str, float] = {}

    def on_check(_round: int, metrics: dict[str, float], improved: bool) -> None:
        if improved:
            best.clear()
            best.update(metrics)

    fit = fit_booster(model, data, config, on_check)
    metric = SELECTION_METRIC[model][0]
    clean = {k: float(v) for k, v in best.items() if math.isfinite(float(v))}
    clean.update({metric: fit.best_metric, f"best_{metric}": fit.best_metric, "on_gpu": 0.0})
    clean["rounds"] = float(max(fit.best_rounds))
    with tempfile.TemporaryDirectory() as directory:
        write_booster_checkpoint(directory, model, fit, config, params)
        tune.report(clean, checkpoint=tune.Checkpoint.from_directory(directory))


def _linear_trial(
    params: dict[str, Any], *, model: str, data: TokenArrays | KOLArrays, options: TuneOptions
) -> None:
    """A linear trial: it walks its L2 path, keeps the best strength on validation (the other
    families' metric) and reports once, with that model's JSON as its checkpoint."""
    from ray import tune

    config = linear_config(params, seed=options.seed)
    fit = fit_linear(model, data, config)
    metric = SELECTION_METRIC[model][0]
    best = next(h for h in fit.history if h["l2"] == fit.model.l2)
    clean = {k: float(v) for k, v in best.items() if math.isfinite(float(v))}
    clean.update({metric: fit.best_metric, f"best_{metric}": fit.best_metric, "on_gpu": 0.0})
    with tempfile.TemporaryDirectory() as directory:
        write_linear_checkpoint(directory, fit, config, params)
        tune.report(clean, checkpoint=tune.Checkpoint.from_directory(directory))


# Running a search


def ensure_ray() -> None:
    """Connect to the cluster (``RAY_ADDRESS``, or the one started by ``ray start``), else start a
    local one. Inside ``ray job submit`` and tests Ray is already up."""
    init_ray(include_dashboard=False, log_to_driver=False)


def default_max_concurrent(cpus_per_trial: float, gpus_per_trial: float) -> int:
    """How many trials of that size the Ray cluster runs at once (at least one)."""
    import ray

    resources = ray.cluster_resources()
    fits = [int(resources.get("CPU", 1) // cpus_per_trial)]
    if gpus_per_trial > 0:
        gpus = resources.get("GPU", 0)
        if gpus < gpus_per_trial:
            raise ValueError(f"--gpus-per-trial {gpus_per_trial} but the Ray cluster has {gpus:g} GPUs")
        fits.append(int(gpus // gpus_per_trial + 1e-9))
    return max(1, min(fits))


def _run_storage(storage_uri: str) -> tuple[str, Any]:
    uri = storage.join(storage_uri, "tune")
    if storage.is_remote(uri):
        fs, path = storage.arrow_filesystem(uri)
        return path, fs
    Path(uri).mkdir(parents=True, exist_ok=True)
    return uri, None


# Signals Tune takes over for a search run from the main thread (SIGUSR1 where it exists).
_TUNE_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s is not None)


def _fit_with_own_signal_handlers(tuner: Any) -> Any:
    """``tuner.fit()``, with the process's signal handlers back afterwards, and Ctrl-C raised.

    Tune installs its own SIGINT handler (Ctrl-C ends the search gracefully) and puts the previous
    one back only when it fires: after a search that was not interrupted, Ctrl-C would only print
    Tune's "Stop signal received" for the rest of the process (``kolray demo`` could not be
    stopped). Tune's handler restoring the previous one is also how an interrupted search is told
    apart: Tune returns it like a finished one, and the stage must stop, not register it."""
    if threading.current_thread() is not threading.main_thread():
        return tuner.fit()  # signal handlers can only be set from the main thread: Tune sets none
    saved = {signum: signal.getsignal(signum) for signum in _TUNE_SIGNALS}
    tune_catches_sigint = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") in ("", "0")
    try:
        grid = tuner.fit()
        interrupted = tune_catches_sigint and signal.getsignal(signal.SIGINT) is saved[signal.SIGINT]
    finally:
        for signum, handler in saved.items():
            if handler is not None:  # None: set outside Python, cannot be put back from here
                signal.signal(signum, handler)
    if interrupted:
        raise KeyboardInterrupt("Ray Tune search interrupted")
    return grid


@dataclass
class SearchOutcome:
    """A finished search: the best trial of each family, the champion family among them (best
    validation metric), and every trial's row."""

    model: str
    run_name: str
    run_uri: str
    families: dict[str, FamilyBest]
    family: str  # the champion family
    trials: list[dict[str, Any]]
    seconds: float
    on_gpu: bool  # a network trial trained on CUDA
    max_concurrent: int

    @property
    def champion(self) -> FamilyBest:
        return self.families[self.family]

    @property
    def best_params(self) -> dict[str, Any]:
        return self.champion.params

    @property
    def best_train_config(self) -> dict[str, Any]:
        return self.champion.train_config

    @property
    def best_metric(self) -> float:
        return self.champion.val_metric

    @property
    def best_epoch(self) -> int:
        return self.champion.best_step

    @property
    def network(self) -> Any:
        """The champion's network (None when a boosting family won)."""
        return self.champion.network


class TrialProgress(Callback):
    """One line per finished trial. Module-level and without a closure because Tune pickles its
    callbacks into the experiment state; the progress function (a console holding locks) is left
    out there, so a restored callback is silent."""

    def __init__(self, progress: Progress, metric: str) -> None:
        self.progress: Progress | None = progress
        self.metric = metric

    def __getstate__(self) -> dict[str, Any]:
        return {"progress": None, "metric": self.metric}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Say the finished trial's best metric and epochs."""
        if self.progress is None:
            return
        result = trial.last_result or {}
        best = result.get(f"best_{self.metric}")
        shown = f"{best:.4f}" if isinstance(best, float) else "n/a"
        family = (trial.config or {}).get(FAMILY_KEY)
        if family == "gbt":
            steps = f"{int(result.get('rounds', 0))} boosting rounds (LightGBM)"
        elif family == "linear":
            steps = f"L2 {result.get('l2', float('nan')):g} chosen on validation (linear)"
        else:
            steps = f"{result.get('training_iteration', 0)} epochs (network)"
        self.progress(f"trial {trial.trial_id} done: best {self.metric} {shown} after {steps}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Say that a trial failed."""
        if self.progress is not None:
            self.progress(f"trial {trial.trial_id} failed")


def run_search(
    model: ModelKind,
    data: TokenArrays | KOLArrays,
    options: TuneOptions,
    storage_uri: str,
    run_name: str,
    progress: Progress | None = None,
) -> SearchOutcome:
    """Run the Tune search and load the best trial's best checkpoint."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    ensure_ray()
    metric, mode = SELECTION_METRIC[model]
    started = time.perf_counter()
    max_concurrent = options.max_concurrent or default_max_concurrent(
        options.cpus_per_trial, options.gpus_per_trial
    )
    threads = max(1, int(options.cpus_per_trial))
    # Trial processes upload checkpoints themselves. Workers of a running cluster keep the
    # environment they were started with, so S3 credentials set in the driver later (a shell
    # export, a test) go along with the parameters: through the object store, never into storage.
    storage_env = (
        {k: os.environ[k] for k in _STORAGE_ENV if k in os.environ} if storage.is_remote(storage_uri) else {}
    )
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial, model=model, data=data, options=options, threads=threads, storage_env=storage_env
        ),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    )
    path, filesystem = _run_storage(storage_uri)
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(model, options.fixed, options.families),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=samples_per_family(options),
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=options.max_epochs,
                grace_period=min(options.grace_period, options.max_epochs),
                reduction_factor=2,
            ),
            # Seeded sampling: the same options draw the same trial configurations. The concurrency
            # cap goes here: Tune ignores TuneConfig.max_concurrent_trials with a generator instance.
            search_alg=BasicVariantGenerator(random_state=options.seed, max_concurrent=max_concurrent),
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=path,
            storage_filesystem=filesystem,
            # Trials checkpoint only on improvement, so a trial's latest checkpoint is its best one.
            # (No num_to_keep: it forces an experiment-state snapshot per checkpoint; the few small
            # safetensors files are removed with the run when the registry prunes the version.)
            checkpoint_config=tune.CheckpointConfig(),
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[TrialProgress(progress, metric)] if progress else None,
            verbose=0,
        ),
    )
    grid = _fit_with_own_signal_handlers(tuner)

    trials: list[dict[str, Any]] = []
    for result in grid:
        row = {k: result.config.get(k) for k in sorted(result.config)}
        metrics = result.metrics or {}
        trials.append(
            {
                "trial_id": metrics.get("trial_id"),
                "family": result.config.get(FAMILY_KEY, "net"),
                "params": row,
                f"best_{metric}": metrics.get(f"best_{metric}"),
                "epochs": metrics.get("training_iteration"),
                "error": str(result.error).splitlines()[0] if result.error else None,
            }
        )
    ok = [r for r in grid if r.error is None and r.checkpoint is not None]
    if not ok:
        errors = [t["error"] for t in trials if t["error"]]
        raise TuneFailed(
            f"no {model} trial produced a checkpoint" + (f"; first error: {errors[0]}" if errors else "")
        )
    bests: dict[str, FamilyBest] = {}
    for family in dict.fromkeys(r.config.get(FAMILY_KEY, "net") for r in ok):
        best = _best_of(model, [r for r in ok if r.config.get(FAMILY_KEY, "net") == family], metric, mode)
        if best is not None:
            bests[family] = best
    if not bests:
        raise TuneFailed(f"no {model} trial reported a finite {metric}")
    on_gpu = any(
        r.config.get(FAMILY_KEY, "net") == "net"
        and "on_gpu" in r.metrics_dataframe
        and r.metrics_dataframe["on_gpu"].max() > 0
        for r in ok
    )
    return SearchOutcome(
        model=model,
        run_name=run_name,
        run_uri=storage.join(storage_uri, "tune", run_name),
        families=bests,
        family=champion_family(bests, mode).family,
        trials=trials,
        seconds=time.perf_counter() - started,
        on_gpu=on_gpu,
        max_concurrent=max_concurrent,
    )


def _best_of(model: str, results: list[Any], metric: str, mode: str) -> FamilyBest | None:
    """The best trial among ``results`` (one family) by its best validation ``metric``, loaded from
    its checkpoint (trials checkpoint only on improvement: the latest is the best)."""
    from safetensors.torch import load as load_safetensors

    def value(result: Any) -> float:
        frame = result.metrics_dataframe
        if metric not in frame or frame[metric].dropna().empty:
            return math.nan
        return float(frame[metric].max() if mode == "max" else frame[metric].min())

    scored = [(value(r), r) for r in results]
    scored = [(v, r) for v, r in scored if math.isfinite(v)]
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    best_value, best = max(scored, key=lambda pair: sign * pair[0])
    params = dict(best.config)
    with best.checkpoint.as_directory() as directory:
        if params.get(FAMILY_KEY, "net") == "gbt":
            texts, info = read_booster_checkpoint(directory, model)
            return FamilyBest(
                "gbt", best_value, params, info["config"], model_texts=texts, best_step=max(info["rounds"])
            )
        if params.get(FAMILY_KEY) == "linear":
            text, info = read_linear_checkpoint(directory)
            return FamilyBest(
                "linear", best_value, params, {**info["config"], "l2": info["l2"]}, model_texts=[text]
            )
        info = json.loads(Path(directory, "network.json").read_text())
        state = load_safetensors(Path(directory, "model.safetensors").read_bytes())
    network = build_network(model, info["hparams"])
    network.load_state_dict(state, strict=True)
    network.eval()
    return FamilyBest(
        "net", best_value, params, info["train_config"], network=network, best_step=int(info["epoch"])
    )
