"""Model registry on the storage URI (a local directory or ``s3://``).

Layout::

    models/<model>/registry.json                 index: versions, stages, champion, history
    models/<model>/<version>/meta.json           config, features, normalisation, calibration,
                                                 threshold, dataset version, metrics, code version,
                                                 and the sha256 of every file below
    models/<model>/<version>/model.safetensors   network weights + normalisation buffers (family net)
    models/<model>/<version>/model*.txt          LightGBM's model text (family gbt; KOL: one per target)
    models/<model>/<version>/linear.json         coefficients and standardisation (family linear)
    models/<model>/<version>/baselines/*.json|*.txt   baselines (JSON, LightGBM text)

Integrity: ``registry.json`` holds the sha256 of each version's ``meta.json``, which holds the
sha256 of every artifact. Loading checks both, so an edited file is refused
(:class:`TamperedArtifact`). Only ``.safetensors``, ``.json`` and ``.txt`` files are read. A
``.safetensors`` file must be valid safetensors as a whole (header, dtypes, shapes and offsets
consistent with its size); any other file that looks like a pickle or a ``torch.save`` archive is
refused (:class:`UnsafeArtifact`): nothing from storage is ever unpickled.

Stages: ``candidate`` (registered), ``champion`` (what Serve loads; one per model), ``archived``
(a former champion). :func:`promote` is the manual switch; :func:`promote_if_better` the automatic
one: the candidate replaces the champion only if it scores better **on the candidate's test split**
(the newest frozen split) with the champion evaluated on that same split — possible only when both
use the same feature columns in the same order; otherwise nothing changes and the decision says why.

Writers update ``registry.json`` by read-modify-write: run one trainer per model at a time (the
continuous cycle does).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from kolray import storage
from kolray.config import get_settings
from kolray.datasets import LoadedDataset, load_dataset
from kolray.learn.baselines import (
    KOL_PREDICTORS,
    TOKEN_SCORERS,
    KOLBaseline,
    TokenBaseline,
    baseline_type,
)
from kolray.learn.boosted import (
    KOL_MODEL_FILES,
    TOKEN_MODEL_FILE,
    BoostedKolForecaster,
    BoostedTokenClassifier,
)
from kolray.learn.calibration import Calibrator, ThresholdChoice
from kolray.learn.families import KolPredictor, TokenPredictor
from kolray.learn.linear import MODEL_FILE as LINEAR_MODEL_FILE
from kolray.learn.linear import LinearKolForecaster, LinearTokenClassifier
from kolray.learn.metrics import PRIMARY_METRIC, primary_metric_value
from kolray.learn.nets import KolNet, TokenNet, build_network
from kolray.learn.predictors import KolForecaster, TokenClassifier
from kolray.learn.versions import code_version, new_version, parse_version_time

ModelKind = Literal["token", "kol"]
Stage = Literal["candidate", "champion", "archived"]
MODEL_KINDS: tuple[ModelKind, ModelKind] = ("token", "kol")
FORMAT_VERSION = 1
SAFE_SUFFIXES = (".safetensors", ".json", ".txt")


class RegistryError(ValueError):
    """A registry operation cannot be done; the message says why."""


class VersionNotFound(RegistryError):
    """No registered version of that model by that id (or none at all)."""


class NoChampion(RegistryError):
    """The model has no champion yet."""


class TamperedArtifact(RegistryError):
    """A stored file does not match the sha256 recorded for it."""


class UnsafeArtifact(RegistryError):
    """A stored file is (or looks like) a pickle, or has a type the registry never loads."""


# Metadata


class FileEntry(BaseModel):
    """The sha256 and size recorded for one stored artifact."""

    model_config = ConfigDict(extra="forbid")

    sha256: str
    size: int


class BaselineMeta(BaseModel):
    """How to rebuild a stored baseline: its type, columns, and (token) calibration and threshold."""

    model_config = ConfigDict(extra="forbid")

    type: str
    columns: list[str]
    calibrator: Calibrator | None = None
    threshold: ThresholdChoice | None = None


class VersionMeta(BaseModel):
    """``meta.json`` of a version: everything needed to rebuild, verify and judge it."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    model: ModelKind
    version: str
    created_at: int
    code_version: str
    dataset_version: str
    feature_columns: list[str]
    targets: list[str]
    family: str = Field(
        default="net", description="Model family: net (PyTorch network), gbt (LightGBM) or linear."
    )
    network: dict[str, Any] = Field(description="{'class': ..., 'hparams': {...}}")
    normalisation: dict[str, list[float]] = Field(description="Train-split mean/std (copy of the buffers).")
    train_config: dict[str, Any] = Field(default_factory=dict)
    calibrator: Calibrator | None = None
    threshold: ThresholdChoice | None = None
    baselines: dict[str, BaselineMeta] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict, description="Test (and validation) metrics.")
    primary_metric: dict[str, Any] = Field(default_factory=dict, description="{'name', 'mode', 'value'}")
    tune: dict[str, Any] = Field(default_factory=dict, description="Search run that produced it.")
    files: dict[str, FileEntry]


