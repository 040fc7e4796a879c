"""PyTorch predictors, their baselines, calibration and the threshold policy."""

from kolray.models.calibration import Calibrator, ThresholdChoice, choose_threshold, fit_calibrator
from kolray.models.nets import FeatureNormalizer, KOLPredictor, TokenPredictor, build_network
from kolray.models.predictors import FeatureMismatch, KOLModel, TokenModel

__all__ = [
    "Calibrator",
    "FeatureMismatch",
    "FeatureNormalizer",
    "KOLModel",
    "KOLPredictor",
    "ThresholdChoice",
    "TokenModel",
    "TokenPredictor",
    "build_network",
    "choose_threshold",
    "fit_calibrator",
]
