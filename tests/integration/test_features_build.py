"""The Ray Data build against real databases and storage: SQLite and PostgreSQL, a local directory
and S3 (moto), the manifest, the oracle join, the run record, the command and the job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import delete, select

from kolray import datasets
from kolray.analyzer import analyze
from kolray.db.migrate import upgrade
from kolray.db.tables import Run, SwapRow
from kolray.features import BuildOptions, FeatureError, build_features
from kolray.features.definitions import KOL_FEATURES, SEED_TOKEN_FEATURES, TOKEN_FEATURES
from kolray.features.rows import token_rows
from kolray.features.source import read_all_positions, read_all_tokens, read_snapshot
from kolray.features.splits import SPLIT_NAMES, SplitPlan
from kolray.testing.synthetic_market import MarketParams, populate

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400
# 125 days: enough for three KOL splits after purging 30-day targets plus the 7-day horizon.
MARKET = MarketParams(kols=10, days=125, positions_per_kol_day=3.0, seed=5)


def market(engine, oracle_dir: Path | None = None) -> dict[str, int]:
    counts = populate(engine, MARKET, oracle_dir=oracle_dir)
    analyze(engine, full=True)
    return counts


def same(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f" and b.dtype.kind == "f")


def all_rows(ds: datasets.LoadedDataset) -> pd.DataFrame:
    return pd.concat([ds.split(s).assign(split=s) for s in SPLIT_NAMES], ignore_index=True)


def test_build_reads_either_database_and_writes_complete_versions(db, db_url, ray_session, tmp_path):
    market(db)
    store = str(tmp_path / "store")
    result = build_features(database_url=db_url, options=BuildOptions(storage_uri=store, shard_rows=700))
    assert set(result.manifests) == {"token", "kol"} and not result.skipped
    assert result.source["shards"] > 1  # the work really was sharded
    token = datasets.load_dataset("token", storage_uri=store)
    kol = datasets.load_dataset("kol", storage_uri=store)
    assert token.version == kol.version == result.version

    m = token.manifest
    assert m.feature_columns == TOKEN_FEATURES and m.feature_groups["seed"] == SEED_TOKEN_FEATURES
    assert m.label_columns == ["label_3x", "peak_3x"]
    assert m.eval_only_columns == ["multiple", "oracle_p3x", "oracle_p_peak3x", "twin_peak_3x"]
    assert (m.horizon_s, m.embargo_s) == (7 * DAY, DAY)
    snapshot = read_snapshot(db_url)
    assert (
        m.source["positions"] == snapshot.positions and m.source["swap_watermark"] == snapshot.swap_watermark
    )
    assert "@" not in m.source["database"] or "***" in m.source["database"]
    rows = all_rows(token)
    for split in SPLIT_NAMES:
        part = rows[rows["split"] == split]
        info = m.splits[split]
        assert (info.rows, info.time_min, info.time_max) == (
            len(part),
            part["entry_time"].min(),
            part["entry_time"].max(),
        )
        assert info.label_balance["label_3x"] == pytest.approx(part["label_3x"].mean())

    # Exactly the rows the pure functions give over the whole database at once (no shard edge
    # effects): every split row is one of them, with identical features and labels.
    cutoff = m.source["cutoff"]
    reference = token_rows(
        read_all_positions(db_url, snapshot.swap_watermark),
        read_all_tokens(db_url, snapshot.swap_watermark),
        horizon_s=m.horizon_s,
        cutoff=cutoff,
    ).set_index("entry_signature")
    assert rows["entry_signature"].is_unique
    assert len(rows) + m.source["rows_dropped_by_split"] == len(reference)
    expected = reference.loc[rows["entry_signature"]]
    for column in [*TOKEN_FEATURES, "label_3x", "entry_time", "wallet", "mint"]:
        assert same(rows[column], expected[column]), column

    # Purging: no training label was still unknown when validation began.
    plan = m.source["split_plan"]
    train = expected[rows["split"].to_numpy() == "train"]
    assert (train["resolve_time"] < plan["val_start"]).all()

    assert kol.manifest.feature_columns == KOL_FEATURES
    assert kol.manifest.persistence_features == {
        "rate_3x_next_7d": "rate_3x_past_7d",
        "rate_3x_next_30d": "rate_3x_past_30d",
    }
    kol_rows = all_rows(kol)
    assert (kol_rows["n_next_7d"] > 0).all() and kol_rows[
        ["rate_3x_next_7d", "rate_3x_next_30d"]
    ].notna().all().all()
    assert (kol_rows["day"] % DAY == 0).all()
    assert (kol_rows["day"] + 37 * DAY <= cutoff).all()  # every target window elapsed and resolved

    with db.connect() as conn:
        run = conn.execute(select(Run).where(Run.kind == "features")).one()
    assert run.status == "ok" and run.summary["version"] == result.version


def test_the_same_build_on_a_directory_and_on_s3_reads_back_identically(s3_storage, ray_session, tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    market(upgrade(url))
    version = datasets.new_version()
    local = str(tmp_path / "local")
    build_features(database_url=url, options=BuildOptions(storage_uri=local, version=version, shard_rows=700))
    build_features(
        database_url=url, options=BuildOptions(storage_uri=s3_storage, version=version, shard_rows=700)
    )
    for name in ("token", "kol"):
        on_disk = datasets.load_dataset(name, version, storage_uri=local)
        on_s3 = datasets.load_dataset(name, version, storage_uri=s3_storage)
        assert on_s3.manifest.to_json() == on_disk.manifest.to_json()
        for split in SPLIT_NAMES:
            pd.testing.assert_frame_equal(on_s3.split(split), on_disk.split(split))
    assert datasets.list_versions("token", storage_uri=s3_storage) == [version]


def test_oracle_values_join_by_entry_signature_and_stay_out_of_the_features(ray_session, tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    world = tmp_path / "world"
    market(upgrade(url), oracle_dir=world)
    store = str(tmp_path / "store")
    build_features(
        database_url=url,
        options=BuildOptions(storage_uri=store, oracle_world=str(world), datasets=["token", "kol"]),
    )
    token = datasets.load_dataset("token", storage_uri=store)
    truth = pd.read_parquet(world / "truth" / "entries.parquet").set_index("entry_signature")["oracle_p3x"]
    rows = all_rows(token)
    assert rows["oracle_p3x"].to_numpy() == pytest.approx(truth.loc[rows["entry_signature"]].to_numpy())
    assert "oracle_p3x" in token.manifest.eval_only_columns and "oracle_p3x" not in token.feature_columns
    kol = all_rows(datasets.load_dataset("kol", storage_uri=store))
    assert kol["oracle_rate_7d"].between(0, 1).all()
    (tmp_path / "not-a-world").mkdir()
    with pytest.raises(FeatureError, match="oracle_p3x"):
        build_features(
            database_url=url,
            options=BuildOptions(storage_uri=store, oracle_world=str(tmp_path / "not-a-world")),
        )


def test_features_of_the_past_survive_deleting_the_future_through_the_database(ray_session, tmp_path):
    """The leak property end to end (SQL reads, shards, Ray): delete every swap after t, rerun the
    analyzer and the build; rows entered before t keep every feature."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    engine = upgrade(url)
    market(engine)
    # The same cutoff and split starts, so the same buys are rows of the same splits in both builds.
    options = dict(datasets=["token"], cutoff=MARKET.end + 30 * DAY, shard_rows=700)
    first = build_features(database_url=url, options=BuildOptions(storage_uri=str(tmp_path / "a"), **options))
    assert any("after the newest swap" in w for w in first.warnings)  # said, since labels assume it
    before = all_rows(datasets.load_dataset("token", first.version, storage_uri=str(tmp_path / "a")))
    plan = SplitPlan.model_validate(first.manifests["token"].source["split_plan"])
    # t inside the test period: every split keeps rows, and a row before t is purged in one history
    # exactly when it is in the other (a label still unknown at t was unknown at the split start).
    t = plan.test_start + 5 * DAY
    assert t < MARKET.end
    with engine.begin() as conn:
        conn.execute(delete(SwapRow).where(SwapRow.block_time > t))
    analyze(engine, full=True)
    second = build_features(
        database_url=url,
        options=BuildOptions(storage_uri=str(tmp_path / "b"), split_plans={"token": plan}, **options),
    )
    after = all_rows(datasets.load_dataset("token", second.version, storage_uri=str(tmp_path / "b")))
    past = lambda frame: frame[frame["entry_time"] <= t].set_index("entry_signature").sort_index()  # noqa: E731
    a, b = past(before), past(after)
    assert len(a) > 500 and list(a.index) == list(b.index)
    for column in TOKEN_FEATURES:
        assert same(a[column], b[column]), column


