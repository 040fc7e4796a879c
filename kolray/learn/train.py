"""Training: plain functions that a Tune trial, a test and the CLI all call.

Token model
- Class imbalance: ``imbalance`` = ``pos_weight`` (BCE with positives weighted n_neg/n_pos, capped
  at 100), ``focal`` (focal loss, ``focal_gamma``), or ``none``; the search chooses.
- Early stopping on validation PR-AUC (average precision), patience ``patience`` epochs; the best
  epoch's weights are kept.
- Calibration (Platt by default) and the decision threshold (highest recall at precision ≥ 0.7,
  else best F1) are fitted on the **validation split only**: see :mod:`kolray.learn.calibration`.
  The test split is never touched here.

KOL model
- Soft-target binary cross-entropy on both heads (targets are rates in [0, 1]); early stopping on
  the validation RMSE averaged over the 7-day and 30-day targets.

Same code on CPU or CUDA (``device="auto"`` picks ``cuda`` when present); seeds fix weight
initialisation, batch order and dropout, so a CPU run repeats exactly.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from kolray.datasets import LoadedDataset
from kolray.learn.baselines import (
    GBTScorer,
    KOLBaseline,
    LogisticScorer,
    MeanRates,
    PersistenceRates,
    RidgeRates,
    TokenBaseline,
)
from kolray.learn.calibration import (
    DEFAULT_MIN_PRECISION,
    CalibrationMethod,
    choose_threshold,
    fit_calibrator,
)
from kolray.learn.metrics import kol_selection_metrics, token_selection_metrics
from kolray.learn.nets import KolNet, TokenNet
from kolray.learn.predictors import KolForecaster, TokenClassifier, network_outputs
from kolray.learn.targets import ORACLE_COLUMNS

if TYPE_CHECKING:
    import torch
    from torch import nn

Imbalance = Literal["none", "pos_weight", "focal"]
# (epoch, metrics, network, improved) → None. Tune reports (and checkpoints when improved) here.
EpochCallback = Callable[[int, dict[str, float], "nn.Module", bool], None]


class TrainError(ValueError):
    """Training cannot run on this data (e.g. a split without positives)."""


# Configs


class TokenTrainConfig(BaseModel):
    """Hyper-parameters and policies of one token-model training run."""

    model_config = ConfigDict(extra="forbid")

    widths: list[int] = Field(default_factory=lambda: [128, 64])
    embed_dim: int = Field(default=0, ge=0, description="Periodic embedding size per feature; 0: none.")
    dropout: float = Field(default=0.1, ge=0, lt=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    batch_size: int = Field(default=256, ge=8)
    max_epochs: int = Field(default=40, ge=1)
    patience: int = Field(default=6, ge=1)
    imbalance: Imbalance = "pos_weight"
    focal_gamma: float = Field(default=2.0, ge=0)
    calibration: CalibrationMethod = "platt"
    min_precision: float = Field(default=DEFAULT_MIN_PRECISION, gt=0, le=1)
    seed: int = 0
    device: str = "auto"


class KOLTrainConfig(BaseModel):
    """Hyper-parameters of one KOL-model training run."""

    model_config = ConfigDict(extra="forbid")

    d_model: int = Field(default=32, ge=4)
    n_heads: int = Field(default=4, ge=1)
    n_layers: int = Field(default=2, ge=1)
    ff_mult: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    batch_size: int = Field(default=256, ge=8)
    max_epochs: int = Field(default=40, ge=1)
    patience: int = Field(default=6, ge=1)
    seed: int = 0
    device: str = "auto"


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when present, else ``cpu``; a CUDA device without CUDA is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"device {device!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    """Seed numpy and torch (and make cuDNN deterministic) for a repeatable run."""
    import torch

    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


# Data as arrays


@dataclass
class TokenArrays:
    """A token dataset as float32 arrays per split, with the oracle's probabilities when known."""

    feature_columns: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    dataset_version: str
    seed_columns: list[str] = field(default_factory=list)
    oracle_val: np.ndarray | None = None
    oracle_test: np.ndarray | None = None
    target: str = "label_3x"


@dataclass
class KOLArrays:
    """A KOL dataset as float32 arrays per split; ``persistence_columns`` feed the persistence baseline."""

    feature_columns: list[str]
    targets: list[str]
    x_train: np.ndarray
    y_train: np.ndarray  # (n, 2)
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    dataset_version: str
    persistence_columns: list[str]
    oracle_test: np.ndarray | None = None


def _oracle(frame: pd.DataFrame, column: str) -> np.ndarray | None:
    if column not in frame.columns or frame[column].isna().all():
        return None
    return frame[column].to_numpy(dtype=np.float64)


