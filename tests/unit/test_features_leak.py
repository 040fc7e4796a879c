"""Point in time, as a property: rewriting the future never changes a feature of the past.

For a random history of swaps and a random time ``t``, every event after ``t`` is deleted, altered
(amounts, sides, venues, market caps) or joined by new ones; every feature of every token row with
``entry_time <= t`` and of every KOL row with ``day <= t`` must come out bit for bit the same.
Labels may change (they are the future); features may not.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kolray.analyzer import build_positions
from kolray.chain.types import Swap
from kolray.features.context import MintEntries, position_frame
from kolray.features.definitions import DAY, KOL_FEATURES, TOKEN_FEATURES
from kolray.features.rows import kol_rows, token_rows

SOL = 1_000_000_000
T0 = 1_700_000_000
SPAN = 40 * DAY
H = 7 * DAY
WALLETS = [f"Wallet{i}" for i in range(4)]
MINTS = [f"Mint{i}" for i in range(5)]
# Far beyond every swap: every SOL entry is a row in both histories, so rows can be compared.
CUTOFF = T0 + 10 * SPAN
DEXES = ["pumpfun", "pumpswap", "raydium_amm_v4", "jupiter_v6", "unknown"]

swap_values = st.tuples(
    st.integers(0, len(WALLETS) - 1),
    st.integers(0, len(MINTS) - 1),
    st.sampled_from(["buy", "buy", "sell"]),
    st.integers(0, SPAN),
    st.sampled_from([1_000, 2_000, 999, 1, 5_000]),
    st.one_of(st.just(0), st.integers(1, 5 * SOL)),
    st.sampled_from(DEXES),
    st.one_of(st.none(), st.floats(1.0, 1e5)),
)


def make_swaps(values: list[tuple], prefix: str) -> list[Swap]:
    return [
        Swap(
            signature=f"{prefix}{i:05d}",
            slot=offset,
            block_time=T0 + offset,
            wallet=WALLETS[w],
            mint=MINTS[m],
            side=side,
            token_amount=tokens,
            token_decimals=6,
            sol_amount=lamports,
            dex=dex,
            fee=5_000,
            market_cap_sol=mcap,
        )
        for i, (w, m, side, offset, tokens, lamports, dex, mcap) in enumerate(values)
    ]


def build(swaps: list[Swap]) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = position_frame(build_positions(swaps), swaps)
    first_seen: dict[str, float] = {}
    for s in swaps:
        first_seen[s.mint] = min(first_seen.get(s.mint, np.inf), s.block_time)
    tokens = MintEntries.build(frame["mint"], frame["wallet"], frame["entry_time"], first_seen)
    tok = token_rows(frame, tokens, horizon_s=H, cutoff=CUTOFF)
    kol = kol_rows(frame, horizon_s=H, first_day=(T0 // DAY) * DAY, last_day=T0 + SPAN)
    return tok, kol


def rewrite_future(swaps: list[Swap], t: int, mode: str, data: st.DataObject) -> list[Swap]:
    past = [s for s in swaps if s.block_time <= t]
    future = [s for s in swaps if s.block_time > t]
    if mode == "delete":
        return past
    if mode == "alter":
        altered = []
        for s in future:
            altered.append(
                dataclasses.replace(
                    s,
                    side=data.draw(st.sampled_from(["buy", "sell"])),
                    token_amount=data.draw(st.sampled_from([1, 1_000, 7_000])),
                    sol_amount=data.draw(st.integers(0, 50 * SOL)),
                    dex=data.draw(st.sampled_from(DEXES)),
                    market_cap_sol=data.draw(st.one_of(st.none(), st.floats(1.0, 1e6))),
                )
            )
        return past + altered
    # "add": the future gets new trades too (new KOL buys of old tokens, exits, new tokens).
    extra = data.draw(st.lists(swap_values, max_size=30))
    added = [
        dataclasses.replace(s, block_time=t + 1 + (s.block_time - T0) % SPAN, slot=t + 1)
        for s in make_swaps(extra, "new")
    ]
    return swaps + added


def same_features(before: pd.DataFrame, after: pd.DataFrame, keys: list[str], features: list[str]) -> None:
    left = before.set_index(keys).sort_index()
    right = after.set_index(keys).sort_index()
    assert list(left.index) == list(right.index), "the rows of the past differ"
    for column in features:
        a, b = left[column].to_numpy(), right[column].to_numpy()
        assert np.array_equal(a, b, equal_nan=True), f"{column} changed: {a} vs {b}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(swap_values, min_size=1, max_size=80),
    t_offset=st.integers(0, SPAN),
    mode=st.sampled_from(["delete", "alter", "add"]),
    data=st.data(),
)
def test_rewriting_the_future_changes_no_feature_of_the_past(values, t_offset, mode, data):
    swaps = make_swaps(values, "sig")
    t = T0 + t_offset
    tok_before, kol_before = build(swaps)
    tok_after, kol_after = build(rewrite_future(swaps, t, mode, data))

    past = lambda frame, column: frame[frame[column] <= t]  # noqa: E731
    same_features(
        past(tok_before, "entry_time"), past(tok_after, "entry_time"), ["entry_signature"], TOKEN_FEATURES
    )
    # KOL rows exist only when their target window has a buy, which is the future: compare the days
    # both histories have.
    k_before, k_after = past(kol_before, "day"), past(kol_after, "day")
    common = k_before.merge(k_after[["wallet", "day"]], on=["wallet", "day"])
    k_after = k_after.merge(common[["wallet", "day"]], on=["wallet", "day"])
    same_features(common, k_after, ["wallet", "day"], KOL_FEATURES)


def test_the_property_sees_a_leak_when_there_is_one():
    """The check itself must fail on a feature that peeks: the label written into a feature."""
    swaps = make_swaps(
        [
            (0, 0, "buy", 0, 1_000, SOL, "pumpfun", None),
            (0, 0, "sell", 3_600, 1_000, 4 * SOL, "pumpfun", None),
        ],
        "sig",
    )
    before, _ = build(swaps)
    after, _ = build([s for s in swaps if s.block_time <= T0 + 60])
    before["kol_dh_score"] = before["label_3x"].astype(np.float32)  # a leak
    after["kol_dh_score"] = after["label_3x"].astype(np.float32)
    try:
        same_features(before, after, ["entry_signature"], TOKEN_FEATURES)
    except AssertionError:
        return
    raise AssertionError("a feature that copies the label went unnoticed")