class HistoryEvent(BaseModel):
    """One line of a model's registry history (register, promote, prune)."""

    model_config = ConfigDict(extra="forbid")

    at: int
    action: str
    version: str
    detail: str = ""


class RegistryEntry(BaseModel):
    """A version as listed in ``registry.json``: stage, provenance and the sha256 of its metadata."""

    model_config = ConfigDict(extra="forbid")

    version: str
    stage: Stage
    created_at: int
    dataset_version: str
    feature_columns_sha256: str
    family: str = "net"
    targets: list[str] = Field(default_factory=list)
    primary_metric: dict[str, Any] = Field(default_factory=dict)
    meta_sha256: str


class RegistryIndex(BaseModel):
    """``registry.json`` of a model: its versions, the champion, and the history."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    model: ModelKind
    champion: str | None = None
    versions: list[RegistryEntry] = Field(default_factory=list)
    history: list[HistoryEvent] = Field(default_factory=list)

    def entry(self, version: str) -> RegistryEntry:
        """The listed version ``version``; :class:`VersionNotFound` otherwise."""
        for item in self.versions:
            if item.version == version:
                return item
        known = ", ".join(v.version for v in self.versions[-5:]) or "none"
        raise VersionNotFound(f"no {self.model} model version {version!r} (latest: {known})")


# Helpers


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def columns_sha(columns: list[str]) -> str:
    """sha256 of an ordered list of feature columns: equal only for the same columns in the same order."""
    return sha256("\n".join(columns).encode())


def _root(storage_uri: str | None) -> str:
    if storage_uri is not None:
        return storage_uri
    return get_settings().storage_uri


def model_uri(model: str, version: str | None = None, storage_uri: str | None = None) -> str:
    """``<storage>/models/<model>[/<version>]``."""
    parts = ["models", model] + ([version] if version else [])
    return storage.join(_root(storage_uri), *parts)


def _check_kind(model: str) -> ModelKind:
    if model not in MODEL_KINDS:
        raise RegistryError(f"unknown model {model!r}: one of {', '.join(MODEL_KINDS)}")
    return cast(ModelKind, model)


def looks_pickled(data: bytes) -> bool:
    """Pickle protocol 2+ starts with 0x80 <protocol>; ``torch.save`` writes a zip holding a pickle;
    protocol 0/1 pickles end with the STOP opcode '.' after text opcodes.

    A heuristic for files that are not valid safetensors: a safetensors file begins with its
    header's length, which reads as 0x80 0x02..0x05 for headers of 640, 896, 1152 or 1408 bytes."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    if data[:4] == b"PK\x03\x04":
        return True
    return data[:1] in (b"(", b"c", b"]", b"}") and data.rstrip()[-1:] == b"."