def _check_rows(ds: LoadedDataset) -> None:
    empty = [s for s in ("train", "val", "test") if len(ds.split(s)) == 0]
    if empty:
        m = ds.manifest
        raise TrainError(
            f"dataset {m.name}/{m.version}: empty split(s) {empty}; build it over a longer period"
        )


def target_rows(ds: LoadedDataset, split: str, label: str) -> np.ndarray:
    """Which rows of a token split can be used with ``label`` (a boolean mask).

    The dataset's splits are purged for ``label_3x`` (a row whose KOL closed early resolves early).
    ``peak_3x`` is known only at ``entry_time + H``: a training row whose window runs past the
    validation start, or a validation row's past the test start, would carry the next split's
    prices into its label, so it is left out here. Test, the last split, keeps every row."""
    frame = ds.split(split)
    keep = np.ones(len(frame), dtype=bool)
    if label != "peak_3x" or split == "test":
        return keep
    plan = ds.manifest.source.get("split_plan") or {}
    next_start = plan.get("val_start" if split == "train" else "test_start")
    if next_start is not None:
        entry = frame["entry_time"].to_numpy(dtype=np.int64)
        keep &= entry + int(ds.manifest.horizon_s) < int(next_start)
    return keep


def token_arrays(ds: LoadedDataset, label: str = "label_3x") -> TokenArrays:
    """The arrays of a token dataset for one target label (rows purged for it, :func:`target_rows`),
    with the twin's probability of that label when known; :class:`TrainError` without positives in
    train or validation."""
    m = ds.manifest
    _check_rows(ds)
    if label not in m.label_columns:
        raise TrainError(f"dataset {m.name}/{m.version} has no label {label!r} (labels: {m.label_columns})")
    keep = {s: target_rows(ds, s, label) for s in ("train", "val", "test")}
    ys = {s: ds.split(s)[label].to_numpy()[keep[s]].astype(np.float32) for s in keep}
    for split in ("train", "val"):
        if len(ys[split]) == 0:
            raise TrainError(
                f"dataset {m.name}/{m.version}: no {split} row's {label} window ends before the next split "
                "(build it over a longer period)"
            )
        if ys[split].sum() == 0:
            raise TrainError(f"dataset {m.name}/{m.version}: no positive {label} in the {split} split")
    oracle = ORACLE_COLUMNS.get(label, "oracle_p3x")
    oracle_val, oracle_test = _oracle(ds.val, oracle), _oracle(ds.test, oracle)
    return TokenArrays(
        feature_columns=list(m.feature_columns),
        x_train=ds.features("train")[keep["train"]],
        y_train=ys["train"],
        x_val=ds.features("val")[keep["val"]],
        y_val=ys["val"],
        x_test=ds.features("test"),
        y_test=ys["test"],
        dataset_version=m.version,
        seed_columns=list(m.feature_groups.get("seed", [])),
        oracle_val=None if oracle_val is None else oracle_val[keep["val"]],
        oracle_test=oracle_test,
        target=label,
    )


KOL_TARGETS = ["rate_3x_next_7d", "rate_3x_next_30d"]
KOL_ORACLES = ["oracle_rate_7d", "oracle_rate_30d"]


def kol_arrays(ds: LoadedDataset) -> KOLArrays:
    """The arrays of a KOL dataset; :class:`TrainError` when targets or persistence features are missing."""
    m = ds.manifest
    _check_rows(ds)
    missing = [t for t in KOL_TARGETS if t not in m.label_columns]
    if missing:
        raise TrainError(f"dataset {m.name}/{m.version} lacks targets {missing}")
    missing = [t for t in KOL_TARGETS if t not in m.persistence_features]
    if missing:
        raise TrainError(f"dataset {m.name}/{m.version}: manifest has no persistence_features for {missing}")

    def y(split: str) -> np.ndarray:
        values = ds.split(split)[KOL_TARGETS].to_numpy(dtype=np.float32)
        if np.isnan(values).any():
            raise TrainError(
                f"dataset {m.name}/{m.version}: NaN targets in {split} (rows without positions must be dropped)"
            )
        return values

    oracle = None
    if all(c in ds.test.columns for c in KOL_ORACLES) and not ds.test[KOL_ORACLES].isna().any().any():
        oracle = ds.test[KOL_ORACLES].to_numpy(dtype=np.float64)
    return KOLArrays(
        feature_columns=list(m.feature_columns),
        targets=list(KOL_TARGETS),
        x_train=ds.features("train"),
        y_train=y("train"),
        x_val=ds.features("val"),
        y_val=y("val"),
        x_test=ds.features("test"),
        y_test=y("test"),
        dataset_version=m.version,
        persistence_columns=[m.persistence_features[t] for t in KOL_TARGETS],
        oracle_test=oracle,
    )


