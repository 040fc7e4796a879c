"""Versioned feature datasets: the format shared by ``kolray.features`` (writer) and the learning
stages (readers); ``docs/features.md`` describes the format.

Layout under the storage URI::

    datasets/<name>/<version>/manifest.json
    datasets/<name>/<version>/{train,val,test}/*.parquet

The manifest is written **last**: a version directory without ``manifest.json`` is an unfinished
(or crashed) build and is invisible to :func:`list_versions`. Readers check the files against the
manifest (columns, Arrow types, row counts, time order with the embargo), so a half-copied or
hand-edited dataset fails loudly instead of training on the wrong thing.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kolray import storage
from kolray.config import get_settings
from kolray.learn.versions import code_version as current_code_version
from kolray.learn.versions import new_version, parse_version_time

DatasetName = Literal["token", "kol"]
SPLITS: tuple[str, str, str] = ("train", "val", "test")
FORMAT_VERSION = 1


class DatasetError(ValueError):
    """A dataset cannot be used; the message says which one and why."""


class DatasetNotFound(DatasetError):
    """No (complete) dataset of that name or version under the storage URI."""


class ManifestMismatch(DatasetError):
    """The files of a dataset version disagree with its manifest."""


class SplitInfo(BaseModel):
    """Rows, time range and label balance of one split, as recorded in the manifest."""

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(ge=0)
    time_min: int | None = Field(default=None, description="Smallest time_column value (unix s).")
    time_max: int | None = Field(default=None, description="Largest time_column value (unix s).")
    label_balance: dict[str, float] = Field(
        default_factory=dict, description="Per label column: mean (positive rate, or mean target)."
    )


class DatasetManifest(BaseModel):
    """What a dataset version holds. ``feature_columns`` is ordered: it *is* the model input."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    format_version: int = FORMAT_VERSION
    name: DatasetName
    version: str
    created_at: int = Field(description="Unix seconds.")
    code_version: str
    source: dict[str, Any] = Field(
        default_factory=dict,
        description="What it was built from: redacted database URL, swap/position counts, max swap id.",
    )
    feature_columns: list[str]
    label_columns: list[str]
    id_columns: list[str]
    eval_only_columns: list[str] = Field(default_factory=list)
    time_column: str
    horizon_s: int = Field(ge=0)
    embargo_s: int = Field(ge=0)
    splits: dict[str, SplitInfo]
    schema_: dict[str, str] = Field(alias="schema", description="Column → Arrow type string.")
    persistence_features: dict[str, str] = Field(
        default_factory=dict,
        description="KOL dataset: target column → the past-rate feature a persistence baseline carries forward.",
    )
    feature_groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Named subsets of feature_columns; 'seed' = the seed system's seven features.",
    )

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        parse_version_time(value)
        return value

    @field_validator("splits")
    @classmethod
    def _check_splits(cls, value: dict[str, SplitInfo]) -> dict[str, SplitInfo]:
        if set(value) != set(SPLITS):
            raise ValueError(f"splits must be exactly {list(SPLITS)}, got {sorted(value)}")
        return value

    @model_validator(mode="after")
    def _check_columns(self) -> DatasetManifest:
        if not self.feature_columns:
            raise ValueError("feature_columns is empty")
        if not self.label_columns:
            raise ValueError("label_columns is empty")
        groups = {
            "feature_columns": self.feature_columns,
            "label_columns": self.label_columns,
            "id_columns": self.id_columns,
            "eval_only_columns": self.eval_only_columns,
        }
        seen: dict[str, str] = {}
        for group, columns in groups.items():
            if len(set(columns)) != len(columns):
                raise ValueError(f"{group} has duplicate names")
            for column in columns:
                # A label or an evaluation-only column among the features is a leak, not a typo.
                if column in seen:
                    raise ValueError(f"column {column!r} is in both {seen[column]} and {group}")
                seen[column] = group
                if column not in self.schema_:
                    raise ValueError(f"{group} column {column!r} is not in schema")
        if self.time_column not in self.schema_:
            raise ValueError(f"time_column {self.time_column!r} is not in schema")
        for target, feature in self.persistence_features.items():
            if target not in self.label_columns:
                raise ValueError(f"persistence_features: {target!r} is not a label column")
            if feature not in self.feature_columns:
                raise ValueError(f"persistence_features: {feature!r} is not a feature column")
        for group_name, columns in self.feature_groups.items():
            missing = [c for c in columns if c not in self.feature_columns]
            if missing:
                raise ValueError(f"feature_groups[{group_name!r}] names non-features {missing}")
        return self

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON-ready data (``schema`` under its alias)."""
        return self.model_dump(mode="json", by_alias=True)


@dataclass(frozen=True)
class LoadedDataset:
    """One dataset version in memory: a pandas frame per split plus the manifest."""

    manifest: DatasetManifest
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    @property
    def name(self) -> str:
        """``token`` or ``kol``."""
        return self.manifest.name

    @property
    def version(self) -> str:
        """The dataset version id."""
        return self.manifest.version

    @property
    def feature_columns(self) -> list[str]:
        """The model input columns, in order."""
        return list(self.manifest.feature_columns)

    def split(self, split: str) -> pd.DataFrame:
        """The frame of ``train``, ``val`` or ``test``."""
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; one of {list(SPLITS)}")
        return getattr(self, split)

    def features(self, split: str, columns: list[str] | None = None) -> np.ndarray:
        """The model input of a split as float32 (NaN kept: models impute with train statistics)."""
        return self.split(split)[columns or self.feature_columns].to_numpy(dtype=np.float32, copy=True)


# Versions and locations


def _root(storage_uri: str | None) -> str:
    if storage_uri is not None:
        return storage_uri
    return get_settings().storage_uri


def dataset_uri(name: str, version: str | None = None, storage_uri: str | None = None) -> str:
    """``<storage>/datasets/<name>[/<version>]``."""
    parts = ["datasets", name] + ([version] if version else [])
    return storage.join(_root(storage_uri), *parts)


def list_versions(name: str, storage_uri: str | None = None) -> list[str]:
    """Complete versions (those with a manifest), oldest first."""
    root = dataset_uri(name, storage_uri=storage_uri)
    out = []
    for entry in storage.listdir(root):
        try:
            parse_version_time(entry)
        except ValueError:
            continue  # not a version directory (e.g. a stray file)
        if storage.exists(storage.join(root, entry, "manifest.json")):
            out.append(entry)
    return sorted(out)


def latest_version(name: str, storage_uri: str | None = None) -> str:
    """The newest complete version; :class:`DatasetNotFound` when there is none."""
    versions = list_versions(name, storage_uri)
    if not versions:
        raise DatasetNotFound(
            f"no {name!r} dataset under {dataset_uri(name, storage_uri=storage_uri)}: "
            "build one with `kolray features`"
        )
    return versions[-1]


def read_manifest(name: str, version: str, storage_uri: str | None = None) -> DatasetManifest:
    """The validated manifest of a version; :class:`DatasetNotFound` or :class:`ManifestMismatch`."""
    uri = storage.join(dataset_uri(name, version, storage_uri), "manifest.json")
    if not storage.exists(uri):
        known = list_versions(name, storage_uri)
        hint = f"known versions: {', '.join(known[-5:])}" if known else "no versions yet"
        raise DatasetNotFound(f"dataset {name}/{version} not found (no {uri}); {hint}")
    try:
        manifest = DatasetManifest.model_validate(storage.read_json(uri))
    except ValueError as error:
        raise ManifestMismatch(f"dataset {name}/{version}: invalid manifest.json: {error}") from None
    if manifest.name != name or manifest.version != version:
        raise ManifestMismatch(f"dataset {name}/{version}: manifest says {manifest.name}/{manifest.version}")
    return manifest


# Writing (small frames: tests, synthetic data, single-process builds; Ray Data writes parts itself)


def arrow_schema_strings(frame: pd.DataFrame) -> dict[str, str]:
    """Column → Arrow type string, as the Parquet files will hold them."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    return {field.name: str(field.type) for field in table.schema}