# Bits per element of each safetensors dtype (the format's own list; sub-byte floats included).
_SAFETENSORS_DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
_SAFETENSORS_MAX_HEADER = 100_000_000  # the reference implementation's limit


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key in the header")
    return dict(pairs)


def safetensors_problem(data: bytes) -> str | None:
    """Why ``data`` is not a valid safetensors file, or None when it is.

    The checks of the reference implementation: an 8-byte little-endian header length N, then N
    bytes of UTF-8 JSON (an object) mapping tensor names to ``dtype``/``shape``/``data_offsets``
    (plus an optional string-to-string ``__metadata__``), with the tensors' byte ranges matching
    their dtype and shape, contiguous from 0, and ending exactly at the end of the file.
    """
    if len(data) < 8:
        return f"{len(data)} bytes, shorter than the 8-byte header length"
    header_len = int.from_bytes(data[:8], "little")
    if header_len > _SAFETENSORS_MAX_HEADER:
        return f"header length {header_len} exceeds the format's limit"
    if 8 + header_len > len(data):
        return f"header length {header_len} runs past the end of the {len(data)}-byte file"
    raw = data[8 : 8 + header_len]
    if not raw.startswith(b"{"):
        return "header does not start with a JSON object"
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as error:
        return f"header is not valid JSON: {error}"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        return "header __metadata__ is not a map of strings"
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            return f"header entry {name!r} does not have exactly dtype, shape and data_offsets"
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        bits = _SAFETENSORS_DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
        if bits is None:
            return f"tensor {name!r}: unknown dtype {dtype!r}"
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            return f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers"
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]
        ):
            return f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end]"
        n_bits = int(np.prod(shape, dtype=object)) * bits
        if n_bits % 8 or offsets[1] - offsets[0] != n_bits // 8:
            return (
                f"tensor {name!r}: data_offsets {offsets} span {offsets[1] - offsets[0]} bytes, "
                f"but {dtype} {shape} needs {n_bits / 8:g}"
            )
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            return f"tensor {name!r}: data_offsets start at {begin}, expected {end} (gap or overlap)"
        end = stop
    data_size = len(data) - 8 - header_len
    if end != data_size:
        return f"tensors cover {end} bytes, but the file holds {data_size} bytes of data"
    return None


def _read_verified(uri: str, name: str, entry: FileEntry | None, expected_sha: str | None = None) -> bytes:
    if not name.endswith(SAFE_SUFFIXES):
        raise UnsafeArtifact(f"{uri}: the registry never loads {Path(name).suffix or 'extensionless'} files")
    if not storage.exists(uri):
        raise TamperedArtifact(f"{uri}: file listed in the metadata is missing")
    data = storage.read_bytes(uri)
    # Safetensors is validated as a whole before any heuristic: its length prefix can read as a
    # pickle signature (see looks_pickled), and a valid file is never unpickled anyway.
    problem = safetensors_problem(data) if name.endswith(".safetensors") else None
    if name.endswith(".safetensors") and problem is not None and looks_pickled(data):
        raise UnsafeArtifact(
            f"{uri}: not valid safetensors ({problem}) and the content looks like a pickle/torch.save "
            "archive; refusing to load it"
        )
    if not name.endswith(".safetensors") and looks_pickled(data):
        raise UnsafeArtifact(f"{uri}: content is a pickle/torch.save archive; refusing to load it")
    want = expected_sha or (entry.sha256 if entry else None)
    if want is None or sha256(data) != want:
        raise TamperedArtifact(
            f"{uri}: sha256 does not match the registry metadata (modified after registration?)"
        )
    if problem is not None:  # stored like this at registration, or rewritten with new hashes
        raise UnsafeArtifact(f"{uri}: not valid safetensors: {problem}; refusing to load it")
    return data


# Index


def read_index(model: str, storage_uri: str | None = None) -> RegistryIndex:
    """A model's ``registry.json`` (an empty index before the first registration)."""
    kind = _check_kind(model)
    uri = storage.join(model_uri(kind, storage_uri=storage_uri), "registry.json")
    if not storage.exists(uri):
        return RegistryIndex(model=kind)
    try:
        return RegistryIndex.model_validate(storage.read_json(uri))
    except ValueError as error:
        raise RegistryError(f"{uri}: invalid registry index: {error}") from None


