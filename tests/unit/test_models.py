"""The networks and baselines: shapes, normalisation, and that they learn a planted signal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kolray.datasets import LoadedDataset, load_dataset
from kolray.learn.metrics import average_precision, kol_metrics, roc_auc
from kolray.learn.nets import KolNet, TokenNet, build_network
from kolray.learn.predictors import FeatureMismatch
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


@pytest.fixture(scope="module")
def token_ds(tmp_path_factory: pytest.TempPathFactory) -> LoadedDataset:
    root = str(tmp_path_factory.mktemp("store"))
    synthetic.write_token_dataset(root, n_rows=10_000, seed=1)
    return load_dataset("token", storage_uri=root)


@pytest.fixture(scope="module")
def kol_ds(tmp_path_factory: pytest.TempPathFactory) -> LoadedDataset:
    root = str(tmp_path_factory.mktemp("store"))
    synthetic.write_kol_dataset(root, n_kols=90, n_days=200, seed=2)
    return load_dataset("kol", storage_uri=root)


def test_token_predictor_structure_and_logits() -> None:
    net = TokenNet(5, widths=[16, 8], dropout=0.2)
    kinds = [type(m).__name__ for m in net.body]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Dropout"] * 2
    out = net(torch.randn(7, 5))
    assert out.shape == (7,)
    with pytest.raises(ValueError):
        TokenNet(5, widths=[])


def test_kol_predictor_uses_attention_over_feature_tokens_and_two_heads() -> None:
    net = KolNet(6, d_model=8, n_heads=2, n_layers=1)
    assert isinstance(net.encoder.layers[0].self_attn, torch.nn.MultiheadAttention)
    assert len(net.heads) == 2
    x = torch.randn(4, 6)
    x[0, 2] = float("nan")  # a missing feature gets its own learned token, not a NaN output
    out = net(x)
    assert out.shape == (4, 2) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="multiple of n_heads"):
        KolNet(6, d_model=10, n_heads=4)


def test_normaliser_is_fitted_on_train_and_travels_in_the_state_dict() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, (500, 3)).astype(np.float32)
    x[:10, 1] = np.nan
    x[:, 2] = 7.0  # constant column: std stays 1, not 0
    net = TokenNet(3, widths=[4])
    net.normalizer.fit(x)
    assert net.normalizer.mean[0].item() == pytest.approx(float(x[:, 0].mean()), rel=1e-4)
    assert net.normalizer.std[2].item() == 1.0
    z = net.normalizer(torch.tensor([[np.nan, 1e9, 7.0]], dtype=torch.float32))
    assert z[0, 0] == 0.0 and z[0, 1] == 8.0 and z[0, 2] == 0.0
    clone = build_network("token", net.hparams())
    clone.load_state_dict(net.state_dict())
    assert torch.equal(clone.normalizer.mean, net.normalizer.mean)
    assert "normalizer.mean" in net.state_dict() and "normalizer.std" in net.state_dict()


def test_token_model_learns_the_planted_signal(token_ds: LoadedDataset) -> None:
    data = token_arrays(token_ds)
    model, fit = train_token_model(data, TokenTrainConfig(widths=[64, 32], max_epochs=25, seed=0))
    p = model.predict_proba(token_ds.test)  # a DataFrame: columns picked by name
    auc, ap = roc_auc(data.y_test, p), average_precision(data.y_test, p)
    base_rate = float(data.y_test.mean())
    oracle_auc = roc_auc(data.y_test, data.oracle_test)
    assert auc > 0.72, auc
    assert ap > 2.5 * base_rate, (ap, base_rate)
    assert oracle_auc - auc < 0.15, (oracle_auc, auc)
    assert fit.best_epoch >= 1 and len(fit.history) >= fit.best_epoch
    assert p.min() >= 0.0 and p.max() <= 1.0

    # Control: the same training on shuffled labels finds nothing, so the check above can fail.
    shuffled = token_arrays(token_ds)
    rng = np.random.default_rng(0)
    shuffled.y_train = rng.permutation(shuffled.y_train)
    shuffled.y_val = rng.permutation(shuffled.y_val)
    null_model, _ = train_token_model(shuffled, TokenTrainConfig(widths=[64, 32], max_epochs=5, seed=0))
    assert roc_auc(data.y_test, null_model.predict_proba(data.x_test)) < 0.62


def test_token_model_input_checks(token_ds: LoadedDataset) -> None:
    data = token_arrays(token_ds)
    model, _ = train_token_model(data, TokenTrainConfig(widths=[8], max_epochs=1))
    with pytest.raises(FeatureMismatch, match="missing feature columns"):
        model.predict_proba(token_ds.test.drop(columns=["log_mcap"]))
    with pytest.raises(FeatureMismatch, match="shape"):
        model.predict_proba(np.zeros((2, 3), dtype=np.float32))
    # Column order of a DataFrame does not matter; of an array it does.
    reordered = token_ds.test[list(reversed(data.feature_columns))]
    np.testing.assert_allclose(model.predict_proba(reordered), model.predict_proba(data.x_test))


def test_token_baselines_learn_and_seed_variant_uses_seven_features(token_ds: LoadedDataset) -> None:
    data = token_arrays(token_ds)
    baselines = fit_token_baselines(data, seed=0)
    assert set(baselines) == {"logistic", "gbt", "gbt_seed7"}
    assert baselines["gbt_seed7"].scorer.columns == synthetic.SEED_TOKEN_FEATURES
    aucs = {
        n: roc_auc(data.y_test, b.predict_proba(data.x_test, data.feature_columns))
        for n, b in baselines.items()
    }
    assert aucs["logistic"] > 0.72 and aucs["gbt"] > 0.72, aucs
    # The planted token-quality signal lives outside the seed's seven features.
    assert aucs["gbt_seed7"] < aucs["gbt"] - 0.03, aucs


def test_kol_model_beats_persistence_where_persistence_is_noisy(kol_ds: LoadedDataset) -> None:
    data = kol_arrays(kol_ds)
    model, _ = train_kol_model(data, KOLTrainConfig(d_model=16, n_heads=2, n_layers=1, max_epochs=15, seed=0))
    pred = model.predict(kol_ds.test)
    assert pred.shape == (len(kol_ds.test), 2) and ((pred >= 0) & (pred <= 1)).all()
    ours = kol_metrics(pred, data.y_test)
    baselines = fit_kol_baselines(data)
    persistence = kol_metrics(
        baselines["persistence"].predict(data.x_test, data.feature_columns), data.y_test
    )
    ridge = kol_metrics(baselines["ridge"].predict(data.x_test, data.feature_columns), data.y_test)
    for target in ("7d", "30d"):
        assert ours[f"rmse_{target}"] < persistence[f"rmse_{target}"] - 0.01, (ours, persistence)
        assert ours[f"r2_{target}"] > 0.1
    # Ridge is a strong baseline here; the model must at least be in its league.
    assert ours["rmse"] < ridge["rmse"] + 0.01, (ours, ridge)


def test_token_network_with_periodic_embeddings_handles_missing_values_and_rebuilds() -> None:
    net = TokenNet(5, widths=[16], dropout=0.0, embed_dim=4)
    assert net.embedding is not None and net.embedding.out_features == 20
    x = torch.randn(6, 5)
    x[1, 3] = float("nan")
    out = net(x)
    assert out.shape == (6,) and torch.isfinite(out).all()
    again = build_network("token", net.hparams())
    again.load_state_dict(net.state_dict(), strict=True)
    again.eval()
    net.eval()
    assert torch.equal(again(x), net(x))
    # Without embeddings the weights are those of earlier versions (no new keys to load).
    plain = TokenNet(5, widths=[16])
    assert "embed_dim" not in plain.hparams()
    assert not any(k.startswith("embedding.") for k in plain.state_dict())


def test_a_lightgbm_champion_is_stored_as_text_and_served_by_the_registry(
    token_ds: LoadedDataset, tmp_path
) -> None:
    from kolray.learn import registry
    from kolray.learn.boosted import BoostedTokenClassifier
    from kolray.learn.families import FamilyBest, booster_config, finalize_family_token, fit_booster

    root = str(tmp_path)
    data = token_arrays(token_ds)
    config = booster_config({"gbt_num_leaves": 7}, seed=0, threads=1, patience=4)
    fit = fit_booster("token", data, config)
    best = FamilyBest("gbt", fit.best_metric, {}, config.model_dump(), model_texts=fit.model_texts)
    model = finalize_family_token(best, data)
    assert isinstance(model, BoostedTokenClassifier)
    meta = registry.register(model, dataset_version=token_ds.version, storage_uri=root)
    assert meta.family == "gbt" and meta.network["class"] == "LightGBM" and meta.targets == ["label_3x"]
    assert set(meta.files) == {"model.txt"}  # LightGBM's text, no weights file, no pickle
    loaded = registry.load_version("token", meta.version, root)
    assert (loaded.family, loaded.target) == ("gbt", "label_3x")
    np.testing.assert_array_equal(loaded.predict_proba(data.x_test), model.predict_proba(data.x_test))
    assert loaded.threshold == model.threshold.threshold
    # An edited model text is refused like an edited weights file.
    registry.clear_cache()
    path = tmp_path / "models" / "token" / meta.version / "model.txt"
    path.write_text(path.read_text().replace("tree\n", "tree \n", 1))
    with pytest.raises(registry.TamperedArtifact):
        registry.load_version("token", meta.version, root)
