"""Training policies: the threshold rule, calibration, validation-only fitting, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kolray.datasets import LoadedDataset, load_dataset
from kolray.learn.calibration import choose_threshold, fit_calibrator
from kolray.learn.train import (
    TokenTrainConfig,
    TrainError,
    fit_token_baselines,
    focal_loss,
    resolve_device,
    token_arrays,
    train_token_model,
)
from kolray.testing import synthetic_datasets as synthetic

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def token_ds(tmp_path_factory: pytest.TempPathFactory) -> LoadedDataset:
    root = str(tmp_path_factory.mktemp("store"))
    synthetic.write_token_dataset(root, n_rows=5000, seed=3)
    return load_dataset("token", storage_uri=root)


# Threshold policy


def test_threshold_takes_highest_recall_at_target_precision() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    y = np.array([1, 1, 0, 1, 1, 0, 0, 1])
    # Cut at 0.6: precision 3/4; at 0.5: 4/5 = 0.8 (recall 4/5); lower cuts fall below 0.7.
    choice = choose_threshold(p, y, min_precision=0.7)
    assert choice.threshold == 0.5
    assert choice.policy == "recall_at_precision>=0.7"
    assert choice.val_precision == pytest.approx(0.8) and choice.val_recall == pytest.approx(0.8)


def test_threshold_falls_back_to_best_f1_when_precision_is_unreachable() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([0, 1, 0, 1, 0])
    choice = choose_threshold(p, y, min_precision=0.9)
    assert choice.policy == "best_f1"
    assert choice.threshold == 0.6  # top 4: precision 0.5, recall 1 → F1 0.667, the best
    assert choice.val_f1 == pytest.approx(2 / 3)


def test_threshold_never_splits_tied_scores() -> None:
    p = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    y = np.array([1, 1, 0, 0, 0])
    choice = choose_threshold(p, y, min_precision=0.7)
    assert choice.threshold == 0.9 and choice.val_recall == 0.5


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.booleans()), min_size=1, max_size=60),
    st.floats(0.05, 1.0),
)
def test_threshold_meets_its_stated_policy(rows: list[tuple[float, bool]], target: float) -> None:
    p = np.array([r[0] for r in rows])
    y = np.array([int(r[1]) for r in rows])
    choice = choose_threshold(p, y, target)
    if y.sum() == 0:
        assert choice.policy == "no_positives"
        return
    predicted = p >= choice.threshold
    precision = (predicted & (y == 1)).sum() / max(predicted.sum(), 1)
    recall = (predicted & (y == 1)).sum() / y.sum()
    assert precision == pytest.approx(choice.val_precision) and recall == pytest.approx(choice.val_recall)
    # No other cut reaches the target precision with a higher recall.
    for t in np.unique(p):
        cut = p >= t
        prec = (cut & (y == 1)).sum() / cut.sum()
        rec = (cut & (y == 1)).sum() / y.sum()
        if choice.policy.startswith("recall_at"):
            assert precision >= target - 1e-12
            assert not (prec >= target and rec > recall + 1e-12)
        else:
            assert prec < target


# Calibration


def test_platt_calibration_recovers_a_known_mapping() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 2, 20_000)
    labels = rng.random(20_000) < 1 / (1 + np.exp(-(0.5 * scores - 2.0)))
    cal = fit_calibrator(scores, labels, "platt")
    assert cal.a == pytest.approx(0.5, abs=0.05) and cal.b == pytest.approx(-2.0, abs=0.1)
    iso = fit_calibrator(scores, labels, "isotonic")
    p = iso(scores)
    assert np.all(np.diff(p[np.argsort(scores)]) >= -1e-12)  # monotone
    assert abs(p.mean() - labels.mean()) < 0.01


def test_focal_loss_downweights_easy_examples() -> None:
    logits = torch.tensor([4.0, -4.0, 0.0])
    targets = torch.tensor([1.0, 0.0, 1.0])
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert focal_loss(logits, targets, 0.0) == pytest.approx(plain.mean().item())
    per = [focal_loss(logits[i : i + 1], targets[i : i + 1], 2.0).item() / plain[i].item() for i in range(3)]
    assert per[0] < 0.01 and per[1] < 0.01 and per[2] == pytest.approx(0.25)


# Validation only, determinism


def _corrupt_test(ds: LoadedDataset) -> LoadedDataset:
    test = ds.test.copy()
    rng = np.random.default_rng(99)
    test["label_3x"] = (1 - test["label_3x"]).astype(np.int8)
    cols = ds.feature_columns
    test[cols] = test[cols].to_numpy()[rng.permutation(len(test))] * 3.0
    return dataclasses.replace(ds, test=test)


def test_training_calibration_and_threshold_never_read_test(token_ds: LoadedDataset) -> None:
    config = TokenTrainConfig(widths=[32], max_epochs=4, seed=5)
    clean, corrupt = token_arrays(token_ds), token_arrays(_corrupt_test(token_ds))
    assert not np.array_equal(clean.y_test, corrupt.y_test)
    a, fit_a = train_token_model(clean, config)
    b, fit_b = train_token_model(corrupt, config)
    assert a.threshold == b.threshold
    assert a.calibrator == b.calibrator
    assert fit_a.history == fit_b.history
    for key, value in a.network.state_dict().items():
        assert torch.equal(value, b.network.state_dict()[key]), key
    base_a, base_b = fit_token_baselines(clean), fit_token_baselines(corrupt)
    for name in base_a:
        assert base_a[name].threshold == base_b[name].threshold
        assert base_a[name].calibrator == base_b[name].calibrator


def test_changing_validation_labels_changes_the_threshold(token_ds: LoadedDataset) -> None:
    """The counterpart of the test above: the threshold does depend on validation."""
    config = TokenTrainConfig(widths=[32], max_epochs=2, seed=5)
    data = token_arrays(token_ds)
    model, _ = train_token_model(data, config)
    other = token_arrays(token_ds)
    other.y_val = np.random.default_rng(1).permutation(other.y_val)
    model2, _ = train_token_model(other, config)
    assert (model.calibrator, model.threshold) != (model2.calibrator, model2.threshold)


def test_same_seed_same_model_different_seed_different_model(token_ds: LoadedDataset) -> None:
    data = token_arrays(token_ds)
    config = TokenTrainConfig(widths=[16], max_epochs=2, imbalance="focal", seed=11)
    one, _ = train_token_model(data, config)
    two, _ = train_token_model(data, config)
    three, _ = train_token_model(data, config.model_copy(update={"seed": 12}))
    np.testing.assert_array_equal(one.predict_proba(data.x_val), two.predict_proba(data.x_val))
    assert not np.array_equal(one.predict_proba(data.x_val), three.predict_proba(data.x_val))


def test_no_positive_labels_is_a_clear_error(token_ds: LoadedDataset) -> None:
    train = token_ds.train.copy()
    train["label_3x"] = np.int8(0)
    with pytest.raises(TrainError, match="no positive label_3x in the train split"):
        token_arrays(dataclasses.replace(token_ds, train=train))


def test_device_resolution() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(TrainError, match="CUDA is not available"):
            resolve_device("cuda")


# Target labels


def test_the_peak_target_leaves_out_rows_whose_window_runs_into_the_next_split() -> None:
    import types

    import pandas as pd

    from kolray.learn.train import target_rows

    day = 86_400
    frames = {
        "train": pd.DataFrame({"entry_time": [0, 2 * day, 3 * day + 1]}),
        "val": pd.DataFrame({"entry_time": [10 * day, 12 * day, 13 * day]}),
        "test": pd.DataFrame({"entry_time": [20 * day, 30 * day]}),
    }
    manifest = types.SimpleNamespace(
        source={"split_plan": {"val_start": 10 * day, "test_start": 20 * day}}, horizon_s=7 * day
    )
    ds = types.SimpleNamespace(manifest=manifest, split=frames.__getitem__)
    # A 7-day window must end before the next split starts; test, the last split, keeps every row.
    assert target_rows(ds, "train", "peak_3x").tolist() == [True, True, False]
    assert target_rows(ds, "val", "peak_3x").tolist() == [True, True, False]
    assert target_rows(ds, "test", "peak_3x").tolist() == [True, True]
    # The KOL's own label resolves at its close: the dataset's own purging already holds for it.
    assert target_rows(ds, "train", "label_3x").all() and target_rows(ds, "val", "label_3x").all()


def test_a_dataset_without_the_target_label_says_so(token_ds: LoadedDataset) -> None:
    with pytest.raises(TrainError, match="no label 'peak_3x'"):
        token_arrays(token_ds, "peak_3x")
    data = token_arrays(token_ds, "label_3x")
    assert data.target == "label_3x" and data.oracle_test is not None  # oracle_p3x, the label's oracle
