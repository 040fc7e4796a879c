"""A served model that can be swapped while it answers: what each model replica holds.

:class:`ModelHolder` loads a registered version (or the champion), scores feature blocks with it,
and :meth:`ModelHolder.configure` switches to another version by loading it *beside* the current
one and then replacing a single reference. A request that started on the old version finishes on
it and says so (every :class:`Scores` names its version); the next one uses the new version. A
version that fails to load leaves the current one serving, and the error is reported in
:meth:`state` (and so in ``/healthz``), never as failed predictions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kolray.learn import registry
from kolray.serve.lookup import FeatureBlock

log = logging.getLogger(__name__)

Loader = Callable[[str, "str | None", "str | None"], Any]  # (model, version|None=champion, storage_uri)


class NoModel(RuntimeError):
    """No version of this model is loaded (none registered/promoted yet, or it failed to load)."""


class FeatureColumnsMissing(RuntimeError):
    """The model needs feature columns the feature source does not produce."""


def registry_loader(model: str, version: str | None, storage_uri: str | None) -> Any:
    """The registry's verified loader: a version, or the champion when ``version`` is None."""
    if version is None:
        return registry.load_champion(model, storage_uri)
    return registry.load_version(model, version, storage_uri)


@dataclass(frozen=True)
class Scores:
    """Model output for one block: token → P(3x) (n,); KOL → rates (n, 2), 7d then 30d."""

    values: np.ndarray
    version: str
    threshold: float | None
    target: str | None = None  # token: the label P is of (peak_3x, label_3x)


@dataclass(frozen=True)
class _Active:
    loaded: Any  # kolray.learn.registry.LoadedModel
    columns_cache: dict[tuple[str, ...], np.ndarray]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class ModelHolder:
    """One model kind's registered version in a replica: loads a new version beside the current one and swaps
    a single reference, so requests never wait on a load."""

    def __init__(self, model: str, loader: Loader = registry_loader, storage_uri: str | None = None) -> None:
        self.model = model
        self.loader = loader
        self.storage_uri = storage_uri
        self._active: _Active | None = None
        self._error: str | None = None
        self._wanted: str | None = None
        self._tried_at: float | None = None  # wall clock of the last load attempt
        self._lock = threading.Lock()  # one load at a time; scoring never takes it

    # Versions

    def configure(self, config: Mapping[str, Any] | None) -> None:
        """Apply a deployment's ``user_config``: ``{"version": V}`` serves V; ``{"version": null}``
        (or no config) serves the registry's champion. Never raises: a failure keeps the current
        version and is reported by :meth:`state`."""
        version = (config or {}).get("version")
        if version is not None and not isinstance(version, str):
            self._error = f"user_config version must be a string or null, not {version!r}"
            return
        with self._lock:
            self._wanted = version
            current = self._active.loaded.version if self._active else None
            if version is not None and version == current:
                self._error = None
                return
            self._tried_at = time.time()
            try:
                loaded = self.loader(self.model, version, self.storage_uri)
            except Exception as error:  # NoChampion, VersionNotFound, TamperedArtifact, storage errors
                self._error = _first_line(error)
                if self._active is None and version is not None:
                    self._fall_back(version)
                    return
                log.warning("%s model: keeping %s: %s", self.model, current or "nothing", self._error)
                return
            self._active = _Active(loaded, {})  # one reference: requests see old or new, never a mix
            self._error = None
            if loaded.version != current:
                log.info("%s model: serving %s (was %s)", self.model, loaded.version, current or "nothing")

    def _fall_back(self, version: str) -> None:
        """A replica that holds nothing (it just started: a crash, a lost node, a scale-up) and
        cannot load its configured version serves the champion rather than nothing, and says so in
        :meth:`state`. A running replica keeps its current version instead (see :meth:`configure`)."""
        reason = self._error
        try:
            loaded = self.loader(self.model, None, self.storage_uri)
        except Exception as error:
            self._error = f"could not load the configured version {version} ({reason}), nor the champion: {_first_line(error)}"
            log.warning("%s model: serving nothing: %s", self.model, self._error)
            return
        self._active = _Active(loaded, {})
        self._error = (
            f"could not load the configured version {version} ({reason}); serving the champion "
            f"{loaded.version} instead"
        )
        log.warning("%s model: %s", self.model, self._error)

    @property
    def requested(self) -> str | None:
        """The version the deployment's config asks for (None: the champion)."""
        return self._wanted

    @property
    def version(self) -> str | None:
        """The version answering now (None: none loaded)."""
        active = self._active
        return active.loaded.version if active else None

    @property
    def feature_columns(self) -> list[str] | None:
        """The feature columns the loaded version expects (None: none loaded)."""
        active = self._active
        return list(active.loaded.feature_columns) if active else None

    def state(self) -> dict[str, Any]:
        """The version held, whether one is loaded, and the last load error."""
        active = self._active
        return {
            "version": active.loaded.version if active else None,
            "family": getattr(active.loaded, "family", None) if active else None,
            "target": _target(active.loaded) if active else None,
            "loaded": active is not None,
            "error": self._error,
            "requested": self._wanted,  # the user_config version (None: the champion)
            "tried_at": self._tried_at,  # so that a reload tells its own failure from an older one
        }

    # Scoring

    def _matrix(self, active: _Active, block: FeatureBlock) -> np.ndarray:
        index = active.columns_cache.get(block.columns)
        if index is None:
            position = {name: i for i, name in enumerate(block.columns)}
            missing = [c for c in active.loaded.feature_columns if c not in position]
            if missing:
                raise FeatureColumnsMissing(
                    f"{self.model} model {active.loaded.version} needs feature columns the feature "
                    f"source does not produce: {missing}"
                )
            index = np.array([position[c] for c in active.loaded.feature_columns], dtype=np.intp)
            active.columns_cache[block.columns] = index
        return block.matrix[:, index]

    def score_many(self, blocks: list[FeatureBlock]) -> list[Scores]:
        """Score several blocks with one forward pass (what a batch of requests becomes)."""
        active = self._active
        if active is None:
            raise NoModel(self._error or f"no {self.model} model loaded")
        loaded = active.loaded
        matrices = [self._matrix(active, block) for block in blocks]
        sizes = [len(m) for m in matrices]
        values = loaded.predict_proba(np.concatenate(matrices) if len(matrices) > 1 else matrices[0])
        values = np.asarray(values, dtype=np.float64)
        threshold = loaded.threshold if self.model == "token" else None
        out = []
        start = 0
        for size in sizes:
            out.append(Scores(values[start : start + size], loaded.version, threshold, _target(loaded)))
            start += size
        return out

    def score(self, block: FeatureBlock) -> Scores:
        """Scores for one block of feature rows."""
        return self.score_many([block])[0]


def _target(loaded: Any) -> str | None:
    """What the model's probability is of (token: peak_3x or label_3x), when it says."""
    # A model object without the attribute (a stand-in) names no target rather than failing to score.
    return getattr(loaded, "target", None)
