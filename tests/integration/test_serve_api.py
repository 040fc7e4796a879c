"""The HTTP contract (docs/serving.md) on the plain FastAPI app: real database (the sample world run
through the real analyzer), real registered models, real point-in-time features; no Ray.

Every bad input gets a 4xx naming the field; unknown things a documented 404; a missing model a
503 that says what to do; the answers agree with the database and with each other.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from kolray.db import upgrade
from kolray.db.tables import Kol, KolStatRow, PositionRow, SwapRow
from kolray.learn import registry
from kolray.serve.api import build_app
from kolray.serve.holder import ModelHolder
from kolray.serve.schemas import MAX_ITEMS, iso
from kolray.serve.service import KolrayService
from kolray.testing import serving_world as sample

UNKNOWN_WALLET = sample.pubkey(99, "nobody")
QUIET_KOL = sample.pubkey(99, "quiet")  # tracked, never traded


@dataclass
class Api:
    client: TestClient
    service: KolrayService
    world: sample.SampleWorld
    models: sample.SampleModels
    holders: dict[str, ModelHolder]
    engine: Any
    store: str
    db_url: str


make_service = sample.local_service


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("serve-api")
    db_url = f"sqlite:///{root / 'kolray.db'}"
    store = str(root / "store")
    engine = upgrade(db_url)
    world = sample.populate(engine, n_kols=8, seed=3)
    with engine.begin() as conn:
        conn.execute(insert(Kol), [{"wallet": QUIET_KOL, "name": "quiet", "links": ["https://x.com/q"]}])
    models = sample.register_models(store, versions=2)
    registry.clear_cache()
    service, holders = make_service(db_url, store)
    with TestClient(build_app(service, ui=False)) as client:
        yield Api(client, service, world, models, holders, engine, store, db_url)


def item(world: sample.SampleWorld, **overrides: Any) -> dict[str, Any]:
    body = {"wallet": world.wallets[0], "amount_sol": 1.5, "entry_time": iso(world.end - 3600)}
    body.update(overrides)
    return body


def assert_422(response: Any, *field: Any) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    locs = [tuple(e["loc"]) for e in body["detail"]]
    assert any(loc[-len(field) :] == field for loc in locs), (field, locs)
    assert str(field[-1]) in body["message"]


# Health and predictions


def test_health_names_the_versions_served(api: Api) -> None:
    body = api.client.get("/healthz").json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["models"]["token"] == {
        "version": api.models.token[0],
        "family": "net",
        "target": "label_3x",
        "loaded": True,
        "error": None,
    }
    assert body["models"]["kol"]["version"] == api.models.kol[0]


def test_prediction_is_a_probability_with_its_version(api: Api) -> None:
    response = api.client.post("/v1/predict/token", json={"items": [item(api.world)]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == api.models.token[0]
    (p,) = body["predictions"]
    assert 0 <= p["p_3x"] <= 1
    assert p["above_threshold"] == (p["p_3x"] >= body["threshold"])
    # The same buy scored directly by the registered model on the feature pipeline's row.
    from kolray.features import token_features_online

    loaded = registry.load_version("token", api.models.token[0], api.store)
    features = token_features_online(api.db_url, [{**item(api.world), "entry_time": api.world.end - 3600}])
    assert p["p_3x"] == pytest.approx(float(loaded.predict_proba(features)[0]), abs=1e-6)


def test_a_full_batch_of_1000_is_answered_in_order(api: Api) -> None:
    wallets = api.world.wallets
    items = [
        item(
            api.world,
            wallet=wallets[i % len(wallets)],
            amount_sol=0.1 + i / 100,
            entry_time=iso(api.world.start + 86_400 + i * 600),
        )
        for i in range(MAX_ITEMS)
    ]
    response = api.client.post("/v1/predict/token", json={"items": items})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == MAX_ITEMS
    # Order: each item's answer equals its answer alone.
    for i in (0, 357, 999):
        alone = api.client.post("/v1/predict/token", json={"items": [items[i]]}).json()["predictions"][0]
        assert alone["p_3x"] == pytest.approx(predictions[i]["p_3x"], abs=1e-6)


def test_cold_start_is_flagged_point_in_time(api: Api) -> None:
    wallet = api.world.wallets[1]
    with api.engine.connect() as conn:
        first_close = conn.execute(
            select(PositionRow.exit_time)
            .where(PositionRow.wallet == wallet, PositionRow.exit_time.is_not(None))
            .order_by(PositionRow.exit_time)
            .limit(1)
        ).scalar_one()
    before = item(api.world, wallet=wallet, entry_time=iso(first_close))  # closes strictly before t count
    after = item(api.world, wallet=wallet, entry_time=iso(first_close + 1))
    unknown = item(api.world, wallet=UNKNOWN_WALLET)
    body = api.client.post("/v1/predict/token", json={"items": [before, after, unknown]}).json()
    assert [p["cold_start"] for p in body["predictions"]] == [True, False, True]


def test_the_feature_cache_answers_repeats(api: Api) -> None:
    body = {"items": [item(api.world, amount_sol=7.25)]}
    first = api.client.post("/v1/predict/token", json=body).json()
    hits = api.service.features.stats()["token_hits"]
    again = api.client.post("/v1/predict/token", json=body).json()
    assert again == first
    assert api.service.features.stats()["token_hits"] == hits + 1


def test_a_new_feature_ttl_reaches_every_cache_of_a_running_service(api: Api) -> None:
    # reconfigure() sets feature_ttl_s on a replica whose caches exist already.
    api.client.post("/v1/predict/token", json={"items": [item(api.world)]})
    features = api.service.features
    try:
        api.service.feature_ttl_s = 4.0
        # The histories and the rows share the budget, so an answer is never older than 4 s.
        assert features.source.refresh_s == 2.0 and features.ttl_s == 4.0
        assert api.service._first_close.ttl_s == 4.0
    finally:
        api.service.feature_ttl_s = 10.0
    assert features.source.refresh_s == 5.0


BAD_ITEMS = [
    ({"wallet": "not-a-wallet"}, "wallet"),
    ({"wallet": "1" * 44}, "wallet"),  # base58 alphabet, but not a 32-byte key
    ({"wallet": "0OIl" * 10}, "wallet"),  # outside the base58 alphabet
    ({"wallet": 12345}, "wallet"),
    ({"amount_sol": -1.0}, "amount_sol"),
    ({"amount_sol": 0}, "amount_sol"),
    ({"amount_sol": "1.5"}, "amount_sol"),
    ({"amount_sol": True}, "amount_sol"),
    ({"amount_sol": 1e12}, "amount_sol"),
    ({"amount_sol": None}, "amount_sol"),
    ({"entry_time": "yesterday"}, "entry_time"),
    ({"entry_time": "2024-13-45T99:00:00Z"}, "entry_time"),
    ({"entry_time": 1717200000}, "entry_time"),
    ({"entry_time": "2019-01-01T00:00:00Z"}, "entry_time"),
    ({"entry_time": "2999-01-01T00:00:00Z"}, "entry_time"),
    ({"entry_time": ""}, "entry_time"),
    ({"mint": "xyz"}, "mint"),
    ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(
    ("change", "field"), BAD_ITEMS, ids=[f"{f}={next(iter(c.values()))!r}"[:40] for c, f in BAD_ITEMS]
)
def test_bad_item_field_is_named(api: Api, change: dict[str, Any], field: str) -> None:
    response = api.client.post(
        "/v1/predict/token", json={"items": [item(api.world), item(api.world, **change)]}
    )
    assert_422(response, "items", 1, field)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_amounts_are_refused(api: Api, literal: str) -> None:
    # Python's JSON parser accepts these literals; the API must not.
    wallet = api.world.wallets[0]
    raw = f'{{"items": [{{"wallet": "{wallet}", "amount_sol": {literal}, "entry_time": "2024-05-01T00:00:00Z"}}]}}'
    response = api.client.post("/v1/predict/token", content=raw, headers={"content-type": "application/json"})
    assert_422(response, "items", 0, "amount_sol")


def test_missing_fields_are_named(api: Api) -> None:
    response = api.client.post("/v1/predict/token", json={"items": [{"wallet": api.world.wallets[0]}]})
    assert_422(response, "items", 0, "amount_sol")
    assert_422(response, "items", 0, "entry_time")


def test_empty_and_oversized_batches(api: Api) -> None:
    assert_422(api.client.post("/v1/predict/token", json={"items": []}), "items")
    too_many = {"items": [item(api.world)] * (MAX_ITEMS + 1)}
    assert_422(api.client.post("/v1/predict/token", json=too_many), "items")
    assert_422(api.client.post("/v1/predict/token", json={}), "items")
    assert_422(api.client.post("/v1/predict/token", json={"items": "all"}), "items")


def test_malformed_bodies_are_4xx(api: Api) -> None:
    for raw in ("{not json", "[]", '"items"', ""):
        response = api.client.post(
            "/v1/predict/token", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (raw, response.text)


# KOLs


@pytest.mark.parametrize("window", ["7d", "30d", "all"])
def test_leaderboard_is_sorted_and_matches_the_database(api: Api, window: str) -> None:
    with api.engine.connect() as conn:
        stored = {
            r.wallet: r.stats for r in conn.execute(select(KolStatRow).where(KolStatRow.window == window))
        }
    for sort in ("total_pnl_sol", "win_rate", "consistency", "dh_score", "trades"):
        body = api.client.get("/v1/kols", params={"window": window, "sort": sort, "limit": 500}).json()
        assert body["window"] == window and body["total"] == len(stored)
        values = [row["stats"][sort] for row in body["kols"]]
        known = [v for v in values if v is not None]
        assert known == sorted(known, reverse=True)
        assert values[: len(known)] == known  # unknown values last
        for row in body["kols"]:
            assert row["stats"]["total_pnl_sol"] == pytest.approx(stored[row["wallet"]]["total_pnl_sol"])
        assert [row["rank"] for row in body["kols"]] == list(range(1, len(values) + 1))


def test_leaderboard_names_search_and_limit(api: Api) -> None:
    body = api.client.get("/v1/kols", params={"window": "all", "limit": 3}).json()
    assert len(body["kols"]) == 3 and body["total"] == len(api.world.wallets)
    named = api.client.get("/v1/kols", params={"window": "all", "q": "BRAV"}).json()
    assert [r["name"] for r in named["kols"]] == ["bravo"]
    by_wallet = api.client.get("/v1/kols", params={"window": "all", "q": api.world.wallets[2][:10]}).json()
    assert [r["wallet"] for r in by_wallet["kols"]] == [api.world.wallets[2]]
    assert body["as_of"].endswith("Z")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"window": "1y"}, "window"),
        ({"sort": "luck"}, "sort"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"q": "x" * 65}, "q"),
    ],
)
def test_bad_leaderboard_queries(api: Api, params: dict[str, Any], field: str) -> None:
    assert_422(api.client.get("/v1/kols", params=params), "query", field)


def test_kol_detail(api: Api) -> None:
    wallet = api.world.wallets[1]
    response = api.client.get(f"/v1/kols/{wallet}", params={"limit": 1000})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "bravo" and body["tracked"]
    assert set(body["stats"]) == {"7d", "30d", "all"}
    forecast = body["forecast"]
    assert forecast["model_version"] == api.models.kol[0]
    assert 0 <= forecast["p_3x_rate_7d"] <= 1 and 0 <= forecast["p_3x_rate_30d"] <= 1
    assert forecast["as_of"] == body["as_of"] and not forecast["cold_start"]
    with api.engine.connect() as conn:
        rows = conn.execute(select(PositionRow).where(PositionRow.wallet == wallet)).all()
    assert len(body["positions"]) == len(rows)
    assert body["open_positions"] == sum(r.status == "open" for r in rows)
    pnl = sum(r.realised_pnl_sol for r in rows if r.status == "closed" and r.realised_pnl_sol is not None)
    assert body["pnl_curve"][-1]["cum_pnl_sol"] == pytest.approx(pnl)
    assert body["stats"]["all"]["total_pnl_sol"] == pytest.approx(pnl)
    entries = [p["entry_time"] for p in body["positions"]]
    assert entries == sorted(entries, reverse=True)


def test_a_known_kol_without_history_gets_the_prior_flagged(api: Api) -> None:
    body = api.client.get(f"/v1/kols/{QUIET_KOL}").json()
    assert (
        body["tracked"]
        and body["positions"] == []
        and body["stats"] == {"7d": None, "30d": None, "all": None}
    )
    assert body["forecast"]["cold_start"] is True
    assert body["links"] == ["https://x.com/q"]


def test_unknown_kol_is_404_and_bad_wallet_422(api: Api) -> None:
    response = api.client.get(f"/v1/kols/{UNKNOWN_WALLET}")
    assert response.status_code == 404
    assert UNKNOWN_WALLET in response.json()["detail"]
    assert_422(api.client.get("/v1/kols/not-a-wallet"), "path", "wallet")
    assert_422(api.client.get(f"/v1/kols/{api.world.wallets[0]}", params={"limit": 0}), "query", "limit")


# Recent trades


def test_recent_trades_score_open_buys_like_the_predict_route(api: Api) -> None:
    body = api.client.get("/v1/trades/recent", params={"limit": 60}).json()
    trades = body["trades"]
    assert len(trades) == 60 and body["model_version"] == api.models.token[0]
    assert [t["time"] for t in trades] == sorted((t["time"] for t in trades), reverse=True)
    with api.engine.connect() as conn:
        newest = conn.execute(
            select(SwapRow.block_time).order_by(SwapRow.block_time.desc()).limit(1)
        ).scalar_one()
    assert trades[0]["time"] == iso(newest)
    open_buys = [t for t in trades if t["side"] == "buy" and t["position_status"] == "open"]
    assert open_buys, "the sample world leaves recent positions open"
    for trade in trades:
        assert (trade["p_3x"] is not None) == (trade in open_buys)
        if trade["position_status"] == "closed":
            assert trade["multiple"] is not None
    first = open_buys[0]
    same = api.client.post(
        "/v1/predict/token",
        json={
            "items": [
                {
                    "wallet": first["wallet"],
                    "amount_sol": first["sol_amount"],
                    "entry_time": first["time"],
                    "mint": first["mint"],
                }
            ]
        },
    ).json()["predictions"][0]
    assert same["p_3x"] == pytest.approx(first["p_3x"], abs=1e-6)
    assert first["above_threshold"] == (first["p_3x"] >= body["threshold"])


def test_recent_trades_of_one_kol(api: Api) -> None:
    wallet = api.world.wallets[2]
    trades = api.client.get("/v1/trades/recent", params={"wallet": wallet, "limit": 500}).json()["trades"]
    with api.engine.connect() as conn:
        count = len(conn.execute(select(SwapRow.id).where(SwapRow.wallet == wallet)).all())
    assert len(trades) == count and {t["wallet"] for t in trades} == {wallet}
    assert_422(api.client.get("/v1/trades/recent", params={"wallet": "nope"}), "query", "wallet")
    assert_422(api.client.get("/v1/trades/recent", params={"limit": 501}), "query", "limit")


# Models


def test_models_lists_the_registry_and_what_is_served(api: Api) -> None:
    body = api.client.get("/v1/models").json()
    token = body["token"]
    assert token["champion"] == token["serving"] == api.models.token[0]
    assert {v["version"] for v in token["versions"]} == set(api.models.token)
    assert all(v["has_report"] for v in token["versions"])
    assert [v["created_at"] for v in token["versions"]] == sorted(
        (v["created_at"] for v in token["versions"]), reverse=True
    )
    assert body["kol"]["serving"] == api.models.kol[0]


def test_reports_and_plots(api: Api) -> None:
    version = api.models.token[0]
    report = api.client.get(f"/v1/models/token/{version}/report").json()
    assert report["version"] == version and {"roc_auc", "pr_auc", "n"} <= set(report["test"])
    names = api.client.get(f"/v1/models/token/{version}/plots").json()
    assert {"roc.png", "pr.png"} & set(names), names
    png = api.client.get(f"/v1/models/token/{version}/plots/{names[0]}")
    assert (
        png.status_code == 200
        and png.headers["content-type"] == "image/png"
        and png.content[:4] == b"\x89PNG"
    )
    assert api.client.get("/v1/models/token/20000101T000000Z-00000000/report").status_code == 404
    assert api.client.get(f"/v1/models/token/{version}/plots/nope.png").status_code == 404
    assert api.client.get("/v1/models/other/x/report").status_code == 422
    assert api.client.get(f"/v1/models/token/{version}/plots/..%2Freport.json").status_code in (404, 422)


# Admin


def test_reload_switches_and_rolls_back(api: Api) -> None:
    a, b = api.models.token
    try:
        response = api.client.post("/v1/admin/reload", json={"token": b})
        assert response.status_code == 200, response.text
        assert response.json()["previous"]["token"] == a and response.json()["applied"]["token"] == b
        assert (
            api.client.post("/v1/predict/token", json={"items": [item(api.world)]}).json()["model_version"]
            == b
        )
        missing = api.client.post("/v1/admin/reload", json={"token": "20000101T000000Z-00000000"})
        assert missing.status_code == 404
        assert api.client.get("/healthz").json()["models"]["token"]["version"] == b
    finally:
        back = api.client.post("/v1/admin/reload", json={})  # the champions again
        assert back.json()["applied"] == {"token": a, "kol": api.models.kol[0]}
    assert (
        api.client.post("/v1/predict/token", json={"items": [item(api.world)]}).json()["model_version"] == a
    )
    assert_422(api.client.post("/v1/admin/reload", json={"token": 5}), "token")


def damage(store: str, model: str, version: str) -> tuple[Path, bytes]:
    """Overwrite a registered version's weights (the registry refuses them: sha256); returns what
    to put back. The in-process cache of loaded versions is cleared so that loads read storage."""
    weights = Path(store) / "models" / model / version / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(b"\0" * len(original))
    registry.clear_cache()
    return weights, original


def test_a_refused_reload_leaves_the_config_as_it_was(api: Api) -> None:
    """A version the replicas cannot load: 503 saying why, the old version keeps serving, and the
    configuration (what a restarted replica loads) still names the old one; once repaired, the
    same reload works."""
    a, b = api.models.token
    configured = api.holders["token"].requested  # a, or None: the champion (a)
    weights, original = damage(api.store, "token", b)
    try:
        refused = api.client.post("/v1/admin/reload", json={"token": b})
        assert refused.status_code == 503, refused.text
        detail = refused.json()["detail"]
        assert b in detail and "back to" in detail and f"keep serving token {a}" in detail
        assert api.client.get("/healthz").json()["models"]["token"]["version"] == a
        assert api.holders["token"].requested == configured
        # A replica that starts now (crash, scale-up) loads what the configuration names.
        restarted = ModelHolder("token", storage_uri=api.store)
        restarted.configure({"version": api.holders["token"].requested})
        assert restarted.version == a and restarted.state()["error"] is None
        weights.write_bytes(original)
        again = api.client.post("/v1/admin/reload", json={"token": b})
        assert again.status_code == 200 and again.json()["applied"]["token"] == b, again.text
    finally:
        weights.write_bytes(original)
        api.client.post("/v1/admin/reload", json={})
    assert api.client.get("/healthz").json()["models"]["token"]["version"] == a


def test_an_archived_version_needs_allow_archived(api: Api) -> None:
    a, b = api.models.token
    registry.promote("token", b, reason="test", storage_uri=api.store)
    registry.promote("token", a, reason="test", storage_uri=api.store)  # b is archived now
    try:
        refused = api.client.post("/v1/admin/reload", json={"token": b})
        assert refused.status_code == 409, refused.text
        assert "archived" in refused.json()["detail"] and "allow_archived" in refused.json()["detail"]
        assert api.client.get("/healthz").json()["models"]["token"]["version"] == a
        allowed = api.client.post("/v1/admin/reload", json={"token": b, "allow_archived": True})
        assert allowed.status_code == 200 and allowed.json()["applied"]["token"] == b, allowed.text
    finally:
        api.client.post("/v1/admin/reload", json={})
    assert api.client.get("/healthz").json()["models"]["token"]["version"] == a


def test_admin_routes_need_the_api_key_when_set(api: Api) -> None:
    service, _ = make_service(api.db_url, api.store, api_key="s3cret-key")
    with TestClient(build_app(service, ui=False)) as client:
        assert client.post("/v1/admin/reload", json={}).status_code == 401
        assert client.post("/v1/admin/reload", json={}, headers={"X-API-Key": "wrong"}).status_code == 401
        ok = client.post("/v1/admin/reload", json={}, headers={"X-API-Key": "s3cret-key"})
        assert ok.status_code == 200, ok.text
        # Reading routes stay open.
        assert client.get("/healthz").status_code == 200


# No model yet


def test_without_a_champion_predictions_are_503_and_the_rest_works(api: Api, tmp_path: Path) -> None:
    service, _ = make_service(api.db_url, str(tmp_path / "empty-store"))
    with TestClient(build_app(service, ui=False)) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded" and health.json()["models"]["token"]["loaded"] is False
        response = client.post("/v1/predict/token", json={"items": [item(api.world)]})
        assert response.status_code == 503
        assert "no token model" in response.json()["detail"] and "kolray" in response.json()["detail"]
        assert client.get("/v1/kols").status_code == 200
        detail = client.get(f"/v1/kols/{api.world.wallets[0]}").json()
        assert detail["forecast"] is None and "kol" in detail["forecast_error"]
        trades = client.get("/v1/trades/recent").json()
        assert trades["model_version"] is None and trades["prediction_error"]
        assert all(t["p_3x"] is None for t in trades["trades"])
        assert client.get("/v1/models").json()["token"] == {
            "champion": None,
            "serving": None,
            "serving_error": health.json()["models"]["token"]["error"],
            "serving_family": None,
            "serving_target": None,
            "versions": [],
        }


def test_a_broken_database_is_503_not_500(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    service, _ = make_service(f"sqlite:///{tmp_path / 'db'}", str(tmp_path / "store"))  # a directory
    with TestClient(build_app(service, ui=False)) as client:
        assert client.get("/healthz").json()["database"] == "unavailable"
        response = client.get("/v1/kols")
        assert response.status_code == 503 and "database" in response.json()["detail"]


def test_warm_up_builds_the_feature_path_and_leaves_the_caches_empty(api: Api, tmp_path: Path) -> None:
    service, _ = make_service(api.db_url, api.store)
    assert service.warm_up() is True
    assert service._features is not None and service._engine is not None
    assert len(service.features._token) == 0 and len(service._first_close) == 0
    assert len(service.features.source.histories) == 0
    # A database that is down: the replica still starts; requests say 503 until it is back.
    (tmp_path / "db").mkdir()
    broken, _ = make_service(f"sqlite:///{tmp_path / 'db'}", str(tmp_path / "store"))
    assert broken.warm_up() is False


def test_times_are_iso_utc(api: Api) -> None:
    body = api.client.get(f"/v1/kols/{api.world.wallets[0]}").json()
    parsed = datetime.fromisoformat(body["as_of"])
    assert parsed.tzinfo == UTC and body["as_of"].endswith("Z")
    assert all(math.isfinite(p["cum_pnl_sol"]) for p in body["pnl_curve"])


# Fuzzing the OpenAPI schema: whatever schemathesis sends, no 5xx, and every answer matches the
# documented status codes, content types and response schemas.

import schemathesis  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzzed_requests_never_get_a_server_error(api: Api, mode: str) -> None:
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10  # every contract route is in the schema
    no_invalid_input: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        @settings(
            max_examples=int(os.environ.get("KOLRAY_FUZZ_EXAMPLES", "25")),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(checks=checks)

        try:
            fuzz()
        except Unsatisfiable:  # a route without inputs has no invalid request to make
            no_invalid_input.append(operation.label)
    assert mode == "negative" or not no_invalid_input
    assert set(no_invalid_input) <= {"GET /healthz", "GET /v1/models"}, no_invalid_input
