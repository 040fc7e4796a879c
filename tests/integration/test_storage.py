"""The storage URI works the same on a local directory and on an S3-compatible server."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kolray import storage


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, data_dir: Path) -> str:
    if request.param == "s3":
        return request.getfixturevalue("s3_storage")
    return str(data_dir / "store")


def test_bytes_json_and_listing_round_trip(root: str) -> None:
    storage.write_json(storage.join(root, "models", "token", "v1", "meta.json"), {"a": 1})
    storage.write_bytes(storage.join(root, "models", "token", "v2", "w.bin"), b"\x00\x01")
    assert storage.read_json(storage.join(root, "models/token/v1/meta.json")) == {"a": 1}
    assert storage.read_bytes(storage.join(root, "models/token/v2/w.bin")) == b"\x00\x01"
    assert storage.listdir(storage.join(root, "models", "token")) == ["v1", "v2"]
    assert storage.listdir(storage.join(root, "nothing")) == []
    storage.remove(storage.join(root, "models", "token", "v1"))
    assert not storage.exists(storage.join(root, "models/token/v1/meta.json"))


def test_parquet_through_the_arrow_filesystem(root: str) -> None:
    table = pa.table({"x": [1, 2, 3]})
    fs, path = storage.arrow_filesystem(storage.join(root, "datasets", "t.parquet"))
    storage.makedirs(storage.join(root, "datasets"))
    pq.write_table(table, path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs).equals(table)


def test_join() -> None:
    assert storage.join("s3://b/p/", "a", "/b/") == "s3://b/p/a/b"
    assert storage.join("/tmp/x", "a", "b") == "/tmp/x/a/b"
