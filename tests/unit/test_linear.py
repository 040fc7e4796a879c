"""The linear family: its L2 strength chosen on validation, stored as JSON, served like the others."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kolray.datasets import load_dataset
from kolray.learn import registry
from kolray.learn.baselines import RidgeRates
from kolray.learn.families import (
    FamilyBest,
    family_kol_forecaster,
    finalize_family_token,
    fit_linear,
    linear_config,
    read_linear_checkpoint,
    write_linear_checkpoint,
)
from kolray.learn.linear import (
    L2_PATH,
    MODEL_FILE,
    LinearConfig,
    LinearKolForecaster,
    LinearModel,
    fit_kol_linear,
    fit_token_linear,
)
from kolray.learn.metrics import average_precision, kol_rate_metrics
from kolray.learn.train import KOLArrays, TokenArrays, fit_kol_baselines, kol_arrays
from kolray.testing import synthetic_datasets as synthetic

COLUMNS = ["a", "b", "c", "d"]


def token_arrays(seed: int = 0, n: int = 3000) -> TokenArrays:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values stand at the training mean
    y = (np.nan_to_num(x[:, 0]) - 0.7 * np.nan_to_num(x[:, 2]) + rng.normal(size=n) > 2.0).astype(np.float32)
    third = n // 3
    return TokenArrays(
        feature_columns=COLUMNS,
        x_train=x[:third],
        y_train=y[:third],
        x_val=x[third : 2 * third],
        y_val=y[third : 2 * third],
        x_test=x[2 * third :],
        y_test=y[2 * third :],
        dataset_version="v",
        target="peak_3x",
    )


def kol_arrays_heavy_tailed(seed: int = 1, n: int = 1500) -> KOLArrays:
    """Rates that depend on the log of a heavy-tailed amount (SOL volumes are like that)."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(mean=0.0, sigma=2.0, size=n)
    x = np.column_stack([amount, rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)]).astype(
        np.float32
    )
    base = 0.08 + 0.03 * np.log1p(amount)
    y = np.clip(np.column_stack([base, 0.8 * base]) + rng.normal(scale=0.02, size=(n, 2)), 0, 1)
    y = y.astype(np.float32)
    return KOLArrays(
        feature_columns=COLUMNS,
        targets=["rate_3x_next_7d", "rate_3x_next_30d"],
        x_train=x[:900],
        y_train=y[:900],
        x_val=x[900:1200],
        y_val=y[900:1200],
        x_test=x[1200:],
        y_test=y[1200:],
        dataset_version="v",
        persistence_columns=["a", "b"],
    )


def test_a_token_trial_walks_the_l2_path_and_keeps_the_best_validation_pr_auc() -> None:
    data = token_arrays()
    seen: list[tuple[int, float, bool]] = []
    fit = fit_token_linear(
        data.x_train,
        data.y_train,
        data.x_val,
        data.y_val,
        COLUMNS,
        LinearConfig(),
        lambda step, metrics, better: seen.append((step, metrics["val_pr_auc"], better)),
    )
    assert [step for step, _, _ in seen] == list(range(1, len(L2_PATH) + 1))
    assert [h["l2"] for h in fit.history] == list(L2_PATH)
    best = max(v for _, v, _ in seen)
    assert fit.best_metric == pytest.approx(best)
    # The kept model is the first strength that reached the best, and scores it again.
    first_best = next(h["l2"] for h in fit.history if h["val_pr_auc"] == best)
    assert fit.model.l2 == first_best
    assert average_precision(data.y_val, fit.model.outputs(data.x_val)[:, 0]) == pytest.approx(best)
    assert fit.best_metric > 0.5  # a linear signal: the linear model finds it
    # The strongest penalty shrinks the weights towards zero: the path is a real path.
    assert np.abs(fit.model.coef).sum() > 0
    assert fit.history[-1]["val_pr_auc"] <= best


def test_one_class_training_split_is_a_clear_error() -> None:
    data = token_arrays()
    with pytest.raises(ValueError, match="one class"):
        fit_token_linear(
            data.x_train, np.zeros_like(data.y_train), data.x_val, data.y_val, COLUMNS, LinearConfig()
        )


