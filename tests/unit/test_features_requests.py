"""Online feature requests: the column-at-a-time check of already-validated items (Serve's
TokenQuery) accepts exactly what the pydantic model accepts, with the same values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kolray.features import online
from kolray.serve.lookup import TokenQuery

wallets = st.one_of(st.sampled_from(["A" * 44, "B" * 43, "x"]), st.just(""), st.integers(0, 3), st.none())
amounts = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 10**6),
    st.booleans(),
    st.just("1.5"),
    st.just(10**400),
)
times = st.one_of(
    st.integers(-5, 2**34 + 5),
    st.sampled_from([0, 2**34 - 1, 2**34, -1, 2**70]),
    st.floats(0, 2e9),
    st.booleans(),
    st.just("1700000000"),
)
mints = st.one_of(st.none(), st.just("Mint1"), st.just(""), st.integers(0, 2))


def by_the_model(items: list) -> online.Buys | None:
    try:
        requests = online._REQUESTS.validate_python(items, from_attributes=True)
    except ValidationError:
        return None
    return online.Buys(
        [r.wallet for r in requests],
        np.array([r.amount_sol for r in requests], dtype=np.float64),
        np.array([r.entry_time for r in requests], dtype=np.int64),
        [r.mint for r in requests],
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.builds(TokenQuery, wallets, amounts, times, mints), min_size=1, max_size=5))
def test_the_column_check_agrees_with_the_model(items: list[TokenQuery]) -> None:
    expected = by_the_model(items)
    if expected is None:
        with pytest.raises(ValidationError):
            online._buys(items)
        return
    got = online._buys(items)
    assert got.wallets == expected.wallets and got.mints == expected.mints
    np.testing.assert_array_equal(got.amounts_sol, expected.amounts_sol)
    np.testing.assert_array_equal(got.times, expected.times)
    assert got.times.dtype == np.int64 and got.amounts_sol.dtype == np.float64


def test_valid_named_tuples_skip_the_model_and_mappings_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = online._REQUESTS.validate_python

    class Counting:
        def validate_python(self, items: list, **kwargs: object) -> object:
            calls.append(len(items))
            return real(items, **kwargs)

    monkeypatch.setattr(online, "_REQUESTS", Counting())
    queries = [TokenQuery("W" * 44, 1.5, 1_700_000_000 + i) for i in range(3)]
    buys = online._buys(queries)
    assert calls == [] and buys.times.tolist() == [1_700_000_000, 1_700_000_001, 1_700_000_002]
    online._buys([q._asdict() for q in queries])  # mappings: the model
    assert calls == [3]
    online._buys([TokenQuery("W" * 44, 2, 1_700_000_000)])  # an int amount: the model decides
    assert calls == [3, 1]
    with pytest.raises(ValidationError, match="amount_sol"):
        online._buys([*queries, TokenQuery("W" * 44, math.nan, 1_700_000_000)])
    assert calls == [3, 1, 4]
