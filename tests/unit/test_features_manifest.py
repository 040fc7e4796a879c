"""A dataset manifest is a function of the data: the same shards give the same bytes, whatever order
Ray Data hands their results back in."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from kolray import datasets
from kolray.features.build import BuildOptions, BuildResult, _finish, _split_stats
from kolray.features.definitions import DAY, KOL_TARGETS, TOKEN_LABEL_COLUMNS
from kolray.features.splits import SplitPlan

VERSION = "20250601T000000Z-0000abcd"
PLAN = SplitPlan(val_start=40 * DAY, test_start=60 * DAY, embargo_s=DAY)


def kol_shard(seed: int, rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    """One shard's KOL rows: days spread over the three splits, float targets (rates) in [0, 1]."""
    rng = np.random.default_rng(seed)
    days = np.sort(rng.integers(0, 80, rows)) * DAY
    frame = pd.DataFrame(
        {
            "day": days,
            # Rates are ratios of small counts: sums of them are where float order shows.
            KOL_TARGETS[0]: rng.integers(0, 7, rows) / rng.integers(7, 31, rows),
            KOL_TARGETS[1]: rng.random(rows),
        }
    )
    codes = np.where(days < PLAN.val_start - DAY, 0, np.where(days < PLAN.test_start - DAY, 1, 2))
    codes[(days >= PLAN.val_start - DAY) & (days < PLAN.val_start)] = -1  # the embargo
    codes[(days >= PLAN.test_start - DAY) & (days < PLAN.test_start)] = -1
    return frame, codes


def shard_results(count: int) -> list[dict]:
    results = []
    for shard in range(count):
        frame, codes = kol_shard(shard, rows=37 + 11 * shard)
        # What a shard's batch function ships to the driver, as JSON.
        stats = {"splits": _split_stats(frame, codes, "day", KOL_TARGETS), "rows": len(frame)}
        results.append(json.loads(json.dumps(stats | {"dropped": int((codes < 0).sum())})) | {"shard": shard})
    return results


def manifest_bytes(tmp_path, results: list[dict], name: str = "kol") -> bytes:
    store = str(tmp_path / f"store-{len(list(tmp_path.iterdir()))}")
    result = BuildResult(version=VERSION, storage_uri=store, source={})
    _finish(
        name,  # type: ignore[arg-type]
        results,
        version=VERSION,
        storage_uri=store,
        source={"positions": 123},
        options=BuildOptions(),
        plan=PLAN,
        result=result,
    )
    assert name in result.manifests, result.skipped
    uri = datasets.dataset_uri(name, VERSION, store)
    with open(f"{uri}/manifest.json", "rb") as handle:
        return handle.read()


def test_the_kol_manifest_is_the_same_bytes_whatever_order_the_shards_finish_in(tmp_path):
    results = shard_results(12)
    # The data must be able to tell: plain left-to-right sums of these shards depend on the order.
    sums = [r["splits"]["train"]["label_sums"][KOL_TARGETS[1]] for r in results]
    assert sum(sums) != sum(reversed(sums)) or sum(sums) != sum(sorted(sums))

    expected = manifest_bytes(tmp_path, results)
    rng = np.random.default_rng(0)
    for _ in range(6):
        shuffled = [results[i] for i in rng.permutation(len(results))]
        assert manifest_bytes(tmp_path, shuffled) == expected
    assert manifest_bytes(tmp_path, list(reversed(results))) == expected


def test_label_balance_is_the_exactly_rounded_mean_of_the_shard_sums(tmp_path):
    results = shard_results(5)
    manifest = json.loads(manifest_bytes(tmp_path, results))
    for split in ("train", "val", "test"):
        parts = [r["splits"][split] for r in results if split in r["splits"]]
        rows = sum(p["rows"] for p in parts)
        assert manifest["splits"][split]["rows"] == rows
        for label in KOL_TARGETS:
            total = math.fsum(p["label_sums"][label] for p in parts)
            assert manifest["splits"][split]["label_balance"][label] == total / rows


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_the_token_manifest_counts_positives_exactly_in_any_order(tmp_path, order):
    frames = []
    for shard in range(3):
        rng = np.random.default_rng(100 + shard)
        days = np.sort(rng.integers(0, 80, 50)) * DAY
        frame = pd.DataFrame({"entry_time": days, **{c: rng.integers(0, 2, 50) for c in TOKEN_LABEL_COLUMNS}})
        codes = np.where(days < PLAN.val_start - DAY, 0, np.where(days < PLAN.test_start - DAY, 1, 2))
        codes[(days >= PLAN.val_start - DAY) & (days < PLAN.val_start)] = -1
        codes[(days >= PLAN.test_start - DAY) & (days < PLAN.test_start)] = -1
        stats = {"splits": _split_stats(frame, codes, "entry_time", TOKEN_LABEL_COLUMNS), "rows": 50}
        frames.append(json.loads(json.dumps(stats | {"dropped": int((codes < 0).sum())})) | {"shard": shard})
    first = manifest_bytes(tmp_path, frames, "token")
    assert manifest_bytes(tmp_path, [frames[i] for i in order], "token") == first
