"""Baselines trained on the same splits as the deep models, stored as JSON or LightGBM's text
format (never pickles), and scored by plain numpy at load time.

Token baselines return raw scores on the logit scale; like the deep model they get a calibrator
and a threshold fitted on validation (see :mod:`kolray.learn.calibration`), so the comparison is
like for like. KOL baselines return rates (n, 2): 7-day and 30-day (the training mean rate,
persistence of the past rate, ridge regression).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kolray.learn.calibration import Calibrator, ThresholdChoice


def standardise_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware column mean and std; a column with no values gets (0, 1), a constant one std 1."""
    # An all-NaN column (a window nobody traded in yet) is expected: it standardises to 0 below.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
        std = np.nanstd(x, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
    return mean, std


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    z = (np.asarray(x, dtype=np.float64) - mean) / std
    # NaN → 0 (the training mean); clip as the networks do, for the same heavy-tail reason.
    return np.clip(np.nan_to_num(z, nan=0.0, posinf=8.0, neginf=-8.0), -8.0, 8.0)


def column_index(all_columns: list[str], wanted: list[str]) -> list[int]:
    """Positions of ``wanted`` in ``all_columns``; ``KeyError`` naming the missing ones."""
    missing = [c for c in wanted if c not in all_columns]
    if missing:
        raise KeyError(f"feature columns {missing} are not in the input ({len(all_columns)} columns)")
    return [all_columns.index(c) for c in wanted]


# Token: scorers


@dataclass
class LogisticScorer:
    """Standardised features → L2 logistic regression (sklearn for fitting only)."""

    columns: list[str]
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float

    kind = "logistic"

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, columns: list[str], seed: int = 0) -> LogisticScorer:
        """Fit on the training split."""
        from sklearn.linear_model import LogisticRegression

        mean, std = standardise_fit(x)
        lr = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
        lr.fit(_standardise(x, mean, std), y.astype(int))
        return cls(columns, mean, std, lr.coef_[0].astype(np.float64), float(lr.intercept_[0]))

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (logit scale) for rows in ``columns`` order."""
        return _standardise(x, self.mean, self.std) @ self.coef + self.intercept

    def to_files(self, name: str) -> dict[str, bytes]:
        """The stored form: ``baselines/<name>.json``."""
        body = {
            "type": self.kind,
            "columns": self.columns,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }
        return {f"baselines/{name}.json": json.dumps(body).encode()}

    @classmethod
    def from_files(cls, name: str, files: dict[str, bytes]) -> LogisticScorer:
        """Rebuild from :meth:`to_files` output."""
        body = json.loads(files[f"baselines/{name}.json"])
        return cls(
            body["columns"],
            np.asarray(body["mean"]),
            np.asarray(body["std"]),
            np.asarray(body["coef"]),
            float(body["intercept"]),
        )


@dataclass
class GBTScorer:
    """LightGBM gradient-boosted trees; NaN handled natively. Stored as LightGBM's model text."""

    columns: list[str]
    model_text: str
    _booster: Any = field(default=None, repr=False)

    kind = "gbt"

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray,
        y_val: np.ndarray,
        columns: list[str],
        seed: int = 0,
        n_threads: int = 1,
    ) -> GBTScorer:
        """Fit on train with early stopping on validation."""
        import lightgbm as lgb

        params = {
            "objective": "binary",
            "learning_rate": 0.05,
            "num_leaves": 15,
            "min_child_samples": 20,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "metric": "average_precision",
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": n_threads,
            "verbosity": -1,
        }
        train = lgb.Dataset(x, label=y, feature_name=[f"f{i}" for i in range(x.shape[1])])
        valid = lgb.Dataset(x_val, label=y_val, reference=train)
        # Early stopping on validation average precision, as for the networks.
        booster = lgb.train(
            params,
            train,
            num_boost_round=600,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(40, verbose=False)],
        )
        text = booster.model_to_string(num_iteration=booster.best_iteration or None)
        return cls(columns, text)

    @property
    def booster(self) -> Any:
        """The LightGBM booster, parsed from its model text once."""
        if self._booster is None:
            import lightgbm as lgb

            self._booster = lgb.Booster(model_str=self.model_text)
        return self._booster

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (logit scale) for rows in ``columns`` order."""
        return np.asarray(self.booster.predict(np.asarray(x, dtype=np.float64), raw_score=True))

    def to_files(self, name: str) -> dict[str, bytes]:
        """The stored form: LightGBM's model text and a JSON header."""
        head = json.dumps({"type": self.kind, "columns": self.columns}).encode()
        return {f"baselines/{name}.json": head, f"baselines/{name}.txt": self.model_text.encode()}

    @classmethod
    def from_files(cls, name: str, files: dict[str, bytes]) -> GBTScorer:
        """Rebuild from :meth:`to_files` output."""
        head = json.loads(files[f"baselines/{name}.json"])
        return cls(head["columns"], files[f"baselines/{name}.txt"].decode())


TOKEN_SCORERS: dict[str, type[LogisticScorer] | type[GBTScorer]] = {
    "logistic": LogisticScorer,
    "gbt": GBTScorer,
}


@dataclass
class TokenBaseline:
    """A fitted token baseline: scorer + its validation calibrator + its validation threshold."""

    name: str
    scorer: LogisticScorer | GBTScorer
    calibrator: Calibrator
    threshold: ThresholdChoice

    def predict_proba(self, x_all: np.ndarray, all_columns: list[str]) -> np.ndarray:
        """Calibrated P(3x) for rows of the full feature matrix."""
        x = x_all[:, column_index(all_columns, self.scorer.columns)]
        return self.calibrator(self.scorer.scores(x))


