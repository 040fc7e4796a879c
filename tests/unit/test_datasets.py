"""The feature dataset format: versions, manifest, round trip, and loud failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kolray import datasets
from kolray.datasets import DatasetManifest, DatasetNotFound, ManifestMismatch
from kolray.testing import synthetic_datasets as synthetic


def _frames(n: int = 30, gap: int = 100) -> dict[str, pd.DataFrame]:
    def frame(t0: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "wallet": [f"w{i}" for i in range(n)],
                "entry_time": np.arange(t0, t0 + n, dtype=np.int64),
                "f1": np.linspace(0, 1, n).astype(np.float32),
                "f2": np.ones(n, dtype=np.float32),
                "label_3x": (np.arange(n) % 5 == 0).astype(np.int8),
                "oracle_p3x": np.full(n, 0.2),
            }
        )

    return {"train": frame(0), "val": frame(n + gap), "test": frame(2 * (n + gap))}


def _write(root: str, **overrides) -> DatasetManifest:
    kwargs = dict(
        feature_columns=["f1", "f2"],
        label_columns=["label_3x"],
        id_columns=["wallet", "entry_time"],
        eval_only_columns=["oracle_p3x"],
        time_column="entry_time",
        horizon_s=50,
        embargo_s=50,
        code_version="test",
        storage_uri=root,
    )
    kwargs.update(overrides)
    return datasets.write_dataset("token", kwargs.pop("splits", _frames()), **kwargs)


def test_version_ids_sort_by_time_and_parse() -> None:
    early, late = datasets.new_version(1_700_000_000), datasets.new_version(1_700_000_001)
    assert early < late
    assert datasets.parse_version_time(early) == 1_700_000_000
    assert len(early.split("-")[1]) == 8
    for bad in ("latest", "20240101T000000Z", "20240101T000000Z-xyz", "2024-01-01-deadbeef"):
        with pytest.raises(ValueError):
            datasets.parse_version_time(bad)


def test_round_trip_keeps_frames_and_manifest(tmp_path: Path) -> None:
    root = str(tmp_path)
    frames = _frames()
    manifest = _write(root)
    loaded = datasets.load_dataset("token", storage_uri=root)
    assert loaded.version == manifest.version == datasets.latest_version("token", root)
    assert loaded.manifest == manifest
    for split in datasets.SPLITS:
        pd.testing.assert_frame_equal(loaded.split(split), frames[split][list(manifest.schema_)])
        assert manifest.splits[split].rows == len(frames[split])
    assert manifest.splits["train"].label_balance["label_3x"] == pytest.approx(0.2)
    assert manifest.schema_["f1"] == "float" and manifest.schema_["label_3x"] == "int8"
    x = loaded.features("val")
    assert x.dtype == np.float32 and x.shape == (30, 2)
    on_disk = json.loads((tmp_path / "datasets" / "token" / manifest.version / "manifest.json").read_text())
    assert on_disk["schema"] == manifest.schema_ and on_disk["feature_columns"] == ["f1", "f2"]


def test_versions_list_only_complete_builds(tmp_path: Path) -> None:
    root = str(tmp_path)
    first = _write(root, version="20240101T000000Z-00000001")
    second = _write(root, version="20240102T000000Z-00000002")
    # A crashed build: parts without a manifest.
    datasets.write_split("token", "20240103T000000Z-00000003", "train", _frames()["train"], root)
    assert datasets.list_versions("token", root) == [first.version, second.version]
    assert datasets.load_dataset("token", storage_uri=root).version == second.version
    assert datasets.load_dataset("token", first.version, storage_uri=root).version == first.version


def test_missing_dataset_and_version_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match="kolray features"):
        datasets.load_dataset("kol", storage_uri=str(tmp_path))
    _write(str(tmp_path))
    with pytest.raises(DatasetNotFound, match="known versions"):
        datasets.load_dataset("token", "20200101T000000Z-abcdef01", storage_uri=str(tmp_path))


def test_manifest_that_disagrees_with_files_is_refused(tmp_path: Path) -> None:
    root = str(tmp_path)
    manifest = _write(root)
    path = tmp_path / "datasets" / "token" / manifest.version / "manifest.json"
    body = json.loads(path.read_text())

    body["splits"]["val"]["rows"] = 31
    path.write_text(json.dumps(body))
    with pytest.raises(ManifestMismatch, match="'val' has 30 rows, manifest says 31"):
        datasets.load_dataset("token", storage_uri=root)

    body["splits"]["val"]["rows"] = 30
    body["schema"]["f1"] = "double"
    path.write_text(json.dumps(body))
    with pytest.raises(ManifestMismatch, match="column types"):
        datasets.load_dataset("token", storage_uri=root)

    body["schema"]["f1"] = "float"
    body["schema"]["f3"] = "float"
    body["feature_columns"].append("f3")
    path.write_text(json.dumps(body))
    with pytest.raises(ManifestMismatch, match=r"lacks columns \['f3'\]"):
        datasets.load_dataset("token", storage_uri=root)


def test_leaky_manifests_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both feature_columns and eval_only_columns"):
        _write(str(tmp_path), feature_columns=["f1", "oracle_p3x"])
    with pytest.raises(ValueError, match="both feature_columns and label_columns"):
        _write(str(tmp_path), feature_columns=["f1", "label_3x"])
    # Splits closer than the embargo: a training label window would overlap validation rows.
    with pytest.raises(ManifestMismatch, match="less than the embargo"):
        _write(str(tmp_path), splits=_frames(gap=10))
    assert datasets.list_versions("token", str(tmp_path)) == []


def test_synthetic_datasets_follow_the_format(tmp_path: Path) -> None:
    token = synthetic.write_token_dataset(str(tmp_path), n_rows=3000)
    kol = synthetic.write_kol_dataset(str(tmp_path), n_kols=30, n_days=150)
    loaded = datasets.load_dataset("token", storage_uri=str(tmp_path))
    assert "oracle_p3x" in token.eval_only_columns and "oracle_p3x" not in token.feature_columns
    assert token.feature_groups["seed"] == synthetic.SEED_TOKEN_FEATURES
    assert loaded.train["entry_time"].max() + token.embargo_s <= loaded.val["entry_time"].min()
    assert kol.persistence_features == {
        "rate_3x_next_7d": "rate_3x_past_7d",
        "rate_3x_next_30d": "rate_3x_past_30d",
    }
    kol_loaded = datasets.load_dataset("kol", storage_uri=str(tmp_path))
    assert (kol_loaded.train[["n_next_7d", "n_next_30d"]] > 0).all().all()
