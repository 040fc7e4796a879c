"""The Ray Data build: database → point-in-time token and KOL datasets → versioned Parquet.

Plan (on the driver, small queries only):

1. the analyzer's snapshot (swap watermark ``W``, counts) and the dataset cutoff;
2. wallet shards: contiguous wallet ranges of about ``shard_rows`` positions, whole wallets;
3. the split plan of each dataset from a SQL histogram of (time, resolution time).

Then one streaming Ray Data pipeline for both datasets:

``read_datasource(PositionShards)`` (one read task per shard: its positions ⋈ their opening buys,
through a DB-API connection factory as ``read_sql`` would) → ``map_batches`` (fused with the read:
the shard's rows — KOL statistics as of every entry, the token consensus from one more query for
the mints the shard touched, labels, split assignment — written as the shard's Parquet parts of
each dataset) →
the driver iterates one small stats row per shard (progress, and exact manifest numbers).

Memory is bounded by a shard (times the number of concurrent tasks), not by the database: no
step ever holds all positions. A block is the unit of work, so each batch must be exactly one
shard: the shard's row count rides along in the query and the batch function checks it.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import text

from kolray import datasets, storage
from kolray.analyzer.stage import analyzer_lock
from kolray.chain.types import WSOL_MINT
from kolray.cluster import init_ray
from kolray.config import get_settings
from kolray.db.engine import make_engine
from kolray.db.migrate import upgrade
from kolray.db.tables import Run, now_s
from kolray.features import oracle as oracle_module
from kolray.features import peaks
from kolray.features.context import wallet_histories
from kolray.features.definitions import (
    DAY,
    DEFAULT_EMBARGO_S,
    DEFAULT_HORIZON_S,
    KOL_EVAL_COLUMNS,
    KOL_FEATURES,
    KOL_ID_COLUMNS,
    KOL_PERSISTENCE,
    KOL_SCHEMA,
    KOL_TARGET_WINDOWS,
    KOL_TARGETS,
    SEED_KOL_FEATURES,
    SEED_TOKEN_FEATURES,
    TOKEN_EVAL_COLUMNS,
    TOKEN_FEATURES,
    TOKEN_ID_COLUMNS,
    TOKEN_LABEL_COLUMNS,
    TOKEN_SCHEMA,
)
from kolray.features.rows import RESOLVE, kol_day_range, kol_resolve, kol_rows, to_arrow, token_rows
from kolray.features.source import (
    ConnectionFactory,
    FeatureError,
    Snapshot,
    WalletShard,
    frame_from_rows,
    plan_shards,
    read_engine,
    read_shard,
    read_snapshot,
    shard_tokens,
)
from kolray.features.splits import (
    SPLIT_NAMES,
    SplitFractions,
    SplitPlan,
    Unsplittable,
    assign_splits,
    plan_splits,
)
from kolray.learn.versions import code_version
from kolray.secrets import redact_text

if TYPE_CHECKING:
    from ray.data.datasource import ReadTask

log = logging.getLogger(__name__)

DatasetKind = Literal["token", "kol"]
Progress = Callable[[str, int, int], None]  # (phase, done, total)


class BuildOptions(BaseModel):
    """What ``kolray features`` (and the job, and the continuous trainer) can ask for."""

    model_config = ConfigDict(extra="forbid")

    storage_uri: str | None = Field(default=None, description="Default: the configured storage URI.")
    datasets: list[DatasetKind] = Field(default_factory=lambda: list(get_args(DatasetKind)), min_length=1)
    horizon_s: int = Field(default=DEFAULT_HORIZON_S, gt=0, description="Label horizon H.")
    embargo_s: int = Field(default=DEFAULT_EMBARGO_S, ge=0, description="Gap between splits.")
    cutoff: int | None = Field(
        default=None, description="Dataset cutoff (unix s); default: one second after the newest swap."
    )
    fractions: SplitFractions = Field(default_factory=SplitFractions)
    oracle_world: str | None = Field(
        default=None, description="A twin world directory: join its oracle_p3x (evaluation only)."
    )
    shard_rows: int = Field(default=50_000, ge=1, description="Positions per shard (whole wallets).")
    split_plans: dict[DatasetKind, SplitPlan] = Field(
        default_factory=dict,
        description="Fixed split starts per dataset (e.g. a previous version's ``source.split_plan``, to "
        "keep a test period frozen across rebuilds); others are planned from the data.",
    )
    version: str | None = Field(default=None, description="Default: a new version id.")

    @model_validator(mode="after")
    def _unique(self) -> BuildOptions:
        if len(set(self.datasets)) != len(self.datasets):
            raise ValueError("datasets has duplicates")
        return self


@dataclass
class BuildResult:
    """What one build wrote (also the ``runs.summary`` of kind ``features``)."""

    version: str
    storage_uri: str
    source: dict[str, Any]
    manifests: dict[str, datasets.DatasetManifest] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # dataset → why it was not written
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    run_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "storage_uri": self.storage_uri,
            "source": self.source,
            "datasets": {
                name: {
                    "uri": datasets.dataset_uri(name, self.version, self.storage_uri),
                    "splits": {s: info.model_dump() for s, info in m.splits.items()},
                    "features": len(m.feature_columns),
                }
                for name, m in self.manifests.items()
            },
            "skipped": self.skipped,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
            "run_id": self.run_id,
        }

    def line(self) -> str:
        parts = []
        for name, m in self.manifests.items():
            rows = "/".join(str(m.splits[s].rows) for s in SPLIT_NAMES)
            balance = m.splits["train"].label_balance
            first = next(iter(balance.values()), float("nan"))
            parts.append(f"{name}: {rows} rows (train/val/test), train {m.label_columns[0]} {first:.4f}")
        for name, why in self.skipped.items():
            parts.append(f"{name}: skipped ({why})")
        return f"features {self.version}: " + "; ".join(parts) + f"; {self.seconds:.1f} s"


# Batch functions (run in Ray workers)


def _check_one_shard(batch: pa.Table, shards: dict[int, WalletShard]) -> WalletShard:
    ids = set(batch.column("shard").unique().to_pylist())
    if len(ids) != 1:
        raise FeatureError(f"a batch mixes shards {sorted(ids)}: lower shard_rows")
    shard = shards[int(ids.pop())]
    if batch.num_rows != shard.positions:
        raise FeatureError(
            f"shard {shard.index} arrived as a block of {batch.num_rows} of its {shard.positions} rows "
            "(split by Ray, or the positions changed during the build): lower shard_rows, or rerun"
        )
    return shard


def _write_parts(
    table: pa.Table, codes: np.ndarray, *, uri: str, options: dict[str, Any], shard: int
) -> None:
    """Write a shard's rows of each split as one Parquet part (none for an empty split)."""
    import pyarrow.parquet as pq

    for code, split in enumerate(SPLIT_NAMES):
        mask = codes == code
        if not mask.any():
            continue
        part = table.filter(pa.array(mask))
        target = storage.join(uri, split, f"part-{shard:05d}.parquet")
        fs, path = storage.arrow_filesystem(target, options)
        if not storage.is_remote(target):
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        # Named after the shard: a retried task rewrites the same file instead of adding one.
        pq.write_table(part, path, filesystem=fs)


