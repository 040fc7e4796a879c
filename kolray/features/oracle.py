"""The chain twin's ``oracle_p3x``, joined to dataset rows by entry signature (evaluation only).

A twin world keeps its ground truth as Parquet; the table that matters here has one row per
position-opening buy with the buy's signature and ``oracle_p3x``, the probability of 3x given the
latent traits at entry. Whichever Parquet files under the world directory have such columns are
used (``entry_signature`` or ``signature``), so the join does not depend on the world's file layout.
The value never becomes a feature: it lands in the datasets' ``eval_only_columns``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kolray.features.source import FeatureError

ORACLE_COLUMN = "oracle_p3x"
SIGNATURE_COLUMNS = ("entry_signature", "signature")


@lru_cache(maxsize=8)
def oracle_files(world_dir: str) -> tuple[tuple[str, str], ...]:
    """``(path, signature column)`` of every Parquet file under the world with oracle values."""
    root = Path(world_dir).expanduser()
    if not root.is_dir():
        raise FeatureError(f"--oracle-world {world_dir}: not a directory")
    found = []
    for path in sorted(root.rglob("*.parquet")):
        try:
            names = pq.read_schema(path).names
        except (OSError, pa.ArrowInvalid):
            continue  # not a readable Parquet file: not ground truth
        column = next((c for c in SIGNATURE_COLUMNS if c in names), None)
        if ORACLE_COLUMN in names and column is not None:
            found.append((str(path), column))
    return tuple(found)


def check_world(world_dir: str) -> None:
    """Raise :class:`FeatureError` unless the directory holds oracle values."""
    if not oracle_files(world_dir):
        raise FeatureError(
            f"--oracle-world {world_dir}: no Parquet file with {ORACLE_COLUMN!r} and a signature column "
            f"({' or '.join(SIGNATURE_COLUMNS)}); is it a twin world (`kolray sim generate`)?"
        )


def lookup(world_dir: str, signatures: np.ndarray, column: str = ORACLE_COLUMN) -> np.ndarray:
    """``column`` (default ``oracle_p3x``; also ``oracle_p_peak3x`` or ``peak_3x``) per signature,
    as floats (NaN where the world has none). Streams the files with the signatures as a filter,
    so memory follows the query, not the world."""
    import pyarrow.dataset as pads

    out = np.full(len(signatures), np.nan)
    if not len(signatures):
        return out
    wanted = pa.array([str(s) for s in signatures], type=pa.string())
    position = {s: i for i, s in enumerate(wanted.to_pylist())}
    for path, key in oracle_files(world_dir):
        dataset = pads.dataset(path, format="parquet")
        if column not in dataset.schema.names:
            continue
        table = dataset.to_table(columns=[key, column], filter=pc.field(key).isin(wanted))
        values = table.column(column).to_pylist()
        for signature, value in zip(table.column(key).to_pylist(), values, strict=True):
            if value is not None and not np.isnan(float(value)):
                out[position[signature]] = float(value)
    return out
