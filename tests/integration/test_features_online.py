"""Online features (what Serve computes for a request) equal the dataset's rows for the same buys
and KOL-days, on SQLite and PostgreSQL; requests kolray knows nothing about get the documented
missing values; bad requests are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from kolray import datasets
from kolray.analyzer import analyze
from kolray.features import (
    KOL_FEATURES,
    TOKEN_FEATURES,
    BuildOptions,
    ServingFeatures,
    build_features,
    kol_features_online,
    token_features_online,
)
from kolray.features.online import HistoryCache
from kolray.features.source import read_all_positions, read_snapshot
from kolray.testing.synthetic_market import MarketParams, populate

DAY = 86_400
MARKET = MarketParams(kols=8, days=125, positions_per_kol_day=3.0, seed=11)


@pytest.fixture
def built(db, db_url, ray_session, tmp_path):
    populate(db, MARKET)
    analyze(db, full=True)
    store = str(tmp_path / "store")
    build_features(database_url=db_url, options=BuildOptions(storage_uri=store, shard_rows=900))
    token = datasets.load_dataset("token", storage_uri=store)
    kol = datasets.load_dataset("kol", storage_uri=store)
    return db_url, token, kol


def frame_of(ds: datasets.LoadedDataset) -> pd.DataFrame:
    return pd.concat([ds.train, ds.val, ds.test], ignore_index=True)


def test_online_token_features_equal_the_dataset_rows(built):
    url, token, _ = built
    rows = frame_of(token)
    sample = rows.sample(n=min(400, len(rows)), random_state=0).reset_index(drop=True)
    positions = read_all_positions(url, read_snapshot(url).swap_watermark).set_index("entry_signature")
    amounts = positions.loc[sample["entry_signature"], "entry_lamports"].to_numpy() / 1e9
    items = [
        {"wallet": r.wallet, "amount_sol": float(a), "entry_time": int(r.entry_time), "mint": r.mint}
        for r, a in zip(sample.itertuples(), amounts, strict=True)
    ]
    online = token_features_online(url, items)
    assert list(online.columns) == TOKEN_FEATURES == token.feature_columns
    for column in TOKEN_FEATURES:
        assert np.array_equal(online[column].to_numpy(), sample[column].to_numpy(), equal_nan=True), column
    # Serve's adapter gives the same, for any subset and order of columns a model asks for.
    served = ServingFeatures(url).token_features(items[:5])
    pd.testing.assert_frame_equal(served, online.iloc[:5])
    wanted = ["kol_rate_3x", "log_amount_sol"]
    assert list(token_features_online(url, items[:3], columns=wanted).columns) == wanted
    with pytest.raises(KeyError, match="no online definition"):
        token_features_online(url, items[:1], columns=["not_a_feature"])


def test_online_kol_features_equal_the_dataset_rows(built):
    url, _, kol = built
    rows = frame_of(kol)
    for day, group in list(rows.groupby("day"))[::7]:
        online = kol_features_online(url, group["wallet"].tolist(), int(day))
        assert list(online.columns) == KOL_FEATURES == kol.feature_columns
        for column in KOL_FEATURES:
            assert np.array_equal(online[column].to_numpy(), group[column].to_numpy(), equal_nan=True), column


def test_unknown_wallets_and_tokens_get_the_documented_missing_values(built):
    url, token, _ = built
    known = frame_of(token).iloc[-1]
    t = int(known["entry_time"]) + 60
    online = token_features_online(
        url,
        [
            {"wallet": "Nobody" + "1" * 38, "amount_sol": 2.0, "entry_time": t, "mint": known["mint"]},
            {"wallet": known["wallet"], "amount_sol": 2.0, "entry_time": t},  # no mint
            {"wallet": known["wallet"], "amount_sol": 2.0, "entry_time": t, "mint": "NeverTraded" + "1" * 33},
        ],
    )
    stranger, no_mint, new_token = online.iloc[0], online.iloc[1], online.iloc[2]
    # A KOL without history: no rates, zero counts; the token side is still known.
    assert np.isnan(stranger["kol_rate_3x"]) and stranger["kol_scored_log"] == 0
    assert stranger["n_kols_before"] >= 1 and not np.isnan(stranger["log_mcap"])
    # No mint: every token feature is missing; the KOL's record and the buy itself are there.
    for column in ("venue_curve", "token_age_log", "log_mcap", "n_kols_before", "reentry"):
        assert np.isnan(no_mint[column]), column
    assert not np.isnan(no_mint["kol_rate_3x"]) and no_mint["log_amount_sol"] == pytest.approx(np.log(2.0))
    # A token nobody has traded: this buy would be its first swap (age 0, no KOL before), venue unknown.
    assert new_token["token_age_log"] == 0 and new_token["n_kols_before"] == 0
    assert np.isnan(new_token["venue_curve"]) and np.isnan(new_token["since_prev_kol_log"])
    kol = kol_features_online(url, ["Nobody" + "1" * 38], t)
    assert np.isnan(kol.iloc[0]["rate_3x"]) and kol.iloc[0]["scored_log"] == 0


def test_bad_requests_are_refused_with_the_field_named(built):
    url, _, _ = built
    for bad, field in (
        ({"wallet": "w", "amount_sol": 0.0, "entry_time": 1}, "amount_sol"),
        ({"wallet": "w", "amount_sol": float("nan"), "entry_time": 1}, "amount_sol"),
        ({"wallet": "w", "amount_sol": 1.0, "entry_time": -5}, "entry_time"),
        ({"wallet": "", "amount_sol": 1.0, "entry_time": 1}, "wallet"),
    ):
        with pytest.raises(ValueError, match=field):
            token_features_online(url, [bad])
    assert token_features_online(url, []).columns.tolist() == TOKEN_FEATURES


def test_serving_features_reuse_each_kols_history_for_refresh_s_then_read_it_again(db, db_url):
    populate(db, MarketParams(kols=4, days=30, positions_per_kol_day=3.0, seed=5))
    analyze(db, full=True)
    with db.connect() as conn:
        wallets = [r[0] for r in conn.execute(text("SELECT DISTINCT wallet FROM positions ORDER BY wallet"))]
        late = int(conn.execute(text("SELECT MAX(entry_time) FROM positions")).scalar()) + 60
    stranger = "Nobody" + "1" * 38
    items = [{"wallet": w, "amount_sol": 1.5, "entry_time": late} for w in [*wallets, stranger]]
    served = ServingFeatures(db_url, refresh_s=3600)
    first = served.token_features(items)
    # The cached path computes exactly what a fresh read does.
    pd.testing.assert_frame_equal(first, token_features_online(db_url, items))
    assert (served.histories.hits, served.histories.misses) == (0, len(wallets) + 1)
    pd.testing.assert_frame_equal(
        served.kol_features(wallets, late), kol_features_online(db_url, wallets, late)
    )
    assert served.histories.misses == len(wallets) + 1  # the unknown KOL is remembered too
    # While the histories are the cached ones, a request over the same KOLs reuses their stack.
    stack = served.histories(wallets)
    assert served.histories(list(reversed(wallets)) + wallets[:1]) is stack

    # The analyzer rewrites a KOL's positions: a fresh read sees it, the cache only after refresh_s.
    with db.begin() as conn:
        conn.execute(text("DELETE FROM positions WHERE wallet = :w"), {"w": wallets[0]})
    fresh = token_features_online(db_url, items)
    assert not fresh.iloc[0].equals(first.iloc[0]) and fresh.iloc[1:].equals(first.iloc[1:])
    pd.testing.assert_frame_equal(served.token_features(items), first)
    served.refresh_s = 0.0
    pd.testing.assert_frame_equal(served.token_features(items), fresh)
    assert served.histories(wallets) is not stack  # read again: stacked again


def test_the_history_cache_hands_out_stacks_safely_from_many_threads(db, db_url):
    from concurrent.futures import ThreadPoolExecutor

    cache = HistoryCache(db_url, ttl_s=3600)
    wallets = [f"Kol{i:02d}" + "1" * 39 for i in range(12)]
    rng = np.random.default_rng(4)
    subsets = [sorted(rng.choice(wallets, size=int(rng.integers(1, 6)), replace=False)) for _ in range(400)]

    def ask(subset: list[str]) -> bool:
        stack = cache(subset)
        return sorted(stack) == subset and stack.segments(subset) is not None

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(ask, subsets))
    assert len(cache._stacks) <= HistoryCache.STACKS_KEPT
    assert len(cache) == len(wallets)  # one cached history per wallet, whichever thread read it