def _split_stats(frame: pd.DataFrame, codes: np.ndarray, time_column: str, labels: list[str]) -> dict:
    out = {}
    for code, split in enumerate(SPLIT_NAMES):
        mask = codes == code
        if not mask.any():
            continue
        part = frame.loc[mask]
        out[split] = {
            "rows": int(mask.sum()),
            "time_min": int(part[time_column].min()),
            "time_max": int(part[time_column].max()),
            # fsum: the shard's sum exactly rounded, whatever order its rows came in.
            "label_sums": {c: math.fsum(part[c].astype(np.float64).tolist()) for c in labels},
        }
    return out


@dataclass(frozen=True)
class TokenJob:
    """What a shard needs to write its token rows."""

    uri: str
    plan: SplitPlan
    cutoff: int


@dataclass(frozen=True)
class KolJob:
    """What a shard needs to write its KOL rows."""

    uri: str
    plan: SplitPlan
    first_day: int
    last_day: int


def _write_dataset_rows(
    rows: pd.DataFrame,
    schema: pa.Schema,
    time_column: str,
    labels: list[str],
    plan: SplitPlan,
    *,
    uri: str,
    options: dict[str, Any],
    shard: int,
) -> dict[str, Any]:
    codes = assign_splits(rows[time_column].to_numpy(), rows[RESOLVE].to_numpy(), plan)
    _write_parts(to_arrow(rows, schema), codes, uri=uri, options=options, shard=shard)
    return {
        "splits": _split_stats(rows, codes, time_column, labels),
        "rows": len(rows),
        "dropped": int((codes < 0).sum()),
    }


