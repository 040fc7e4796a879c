"""A small time-to-live cache, shared by the serving caches (feature rows, KOL histories,
first-close times).

Entries leave in the order they were stored: a value is good for ``ttl_s`` seconds after it was
stored whatever happens to it meanwhile, so the oldest stored is always the next to expire. That
lets every store drop the expired entries from the front in O(expired), and a cache under a stream
of distinct keys holds what the last ``ttl_s`` seconds stored rather than ``max_entries`` dead ones.
(Dead entries cost memory, and in a long-lived server process they sit in the garbage collector's
oldest generation, where each full collection walks them: see ``KolrayService.warm_up``.)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Values kept ``ttl_s`` seconds after they were stored, at most ``max_entries`` (the oldest
    leave first). ``ttl_s`` may be changed at any time; ``ttl_s <= 0`` keeps nothing. Thread-safe;
    ``hits`` and ``misses`` count looked-up keys."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl_s = float(ttl_s)
        self.max_entries = max_entries
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def lookup(self, keys: Iterable[K]) -> dict[K, V]:
        """The fresh values among ``keys`` (a key that is missing or expired is left out)."""
        now = time.monotonic()
        found: dict[K, V] = {}
        with self._lock:
            for key in keys:
                entry = self._data.get(key)
                if entry is not None and now - entry[0] < self.ttl_s:
                    found[key] = entry[1]
                    self.hits += 1
                else:
                    self.misses += 1
        return found

    def put_many(self, items: Iterable[tuple[K, V]]) -> None:
        now = time.monotonic()
        with self._lock:
            for key, value in items:
                self._data.pop(key, None)  # a re-stored key moves to the back, with its new time
                self._data[key] = (now, value)
            while self._data:
                stored, _ = next(iter(self._data.values()))
                if now - stored < self.ttl_s and len(self._data) <= self.max_entries:
                    break
                self._data.popitem(last=False)

    def get_or_compute(self, keys: Sequence[K], compute: Callable[[list[K]], Mapping[K, V]]) -> dict[K, V]:
        """The value of each distinct key: fresh ones from the cache, the rest from one call of
        ``compute(missing)`` (which must answer every key it is given), then stored."""
        wanted = list(dict.fromkeys(keys))
        out = self.lookup(wanted)
        missing = [key for key in wanted if key not in out]
        if missing:
            fresh = compute(missing)
            absent = [key for key in missing if key not in fresh]
            if absent:
                raise KeyError(f"compute() gave no value for {len(absent)} of {len(missing)} keys")
            self.put_many((key, fresh[key]) for key in missing)
            out.update({key: fresh[key] for key in missing})
        return out

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