def test_the_token_family_is_calibrated_on_validation_and_round_trips_through_json(tmp_path: Path) -> None:
    data = token_arrays()
    config = linear_config({"family": "linear", "linear_transform": "signed_log", "lr": 1e-3}, seed=3)
    assert (config.transform, config.seed) == ("signed_log", 3)
    fit = fit_linear("token", data, config)
    write_linear_checkpoint(tmp_path, fit, config, {"linear_transform": "signed_log"})
    text, info = read_linear_checkpoint(tmp_path)
    assert info["family"] == "linear" and info["l2"] == fit.model.l2
    best = FamilyBest("linear", fit.best_metric, info["params"], info["config"], model_texts=[text])
    model = finalize_family_token(best, data, "platt", 0.7)
    assert model.family == "linear" and model.target == "peak_3x"
    p_val = model.predict_proba(data.x_val)
    assert average_precision(data.y_val, p_val) == pytest.approx(fit.best_metric)  # Platt keeps the order
    assert abs(p_val.mean() - data.y_val.mean()) < 0.02  # calibrated on validation
    files = model.to_files()
    assert set(files) == {MODEL_FILE}
    again = type(model).from_files(files, model.calibrator, model.threshold, COLUMNS, "peak_3x")
    np.testing.assert_array_equal(again.predict_proba(data.x_test), model.predict_proba(data.x_test))
    assert again.predict(data.x_test).dtype == bool
    assert again.describe() == {
        "class": "Linear",
        "hparams": {"transform": "signed_log", "l2": fit.model.l2, "outputs": 1},
    }
    with pytest.raises(ValueError, match="columns differ"):
        type(model).from_files(files, model.calibrator, model.threshold, ["a", "b", "c", "x"])


def test_the_kol_family_is_never_worse_on_validation_than_the_ridge_baseline() -> None:
    """Its path holds every alpha the baseline tries, on the same standardisation: it can only match
    or beat it on validation, so a KOL dataset where ridge is best gets ridge served."""
    data = kol_arrays_heavy_tailed()
    baseline = RidgeRates.fit(data.x_train, data.y_train, data.x_val, data.y_val, COLUMNS)
    baseline_rmse = kol_rate_metrics(data.y_val, baseline.predict(data.x_val))["val_rmse"]
    plain = fit_kol_linear(data.x_train, data.y_train, data.x_val, data.y_val, COLUMNS, LinearConfig())
    assert plain.best_metric <= baseline_rmse + 1e-12
    # On a rate that follows the log of a heavy-tailed amount the signed-log transform wins clearly.
    logged = fit_kol_linear(
        data.x_train, data.y_train, data.x_val, data.y_val, COLUMNS, LinearConfig(transform="signed_log")
    )
    assert logged.best_metric < 0.8 * plain.best_metric
    best = FamilyBest("linear", logged.best_metric, {}, {}, model_texts=[logged.model.to_json()])
    model = family_kol_forecaster(best, data)
    assert isinstance(model, LinearKolForecaster)
    pred = model.predict_proba(data.x_test)
    assert pred.shape == (300, 2) and (pred >= 0).all() and (pred <= 1).all()
    assert model.predict_proba(data.x_test[:0]).shape == (0, 2)
    again = LinearKolForecaster.from_files(model.to_files(), COLUMNS, model.targets)
    np.testing.assert_array_equal(again.predict(data.x_test), pred)
    with pytest.raises(ValueError, match="2 outputs, the metadata 1"):
        LinearKolForecaster.from_files(model.to_files(), COLUMNS, model.targets[:1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"not json", "Expecting value"),
        (b'{"family": "gbt"}', "not a linear model"),
        (b'{"family": "linear", "transform": "none"}', "not a linear model"),
        (b'{"family": "linear", "transform": "cube", "columns": []}', "unknown transform"),
    ],
)
def test_text_that_is_not_a_linear_model_is_refused(text: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LinearModel.from_json(text)


def test_non_finite_or_misshapen_coefficients_are_refused() -> None:
    model = LinearModel(["a", "b"], "none", np.zeros(2), np.ones(2), np.array([[1.0, 2.0]]), np.zeros(1), 1.0)
    body = json.loads(model.to_json())
    body["coef"] = [[1.0, float("nan")]]
    with pytest.raises(ValueError, match="non-finite"):
        LinearModel.from_json(json.dumps(body))
    body["coef"] = [[1.0, 2.0, 3.0]]
    with pytest.raises(ValueError, match="shapes disagree"):
        LinearModel.from_json(json.dumps(body))


def test_a_linear_kol_version_registers_serves_and_refuses_an_edited_file(tmp_path: Path) -> None:
    root = str(tmp_path)
    synthetic.write_kol_dataset(root, n_kols=25, n_days=140, seed=1)
    ds = load_dataset("kol", storage_uri=root)
    data = kol_arrays(ds)
    fit = fit_linear("kol", data, LinearConfig())
    best = FamilyBest("linear", fit.best_metric, {}, {}, model_texts=[fit.model.to_json()])
    model = family_kol_forecaster(best, data)
    meta = registry.register(
        model, dataset_version=ds.version, baselines=fit_kol_baselines(data), storage_uri=root
    )
    assert meta.family == "linear" and MODEL_FILE in meta.files and meta.normalisation == {}
    registry.promote("kol", meta.version, storage_uri=root)
    champion = registry.load_champion("kol", root)
    assert champion.family == "linear"
    np.testing.assert_allclose(champion.predict_proba(ds.test), model.predict(data.x_test), rtol=1e-12)
    path = Path(root, "models", "kol", meta.version, MODEL_FILE)
    path.write_text(path.read_text().replace('"l2": ', '"l2": 1'))
    registry.clear_cache()
    with pytest.raises(registry.TamperedArtifact):
        registry.load_version("kol", meta.version, root)