def shard_batch(
    batch: pa.Table,
    *,
    url: str,
    shards: dict[int, WalletShard],
    watermark: int,
    horizon_s: int,
    options: dict[str, Any],
    oracle_world: str | None,
    token: TokenJob | None,
    kol: KolJob | None,
) -> pa.Table:
    """One shard (every position of some wallets) → its token and KOL rows, written per split as
    Parquet parts; returns one small stats row. Runs in a Ray worker, fused with the shard's read."""
    import json

    shard = _check_one_shard(batch, shards)
    frame = frame_from_rows(batch)
    if oracle_world is not None:
        frame["oracle_p3x"] = oracle_module.lookup(oracle_world, frame["entry_signature"].to_numpy(object))
    histories = wallet_histories(frame, horizon_s)  # once, for both datasets
    stats: dict[str, Any] = {}
    if token is not None:
        rows = token_rows(
            frame,
            shard_tokens(url, shard, watermark),
            horizon_s=horizon_s,
            cutoff=token.cutoff,
            histories=histories,
        )
        rows = peaks.with_peak_columns(
            rows, peaks.shard_prices(url, shard, watermark), horizon_s, oracle_world
        )
        stats["token"] = _write_dataset_rows(
            rows,
            TOKEN_SCHEMA,
            "entry_time",
            TOKEN_LABEL_COLUMNS,
            token.plan,
            uri=token.uri,
            options=options,
            shard=shard.index,
        )
    if kol is not None:
        rows = kol_rows(
            frame, horizon_s=horizon_s, first_day=kol.first_day, last_day=kol.last_day, histories=histories
        )
        stats["kol"] = _write_dataset_rows(
            rows, KOL_SCHEMA, "day", KOL_TARGETS, kol.plan, uri=kol.uri, options=options, shard=shard.index
        )
    return pa.table({"shard": [shard.index], "stats": [json.dumps(stats)]})


class PositionShards:
    """Ray Data source with one read task per wallet shard (:func:`shard_sql` through the DB-API
    connection factory, exactly what ``ray.data.read_sql`` does with one query).

    Why not ``read_sql`` itself: it runs a query as one task, or shards it by hashing a key, which
    re-runs the whole query in every task (a full scan each; SQLite has no MD5). One ``read_sql``
    per wallet range works but needs a union of N datasets, and a union stops Ray from fusing the
    read with the feature step: every shard is then staged in the object store between the two,
    so memory grows with the data (the benchmark measured it). Here read and features fuse into
    one task per shard and the rows never leave the worker.

    A plain class so that this module loads without Ray Data: :func:`position_shards` makes it a
    ``Datasource`` when a build runs."""

    def __init__(self, factory: ConnectionFactory, shards: Sequence[WalletShard], watermark: int) -> None:
        self.factory = factory
        self.shards = list(shards)
        self.watermark = int(watermark)

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(s.positions for s in self.shards) * 400  # about 400 bytes a position row

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        from ray.data.block import BlockMetadata
        from ray.data.datasource import ReadTask

        # One task per shard whatever the parallelism asked for: a shard is the unit of work.
        return [
            ReadTask(
                functools.partial(read_shard, self.factory, shard, self.watermark),
                BlockMetadata(num_rows=shard.positions, size_bytes=None, exec_stats=None, input_files=None),
            )
            for shard in self.shards
        ]

    def get_name(self) -> str:
        return "PositionShards"


