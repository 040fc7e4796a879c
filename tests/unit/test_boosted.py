"""The LightGBM family: trained on validation's metric, stored as text, loaded without pickle."""

from __future__ import annotations

import numpy as np
import pytest

from kolray.learn.boosted import (
    KOL_MODEL_FILES,
    TOKEN_MODEL_FILE,
    BoostedKolForecaster,
    BoostedTokenClassifier,
    BoosterConfig,
    check_model_text,
    fit_kol_boosters,
    fit_token_booster,
)
from kolray.learn.calibration import choose_threshold, fit_calibrator
from kolray.learn.metrics import average_precision

CONFIG = BoosterConfig(max_rounds=120, eval_every=5, patience=4, num_leaves=7)


def token_data(n: int = 2400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan  # LightGBM takes missing values as they are
    y = (np.nan_to_num(x[:, 0]) + 0.5 * rng.normal(size=n) > 1.6).astype(np.float32)
    return x, y


def test_the_token_booster_stops_on_validation_pr_auc_and_keeps_the_best_round() -> None:
    x, y = token_data()
    seen: list[tuple[int, float, bool]] = []
    fit = fit_token_booster(
        x[:1600],
        y[:1600],
        x[1600:],
        y[1600:],
        CONFIG,
        lambda r, m, better: seen.append((r, m["val_pr_auc"], better)),
    )
    assert [r for r, _, _ in seen] == list(range(5, 5 * len(seen) + 1, 5))
    best = max(v for _, v, _ in seen)
    assert fit.best_metric == pytest.approx(best)
    assert fit.best_rounds[0] == max(r for r, v, _ in seen if v == best)
    assert fit.best_metric > 0.6  # the signal is strong: trees find it
    # The stored text is the best round's model: scoring validation gives the best metric again.
    model = BoostedTokenClassifier(
        fit.model_texts[0],
        fit_calibrator(np.zeros(2), np.array([0, 1])),
        choose_threshold(np.zeros(1), np.zeros(1)),
        [f"c{i}" for i in range(5)],
    )
    assert average_precision(y[1600:], model.scores(x[1600:])) == pytest.approx(fit.best_metric)


def test_the_token_classifier_round_trips_through_text_files() -> None:
    x, y = token_data()
    fit = fit_token_booster(x[:1600], y[:1600], x[1600:], y[1600:], CONFIG)
    columns = [f"c{i}" for i in range(5)]
    probe = BoostedTokenClassifier(
        fit.model_texts[0],
        fit_calibrator(np.zeros(2), np.array([0, 1])),
        choose_threshold(np.zeros(1), np.zeros(1)),
        columns,
    )
    scores = probe.scores(x[1600:])
    calibrator = fit_calibrator(scores, y[1600:])
    threshold = choose_threshold(calibrator(scores), y[1600:])
    model = BoostedTokenClassifier(fit.model_texts[0], calibrator, threshold, columns, {"num_leaves": 7})
    files = model.to_files()
    assert set(files) == {TOKEN_MODEL_FILE} and files[TOKEN_MODEL_FILE].startswith(b"tree\n")
    again = BoostedTokenClassifier.from_files(files, calibrator, threshold, columns, {"num_leaves": 7})
    np.testing.assert_array_equal(again.predict_proba(x[1600:]), model.predict_proba(x[1600:]))
    assert again.predict(x[1600:]).dtype == bool
    assert again.describe()["class"] == "LightGBM"
    with pytest.raises(ValueError, match="expects 5 features"):
        BoostedTokenClassifier.from_files(files, calibrator, threshold, columns[:4])
    with pytest.raises(ValueError, match="not a LightGBM text model"):
        check_model_text("(cos\nsystem\n.", 5, TOKEN_MODEL_FILE)


def test_kol_boosters_forecast_rates_in_the_unit_interval_and_round_trip() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, 4)).astype(np.float32)
    rates = 1 / (1 + np.exp(-np.column_stack([x[:, 0] - 2, x[:, 1] - 1.5])))
    y = np.clip(rates + rng.normal(scale=0.02, size=rates.shape), 0, 1).astype(np.float32)
    fit = fit_kol_boosters(x[:1000], y[:1000], x[1000:], y[1000:], CONFIG)
    assert len(fit.model_texts) == 2 and len(fit.best_rounds) == 2
    model = BoostedKolForecaster(
        fit.model_texts, ["a", "b", "c", "d"], ["rate_3x_next_7d", "rate_3x_next_30d"]
    )
    pred = model.predict_proba(x[1000:])
    assert pred.shape == (500, 2) and (pred >= 0).all() and (pred <= 1).all()
    rmse = float(np.mean([np.sqrt(np.mean((pred[:, i] - y[1000:, i]) ** 2)) for i in range(2)]))
    assert fit.best_metric == pytest.approx(rmse)
    mean_rmse = float(np.mean([np.sqrt(np.mean((y[:1000, i].mean() - y[1000:, i]) ** 2)) for i in range(2)]))
    assert rmse < 0.5 * mean_rmse  # far better than the mean rate
    files = model.to_files()
    assert set(files) == set(KOL_MODEL_FILES)
    again = BoostedKolForecaster.from_files(files, model.feature_columns, model.targets)
    np.testing.assert_array_equal(again.predict(x[1000:]), pred)
    assert model.predict_proba(x[:0]).shape == (0, 2)
