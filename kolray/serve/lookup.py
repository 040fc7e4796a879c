"""Point-in-time features for requests, from the database, behind a short-lived cache.

The feature *logic* lives in :mod:`kolray.features` (the same code that builds the training
datasets, so that a served prediction sees exactly what the model was trained on). This module
only adapts it to requests and caches the answers: a :class:`FeatureSource` turns request items
into feature rows; :class:`CachedFeatures` keeps each row for ``ttl_s`` seconds, so repeated
questions (the UI refreshing recent trades, a client retrying) skip the database, while a new
position closing shows up within ``ttl_s``.

Sources are injected by import path (``"module:factory"``, ``factory(engine) -> FeatureSource``),
so deployments, tests and benchmarks can swap them without touching the app.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from kolray.cache import TtlCache

DEFAULT_SOURCE = "kolray.serve.lookup:database_features"


class FeaturesUnavailable(RuntimeError):
    """Features cannot be computed (the pipeline is missing or the database is unreachable)."""


class TokenQuery(NamedTuple):
    """One buy to score, as unix seconds and SOL (the API has validated it). A named tuple: it is
    the row cache's key, hashed a few times per item, and a tuple hashes in C (a dataclass's
    generated ``__hash__`` is Python, ~0.1 ms per 1000-item request each time)."""

    wallet: str
    amount_sol: float
    entry_time: int
    mint: str | None = None


@dataclass(frozen=True, slots=True)
class FeatureBlock:
    """Feature rows sent to a model replica: named columns, float32 matrix (n, len(columns)).

    The model picks its own ``feature_columns`` by name, so a source may compute more columns
    than a model uses, and a reload to a model with another column order needs no change here."""

    columns: tuple[str, ...]
    matrix: np.ndarray

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> FeatureBlock:
        """A block from a feature frame: its column names and float32 values."""
        return cls(tuple(str(c) for c in frame.columns), frame.to_numpy(dtype=np.float32, copy=True))


class FeatureSource(Protocol):
    """Where point-in-time features come from (``module:factory`` in the app's arguments)."""

    def token_features(self, items: Sequence[TokenQuery]) -> pd.DataFrame:
        """One row per item, in order; columns: the token dataset's feature columns."""
        ...

    def kol_features(self, wallets: Sequence[str], as_of: int) -> pd.DataFrame:
        """One row per wallet, in order, as of ``as_of``; columns: the KOL dataset's feature columns."""
        ...


def load_source(path: str, engine: Engine) -> FeatureSource:
    """``"module:factory"`` → ``factory(engine)``."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"feature source must be 'module:factory', not {path!r}")
    factory: Callable[[Engine], FeatureSource] = getattr(importlib.import_module(module_name), attr)
    return factory(engine)


def database_features(engine: Engine) -> FeatureSource:
    """The product's feature source: :mod:`kolray.features` over the configured database."""
    try:
        features = importlib.import_module("kolray.features")
    except ModuleNotFoundError as error:
        if error.name != "kolray.features":
            raise
        raise FeaturesUnavailable(
            "kolray.features is not available in this build: predictions need the feature pipeline"
        ) from None
    source: FeatureSource = features.ServingFeatures(engine)
    return source


class CachedFeatures:
    """A :class:`FeatureSource` with a per-row TTL cache; only the missing rows reach the source
    (in one call). Columns are fixed by the first answer of each kind: a source whose columns
    change (new feature code) is picked up on the next process start.

    ``ttl_s`` bounds how old the data behind an answer may be. A source that keeps its own inputs
    for a while (it has a settable ``refresh_s``, as :class:`kolray.features.ServingFeatures` keeps
    the KOLs' histories) gets half of that and the rows the other half, so the two together never
    exceed ``ttl_s``."""

    def __init__(self, source: FeatureSource, ttl_s: float = 10.0, max_entries: int = 50_000) -> None:
        self.source = source
        self._token: TtlCache[Hashable, np.ndarray] = TtlCache(ttl_s, max_entries)
        self._kol: TtlCache[Hashable, np.ndarray] = TtlCache(ttl_s, max_entries)
        self._columns: dict[str, tuple[str, ...]] = {}
        self.ttl_s = ttl_s

    @property
    def ttl_s(self) -> float:
        """How stale a cached feature row may be, in seconds."""
        return self._ttl_s

    @ttl_s.setter
    def ttl_s(self, value: float) -> None:
        self._ttl_s = float(value)
        rows = self._ttl_s
        if hasattr(self.source, "refresh_s"):
            rows = self._ttl_s / 2
            self.source.refresh_s = rows
        self._token.ttl_s = self._kol.ttl_s = rows

    def stats(self) -> dict[str, int]:
        """Cache hits and misses per kind, since the start."""
        return {
            "token_hits": self._token.hits,
            "token_misses": self._token.misses,
            "kol_hits": self._kol.hits,
            "kol_misses": self._kol.misses,
        }

    def clear(self) -> None:
        """Forget every cached row."""
        self._token.clear()
        self._kol.clear()
        source_clear = getattr(self.source, "clear", None)
        if callable(source_clear):
            source_clear()

    def _lookup(
        self,
        kind: str,
        cache: TtlCache[Hashable, np.ndarray],
        keys: Sequence[Hashable],
        compute: Callable[[list[int]], pd.DataFrame],
    ) -> FeatureBlock:
        found = cache.lookup(keys)
        hits = [i for i, key in enumerate(keys) if key in found]
        missing = [i for i, key in enumerate(keys) if key not in found] if hits else list(range(len(keys)))
        matrix = None
        if missing:
            frame = compute(missing)
            if len(frame) != len(missing):
                raise FeaturesUnavailable(
                    f"{kind} feature source returned {len(frame)} rows for {len(missing)} items"
                )
            columns = tuple(str(c) for c in frame.columns)
            known = self._columns.setdefault(kind, columns)
            if columns != known:
                frame = frame.reindex(columns=list(known))
            matrix = frame.to_numpy(dtype=np.float32, copy=True)
            # The cached rows are views of one matrix per answer; all of it stays alive while
            # any of its rows does (at most ttl_s).
            cache.put_many(zip([keys[i] for i in missing], matrix, strict=True))
        columns = self._columns.get(kind, ())
        if not hits and matrix is not None:  # every row computed now: the answer is the matrix
            return FeatureBlock(columns, matrix)
        out = np.empty((len(keys), len(columns)), dtype=np.float32)
        if hits:
            out[hits] = np.stack([found[keys[i]] for i in hits])
        if matrix is not None:
            out[missing] = matrix
        return FeatureBlock(columns, out)

    def token_block(self, items: Sequence[TokenQuery]) -> FeatureBlock:
        """Token-model feature rows for ``items``, in order (cached rows no older than the TTL)."""
        return self._lookup(
            "token",
            self._token,
            list(items),
            lambda idx: self.source.token_features([items[i] for i in idx]),
        )

    def kol_block(self, wallets: Sequence[str], as_of: int) -> FeatureBlock:
        """KOL-model feature rows for ``wallets`` as of ``as_of``, in order (cached rows no older than the
        TTL)."""
        keys = [(w, as_of) for w in wallets]
        return self._lookup(
            "kol",
            self._kol,
            keys,
            lambda idx: self.source.kol_features([wallets[i] for i in idx], as_of),
        )