@functools.cache
def _position_shards_source() -> type[PositionShards]:
    from ray.data.datasource import Datasource

    return type("PositionShardsSource", (PositionShards, Datasource), {"__module__": __name__})


def position_shards(
    factory: ConnectionFactory, shards: Sequence[WalletShard], watermark: int
) -> PositionShards:
    """A :class:`PositionShards` that is also a Ray Data ``Datasource``."""
    return _position_shards_source()(factory, shards, watermark)


# Split planning from SQL histograms (bounded: one row per (time bucket, resolution bucket))


def token_split_plan(url: str, snapshot: Snapshot, options: BuildOptions, cutoff: int) -> SplitPlan:
    """Histogram of usable token rows by (entry hour, resolution hour) → the split plan. Raises
    :class:`Unsplittable` with the reason when there is nothing (enough) to split."""
    h = int(options.horizon_s)
    bucket = 3_600
    sql = (
        "SELECT p.entry_time / :b AS tb, "
        "(CASE WHEN p.exit_time IS NOT NULL AND p.exit_time < p.entry_time + :h THEN p.exit_time "
        "ELSE p.entry_time + :h END) / :b AS rb, COUNT(*) AS n "
        "FROM positions p JOIN swaps s ON s.signature = p.entry_signature AND s.wallet = p.wallet "
        "AND s.mint = p.mint AND s.id <= :w "
        "WHERE p.entry_time + :h <= :cutoff AND s.sol_amount > 0 "
        "AND (s.quote_mint IS NULL OR s.quote_mint = :wsol) GROUP BY 1, 2"
    )
    with read_engine(url).connect() as conn:
        rows = conn.execute(
            text(sql),
            {"b": bucket, "h": h, "w": snapshot.swap_watermark, "cutoff": cutoff, "wsol": WSOL_MINT},
        ).all()
    if not rows:
        raise Unsplittable(
            f"no SOL buy opened at least {options.horizon_s / DAY:g} days (the horizon) before the cutoff"
        )
    tb = np.array([int(r[0]) for r in rows], dtype=np.int64) * bucket
    rb = np.array([int(r[1]) for r in rows], dtype=np.int64) * bucket
    counts = np.array([int(r[2]) for r in rows], dtype=np.float64)
    return plan_splits(
        tb, rb, counts, fractions=options.fractions, embargo_s=options.embargo_s, bucket_s=bucket
    )


