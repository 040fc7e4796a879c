"""Trained predictors as used after training: network + what turns its output into a decision.

- :class:`TokenClassifier`: logits → calibrated P(3x) → yes/no at the validation-chosen threshold.
- :class:`KolForecaster`: rates of 3x positions over the next 7 and 30 days.

Inference runs on CPU in float32 under ``torch.inference_mode``; inputs are the manifest's
``feature_columns`` in order (a DataFrame is reordered by name, an array must already be).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd

from kolray.learn.calibration import Calibrator, ThresholdChoice, sigmoid
from kolray.learn.nets import KolNet, TokenNet

if TYPE_CHECKING:
    import torch

INFERENCE_BATCH = 65_536


class FeatureMismatch(ValueError):
    """The input does not have the model's feature columns."""


def as_matrix(features: np.ndarray | pd.DataFrame, feature_columns: list[str]) -> np.ndarray:
    """float32 matrix in the model's column order; names the missing columns if any."""
    if isinstance(features, pd.DataFrame):
        missing = [c for c in feature_columns if c not in features.columns]
        if missing:
            raise FeatureMismatch(f"missing feature columns: {missing}")
        return features[feature_columns].to_numpy(dtype=np.float32)
    x = np.asarray(features, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != len(feature_columns):
        raise FeatureMismatch(
            f"expected an array of shape (n, {len(feature_columns)}) in the order {feature_columns}, "
            f"got shape {x.shape}"
        )
    return x


def network_outputs(network: torch.nn.Module, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Raw network outputs (logits) for a float32 matrix, in chunks."""
    import torch

    network.eval()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(x), INFERENCE_BATCH):
            # Arrow-backed arrays are read-only; torch wants a writable buffer (it never writes here).
            rows = np.require(x[start : start + INFERENCE_BATCH], requirements=["C", "W"])
            chunk = torch.from_numpy(rows).to(device)
            outs.append(network(chunk).float().cpu().numpy())
    if not outs:
        return np.zeros((0,) if isinstance(network, TokenNet) else (0, 2), dtype=np.float32)
    return np.concatenate(outs)


@dataclass
class TokenClassifier:
    """The token network with its calibrator and threshold: P(3x) and the yes/no decision."""

    network: TokenNet
    calibrator: Calibrator
    threshold: ThresholdChoice
    feature_columns: list[str]
    target: str = "label_3x"  # the label it answers (kolray.learn.targets)

    family: ClassVar[str] = "net"

    def scores(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Raw network outputs (logits) per row, float64."""
        return network_outputs(self.network, as_matrix(features, self.feature_columns)).astype(np.float64)

    def predict_proba(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Calibrated P(3x) per row, shape (n,)."""
        return self.calibrator(self.scores(features))

    def predict(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """True where P(3x) ≥ the chosen threshold."""
        return self.predict_proba(features) >= self.threshold.threshold


@dataclass
class KolForecaster:
    """The KOL network: forecast 3x rates over the next 7 and 30 days."""

    network: KolNet
    feature_columns: list[str]
    targets: list[str]

    family: ClassVar[str] = "net"

    def predict_proba(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Forecast 3x rates, shape (n, 2): columns follow ``targets`` (7-day, 30-day)."""
        return sigmoid(network_outputs(self.network, as_matrix(features, self.feature_columns)))

    def predict(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """The forecast rates (the same as :meth:`predict_proba`)."""
        return self.predict_proba(features)
