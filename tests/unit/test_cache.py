"""The serving caches' TTL cache: values live ttl_s after they were stored, the oldest stored leave
first, expired entries do not pile up, and misses are computed once, together."""

from __future__ import annotations

import pytest

from kolray import cache as cache_module
from kolray.cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cache_module.time, "monotonic", fake)
    return fake


def test_a_value_is_fresh_for_ttl_s_after_it_was_stored(clock: Clock) -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=10, max_entries=100)
    cache.put_many([("a", 1)])
    clock.now += 9.9
    assert cache.lookup(["a", "b"]) == {"a": 1}
    clock.now += 0.1
    assert cache.lookup(["a"]) == {}
    assert (cache.hits, cache.misses) == (1, 2)


def test_reading_does_not_extend_a_value_storing_again_does(clock: Clock) -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=10, max_entries=100)
    cache.put_many([("a", 1)])
    clock.now += 8
    assert cache.lookup(["a"]) == {"a": 1}
    clock.now += 3
    assert cache.lookup(["a"]) == {}
    cache.put_many([("a", 2)])
    clock.now += 9
    assert cache.lookup(["a"]) == {"a": 2}


def test_expired_entries_are_dropped_as_new_ones_arrive(clock: Clock) -> None:
    cache: TtlCache[int, int] = TtlCache(ttl_s=1, max_entries=1_000_000)
    for second in range(100):
        cache.put_many((second * 1000 + i, i) for i in range(1000))
        clock.now += 0.5
    # A stream of distinct keys: what the last ttl_s stored, not everything ever stored.
    assert len(cache) <= 2000


def test_beyond_max_entries_the_oldest_stored_leave_first(clock: Clock) -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=60, max_entries=2)
    cache.put_many([("a", 1)])
    clock.now += 1
    cache.put_many([("b", 2)])
    cache.lookup(["a"])  # reading "a" does not save it: it is still the oldest stored
    cache.put_many([("c", 3)])
    assert cache.lookup(["a", "b", "c"]) == {"b": 2, "c": 3}


def test_a_changed_ttl_applies_to_stored_values(clock: Clock) -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=60, max_entries=10)
    cache.put_many([("a", 1)])
    clock.now += 5
    cache.ttl_s = 4
    assert cache.lookup(["a"]) == {}
    cache.ttl_s = 0
    cache.put_many([("b", 2)])
    assert cache.lookup(["b"]) == {} and len(cache) == 0


def test_get_or_compute_asks_once_for_the_distinct_missing_keys(clock: Clock) -> None:
    cache: TtlCache[str, int | None] = TtlCache(ttl_s=10, max_entries=100)
    calls: list[list[str]] = []

    def compute(keys: list[str]) -> dict[str, int | None]:
        calls.append(keys)
        return {k: (None if k == "none" else len(k)) for k in keys}

    assert cache.get_or_compute(["aa", "b", "aa"], compute) == {"aa": 2, "b": 1}
    # None is a value like any other (e.g. "this KOL has closed nothing yet"), cached too.
    assert cache.get_or_compute(["b", "none", "ccc"], compute) == {"b": 1, "none": None, "ccc": 3}
    assert cache.get_or_compute(["none", "ccc"], compute) == {"none": None, "ccc": 3}
    assert calls == [["aa", "b"], ["none", "ccc"]]


def test_a_compute_that_skips_a_key_is_an_error_and_stores_nothing(clock: Clock) -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=10, max_entries=100)
    with pytest.raises(KeyError, match="1 of 2"):
        cache.get_or_compute(["a", "b"], lambda keys: {"a": 1})
    assert len(cache) == 0


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        TtlCache(ttl_s=1, max_entries=0)