def _write_index(index: RegistryIndex, storage_uri: str | None) -> None:
    uri = storage.join(model_uri(index.model, storage_uri=storage_uri), "registry.json")
    storage.write_json(uri, index.model_dump(mode="json"))


def list_versions(model: str, storage_uri: str | None = None) -> list[RegistryEntry]:
    """The registered versions of a model, oldest first."""
    return list(read_index(model, storage_uri).versions)


def champion_version(model: str, storage_uri: str | None = None) -> str | None:
    """The champion's version id (one small read): Serve compares it before reloading."""
    return read_index(model, storage_uri).champion


# Registering


def _network_meta(network: TokenNet | KolNet) -> tuple[dict[str, Any], dict[str, list[float]]]:
    return (
        {"class": type(network).__name__, "hparams": network.hparams()},
        {
            "mean": network.normalizer.mean.tolist(),
            "std": network.normalizer.std.tolist(),
        },
    )


def register(
    predictor: TokenPredictor | KolPredictor,
    *,
    dataset_version: str,
    baselines: dict[str, TokenBaseline] | dict[str, KOLBaseline] | None = None,
    metrics: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    tune_info: dict[str, Any] | None = None,
    version: str | None = None,
    storage_uri: str | None = None,
) -> VersionMeta:
    """Store a trained model (and its baselines) as a new **candidate** version."""
    from safetensors.torch import save as save_safetensors

    token_model = isinstance(predictor, TokenClassifier | BoostedTokenClassifier | LinearTokenClassifier)
    kind: ModelKind = "token" if token_model else "kol"
    version = version or new_version()
    index = read_index(kind, storage_uri)
    if any(v.version == version for v in index.versions):
        raise RegistryError(f"{kind} version {version} is already registered")

    # Artifacts first, metadata after, index last: a crash leaves an unlisted directory, never a
    # listed version with missing files.
    files: dict[str, bytes]
    if isinstance(
        predictor, BoostedTokenClassifier | BoostedKolForecaster | LinearTokenClassifier | LinearKolForecaster
    ):
        files = predictor.to_files()  # LightGBM's model text, or the linear model's JSON
        network_meta: dict[str, Any] = predictor.describe()
        normalisation: dict[str, list[float]] = {}  # trees take the raw features; linear.json has its own
    else:
        state = {k: v.detach().cpu().contiguous() for k, v in predictor.network.state_dict().items()}
        files = {"model.safetensors": save_safetensors(state)}
        network_meta, normalisation = _network_meta(predictor.network)
    baseline_meta: dict[str, BaselineMeta] = {}
    for name, baseline in (baselines or {}).items():
        if isinstance(baseline, TokenBaseline):
            files.update(baseline.scorer.to_files(name))
            baseline_meta[name] = BaselineMeta(
                type=baseline.scorer.kind,
                columns=baseline.scorer.columns,
                calibrator=baseline.calibrator,
                threshold=baseline.threshold,
            )
        else:
            files.update(baseline.predictor.to_files(name))
            baseline_meta[name] = BaselineMeta(
                type=baseline.predictor.kind, columns=baseline.predictor.columns
            )
    root = model_uri(kind, version, storage_uri)
    for name, data in files.items():
        storage.write_bytes(storage.join(root, name), data)

    metrics = metrics or {}
    metric_name, mode = PRIMARY_METRIC[kind]
    primary = {"name": metric_name, "mode": mode, "value": metrics.get("test", {}).get(metric_name)}
    meta = VersionMeta(
        model=kind,
        version=version,
        created_at=parse_version_time(version),
        code_version=code_version(),
        dataset_version=dataset_version,
        feature_columns=list(predictor.feature_columns),
        targets=[predictor.target] if token_model else list(predictor.targets),  # type: ignore[union-attr]
        family=predictor.family,
        network=network_meta,
        normalisation=normalisation,
        train_config=train_config or {},
        calibrator=predictor.calibrator if token_model else None,  # type: ignore[union-attr]
        threshold=predictor.threshold if token_model else None,  # type: ignore[union-attr]
        baselines=baseline_meta,
        metrics=metrics,
        primary_metric=primary,
        tune=tune_info or {},
        files={name: FileEntry(sha256=sha256(data), size=len(data)) for name, data in files.items()},
    )
    meta_bytes = _meta_bytes(meta)
    storage.write_bytes(storage.join(root, "meta.json"), meta_bytes)

    index = read_index(kind, storage_uri)  # re-read: keep the window for lost updates small
    index.versions.append(
        RegistryEntry(
            version=version,
            stage="candidate",
            created_at=meta.created_at,
            dataset_version=dataset_version,
            feature_columns_sha256=columns_sha(meta.feature_columns),
            family=meta.family,
            targets=list(meta.targets),
            primary_metric=primary,
            meta_sha256=sha256(meta_bytes),
        )
    )
    index.history.append(HistoryEvent(at=int(time.time()), action="register", version=version))
    _write_index(index, storage_uri)
    return meta


