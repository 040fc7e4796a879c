"""The pipeline's model and backtest stages (``kolray demo``, ``jobs/pipeline.py``) on the data they
meet in small worlds: a model that cannot be trained on its dataset is skipped with the reason, as
a missing dataset is, and the pipeline goes on; the backtest stage stores a report the UI shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from kolray.backtest import list_reports, load_report
from kolray.config import get_settings
from kolray.datasets import load_dataset, write_dataset
from kolray.db import upgrade
from kolray.db.engine import session_scope
from kolray.db.tables import Run
from kolray.learn import registry
from kolray.pipeline import PipelineOptions, PipelineResult, backtest_stage, tune_stage
from kolray.testing import backtest_world as backtest_sample
from kolray.testing import synthetic_datasets as synthetic

QUICK = PipelineOptions(world_dir=Path("unused"), trials=1, max_epochs=1)


def without_val_positives(store: str) -> str:
    """A token dataset like the 20-KOL × 30-day twin world's: positives in train, none in val."""
    ds = load_dataset("token", synthetic.write_token_dataset(store, n_rows=2000, seed=3).version, store)
    m = ds.manifest
    assert ds.train["label_3x"].sum() > 0 and ds.val["label_3x"].sum() > 0
    return write_dataset(
        "token",
        {"train": ds.train, "val": ds.val.assign(label_3x=ds.val["label_3x"] * 0), "test": ds.test},
        feature_columns=m.feature_columns,
        label_columns=m.label_columns,
        id_columns=m.id_columns,
        eval_only_columns=m.eval_only_columns,
        time_column=m.time_column,
        horizon_s=m.horizon_s,
        embargo_s=m.embargo_s,
        feature_groups=m.feature_groups,
        storage_uri=store,
    ).version


def test_a_model_that_cannot_be_trained_on_its_dataset_is_skipped_with_the_reason(data_dir: Path) -> None:
    store = get_settings().storage_uri
    version = without_val_positives(store)
    result = PipelineResult(dataset_version=version)
    said: list[str] = []

    tune_stage("token", version, QUICK, result, said.append)

    reason = f"dataset token/{version}: no positive label_3x in the val split"
    assert said[-1] == f"tune:token: skipped, {reason}"
    assert result.skipped == {"token": reason}
    assert result.models == {} and [s.stage for s in result.stages] == []
    assert registry.list_versions("token", store) == []


@pytest.fixture
def backtest_world(data_dir: Path) -> tuple[str, str]:
    """(storage URI, token dataset version) over the backtest's hand-checked world."""
    settings = get_settings()
    engine = upgrade(settings.database_url)
    version = backtest_sample.write_token_dataset(
        engine, backtest_sample.populate(engine), settings.storage_uri
    )
    return settings.storage_uri, version


def test_the_backtest_stage_stores_the_report_the_ui_shows(backtest_world: tuple[str, str]) -> None:
    store, version = backtest_world
    result = PipelineResult(dataset_version=version)
    said: list[str] = []

    backtest_stage(version, result, said.append)

    (report_id,) = list_reports(store)
    report = load_report(report_id, store)
    assert report.dataset_version == version
    stage = result.stage("backtest")
    assert stage.detail["id"] == report_id and stage.detail["signals"] == report.signals > 0
    # Without a champion token model the model strategy is left out, with the reason; the others ran.
    assert {s.spec.kind for s in report.strategies} == {"copy_all", "top_kols", "oracle"}
    assert "no champion token model" in report.skipped["model"]
    assert said[0] == "backtest: started" and said[-1].startswith("backtest: done in")
    # Logged like `kolray backtest`'s runs, for `kolray status`.
    with session_scope(upgrade(get_settings().database_url)) as session:
        runs = session.scalars(select(Run).where(Run.kind == "backtest")).all()
    assert [(r.status, r.summary["id"]) for r in runs] == [("ok", report_id)]


def test_a_backtest_that_cannot_run_is_skipped_with_the_reason(data_dir: Path) -> None:
    result = PipelineResult()
    said: list[str] = []

    backtest_stage("20990101T000000Z-00000000", result, said.append)

    assert said[-1].startswith("backtest: skipped, dataset token/20990101T000000Z-00000000 not found")
    assert result.skipped["backtest"].startswith("dataset token/20990101T000000Z-00000000 not found")
    assert list_reports(get_settings().storage_uri) == []
