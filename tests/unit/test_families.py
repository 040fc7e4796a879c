"""Model families in one search: booster parameters, checkpoints, the champion on validation."""

from __future__ import annotations

import numpy as np
import pytest

from kolray.learn.families import (
    FamilyBest,
    booster_config,
    champion_family,
    finalize_token_booster,
    fit_booster,
    read_booster_checkpoint,
    write_booster_checkpoint,
)
from kolray.learn.metrics import average_precision
from kolray.learn.train import TokenArrays


def arrays(seed: int = 0) -> TokenArrays:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2400, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=2400) > 1.5).astype(np.float32)
    return TokenArrays(
        feature_columns=["a", "b", "c", "d"],
        x_train=x[:1600],
        y_train=y[:1600],
        x_val=x[1600:2000],
        y_val=y[1600:2000],
        x_test=x[2000:],
        y_test=y[2000:],
        dataset_version="v",
    )


def test_booster_parameters_lose_their_prefix_and_the_network_ones_are_ignored() -> None:
    config = booster_config(
        {"family": "gbt", "gbt_num_leaves": 7, "gbt_learning_rate": 0.1, "lr": 1e-3, "dropout": 0.2},
        seed=3,
        threads=2,
        patience=6,
    )
    assert (config.num_leaves, config.learning_rate, config.seed, config.n_threads, config.patience) == (
        7,
        0.1,
        3,
        2,
        6,
    )


def test_the_champion_is_the_best_validation_metric_whatever_the_family() -> None:
    net = FamilyBest("net", 0.30, {}, {})
    gbt = FamilyBest("gbt", 0.32, {}, {})
    assert champion_family({"net": net, "gbt": gbt}, "max").family == "gbt"
    assert champion_family({"net": net, "gbt": gbt}, "min").family == "net"
    tie = FamilyBest("gbt", 0.30, {}, {})
    assert champion_family({"gbt": tie, "net": net}, "max").family == "net"  # ties: the network
    linear = FamilyBest("linear", 0.33, {}, {})
    assert champion_family({"net": net, "gbt": gbt, "linear": linear}, "max").family == "linear"
    assert champion_family({"linear": FamilyBest("linear", 0.32, {}, {}), "gbt": gbt}, "max").family == "gbt"
    nan = FamilyBest("net", float("nan"), {}, {})
    assert champion_family({"net": nan, "gbt": gbt}, "max").family == "gbt"
    with pytest.raises(ValueError):
        champion_family({"net": nan}, "max")


def test_a_booster_checkpoint_round_trips_and_is_calibrated_on_validation(tmp_path) -> None:
    data = arrays()
    config = booster_config({"gbt_num_leaves": 7}, seed=0, threads=1, patience=4)
    fit = fit_booster("token", data, config)
    write_booster_checkpoint(tmp_path, "token", fit, config, {"gbt_num_leaves": 7})
    texts, info = read_booster_checkpoint(tmp_path, "token")
    assert texts == fit.model_texts and info["family"] == "gbt" and info["rounds"] == fit.best_rounds
    best = FamilyBest("gbt", fit.best_metric, info["params"], info["config"], model_texts=texts)
    model = finalize_token_booster(best, data, "platt", 0.7, target="peak_3x")
    assert model.target == "peak_3x" and model.feature_columns == data.feature_columns
    p_val = model.predict_proba(data.x_val)
    assert average_precision(data.y_val, p_val) == pytest.approx(fit.best_metric)  # Platt keeps the order
    assert abs(p_val.mean() - data.y_val.mean()) < 0.02  # calibrated on validation
    assert model.threshold.val_precision >= 0.7 or model.threshold.policy == "best_f1"