def test_a_database_the_analyzer_never_saw_is_a_clear_error(data_dir, ray_session):
    from kolray.config import get_settings

    url = get_settings().database_url
    upgrade(url)
    # No database_url: the configured database, as `kolray features` and the demo pipeline use it.
    with pytest.raises(FeatureError, match="kolray analyze"):
        build_features(BuildOptions(storage_uri=str(data_dir / "s")))
    with upgrade(url).connect() as conn:
        assert conn.execute(select(Run.status).where(Run.kind == "features")).scalar() == "failed"


def test_a_period_too_short_for_kol_targets_writes_the_token_dataset_and_says_why(ray_session, tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    engine = upgrade(url)
    populate(engine, MarketParams(kols=8, days=40, seed=2))
    analyze(engine, full=True)
    store = str(tmp_path / "s")
    result = build_features(database_url=url, options=BuildOptions(storage_uri=store))
    assert set(result.manifests) == {"token"}
    assert "30-day" in result.skipped["kol"] and "days" in result.skipped["kol"]
    assert datasets.list_versions("kol", storage_uri=store) == []


def test_command_builds_and_reports(data_dir, ray_session):
    from kolray.cli import main
    from kolray.config import get_settings

    engine = upgrade(get_settings().database_url)
    market(engine)
    out = data_dir / "out"
    code = main(["features", "--out", str(out), "--dataset", "token", "--json", "--shard-rows", "1000"])
    assert code == 0
    assert datasets.list_versions("token", storage_uri=str(out))
    assert main(["features", "--split", "0.9,0.2,0.1"]) == 2
    assert main(["features", "--embargo-hours", "-1"]) == 2
    assert main(["features", "--out", "ftp://x/y"]) == 2


def test_the_job_entrypoint_builds_with_the_configured_database(data_dir, ray_session):
    """``jobs/build_features.py`` is thin: the same build, a JSON line, exit 1 with a reason."""
    import os

    from kolray.config import get_settings

    market(upgrade(get_settings().database_url))
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    done = subprocess.run(
        [sys.executable, "jobs/build_features.py", "--out", str(data_dir / "out"), "--dataset", "token"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["datasets"]["token"]["splits"]["train"]["rows"] > 0
    bad = subprocess.run(
        [sys.executable, "jobs/build_features.py", "--split", "1,1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "fractions" in bad.stderr
