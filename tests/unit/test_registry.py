"""The model registry on a local directory: round trip, stages, integrity, no pickles."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from kolray import storage
from kolray.datasets import LoadedDataset, load_dataset
from kolray.learn import registry, versions
from kolray.learn.predictors import TokenClassifier
from kolray.learn.train import (
    KOLTrainConfig,
    TokenTrainConfig,
    finalize_token,
    fit_kol_baselines,
    fit_token_baselines,
    kol_arrays,
    make_token_network,
    token_arrays,
    train_kol_model,
    train_token_model,
)
from kolray.testing import synthetic_datasets as synthetic

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_cache():
    registry.clear_cache()
    yield
    registry.clear_cache()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, LoadedDataset]:
    root = str(tmp_path_factory.mktemp("store"))
    synthetic.write_token_dataset(root, n_rows=4000, seed=6)
    return root, load_dataset("token", storage_uri=root)


def trained(ds: LoadedDataset, epochs: int = 4) -> TokenClassifier:
    model, _ = train_token_model(token_arrays(ds), TokenTrainConfig(widths=[16], max_epochs=epochs))
    return model


def untrained(ds: LoadedDataset) -> TokenClassifier:
    """Random weights (normaliser fitted): a model that should lose any fair comparison."""
    data = token_arrays(ds)
    torch.manual_seed(123)
    net = make_token_network(len(data.feature_columns), TokenTrainConfig(widths=[16]))
    net.normalizer.fit(data.x_train)
    return finalize_token(net.eval(), data)


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_round_trip_preserves_predictions_and_metadata(tmp_path: Path, store) -> None:
    _, ds = store
    root = str(tmp_path)
    data = token_arrays(ds)
    model = trained(ds)
    baselines = fit_token_baselines(data)
    meta = registry.register(
        model,
        dataset_version=ds.version,
        baselines=baselines,
        metrics={"test": {"pr_auc": 0.3}},
        storage_uri=root,
    )
    version_dir = tmp_path / "models" / "token" / meta.version
    files = sorted(str(p.relative_to(version_dir)) for p in version_dir.rglob("*") if p.is_file())
    assert files == [
        "baselines/gbt.json",
        "baselines/gbt.txt",
        "baselines/gbt_seed7.json",
        "baselines/gbt_seed7.txt",
        "baselines/logistic.json",
        "meta.json",
        "model.safetensors",
    ]

    loaded = registry.load_version("token", meta.version, root, with_baselines=True)
    assert loaded.version == meta.version and loaded.dataset_version == ds.version
    assert loaded.feature_columns == data.feature_columns
    assert loaded.meta.code_version == versions.code_version()
    assert loaded.meta.normalisation["mean"] == pytest.approx(
        np.nanmean(data.x_train, axis=0).tolist(), rel=1e-4
    )
    assert loaded.meta.calibrator == model.calibrator and loaded.threshold == model.threshold.threshold
    np.testing.assert_allclose(loaded.predict_proba(data.x_test), model.predict_proba(data.x_test), rtol=1e-6)
    np.testing.assert_array_equal(loaded.predict(ds.test), model.predict(data.x_test))
    for name, baseline in baselines.items():
        np.testing.assert_allclose(
            loaded.baselines[name].predict_proba(data.x_test, data.feature_columns),
            baseline.predict_proba(data.x_test, data.feature_columns),
            rtol=1e-6,
        )
    index = registry.read_index("token", root)
    assert [(v.version, v.stage) for v in index.versions] == [(meta.version, "candidate")]
    assert index.versions[0].primary_metric == {"name": "pr_auc", "mode": "max", "value": 0.3}


def test_kol_round_trip(tmp_path: Path) -> None:
    root = str(tmp_path)
    synthetic.write_kol_dataset(root, n_kols=25, n_days=140, seed=1)
    ds = load_dataset("kol", storage_uri=root)
    data = kol_arrays(ds)
    model, _ = train_kol_model(data, KOLTrainConfig(d_model=8, n_heads=2, n_layers=1, max_epochs=2))
    meta = registry.register(
        model, dataset_version=ds.version, baselines=fit_kol_baselines(data), storage_uri=root
    )
    registry.promote("kol", meta.version, storage_uri=root)
    champion = registry.load_champion("kol", root)
    assert champion.targets == ["rate_3x_next_7d", "rate_3x_next_30d"]
    np.testing.assert_allclose(champion.predict_proba(ds.test), model.predict(data.x_test), rtol=1e-6)
    with_baselines = registry.load_version("kol", meta.version, root, with_baselines=True)
    assert set(with_baselines.baselines) == {"mean", "persistence", "ridge"}
    # The mean-rate baseline is the training split's mean, whatever the KOL.
    mean = with_baselines.baselines["mean"].predict(
        ds.test[ds.feature_columns].to_numpy(), ds.feature_columns
    )
    np.testing.assert_allclose(mean, np.tile(data.y_train.mean(axis=0), (len(ds.test), 1)), rtol=1e-6)


def test_champion_stages_and_cheap_reload(tmp_path: Path, store) -> None:
    _, ds = store
    root = str(tmp_path)
    with pytest.raises(registry.NoChampion, match="kolray tune"):
        registry.load_champion("token", root)
    first = registry.register(trained(ds, 2), dataset_version=ds.version, storage_uri=root).version
    second = registry.register(trained(ds, 3), dataset_version=ds.version, storage_uri=root).version
    registry.promote("token", first, storage_uri=root)
    assert registry.load_champion("token", root).version == first
    index = registry.promote("token", second, storage_uri=root)
    assert {v.version: v.stage for v in index.versions} == {first: "archived", second: "champion"}
    assert index.history[-1].action == "promote" and first in index.history[-1].detail
    # Unchanged champion: the same object from the cache (what a Serve reconfigure relies on).
    assert registry.load_champion("token", root) is registry.load_champion("token", root)
    with pytest.raises(registry.VersionNotFound):
        registry.promote("token", "20200101T000000Z-00000000", storage_uri=root)
    with pytest.raises(registry.RegistryError, match="unknown model"):
        registry.load_champion("tokens", root)


def test_tampered_artifacts_are_refused(tmp_path: Path, store) -> None:
    _, ds = store
    root = str(tmp_path)
    data = token_arrays(ds)
    version = registry.register(
        trained(ds, 2), dataset_version=ds.version, baselines=fit_token_baselines(data), storage_uri=root
    ).version
    vdir = tmp_path / "models" / "token" / version

    for name in ("model.safetensors", "baselines/gbt.txt", "meta.json"):
        original = (vdir / name).read_bytes()
        tamper(vdir / name)
        registry.clear_cache()
        with pytest.raises(registry.TamperedArtifact, match="sha256"):
            registry.load_version("token", version, root, with_baselines=True)
        (vdir / name).write_bytes(original)
    registry.clear_cache()
    registry.load_version("token", version, root, with_baselines=True)  # restored: loads again

    (vdir / "model.safetensors").unlink()
    registry.clear_cache()
    with pytest.raises(registry.TamperedArtifact, match="missing"):
        registry.promote("token", version, storage_uri=root)
    assert registry.champion_version("token", root) is None  # never promoted a broken version


def _rewrite_consistently(tmp_path: Path, root: str, version: str, name: str, data: bytes) -> None:
    """Replace a file *and* fix up both hashes, as a careless tool (not an attacker) would."""
    vdir = tmp_path / "models" / "token" / version
    (vdir / name).parent.mkdir(parents=True, exist_ok=True)
    (vdir / name).write_bytes(data)
    meta = json.loads((vdir / "meta.json").read_text())
    meta["files"][name] = {"sha256": registry.sha256(data), "size": len(data)}
    meta_bytes = json.dumps(meta).encode()
    (vdir / "meta.json").write_bytes(meta_bytes)
    index = json.loads((tmp_path / "models" / "token" / "registry.json").read_text())
    for entry in index["versions"]:
        if entry["version"] == version:
            entry["meta_sha256"] = registry.sha256(meta_bytes)
    (tmp_path / "models" / "token" / "registry.json").write_text(json.dumps(index))


def test_pickled_artifacts_are_refused_even_with_matching_hashes(tmp_path: Path, store) -> None:
    _, ds = store
    root = str(tmp_path)
    model = trained(ds, 1)
    version = registry.register(model, dataset_version=ds.version, storage_uri=root).version

    buffer = io.BytesIO()
    torch.save(model.network.state_dict(), buffer)  # zip archive holding a pickle
    _rewrite_consistently(tmp_path, root, version, "model.safetensors", buffer.getvalue())
    with pytest.raises(registry.UnsafeArtifact, match="pickle"):
        registry.load_version("token", version, root)

    _rewrite_consistently(
        tmp_path, root, version, "model.safetensors", pickle.dumps({"w": [1.0]}, protocol=4)
    )
    registry.clear_cache()
    with pytest.raises(registry.UnsafeArtifact, match="pickle"):
        registry.load_version("token", version, root)

    # A metadata file that points the loader at a .pt/.pkl file is refused by type.
    version2 = registry.register(model, dataset_version=ds.version, storage_uri=root).version
    vdir = tmp_path / "models" / "token" / version2
    meta = json.loads((vdir / "meta.json").read_text())
    meta["baselines"] = {"evil": {"type": "gbt", "columns": []}}
    meta["files"]["baselines/evil.pkl"] = {"sha256": "0" * 64, "size": 1}
    (vdir / "meta.json").write_text(json.dumps(meta))
    _rewrite_consistently(tmp_path, root, version2, "baselines/evil.json", b'{"type": "gbt", "columns": []}')
    with pytest.raises(registry.UnsafeArtifact, match=r"never loads \.pkl"):
        registry.load_version("token", version2, root, with_baselines=True)


def _padded_safetensors(state: dict[str, torch.Tensor], header_len: int) -> bytes:
    """A genuine safetensors file of ``state`` whose header is exactly ``header_len`` bytes long
    (the library pads the header to 8 bytes; the metadata string fills the rest)."""
    from safetensors.torch import save

    for pad in range(header_len):
        data = save(state, metadata={"pad": "x" * pad})
        if int.from_bytes(data[:8], "little") == header_len:
            return data
    raise AssertionError(f"cannot pad the header to {header_len} bytes")


@pytest.mark.parametrize(("header_len", "protocol"), [(640, 2), (896, 3), (1152, 4), (1408, 5)])
def test_safetensors_whose_length_prefix_reads_as_a_pickle_signature_loads(
    tmp_path: Path, store, header_len: int, protocol: int
) -> None:
    """A header of 640/896/1152/1408 bytes makes the file start 0x80 0x02..0x05, the pickle
    signature: a valid safetensors file is still loaded, since it is checked as safetensors first."""
    _, ds = store
    root = str(tmp_path)
    model = trained(ds, 1)
    version = registry.register(model, dataset_version=ds.version, storage_uri=root).version
    state = {k: v.contiguous() for k, v in model.network.state_dict().items()}
    data = _padded_safetensors(state, header_len)
    assert data[:2] == bytes([0x80, protocol])
    _rewrite_consistently(tmp_path, root, version, "model.safetensors", data)
    loaded = registry.load_version("token", version, root)
    x = token_arrays(ds).x_test[:50]
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), rtol=1e-6)


def test_token_network_whose_weights_start_like_a_pickle_registers_and_serves(tmp_path: Path) -> None:
    """47 features, widths [32, 16, 16]: the network's own safetensors header is 1,152 bytes, so
    model.safetensors starts 0x80 0x04. It registers, becomes champion and predicts."""
    from kolray.learn.calibration import Calibrator, ThresholdChoice
    from kolray.learn.nets import TokenNet

    root = str(tmp_path)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    network = TokenNet(47, widths=[32, 16, 16]).eval()
    network.normalizer.fit(rng.normal(size=(500, 47)))
    columns = [f"f{i}" for i in range(47)]
    threshold = ThresholdChoice(
        threshold=0.5, policy="best_f1", min_precision=0.5, val_precision=0.5, val_recall=0.5, val_f1=0.5
    )
    model = TokenClassifier(network, Calibrator(method="platt", a=1.0, b=0.0), threshold, columns)
    meta = registry.register(model, dataset_version="20240101T000000Z-00000000", storage_uri=root)
    weights = (tmp_path / "models" / "token" / meta.version / "model.safetensors").read_bytes()
    assert int.from_bytes(weights[:8], "little") == 1152 and weights[:2] == b"\x80\x04"

    registry.promote("token", meta.version, storage_uri=root)
    registry.clear_cache()
    champion = registry.load_champion("token", root)
    x = rng.normal(size=(20, 47)).astype(np.float32)
    assert champion.version == meta.version
    np.testing.assert_allclose(champion.predict_proba(x), model.predict_proba(x), rtol=1e-6)


def test_pickle_named_safetensors_is_refused_even_when_it_starts_like_a_long_header(
    tmp_path: Path, store
) -> None:
    """Passing the safetensors check needs a whole consistent file, not the first bytes: a pickle
    is refused, as are truncated and garbled safetensors, each with a message saying what is wrong."""
    _, ds = store
    root = str(tmp_path)
    model = trained(ds, 1)
    version = registry.register(model, dataset_version=ds.version, storage_uri=root).version
    state = {k: v.contiguous() for k, v in model.network.state_dict().items()}
    genuine = _padded_safetensors(state, 1152)
    header_end = 8 + 1152

    def refused(data: bytes, match: str) -> None:
        _rewrite_consistently(tmp_path, root, version, "model.safetensors", data)
        registry.clear_cache()
        with pytest.raises(registry.UnsafeArtifact, match=match):
            registry.load_version("token", version, root)

    refused(pickle.dumps(state, protocol=4), "pickle")
    # A pickle whose first eight bytes are a plausible header length: still not safetensors.
    refused(pickle.dumps({"w": "x" * 2000}, protocol=2), "pickle")
    refused(genuine[:-4], "not valid safetensors.*(size|bytes)")  # truncated data
    refused(genuine[: header_end - 10], "not valid safetensors.*header")  # truncated header
    garbled = bytearray(genuine)
    garbled[8] = ord("[")  # the header is no longer a JSON object
    refused(bytes(garbled), "not valid safetensors.*header")
    shifted = genuine.replace(b'"data_offsets":[0,', b'"data_offsets":[4,', 1)
    refused(shifted, "not valid safetensors.*offset")
    refused(b"", "not valid safetensors")
    from safetensors.torch import save

    plain = save(state)  # a header length that reads as no pickle signature
    assert not registry.looks_pickled(plain)
    refused(plain[:-4], "not valid safetensors: tensors cover")


def test_safetensors_check_agrees_with_the_safetensors_library() -> None:
    """Byte changes in the header and truncations: the registry's check accepts exactly what the
    safetensors library loads (measured over every header byte: 18,588 variants, no disagreement)."""
    from safetensors.torch import load, save

    from kolray.learn.nets import TokenNet

    network = TokenNet(47, widths=[32, 16, 16])
    genuine = save({k: v.contiguous() for k, v in network.state_dict().items()}, metadata={"a": "b"})
    header_end = 8 + int.from_bytes(genuine[:8], "little")
    rng = np.random.default_rng(1)
    variants = [genuine[:cut] for cut in rng.integers(0, len(genuine), 100)]
    for position in rng.integers(0, header_end, 400):
        changed = bytearray(genuine)
        changed[position] = int(rng.integers(0, 256))
        variants.append(bytes(changed))
    accepted = 0
    for data in variants:
        try:
            load(data)
            library_accepts = True
        except Exception:
            library_accepts = False
        assert (registry.safetensors_problem(data) is None) == library_accepts, data[:header_end]
        accepted += library_accepts
    assert 0 < accepted < len(variants)  # both kinds of variant were tried


def test_loading_never_unpickles(tmp_path: Path, store, monkeypatch: pytest.MonkeyPatch) -> None:
    _, ds = store
    root = str(tmp_path)
    data = token_arrays(ds)
    version = registry.register(
        trained(ds, 1), dataset_version=ds.version, baselines=fit_token_baselines(data), storage_uri=root
    ).version

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling during a registry load")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    loaded = registry.load_version("token", version, root, with_baselines=True)
    assert loaded.predict_proba(data.x_test[:5]).shape == (5,)


def test_promote_if_better_compares_on_the_candidates_test_split(tmp_path: Path, store) -> None:
    _, ds = store
    root = str(tmp_path)
    synthetic.write_token_dataset(root, n_rows=4000, seed=6, version=ds.version)  # the same split, here
    weak = registry.register(untrained(ds), dataset_version=ds.version, storage_uri=root).version
    first = registry.promote_if_better("token", weak, root)
    assert first.promoted and first.reason == "no champion yet"

    strong = registry.register(trained(ds, 6), dataset_version=ds.version, storage_uri=root).version
    decision = registry.promote_if_better("token", strong, root)
    assert decision.promoted, decision
    assert decision.candidate_value > decision.champion_value and decision.test_split == ds.version
    assert registry.champion_version("token", root) == strong

    weaker = registry.register(untrained(ds), dataset_version=ds.version, storage_uri=root).version
    decision = registry.promote_if_better("token", weaker, root)
    assert not decision.promoted and "does not beat" in decision.reason
    assert registry.champion_version("token", root) == strong

    # Other feature columns: cannot be scored on the same split → no automatic switch.
    subset = ds.feature_columns[:-1]
    data = token_arrays(ds)
    data.feature_columns, data.x_train, data.x_val = subset, data.x_train[:, :-1], data.x_val[:, :-1]
    other, _ = train_token_model(data, TokenTrainConfig(widths=[16], max_epochs=2))
    other_version = registry.register(other, dataset_version=ds.version, storage_uri=root).version
    decision = registry.promote_if_better("token", other_version, root)
    assert not decision.promoted and "feature columns differ" in decision.reason


def test_prune_keeps_champion_and_best(tmp_path: Path, store) -> None:
    _, ds = store
    root = str(tmp_path)
    model = trained(ds, 1)
    versions = {}
    for value in (0.1, 0.5, 0.3, 0.2):
        meta = registry.register(
            model, dataset_version=ds.version, metrics={"test": {"pr_auc": value}}, storage_uri=root
        )
        versions[value] = meta.version
    registry.promote("token", versions[0.1], storage_uri=root)  # the champion is kept whatever its score
    removed = registry.prune("token", keep=1, storage_uri=root)
    assert removed == sorted([versions[0.3], versions[0.2]])
    kept = {v.version for v in registry.list_versions("token", root)}
    assert kept == {versions[0.1], versions[0.5]}
    for version in removed:
        assert not storage.exists(registry.model_uri("token", version, root))
