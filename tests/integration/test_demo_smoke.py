"""The demo's smoke check (``kolray demo --exit-after``) against the real FastAPI app: what the
pipeline skipped is reported as skipped with the pipeline's reason when the API answers for it as
documented (a 503 naming the missing token model, a 404 for no backtest), and anything else that
does not answer is FAILED."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kolray.commands.demo import smoke_check
from kolray.db import upgrade
from kolray.learn import registry
from kolray.serve.api import build_app
from kolray.testing import serving_world as sample

NO_POSITIVES = "dataset token/20260101T000000Z-00000000: no positive label_3x in the val split"
NO_KOL_DATASET = "no day has its 30-day target window and 7-day horizon behind the cutoff"


def serve(db_url: str, store: str) -> TestClient:
    service, _ = sample.local_service(db_url, store)
    return TestClient(build_app(service, ui=False))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[str, str, sample.SampleWorld]]:
    """(database URL, storage URI, world): tracked KOLs with positions, no model, no backtest."""
    db_url = f"sqlite:///{tmp_path / 'kolray.db'}"
    store = str(tmp_path / "store")
    registry.clear_cache()
    yield db_url, store, sample.populate(upgrade(db_url), n_kols=6, seed=5)
    registry.clear_cache()


def test_a_skipped_token_model_is_reported_skipped_with_the_pipelines_reason(world) -> None:
    db_url, store, kols = world
    skipped = {"token": NO_POSITIVES, "kol": NO_KOL_DATASET, "backtest": "no strategy could run"}
    with serve(db_url, store) as client:
        checks = smoke_check(client, kols.wallets[0], skipped)

    assert {name: c["status"] for name, c in checks.items()} == {
        "healthz": "ok",
        "leaderboard": "ok",
        "kol detail": "ok",
        "predict": "skipped",
        "models": "ok",
        "backtest": "skipped",
    }
    predict = checks["predict"]["detail"]
    assert predict.startswith(f"token skipped: {NO_POSITIVES} (HTTP 503") and "no token model" in predict
    assert checks["backtest"]["detail"].startswith("backtest skipped: no strategy could run (HTTP 404")


def test_a_missing_model_the_pipeline_did_not_skip_fails(world) -> None:
    db_url, store, kols = world
    with serve(db_url, store) as client:
        checks = smoke_check(client, kols.wallets[0], {})

    assert checks["predict"]["status"] == "FAILED" and "HTTP 503" in checks["predict"]["detail"]
    assert checks["backtest"]["status"] == "FAILED" and "HTTP 404" in checks["backtest"]["detail"]
    assert checks["leaderboard"]["status"] == "ok"


def test_a_served_token_model_passes_and_a_skip_it_contradicts_fails(world) -> None:
    db_url, store, kols = world
    sample.register_models(store, versions=1)
    with serve(db_url, store) as client:
        served = smoke_check(client, kols.wallets[0], {})
        contradicted = smoke_check(client, kols.wallets[0], {"token": NO_POSITIVES})

    assert served["predict"]["status"] == "ok" and "p_3x=" in served["predict"]["detail"]
    # The pipeline said it skipped the token model, yet one answers: not what the demo built.
    assert contradicted["predict"]["status"] == "FAILED"
    assert "expected 503" in contradicted["predict"]["detail"]
