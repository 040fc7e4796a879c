"""Evaluation: metric implementations, bootstrap intervals, the report contract, plots."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from kolray.datasets import load_dataset
from kolray.learn import evaluate, metrics
from kolray.learn.train import (
    KOLTrainConfig,
    TokenTrainConfig,
    fit_kol_baselines,
    fit_token_baselines,
    kol_arrays,
    token_arrays,
    train_kol_model,
    train_token_model,
)
from kolray.testing import synthetic_datasets as synthetic

torch.set_num_threads(1)
CONTRACT_TEST_KEYS = {"roc_auc", "pr_auc", "brier", "precision", "recall", "threshold", "n", "n_pos"}
PNG = b"\x89PNG\r\n\x1a\n"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=80))
def test_auc_and_average_precision_match_sklearn(rows: list[tuple[int, bool]]) -> None:
    p = np.array([r[0] / 5 for r in rows])  # few distinct values: many ties
    y = np.array([int(r[1]) for r in rows])
    if 0 < y.sum() < len(y):
        assert metrics.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))
        assert metrics.average_precision(y, p) == pytest.approx(average_precision_score(y, p))
    else:
        assert np.isnan(metrics.roc_auc(y, p))


def test_token_metrics_at_threshold_and_precision_at_k() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05])
    m = metrics.token_metrics(y, p, threshold=0.7)
    assert (m["precision"], m["recall"]) == pytest.approx((2 / 3, 2 / 3))
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["precision_at_10"] == pytest.approx(0.2)
    assert "precision_at_50" not in m  # fewer rows than k
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_bootstrap_interval_brackets_the_estimate_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(0)

    def width(n: int) -> float:
        y = rng.random(n) < 0.3
        p = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
        ci = metrics.bootstrap_ci(lambda idx: {"roc_auc": metrics.roc_auc(y[idx], p[idx])}, n, 200, 0)
        lo, hi = ci["roc_auc"]
        assert lo <= metrics.roc_auc(y, p) <= hi
        return hi - lo

    assert width(4000) < width(200) / 2


@pytest.fixture(scope="module")
def token_setup(tmp_path_factory: pytest.TempPathFactory):
    root = str(tmp_path_factory.mktemp("store"))
    synthetic.write_token_dataset(root, n_rows=4000, seed=4)
    ds = load_dataset("token", storage_uri=root)
    data = token_arrays(ds)
    model, _ = train_token_model(data, TokenTrainConfig(widths=[32], max_epochs=4))
    return ds, model, fit_token_baselines(data)


def test_token_report_has_the_contract_keys_and_states_the_comparison(token_setup, tmp_path: Path) -> None:
    ds, model, baselines = token_setup
    report, images = evaluate.evaluate_token(model, baselines, ds, version="v-test", n_boot=50)
    assert report["model"] == "token" and report["version"] == "v-test"
    assert report["dataset_version"] == ds.version
    assert set(report["test"]) >= CONTRACT_TEST_KEYS
    assert {"f1", "precision_at_10", "precision_at_100", "ci95"} <= set(report["test"])
    assert set(report["baselines"]) == {"logistic", "gbt", "gbt_seed7"}
    for block in [report["test"], report["oracle"], *report["baselines"].values()]:
        assert set(block) >= CONTRACT_TEST_KEYS
        assert block["n"] == len(ds.test) and block["n_pos"] == int(ds.test["label_3x"].sum())
        for metric in ("roc_auc", "pr_auc", "brier", "precision", "recall", "f1"):
            lo, hi = block["ci95"][metric]
            assert lo <= block[metric] + 1e-9 and block[metric] <= hi + 1e-9, metric
    assert report["test"]["threshold"] == model.threshold.threshold
    comparison = report["comparison"]
    assert set(comparison["beats"]) == set(baselines)
    assert comparison["verdict"].startswith("deep model ")
    best = comparison["best_baseline"]
    assert comparison["beats_all_baselines"] == all(
        report["test"]["pr_auc"] > b["pr_auc"] for b in report["baselines"].values()
    )
    assert ("does NOT beat" in comparison["verdict"]) == (
        report["test"]["pr_auc"] <= report["baselines"][best]["pr_auc"]
    )
    assert report["reference"]["brier_base_rate"] > 0
    assert set(images) == {"roc.png", "pr.png", "calibration.png", "importance.png"}
    assert all(data.startswith(PNG) for data in images.values())
    assert set(report["permutation_importance"]["values"]) == set(ds.feature_columns)

    written = evaluate.write_report(report, images, str(tmp_path / "store"), tmp_path / "local")
    assert len(written) == 2
    for location in written:
        assert json.loads(Path(location).read_text()) == json.loads(json.dumps(report))
        assert (Path(location).parent / "roc.png").read_bytes().startswith(PNG)
    assert Path(written[1]) == tmp_path / "local" / "token" / "v-test" / "report.json"


def test_oracle_is_null_without_the_twin_column(token_setup) -> None:
    ds, model, baselines = token_setup
    test = ds.test.copy()
    test["oracle_p3x"] = np.nan
    report, _ = evaluate.evaluate_token(
        model, baselines, dataclasses.replace(ds, test=test), version="v", n_boot=0, plots=False
    )
    assert report["oracle"] is None
    assert "gap_to_oracle_roc_auc" not in report["comparison"]


def test_kol_report_compares_against_the_mean_rate_persistence_and_ridge(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = str(tmp_path_factory.mktemp("store"))
    synthetic.write_kol_dataset(root, n_kols=40, n_days=150, seed=5)
    ds = load_dataset("kol", storage_uri=root)
    data = kol_arrays(ds)
    model, _ = train_kol_model(data, KOLTrainConfig(d_model=8, n_heads=2, n_layers=1, max_epochs=3))
    report, images = evaluate.evaluate_kol(model, fit_kol_baselines(data), ds, version="k", n_boot=30)
    assert {"model", "version", "dataset_version", "test", "baselines", "oracle"} <= set(report)
    keys = {f"{m}_{t}" for m in ("rmse", "mae", "r2") for t in ("7d", "30d")}
    assert keys <= set(report["test"]) and keys <= set(report["oracle"])
    assert set(report["baselines"]) == {"mean", "persistence", "ridge"}
    assert report["comparison"]["metric"] == "rmse" and report["comparison"]["mode"] == "min"
    y = ds.test[["rate_3x_next_7d", "rate_3x_next_30d"]].to_numpy()
    expected = np.sqrt(np.mean((model.predict(ds.test)[:, 0] - y[:, 0]) ** 2))
    assert report["test"]["rmse_7d"] == pytest.approx(expected)
    # What a forecast that knows nothing of the KOL scores: the training mean for every row.
    train_mean = ds.train["rate_3x_next_7d"].mean()
    assert report["baselines"]["mean"]["rmse_7d"] == pytest.approx(
        np.sqrt(np.mean((train_mean - y[:, 0]) ** 2))
    )
    assert set(images) == {"pred_vs_actual.png", "importance.png"}


def test_evaluate_and_promote_commands(token_setup, data_dir: Path, tmp_path: Path, capsys) -> None:
    from kolray.cli import main
    from kolray.config import get_settings
    from kolray.learn import registry

    ds, model, baselines = token_setup
    root = get_settings().storage_uri
    assert main(["evaluate", "--model", "token"]) == 1
    assert "no token model registered yet" in capsys.readouterr().err
    assert main(["tune", "--model", "tokens"]) == 2
    assert main(["tune", "--model", "kol"]) == 1  # no dataset: stops before starting Ray
    assert "kolray features" in capsys.readouterr().err
    assert main(["promote", "tokens", "v"]) == 2
    assert main(["evaluate", "--model", "all", "--version", "v"]) == 2

    synthetic.write_token_dataset(root, n_rows=4000, seed=4, version=ds.version)  # the module's dataset
    version = registry.register(
        model, dataset_version=ds.version, baselines=baselines, storage_uri=root
    ).version
    capsys.readouterr()
    assert main(["evaluate", "--model", "token", "--n-boot", "5", "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert version in printed and "gbt_seed7" in printed and "oracle" in printed
    report = json.loads((tmp_path / "r" / "token" / version / "report.json").read_text())
    assert report["version"] == version and report["dataset_version"] == ds.version
    assert (tmp_path / "r" / "token" / version / "calibration.png").is_file()
    assert main(["promote", "token", version]) == 0
    assert registry.champion_version("token", root) == version