def _meta_bytes(meta: VersionMeta) -> bytes:
    return json.dumps(meta.model_dump(mode="json"), indent=1, sort_keys=True).encode()


# Loading


@dataclass
class LoadedModel:
    """A registered version ready to predict (what Serve holds).

    ``predict_proba``: token → calibrated P(3x), shape (n,); KOL → forecast 3x rates, shape (n, 2)
    in the order of ``targets`` (7-day, 30-day). ``predict``: token → bool at ``threshold``; KOL →
    the rates. Inputs: a DataFrame with (at least) ``feature_columns``, or an array in that order.
    """

    model: ModelKind
    version: str
    meta: VersionMeta
    predictor: TokenPredictor | KolPredictor
    baselines: dict[str, TokenBaseline | KOLBaseline] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """The model family: ``net`` (PyTorch network), ``gbt`` (LightGBM) or ``linear``."""
        return self.meta.family

    @property
    def target(self) -> str | None:
        """Token: the label its probability is of (``peak_3x`` or ``label_3x``); KOL: None."""
        return self.meta.targets[0] if self.model == "token" and self.meta.targets else None

    @property
    def feature_columns(self) -> list[str]:
        """The input columns, in order."""
        return list(self.meta.feature_columns)

    @property
    def targets(self) -> list[str]:
        """The predicted targets (token: ``label_3x``; KOL: the 7-day and 30-day rates)."""
        return list(self.meta.targets)

    @property
    def dataset_version(self) -> str:
        """The dataset version it was trained and evaluated on."""
        return self.meta.dataset_version

    @property
    def threshold(self) -> float | None:
        """Token: the decision threshold on P(3x); KOL: None."""
        return self.meta.threshold.threshold if self.meta.threshold else None

    def predict_proba(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Token: calibrated P(3x), shape (n,); KOL: the forecast rates, shape (n, 2)."""
        return self.predictor.predict_proba(features)

    def predict(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Token: True at or above the threshold; KOL: the forecast rates."""
        return self.predictor.predict(features)


_CACHE: OrderedDict[tuple[str, str, str, str, bool], LoadedModel] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8


def load_version(
    model: str, version: str, storage_uri: str | None = None, with_baselines: bool = False
) -> LoadedModel:
    """Load and verify a registered version. Repeated calls for an unchanged version are served
    from an in-process cache keyed by the metadata's sha256 (one small read of the index)."""
    kind = _check_kind(model)
    root_uri = _root(storage_uri)
    index = read_index(kind, root_uri)
    entry = index.entry(version)
    key = (root_uri, kind, version, entry.meta_sha256, with_baselines)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    loaded = _load_uncached(kind, entry, root_uri, with_baselines)
    with _CACHE_LOCK:
        _CACHE[key] = loaded
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return loaded


def clear_cache() -> None:
    """Forget the loaded versions held in this process."""
    with _CACHE_LOCK:
        _CACHE.clear()


def read_meta(model: str, version: str, storage_uri: str | None = None) -> VersionMeta:
    """The verified metadata of a version."""
    kind = _check_kind(model)
    entry = read_index(kind, storage_uri).entry(version)
    return _read_meta(kind, entry, _root(storage_uri))


def _read_meta(kind: ModelKind, entry: RegistryEntry, root_uri: str) -> VersionMeta:
    root = model_uri(kind, entry.version, root_uri)
    data = _read_verified(storage.join(root, "meta.json"), "meta.json", None, entry.meta_sha256)
    try:
        meta = VersionMeta.model_validate_json(data)
    except ValueError as error:
        raise RegistryError(f"{kind}/{entry.version}: invalid meta.json: {error}") from None
    if meta.model != kind or meta.version != entry.version:
        raise TamperedArtifact(f"{kind}/{entry.version}: meta.json describes {meta.model}/{meta.version}")
    return meta


def _load_network(
    kind: ModelKind, version: str, meta: VersionMeta, read: Callable[[str], bytes]
) -> TokenClassifier | KolForecaster:
    """A network version: weights and normalisation from ``model.safetensors``."""
    from safetensors.torch import load as load_safetensors

    try:
        state = load_safetensors(read("model.safetensors"))
    except RegistryError:
        raise
    except Exception as error:  # safetensors raises its own types on a corrupt header
        raise UnsafeArtifact(
            f"{kind}/{version}: model.safetensors is not valid safetensors: {error}"
        ) from None
    network = build_network(kind, meta.network["hparams"])
    network.load_state_dict(state, strict=True)
    network.eval()
    if kind == "token":
        if meta.calibrator is None or meta.threshold is None:
            raise RegistryError(f"token/{version}: metadata lacks calibrator or threshold")
        assert isinstance(network, TokenNet)
        return TokenClassifier(
            network, meta.calibrator, meta.threshold, list(meta.feature_columns), meta.targets[0]
        )
    assert isinstance(network, KolNet)
    return KolForecaster(network, list(meta.feature_columns), list(meta.targets))


def _load_boosted(
    kind: ModelKind, version: str, meta: VersionMeta, read: Callable[[str], bytes]
) -> BoostedTokenClassifier | BoostedKolForecaster:
    """A LightGBM version: its model text(s), checked to be LightGBM models for these features."""
    names = [TOKEN_MODEL_FILE] if kind == "token" else list(KOL_MODEL_FILES[: len(meta.targets)])
    files = {name: read(name) for name in names}
    config = {k: v for k, v in meta.network.get("hparams", {}).items() if k != "rounds"}
    try:
        if kind == "token":
            if meta.calibrator is None or meta.threshold is None:
                raise RegistryError(f"token/{version}: metadata lacks calibrator or threshold")
            return BoostedTokenClassifier.from_files(
                files, meta.calibrator, meta.threshold, list(meta.feature_columns), config, meta.targets[0]
            )
        return BoostedKolForecaster.from_files(files, list(meta.feature_columns), list(meta.targets), config)
    except (ValueError, UnicodeDecodeError) as error:
        raise UnsafeArtifact(f"{kind}/{version}: not a usable LightGBM model: {error}") from None


def _load_linear(
    kind: ModelKind, version: str, meta: VersionMeta, read: Callable[[str], bytes]
) -> LinearTokenClassifier | LinearKolForecaster:
    """A linear version: its JSON, checked against the metadata's columns and outputs."""
    files = {LINEAR_MODEL_FILE: read(LINEAR_MODEL_FILE)}
    try:
        if kind == "token":
            if meta.calibrator is None or meta.threshold is None:
                raise RegistryError(f"token/{version}: metadata lacks calibrator or threshold")
            return LinearTokenClassifier.from_files(
                files, meta.calibrator, meta.threshold, list(meta.feature_columns), meta.targets[0]
            )
        return LinearKolForecaster.from_files(files, list(meta.feature_columns), list(meta.targets))
    except (ValueError, UnicodeDecodeError) as error:
        raise UnsafeArtifact(f"{kind}/{version}: not a usable linear model: {error}") from None


def _load_uncached(kind: ModelKind, entry: RegistryEntry, root_uri: str, with_baselines: bool) -> LoadedModel:
    meta = _read_meta(kind, entry, root_uri)
    root = model_uri(kind, entry.version, root_uri)

    def read(name: str) -> bytes:
        if name not in meta.files:
            raise TamperedArtifact(f"{kind}/{entry.version}: {name} is not listed in meta.json")
        return _read_verified(storage.join(root, name), name, meta.files[name])

    predictor: TokenPredictor | KolPredictor
    if meta.family == "gbt":
        predictor = _load_boosted(kind, entry.version, meta, read)
    elif meta.family == "linear":
        predictor = _load_linear(kind, entry.version, meta, read)
    else:
        predictor = _load_network(kind, entry.version, meta, read)

    baselines: dict[str, TokenBaseline | KOLBaseline] = {}
    if with_baselines:
        for name, info in meta.baselines.items():
            files = {n: read(n) for n in meta.files if n.startswith(f"baselines/{name}.")}
            if baseline_type(files, name) != info.type:
                raise TamperedArtifact(f"{kind}/{entry.version}: baseline {name} type differs from meta.json")
            if kind == "token":
                scorer = TOKEN_SCORERS[info.type].from_files(name, files)
                assert info.calibrator is not None and info.threshold is not None
                baselines[name] = TokenBaseline(name, scorer, info.calibrator, info.threshold)
            else:
                baselines[name] = KOLBaseline(name, KOL_PREDICTORS[info.type].from_files(name, files))
    return LoadedModel(kind, entry.version, meta, predictor, baselines)


def load_champion(model: str, storage_uri: str | None = None) -> LoadedModel:
    """The champion of ``model`` (token|kol), verified; cheap when unchanged since the last call
    (a Serve replica can call it in every ``reconfigure``)."""
    kind = _check_kind(model)
    champion = champion_version(kind, storage_uri)
    if champion is None:
        raise NoChampion(
            f"no champion {kind} model yet: run `kolray tune` or `kolray promote {kind} VERSION`"
        )
    return load_version(kind, champion, storage_uri)


# Stages


def promote(
    model: str, version: str, reason: str = "manual", storage_uri: str | None = None
) -> RegistryIndex:
    """Make ``version`` the champion; the previous champion becomes ``archived``. The version is
    loaded (and so verified) first: a tampered artifact never becomes champion."""
    kind = _check_kind(model)
    load_version(kind, version, storage_uri)
    index = read_index(kind, storage_uri)
    entry = index.entry(version)
    if index.champion == version:
        return index
    for item in index.versions:
        if item.stage == "champion":
            item.stage = "archived"
    entry.stage = "champion"
    previous, index.champion = index.champion, version
    index.history.append(
        HistoryEvent(
            at=int(time.time()),
            action="promote",
            version=version,
            detail=f"{reason}; previous champion: {previous or 'none'}",
        )
    )
    _write_index(index, storage_uri)
    return index


class PromotionDecision(BaseModel):
    """What :func:`promote_if_better` decided, on which values, and why."""

    model: ModelKind
    candidate: str
    champion_before: str | None
    promoted: bool
    reason: str
    metric: str
    candidate_value: float | None = None
    champion_value: float | None = None
    test_split: str | None = Field(default=None, description="Dataset version whose test split was compared.")


def promote_if_better(
    model: str, candidate: str, storage_uri: str | None = None, dataset: LoadedDataset | None = None
) -> PromotionDecision:
    """Promote ``candidate`` only if it beats the champion on the candidate's frozen test split.

    Both are scored on that split by the primary metric (token: PR-AUC, higher wins; KOL: mean
    RMSE of the 7-day and 30-day rates, lower wins); a tie keeps the champion. If the champion
    uses other feature columns it cannot be scored on that split, and nothing changes.
    ``dataset``: the candidate's :class:`~kolray.datasets.LoadedDataset` if already in memory.
    """
    kind = _check_kind(model)
    metric, mode = PRIMARY_METRIC[kind]
    index = read_index(kind, storage_uri)
    cand_entry = index.entry(candidate)
    current = index.champion

    def decide(promoted: bool, reason: str, **values: Any) -> PromotionDecision:
        if promoted:
            promote(kind, candidate, reason=f"auto: {reason}", storage_uri=storage_uri)
        return PromotionDecision(
            model=kind,
            candidate=candidate,
            champion_before=current,
            promoted=promoted,
            reason=reason,
            metric=metric,
            **values,
        )

    if current is None:
        return decide(True, "no champion yet")
    if current == candidate:
        return decide(False, "already the champion")
    champ_entry = index.entry(current)
    if champ_entry.feature_columns_sha256 != cand_entry.feature_columns_sha256:
        return decide(
            False,
            "feature columns differ from the champion's: they cannot be scored on the same split; "
            f"compare the reports and run `kolray promote {kind} {candidate}` if it is better",
        )
    cand_targets = read_meta(kind, candidate, storage_uri).targets
    champ_targets = read_meta(kind, current, storage_uri).targets
    if cand_targets != champ_targets:
        return decide(
            False,
            f"the candidate predicts {cand_targets}, the champion {champ_targets}: different questions "
            f"cannot be ranked on one metric; compare the reports and run `kolray promote {kind} {candidate}`",
        )
    ds = dataset if dataset is not None else load_dataset(kind, cand_entry.dataset_version, storage_uri)
    if ds.version != cand_entry.dataset_version:
        raise RegistryError(f"dataset {ds.version} is not the candidate's ({cand_entry.dataset_version})")
    cand_value = primary_metric_value(load_version(kind, candidate, storage_uri), ds)
    champ_value = primary_metric_value(load_version(kind, current, storage_uri), ds)
    better = cand_value > champ_value if mode == "max" else cand_value < champ_value
    verdict = "beats" if better else "does not beat"
    return decide(
        bool(better),
        f"candidate {verdict} champion on {metric} ({cand_value:.4f} vs {champ_value:.4f}) "
        f"on the test split of dataset {ds.version}",
        candidate_value=cand_value,
        champion_value=champ_value,
        test_split=ds.version,
    )


def prune(model: str, keep: int = 5, storage_uri: str | None = None) -> list[str]:
    """Delete all but the best ``keep`` non-champion versions (by the primary metric recorded at
    registration; newest first on ties or when unknown). The champion is never deleted. Returns
    the deleted versions."""
    if keep < 0:
        raise RegistryError("keep must be ≥ 0")
    kind = _check_kind(model)
    _, mode = PRIMARY_METRIC[kind]
    index = read_index(kind, storage_uri)
    others = [v for v in index.versions if v.stage != "champion"]

    def rank(entry: RegistryEntry) -> tuple[int, float, int]:
        value = entry.primary_metric.get("value")
        if value is None or not np.isfinite(value):
            return (1, 0.0, -entry.created_at)
        return (0, -value if mode == "max" else value, -entry.created_at)

    doomed = sorted(others, key=rank)[keep:]
    if not doomed:
        return []
    names = {d.version for d in doomed}
    # Index first: a crash between the two steps leaves orphan files, never a listed version without files.
    index.versions = [v for v in index.versions if v.version not in names]
    now = int(time.time())
    index.history.extend(HistoryEvent(at=now, action="prune", version=v) for v in sorted(names))
    _write_index(index, storage_uri)
    for version in sorted(names):
        storage.remove(model_uri(kind, version, storage_uri))
    return sorted(names)