# Losses


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017) without the alpha term: easy negatives, the bulk of a
    rare-positive set, are down-weighted by (1 - p_t)^gamma."""
    import torch
    from torch.nn import functional as F

    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-bce)
    return ((1 - p_t) ** gamma * bce).mean()


# The training loop shared by both networks


@dataclass
class NetworkFit:
    """A fitted network with its best epoch, the monitored value there, and the per-epoch history."""

    network: nn.Module  # best epoch's weights, on CPU, eval mode
    best_epoch: int
    best_metric: float
    history: list[dict[str, float]]
    device: str
    seconds: float


def _fit_network(
    network: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    val_metrics: Callable[[np.ndarray], dict[str, float]],
    monitor: str,
    mode: Literal["max", "min"],
    *,
    lr: float,
    weight_decay: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    seed: int,
    device: str,
    on_epoch: EpochCallback | None,
) -> NetworkFit:
    import torch

    started = time.perf_counter()
    device = resolve_device(device)
    network = network.to(device)
    # Copies: arrays from Arrow-backed frames can be read-only, and the tensors must own their memory.
    x = torch.tensor(x_train, dtype=torch.float32, device=device)
    y = torch.tensor(y_train, dtype=torch.float32, device=device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    # Batch order from a CPU generator: identical on CPU and GPU for the same seed.
    order_rng = torch.Generator().manual_seed(seed)
    sign = 1.0 if mode == "max" else -1.0
    best_value, best_epoch, best_state = -math.inf, 0, copy.deepcopy(network.state_dict())
    history: list[dict[str, float]] = []
    stale = 0
    for epoch in range(1, max_epochs + 1):
        network.train()
        perm = torch.randperm(len(x), generator=order_rng).to(device)
        total, batches = 0.0, 0
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            if len(idx) < 2:  # LayerNorm/attention are fine with 1 row, but a 1-row step is noise
                continue
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(network(x[idx]), y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimiser.step()
            total += float(loss.detach())
            batches += 1
        metrics = {
            "train_loss": total / max(batches, 1),
            **val_metrics(network_outputs(network, x_val, device)),
        }
        value = metrics[monitor]
        improved = np.isfinite(value) and sign * value > best_value + 1e-9
        if improved:
            best_value, best_epoch, stale = sign * value, epoch, 0
            best_state = copy.deepcopy(network.state_dict())
        else:
            stale += 1
        metrics.update(epoch=epoch, **{f"best_{monitor}": sign * best_value})
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics, network, bool(improved))
        if stale >= patience:
            break
    network.load_state_dict(best_state)
    network = network.to("cpu").eval()
    return NetworkFit(network, best_epoch, sign * best_value, history, device, time.perf_counter() - started)


# Token model


def make_token_network(n_features: int, config: TokenTrainConfig) -> TokenNet:
    """An untrained :class:`~kolray.learn.nets.TokenNet` sized by ``config``."""
    return TokenNet(n_features, widths=config.widths, dropout=config.dropout, embed_dim=config.embed_dim)


def train_token_network(
    data: TokenArrays, config: TokenTrainConfig, on_epoch: EpochCallback | None = None
) -> NetworkFit:
    """Fit the MLP with early stopping on validation PR-AUC. Normalisation is fitted on train only."""
    import torch
    from torch.nn import functional as F

    seed_everything(config.seed)
    network = make_token_network(data.x_train.shape[1], config)
    network.normalizer.fit(data.x_train)
    n_pos = float(data.y_train.sum())
    n_neg = float(len(data.y_train) - n_pos)
    if n_pos == 0:
        raise TrainError("no positive labels in the training split")
    device = resolve_device(config.device)
    if config.imbalance == "pos_weight":
        weight = torch.tensor(min(n_neg / n_pos, 100.0), device=device)

        def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
    elif config.imbalance == "focal":

        def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return focal_loss(logits, target, config.focal_gamma)
    else:

        def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(logits, target)

    y_val = data.y_val

    def val_metrics(logits: np.ndarray) -> dict[str, float]:
        return token_selection_metrics(y_val, logits)

    return _fit_network(
        network,
        data.x_train,
        data.y_train,
        data.x_val,
        loss_fn,
        val_metrics,
        "val_pr_auc",
        "max",
        lr=config.lr,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        max_epochs=config.max_epochs,
        patience=config.patience,
        seed=config.seed,
        device=device,
        on_epoch=on_epoch,
    )


def finalize_token(
    network: TokenNet,
    data: TokenArrays,
    calibration: CalibrationMethod = "platt",
    min_precision: float = DEFAULT_MIN_PRECISION,
) -> TokenClassifier:
    """Calibrator and threshold from the **validation split only**."""
    logits = network_outputs(network, data.x_val).astype(np.float64)
    calibrator = fit_calibrator(logits, data.y_val, calibration)
    threshold = choose_threshold(calibrator(logits), data.y_val, min_precision)
    return TokenClassifier(network, calibrator, threshold, list(data.feature_columns), data.target)


def train_token_model(
    data: TokenArrays, config: TokenTrainConfig, on_epoch: EpochCallback | None = None
) -> tuple[TokenClassifier, NetworkFit]:
    """Fit the network, then its calibrator and threshold on validation."""
    fit = train_token_network(data, config, on_epoch)
    assert isinstance(fit.network, TokenNet)
    return finalize_token(fit.network, data, config.calibration, config.min_precision), fit


def fit_token_baselines(
    data: TokenArrays,
    seed: int = 0,
    calibration: CalibrationMethod = "platt",
    min_precision: float = DEFAULT_MIN_PRECISION,
    n_threads: int = 1,
) -> dict[str, TokenBaseline]:
    """Logistic regression and LightGBM on all features, and LightGBM on the seed's seven features
    alone (when the manifest names them in ``feature_groups['seed']``). Each calibrated and
    thresholded on validation like the network."""
    cols = data.feature_columns
    scorers: dict[str, LogisticScorer | GBTScorer] = {
        "logistic": LogisticScorer.fit(data.x_train, data.y_train, cols, seed=seed),
        "gbt": GBTScorer.fit(data.x_train, data.y_train, data.x_val, data.y_val, cols, seed, n_threads),
    }
    if data.seed_columns:
        idx = [cols.index(c) for c in data.seed_columns]
        scorers["gbt_seed7"] = GBTScorer.fit(
            data.x_train[:, idx],
            data.y_train,
            data.x_val[:, idx],
            data.y_val,
            list(data.seed_columns),
            seed,
            n_threads,
        )
    out: dict[str, TokenBaseline] = {}
    for name, scorer in scorers.items():
        idx = [cols.index(c) for c in scorer.columns]
        val_scores = scorer.scores(data.x_val[:, idx])
        calibrator = fit_calibrator(val_scores, data.y_val, calibration)
        threshold = choose_threshold(calibrator(val_scores), data.y_val, min_precision)
        out[name] = TokenBaseline(name, scorer, calibrator, threshold)
    return out


# KOL model


def make_kol_network(n_features: int, config: KOLTrainConfig) -> KolNet:
    """An untrained :class:`~kolray.learn.nets.KolNet` sized by ``config``."""
    return KolNet(
        n_features,
        d_model=config.d_model,
        n_heads=config.n_heads,
        n_layers=config.n_layers,
        dropout=config.dropout,
        ff_mult=config.ff_mult,
    )


def train_kol_network(
    data: KOLArrays, config: KOLTrainConfig, on_epoch: EpochCallback | None = None
) -> NetworkFit:
    """Fit the transformer with early stopping on the mean validation RMSE. Normalisation: train only."""
    from torch.nn import functional as F

    seed_everything(config.seed)
    network = make_kol_network(data.x_train.shape[1], config)
    network.normalizer.fit(data.x_train)
    y_val = data.y_val

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target)

    def val_metrics(logits: np.ndarray) -> dict[str, float]:
        return kol_selection_metrics(y_val, logits)

    return _fit_network(
        network,
        data.x_train,
        data.y_train,
        data.x_val,
        loss_fn,
        val_metrics,
        "val_rmse",
        "min",
        lr=config.lr,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        max_epochs=config.max_epochs,
        patience=config.patience,
        seed=config.seed,
        device=config.device,
        on_epoch=on_epoch,
    )


def train_kol_model(
    data: KOLArrays, config: KOLTrainConfig, on_epoch: EpochCallback | None = None
) -> tuple[KolForecaster, NetworkFit]:
    """Fit the network and wrap it as a :class:`~kolray.learn.predictors.KolForecaster`."""
    fit = train_kol_network(data, config, on_epoch)
    assert isinstance(fit.network, KolNet)
    return KolForecaster(fit.network, list(data.feature_columns), list(data.targets)), fit


def fit_kol_baselines(data: KOLArrays) -> dict[str, KOLBaseline]:
    """The training mean rate, persistence (the manifest's past-rate features carry on) and ridge on
    all features."""
    cols = data.feature_columns
    return {
        "mean": KOLBaseline("mean", MeanRates.fit(data.y_train)),
        "persistence": KOLBaseline(
            "persistence", PersistenceRates.fit(data.y_train, data.persistence_columns)
        ),
        "ridge": KOLBaseline(
            "ridge", RidgeRates.fit(data.x_train, data.y_train, data.x_val, data.y_val, cols)
        ),
    }
