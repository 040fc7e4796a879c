"""Datasets and the registry on an S3-compatible server (moto on loopback)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from kolray import storage
from kolray.datasets import list_versions, load_dataset
from kolray.learn import registry
from kolray.learn.train import TokenTrainConfig, fit_token_baselines, token_arrays, train_token_model
from kolray.testing import synthetic_datasets as synthetic

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_cache():
    registry.clear_cache()
    yield
    registry.clear_cache()


def test_dataset_round_trip_on_s3_matches_local(s3_storage: str, tmp_path) -> None:
    local = str(tmp_path / "store")
    s3_manifest = synthetic.write_token_dataset(s3_storage, n_rows=2000, seed=9)
    synthetic.write_token_dataset(local, n_rows=2000, seed=9, version=s3_manifest.version)
    on_s3, on_disk = load_dataset("token", storage_uri=s3_storage), load_dataset("token", storage_uri=local)
    assert list_versions("token", s3_storage) == [s3_manifest.version]
    assert on_s3.manifest.model_dump(exclude={"code_version"}) == on_disk.manifest.model_dump(
        exclude={"code_version"}
    )
    for split in ("train", "val", "test"):
        pd.testing.assert_frame_equal(on_s3.split(split), on_disk.split(split))


def test_registry_round_trip_and_refusals_on_s3(s3_storage: str) -> None:
    synthetic.write_token_dataset(s3_storage, n_rows=3000, seed=10)
    ds = load_dataset("token")  # settings point at the bucket
    data = token_arrays(ds)
    model, _ = train_token_model(data, TokenTrainConfig(widths=[16], max_epochs=2))
    meta = registry.register(model, dataset_version=ds.version, baselines=fit_token_baselines(data))
    decision = registry.promote_if_better("token", meta.version)
    assert decision.promoted

    champion = registry.load_champion("token")
    assert champion.version == meta.version
    np.testing.assert_allclose(
        champion.predict_proba(data.x_test), model.predict_proba(data.x_test), rtol=1e-6
    )
    with_baselines = registry.load_version("token", meta.version, with_baselines=True)
    assert set(with_baselines.baselines) == {"logistic", "gbt", "gbt_seed7"}

    weights = storage.join(registry.model_uri("token", meta.version), "model.safetensors")
    original = storage.read_bytes(weights)
    storage.write_bytes(weights, original[:-1] + bytes([original[-1] ^ 1]))
    registry.clear_cache()
    with pytest.raises(registry.TamperedArtifact):
        registry.load_champion("token")

    buffer = io.BytesIO()
    torch.save(model.network.state_dict(), buffer)
    storage.write_bytes(weights, buffer.getvalue())
    registry.clear_cache()
    with pytest.raises(registry.UnsafeArtifact, match="pickle"):  # checked before the hash
        registry.load_champion("token")

    storage.write_bytes(weights, original)
    registry.clear_cache()
    assert registry.load_champion("token").version == meta.version