def describe_split(frame: pd.DataFrame, time_column: str, label_columns: list[str]) -> SplitInfo:
    """The :class:`SplitInfo` of a frame."""
    times = frame[time_column]
    return SplitInfo(
        rows=len(frame),
        time_min=int(times.min()) if len(frame) else None,
        time_max=int(times.max()) if len(frame) else None,
        label_balance={c: float(frame[c].mean()) if len(frame) else 0.0 for c in label_columns},
    )


def write_split(
    name: str,
    version: str,
    split: str,
    frame: pd.DataFrame,
    storage_uri: str | None = None,
    part: int = 0,
) -> str:
    """Write one Parquet part of a split; returns its URI."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; one of {list(SPLITS)}")
    directory = storage.join(dataset_uri(name, version, storage_uri), split)
    storage.makedirs(directory)
    uri = storage.join(directory, f"part-{part:05d}.parquet")
    fs, path = storage.arrow_filesystem(uri)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, filesystem=fs)
    return uri


def write_manifest(manifest: DatasetManifest, storage_uri: str | None = None) -> str:
    """Write ``manifest.json``: call it after every split part is written (it marks the version complete)."""
    uri = storage.join(dataset_uri(manifest.name, manifest.version, storage_uri), "manifest.json")
    # Not storage.write_json: that sorts keys, and the order of ``schema`` is the column order.
    storage.write_bytes(uri, json.dumps(manifest.to_json(), indent=1).encode())
    return uri


def write_dataset(
    name: DatasetName,
    splits: dict[str, pd.DataFrame],
    *,
    feature_columns: list[str],
    label_columns: list[str],
    id_columns: list[str],
    time_column: str,
    horizon_s: int,
    embargo_s: int,
    eval_only_columns: list[str] | None = None,
    persistence_features: dict[str, str] | None = None,
    feature_groups: dict[str, list[str]] | None = None,
    source: dict[str, Any] | None = None,
    version: str | None = None,
    code_version: str | None = None,
    storage_uri: str | None = None,
) -> DatasetManifest:
    """Write three in-memory splits and their manifest in one go (the manifest last)."""
    if set(splits) != set(SPLITS):
        raise DatasetError(f"splits must be exactly {list(SPLITS)}, got {sorted(splits)}")
    version = version or new_version()
    schema = arrow_schema_strings(splits["train"])
    for split in SPLITS[1:]:
        other = arrow_schema_strings(splits[split])
        if other != schema:
            raise DatasetError(f"split {split!r} has another schema than train: {other} vs {schema}")
    manifest = DatasetManifest(
        name=name,
        version=version,
        created_at=parse_version_time(version),
        code_version=code_version or current_code_version(),
        source=source or {},
        feature_columns=feature_columns,
        label_columns=label_columns,
        id_columns=id_columns,
        eval_only_columns=eval_only_columns or [],
        time_column=time_column,
        horizon_s=horizon_s,
        embargo_s=embargo_s,
        splits={s: describe_split(splits[s], time_column, label_columns) for s in SPLITS},
        schema=schema,
        persistence_features=persistence_features or {},
        feature_groups=feature_groups or {},
    )
    check_time_order(manifest)
    for split in SPLITS:
        write_split(name, version, split, splits[split], storage_uri)
    write_manifest(manifest, storage_uri)
    return manifest


# Reading


def check_time_order(manifest: DatasetManifest) -> None:
    """train < val < test in time with at least ``embargo_s`` between them (no label window of an
    earlier split overlaps a row of a later one)."""
    bounds = [(s, manifest.splits[s]) for s in SPLITS if manifest.splits[s].rows]
    for (early, a), (late, b) in itertools.pairwise(bounds):
        assert a.time_max is not None and b.time_min is not None
        if b.time_min - a.time_max < manifest.embargo_s:
            raise ManifestMismatch(
                f"dataset {manifest.name}/{manifest.version}: {late} starts {b.time_min - a.time_max} s "
                f"after {early} ends, less than the embargo of {manifest.embargo_s} s"
            )


def load_dataset(name: str, version: str | None = None, storage_uri: str | None = None) -> LoadedDataset:
    """Read a dataset version (latest when ``version`` is None) and check it against its manifest."""
    import pyarrow.parquet as pq

    version = version or latest_version(name, storage_uri)
    manifest = read_manifest(name, version, storage_uri)
    check_time_order(manifest)
    frames: dict[str, pd.DataFrame] = {}
    for split in SPLITS:
        directory = storage.join(dataset_uri(name, version, storage_uri), split)
        fs, path = storage.arrow_filesystem(directory)
        parts = [p for p in storage.listdir(directory) if p.endswith(".parquet")]
        if not parts:
            if manifest.splits[split].rows == 0:
                frames[split] = pd.DataFrame({c: pd.Series(dtype="float32") for c in manifest.schema_})
                continue
            raise ManifestMismatch(f"dataset {name}/{version}: split {split!r} has no Parquet files")
        table = pq.read_table([f"{path}/{p}" for p in parts], filesystem=fs)
        got = {f.name: str(f.type) for f in table.schema}
        missing = [c for c in manifest.schema_ if c not in got]
        if missing:
            raise ManifestMismatch(f"dataset {name}/{version}: split {split!r} lacks columns {missing}")
        extra = [c for c in got if c not in manifest.schema_]
        if extra:
            raise ManifestMismatch(
                f"dataset {name}/{version}: split {split!r} has columns {extra} not in the manifest"
            )
        wrong = {
            c: (got[c], t)
            for c, t in manifest.schema_.items()
            # Parquet round trips large_string as string: the same column to pandas.
            if got[c].replace("large_", "") != t.replace("large_", "")
        }
        if wrong:
            raise ManifestMismatch(
                f"dataset {name}/{version}: split {split!r} column types (file, manifest) differ: {wrong}"
            )
        if table.num_rows != manifest.splits[split].rows:
            raise ManifestMismatch(
                f"dataset {name}/{version}: split {split!r} has {table.num_rows} rows, "
                f"manifest says {manifest.splits[split].rows}"
            )
        frame = table.select(list(manifest.schema_)).to_pandas()
        # Rows in time order: training code and the bootstrap do not depend on part order.
        frames[split] = frame.sort_values(
            [manifest.time_column, *manifest.id_columns], kind="stable"
        ).reset_index(drop=True)
    return LoadedDataset(manifest=manifest, train=frames["train"], val=frames["val"], test=frames["test"])