def kol_split_plan(url: str, options: BuildOptions, first_day: int, last_day: int) -> SplitPlan:
    """KOL rows are (wallet, day) with a buy in the 7-day window ahead; their number per day is
    estimated from the wallets active in that window (a SQL count per wallet-day). Raises
    :class:`Unsplittable` with the reason when there is nothing (enough) to split."""
    longest = max(KOL_TARGET_WINDOWS.values())
    if last_day < first_day:
        raise Unsplittable(
            f"no day has its {longest // DAY}-day target window and {options.horizon_s / DAY:g}-day horizon "
            "behind the cutoff"
        )
    with read_engine(url).connect() as conn:
        active = conn.execute(
            text("SELECT DISTINCT wallet, entry_time / :d FROM positions WHERE entry_time >= :lo"),
            {"d": DAY, "lo": first_day},
        ).all()
    days = np.arange(first_day // DAY, last_day // DAY + 1)
    if not active or not len(days):
        raise Unsplittable("no KOL bought anything in the days with elapsed targets")
    frame = pd.DataFrame(active, columns=["wallet", "day"])
    weights = np.zeros(len(days))
    for _, group in frame.groupby("wallet"):
        mark = np.zeros(len(days) + 7, dtype=bool)
        for day in group["day"].to_numpy(np.int64):
            # The wallet has a row on days day-6 .. day (its buy falls in their 7-day window).
            lo, hi = day - 6 - days[0], day - days[0] + 1
            mark[max(lo, 0) : max(min(hi, len(days)), 0)] = True
        weights += mark[: len(days)]
    keep = weights > 0
    if not keep.any():
        raise Unsplittable("no KOL bought anything in the days with elapsed targets")
    times = days[keep] * DAY
    return plan_splits(
        times,
        kol_resolve(times, options.horizon_s),
        weights[keep],
        fractions=options.fractions,
        embargo_s=options.embargo_s,
        bucket_s=DAY,
    )


# The build


def _storage_options(uri: str) -> dict[str, Any]:
    """fsspec options for the workers, credentials included: Ray workers keep the environment they
    were started with, so S3 settings made in the driver later (a shell export, a test) travel with
    the task arguments — through the object store, never into storage or logs."""
    import os

    if not uri.startswith("s3://"):
        return {}

    options = dict(get_settings().storage_options())
    for env, key in (
        ("AWS_ACCESS_KEY_ID", "key"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_SESSION_TOKEN", "token"),
    ):
        if os.environ.get(env):
            options[key] = os.environ[env]
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        options.setdefault("client_kwargs", {}).setdefault("region_name", region)
    return options


def _run_shards(
    url: str,
    shards: list[WalletShard],
    watermark: int,
    fn_kwargs: dict[str, Any],
    progress: Progress,
) -> list[dict[str, Any]]:
    """Stream every shard through :func:`shard_batch`; the stats of each, by shard."""
    from ray.data import DataContext

    # Progress is ours (per shard, through ``progress``): Ray Data's own bars would repeat it.
    context = DataContext.get_current()
    saved = (context.enable_progress_bars, context.target_max_block_size, logging.getLogger("ray.data").level)
    context.enable_progress_bars = False
    # A shard is one block by design (checked in the batch function): never slice a big one.
    context.target_max_block_size = max(context.target_max_block_size or 0, 2**30)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        return _stream_shards(url, shards, watermark, fn_kwargs, progress)
    finally:
        context.enable_progress_bars, context.target_max_block_size = saved[0], saved[1]
        logging.getLogger("ray.data").setLevel(saved[2])


def _stream_shards(
    url: str,
    shards: list[WalletShard],
    watermark: int,
    fn_kwargs: dict[str, Any],
    progress: Progress,
) -> list[dict[str, Any]]:
    import json

    import ray

    source = position_shards(ConnectionFactory(url), shards, watermark)
    ds = ray.data.read_datasource(source, override_num_blocks=len(shards))
    ds = ds.map_batches(shard_batch, fn_kwargs=fn_kwargs, batch_size=None, batch_format="pyarrow")
    results: list[dict[str, Any]] = []
    progress("shards", 0, len(shards))
    for row in ds.iter_rows():
        results.append(json.loads(row["stats"]) | {"shard": row["shard"]})
        progress("shards", len(results), len(shards))
    if sorted(r["shard"] for r in results) != list(range(len(shards))):
        raise FeatureError(f"shards came back as {sorted(r['shard'] for r in results)}")
    return results


def _split_infos(results: list[dict[str, Any]], labels: list[str]) -> dict[str, datasets.SplitInfo]:
    """Rows, time range and label balance of each split from the shards' stats.

    Shards finish in whatever order Ray Data hands them back, and a float sum taken in that order
    changes in its last bits from run to run. The label sums are added with ``math.fsum``: exactly
    rounded, so the order cannot matter, and the same input gives the same manifest, byte for byte.
    Everything else here is an integer count, a min or a max."""
    infos = {}
    for split in SPLIT_NAMES:
        parts = [r["splits"][split] for r in results if split in r["splits"]]
        rows = sum(p["rows"] for p in parts)
        infos[split] = datasets.SplitInfo(
            rows=rows,
            time_min=min((p["time_min"] for p in parts), default=None),
            time_max=max((p["time_max"] for p in parts), default=None),
            label_balance={
                c: (math.fsum(p["label_sums"][c] for p in parts) / rows if rows else 0.0) for c in labels
            },
        )
    return infos


def _schema_strings(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def _finish(
    name: DatasetKind,
    results: list[dict[str, Any]],
    *,
    version: str,
    storage_uri: str,
    source: dict[str, Any],
    options: BuildOptions,
    plan: SplitPlan,
    result: BuildResult,
) -> None:
    token = name == "token"
    labels = TOKEN_LABEL_COLUMNS if token else KOL_TARGETS
    infos = _split_infos(results, labels)
    empty = [s for s, i in infos.items() if i.rows == 0]
    if empty:
        # Training needs all three; a version that `kolray tune` must refuse is not written.
        result.skipped[name] = (
            f"split(s) {empty} came out empty after purging and the embargo "
            f"(rows per split: {', '.join(f'{s} {i.rows}' for s, i in infos.items())})"
        )
        storage.remove(datasets.dataset_uri(name, version, storage_uri))
        return
    manifest = datasets.DatasetManifest(
        name=name,
        version=version,
        created_at=datasets.parse_version_time(version),
        code_version=_code_version(),
        source={
            **source,
            "split_plan": plan.model_dump(),
            "rows_dropped_by_split": int(sum(r["dropped"] for r in results)),
        },
        feature_columns=TOKEN_FEATURES if token else KOL_FEATURES,
        label_columns=labels,
        id_columns=TOKEN_ID_COLUMNS if token else KOL_ID_COLUMNS,
        eval_only_columns=TOKEN_EVAL_COLUMNS if token else KOL_EVAL_COLUMNS,
        time_column="entry_time" if token else "day",
        horizon_s=options.horizon_s,
        embargo_s=options.embargo_s,
        splits=infos,
        schema=_schema_strings(TOKEN_SCHEMA if token else KOL_SCHEMA),
        persistence_features={} if token else dict(KOL_PERSISTENCE),
        feature_groups={"seed": list(SEED_TOKEN_FEATURES if token else SEED_KOL_FEATURES)},
    )
    datasets.check_time_order(manifest)
    datasets.write_manifest(manifest, storage_uri)  # last: the version is complete from here on
    result.manifests[name] = manifest


def _code_version() -> str:
    return code_version()


def build_features(
    options: BuildOptions | None = None,
    *,
    database_url: str | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Build the token and KOL datasets from the database's positions with Ray Data
    (``database_url`` defaults to the configured database, the storage to the configured URI).

    Both datasets of one build share a version id. Raises :class:`FeatureError` when the analyzer
    never ran or the cutoff leaves no usable rows, ``kolray.analyzer.AnalyzeBusy`` when an analyze
    run holds the database (positions would change under the build). Starts a local Ray when none is
    running. The run is recorded in ``runs`` (kind ``features``).
    """
    options = options or BuildOptions()
    progress = progress or (lambda phase, done, total: None)
    started = time.perf_counter()

    if database_url is None:
        database_url = get_settings().database_url

    root = options.storage_uri or _configured_storage()
    try:
        # Before the run is recorded and Ray starts: otherwise unwritable storage surfaces late, as a
        # Ray Data task failure.
        storage.check_writable(root)
    except OSError as error:
        raise FeatureError(f"cannot write to {root}: {error.strerror or error}") from error
    writer = upgrade(database_url)
    run_id = _start_run(writer, options)
    try:
        result = _build(database_url, options, progress)
    except BaseException as error:
        _end_run(writer, run_id, "failed", {"error": redact_text(f"{type(error).__name__}: {error}")[:500]})
        raise
    result.seconds = time.perf_counter() - started
    result.run_id = run_id
    _end_run(writer, run_id, "ok", result.to_dict())
    log.info(result.line())
    return result


def _build(url: str, options: BuildOptions, progress: Progress) -> BuildResult:
    storage_uri = options.storage_uri or _configured_storage()
    version = options.version or datasets.new_version()
    init_ray(include_dashboard=False, log_to_driver=False)
    if options.oracle_world is not None:
        oracle_module.check_world(options.oracle_world)
    worker_options = _storage_options(storage_uri)

    lock_engine = make_engine(url)
    try:
        # Positions must not change under the build: hold the analyzer's own lock throughout.
        with analyzer_lock(lock_engine):
            progress("plan", 0, 1)
            snapshot = read_snapshot(url)
            if snapshot.positions == 0:
                raise FeatureError("the positions table is empty: track some KOLs and run `kolray analyze`")
            default_cutoff = (snapshot.newest_swap_time or 0) + 1
            cutoff = options.cutoff if options.cutoff is not None else default_cutoff
            shards = plan_shards(url, options.shard_rows)
            source = {
                **snapshot.to_dict(),
                "cutoff": cutoff,
                "shards": len(shards),
                "shard_rows": options.shard_rows,
                "oracle_world": options.oracle_world,
            }
            result = BuildResult(version=version, storage_uri=storage_uri, source=source)
            if cutoff > default_cutoff:
                result.warnings.append(
                    f"the cutoff is {(cutoff - default_cutoff) / DAY:.1f} days after the newest swap: buys "
                    "whose horizon ends after the data are labelled as if their outcome were known"
                )
            if snapshot.stale_swaps:
                result.warnings.append(
                    f"{snapshot.stale_swaps} swaps are newer than the analyzer's positions "
                    "(run `kolray analyze` to include them)"
                )
            plans: dict[str, SplitPlan] = {}
            if "token" in options.datasets:
                try:
                    plans["token"] = options.split_plans.get("token") or token_split_plan(
                        url, snapshot, options, cutoff
                    )
                except Unsplittable as why:
                    result.skipped["token"] = str(why)
            first_day, last_day = kol_day_range(snapshot.first_entry or cutoff, cutoff, options.horizon_s)
            if "kol" in options.datasets:
                try:
                    plans["kol"] = options.split_plans.get("kol") or kol_split_plan(
                        url, options, first_day, last_day
                    )
                except Unsplittable as why:
                    span = (cutoff - (snapshot.first_entry or cutoff)) / DAY
                    lag = (max(KOL_TARGET_WINDOWS.values()) + options.horizon_s) / DAY
                    result.skipped["kol"] = (
                        f"{why}. A KOL row's 30-day target window plus the {options.horizon_s / DAY:g}-day "
                        f"horizon ({lag:g} days) must be behind the cutoff and, in train and validation, "
                        f"behind the next split's start: about {3 * lag:.0f} days of data are needed, "
                        f"the database spans {span:.0f}"
                    )
            progress("plan", 1, 1)
            if plans:
                uris = {name: datasets.dataset_uri(name, version, storage_uri) for name in plans}
                results = _run_shards(
                    url,
                    shards,
                    snapshot.swap_watermark,
                    {
                        "url": url,
                        "shards": {s.index: s for s in shards},
                        "watermark": snapshot.swap_watermark,
                        "horizon_s": options.horizon_s,
                        "options": worker_options,
                        "oracle_world": options.oracle_world,
                        "token": TokenJob(uris["token"], plans["token"], cutoff)
                        if "token" in plans
                        else None,
                        "kol": KolJob(uris["kol"], plans["kol"], first_day, last_day)
                        if "kol" in plans
                        else None,
                    },
                    progress,
                )
                in_shard_order = sorted(results, key=lambda r: r["shard"])
                for name, plan in plans.items():
                    _finish(
                        name,  # type: ignore[arg-type]
                        [r[name] for r in in_shard_order],
                        version=version,
                        storage_uri=storage_uri,
                        source=source,
                        options=options,
                        plan=plan,
                        result=result,
                    )
    except BaseException:
        # Parts without a manifest are an unfinished version (invisible); do not leave them around.
        for name in options.datasets:
            uri = datasets.dataset_uri(name, version, storage_uri)
            if not storage.exists(storage.join(uri, "manifest.json")):
                storage.remove(uri)
        raise
    finally:
        lock_engine.dispose()
    return result


def _configured_storage() -> str:
    return get_settings().storage_uri


def _start_run(engine: Any, options: BuildOptions) -> int:
    from sqlalchemy import insert

    with engine.begin() as conn:
        return conn.execute(
            insert(Run)
            .values(
                kind="features",
                started_at=now_s(),
                status="running",
                summary={"options": options.model_dump(mode="json")},
            )
            .returning(Run.id)
        ).scalar_one()


def _end_run(engine: Any, run_id: int, status: str, summary: dict[str, Any]) -> None:
    from sqlalchemy import update

    with engine.begin() as conn:
        conn.execute(
            update(Run).where(Run.id == run_id).values(status=status, finished_at=now_s(), summary=summary)
        )