# KOL: rate predictors


@dataclass
class MeanRates:
    """The training split's mean rate for every KOL: the forecast that knows nothing about the KOL.
    A model that cannot beat it has learnt nothing that generalises."""

    mean: np.ndarray  # (targets,)
    columns: list[str] = field(default_factory=list)  # it reads no feature

    kind = "mean"

    @classmethod
    def fit(cls, y: np.ndarray) -> MeanRates:
        """The training mean of each target."""
        return cls(np.nanmean(np.asarray(y, dtype=np.float64), axis=0))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The mean rates for each row, shape (n, targets)."""
        return np.tile(self.mean, (len(x), 1))

    def to_files(self, name: str) -> dict[str, bytes]:
        """The stored form: ``baselines/<name>.json``."""
        return {
            f"baselines/{name}.json": json.dumps({"type": self.kind, "mean": self.mean.tolist()}).encode()
        }

    @classmethod
    def from_files(cls, name: str, files: dict[str, bytes]) -> MeanRates:
        """Rebuild from :meth:`to_files` output."""
        return cls(np.asarray(json.loads(files[f"baselines/{name}.json"])["mean"], dtype=np.float64))


@dataclass
class PersistenceRates:
    """The past rate carries on: each target is predicted by its past-rate feature (manifest's
    ``persistence_features``); a KOL with no past (NaN) gets the training mean of the target."""

    columns: list[str]
    fallback: np.ndarray

    kind = "persistence"

    @classmethod
    def fit(cls, y: np.ndarray, columns: list[str]) -> PersistenceRates:
        """Remember the past-rate columns, and the training mean of each target as the fallback."""
        return cls(columns, np.nanmean(y, axis=0))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The past rates (NaN → the fallback), clipped to [0, 1], shape (n, 2)."""
        x = np.asarray(x, dtype=np.float64)
        return np.clip(np.where(np.isnan(x), self.fallback, x), 0.0, 1.0)

    def to_files(self, name: str) -> dict[str, bytes]:
        """The stored form: ``baselines/<name>.json``."""
        body = {"type": self.kind, "columns": self.columns, "fallback": self.fallback.tolist()}
        return {f"baselines/{name}.json": json.dumps(body).encode()}

    @classmethod
    def from_files(cls, name: str, files: dict[str, bytes]) -> PersistenceRates:
        """Rebuild from :meth:`to_files` output."""
        body = json.loads(files[f"baselines/{name}.json"])
        return cls(body["columns"], np.asarray(body["fallback"]))


@dataclass
class RidgeRates:
    """Standardised features → ridge regression, one output per target; alpha picked on validation."""

    columns: list[str]
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray  # (targets, features)
    intercept: np.ndarray  # (targets,)
    alpha: float

    kind = "ridge"

    @classmethod
    def fit(
        cls, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, columns: list[str]
    ) -> RidgeRates:
        """Fit on train, keeping the alpha with the lowest validation RMSE."""
        from sklearn.linear_model import Ridge

        mean, std = standardise_fit(x)
        z, z_val = _standardise(x, mean, std), _standardise(x_val, mean, std)
        best: tuple[float, Any, float] | None = None
        for alpha in (0.1, 1.0, 10.0, 100.0, 1000.0):
            ridge = Ridge(alpha=alpha).fit(z, y)
            rmse = float(np.sqrt(np.mean((np.clip(ridge.predict(z_val), 0, 1) - y_val) ** 2)))
            if best is None or rmse < best[0]:
                best = (rmse, ridge, alpha)
        assert best is not None
        _, ridge, alpha = best
        return cls(columns, mean, std, np.atleast_2d(ridge.coef_), np.atleast_1d(ridge.intercept_), alpha)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Forecast rates, clipped to [0, 1], shape (n, 2)."""
        return np.clip(_standardise(x, self.mean, self.std) @ self.coef.T + self.intercept, 0.0, 1.0)

    def to_files(self, name: str) -> dict[str, bytes]:
        """The stored form: ``baselines/<name>.json``."""
        body = {
            "type": self.kind,
            "columns": self.columns,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "alpha": self.alpha,
        }
        return {f"baselines/{name}.json": json.dumps(body).encode()}

    @classmethod
    def from_files(cls, name: str, files: dict[str, bytes]) -> RidgeRates:
        """Rebuild from :meth:`to_files` output."""
        b = json.loads(files[f"baselines/{name}.json"])
        return cls(
            b["columns"],
            np.asarray(b["mean"]),
            np.asarray(b["std"]),
            np.asarray(b["coef"]),
            np.asarray(b["intercept"]),
            float(b["alpha"]),
        )


KOLRatePredictor = MeanRates | PersistenceRates | RidgeRates
KOL_PREDICTORS: dict[str, type[MeanRates] | type[PersistenceRates] | type[RidgeRates]] = {
    "mean": MeanRates,
    "persistence": PersistenceRates,
    "ridge": RidgeRates,
}


@dataclass
class KOLBaseline:
    """A named KOL baseline predictor."""

    name: str
    predictor: KOLRatePredictor

    def predict(self, x_all: np.ndarray, all_columns: list[str]) -> np.ndarray:
        """Forecast rates for rows of the full feature matrix, shape (n, 2)."""
        return self.predictor.predict(x_all[:, column_index(all_columns, self.predictor.columns)])


def baseline_type(files: dict[str, bytes], name: str) -> str:
    """The ``type`` recorded in a baseline's JSON head."""
    return str(json.loads(files[f"baselines/{name}.json"])["type"])
