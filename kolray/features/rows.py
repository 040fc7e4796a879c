"""Dataset rows from a position frame: token rows (one per usable position entry) and KOL rows
(one per KOL per day). Pure: the Ray Data build calls these on one shard of wallets at a time, the
in-memory build on everything at once, the leak test on rewritten histories.

Which rows exist (docs/features.md, "Labels and point in time"):

- token: every position whose opening buy was paid in SOL and whose outcome is known,
  ``entry_time + H <= cutoff``; a position still open then is labelled 0 (it did not realise 3x
  within H), one entered later is left out, never labelled from a future that has not happened;
- KOL: each wallet, each UTC day ``d`` from the first day with data to the last one whose longest
  target window has fully elapsed and resolved, ``d + 30 days + H <= cutoff``, and that has at
  least one SOL buy in its 7-day target window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from kolray.chain.types import LAMPORTS_PER_SOL
from kolray.features.context import (
    MintEntries,
    WalletHistory,
    labels_3x,
    multiples,
    resolve_times,
    token_context,
    wallet_histories,
)
from kolray.features.definitions import (
    DAY,
    KOL_SCHEMA,
    KOL_TARGET_WINDOWS,
    kol_feature_values,
    token_feature_values,
)

RESOLVE = "resolve_time"  # carried next to the rows for splitting, never written


def usable_token_mask(frame: pd.DataFrame, *, horizon_s: int, cutoff: int) -> np.ndarray:
    entry = frame["entry_time"].to_numpy(dtype=np.int64)
    return frame["entry_sol"].to_numpy(bool) & (entry + horizon_s <= cutoff)


def token_rows(
    frame: pd.DataFrame,
    tokens: MintEntries,
    *,
    horizon_s: int,
    cutoff: int,
    histories: dict[str, WalletHistory] | None = None,
) -> pd.DataFrame:
    """Token rows of the positions in ``frame`` (a position frame holding **every** position of its
    wallets: the KOL statistics need them), with :data:`~kolray.features.definitions.TOKEN_SCHEMA`'s
    columns plus ``resolve_time``. ``tokens`` must hold every entry in the mints they bought."""
    histories = histories if histories is not None else wallet_histories(frame, horizon_s)
    rows = frame[usable_token_mask(frame, horizon_s=horizon_s, cutoff=cutoff)]
    ctx = token_context(
        wallets=rows["wallet"].tolist(),
        mints=rows["mint"].tolist(),
        times=rows["entry_time"].to_numpy(dtype=np.int64),
        amounts_sol=rows["entry_lamports"].to_numpy(dtype=np.float64) / LAMPORTS_PER_SOL,
        dex=rows["entry_dex"].tolist(),
        mcap_sol=rows["entry_mcap_sol"].to_numpy(dtype=np.float64),
        histories=histories,
        tokens=tokens,
        horizon_s=horizon_s,
    )
    out = pd.DataFrame(
        {
            "wallet": rows["wallet"].to_numpy(dtype=object),
            "mint": rows["mint"].to_numpy(dtype=object),
            "entry_time": rows["entry_time"].to_numpy(dtype=np.int64),
            "entry_signature": rows["entry_signature"].to_numpy(dtype=object),
            **token_feature_values(ctx),
            "label_3x": labels_3x(rows, horizon_s),
            "multiple": multiples(rows),
            "oracle_p3x": rows["oracle_p3x"].to_numpy(dtype=np.float64),
            RESOLVE: resolve_times(rows, horizon_s),
        }
    )
    return out.sort_values(["entry_time", "wallet", "entry_signature"], kind="stable").reset_index(drop=True)


def kol_day_range(first_time: int, cutoff: int, horizon_s: int) -> tuple[int, int]:
    """First and last day (UTC midnights) of KOL rows: from the first day with data to the last one
    whose longest target window plus the horizon has elapsed. ``first > last`` means none."""
    longest = max(KOL_TARGET_WINDOWS.values())
    first = -(-int(first_time) // DAY) * DAY  # the first midnight at or after the first entry
    last = ((int(cutoff) - longest - horizon_s) // DAY) * DAY
    return first, last


def kol_resolve(days: np.ndarray, horizon_s: int) -> np.ndarray:
    """A KOL row's labels are all known at the end of its longest window plus the horizon."""
    return np.asarray(days, dtype=np.int64) + max(KOL_TARGET_WINDOWS.values()) + horizon_s


def kol_rows(
    frame: pd.DataFrame,
    *,
    horizon_s: int,
    first_day: int,
    last_day: int,
    histories: dict[str, WalletHistory] | None = None,
) -> pd.DataFrame:
    """KOL rows of the wallets in ``frame`` for the days ``first_day..last_day`` (inclusive, UTC
    midnights), with :data:`~kolray.features.definitions.KOL_SCHEMA`'s columns plus ``resolve_time``;
    days without a SOL buy in the 7-day target window are dropped (no target)."""
    histories = histories if histories is not None else wallet_histories(frame, horizon_s)
    days = np.arange(first_day, last_day + 1, DAY, dtype=np.int64) if last_day >= first_day else None
    parts = []
    for wallet, history in sorted(histories.items()):
        if days is None:
            break
        targets = history.targets(days)
        keep = targets["n_next_7d"] > 0
        if not keep.any():
            continue
        kept_days = days[keep]
        features = kol_feature_values(history.kol_context(kept_days))
        parts.append(
            pd.DataFrame(
                {
                    "wallet": np.full(len(kept_days), wallet, dtype=object),
                    "day": kept_days,
                    **features,
                    **{name: targets[name][keep] for name in targets},
                    RESOLVE: kol_resolve(kept_days, horizon_s),
                }
            )
        )
    if not parts:
        return empty_rows(KOL_SCHEMA)
    out = pd.concat(parts, ignore_index=True)
    out = out[[*KOL_SCHEMA.names, RESOLVE]]
    return out.sort_values(["day", "wallet"], kind="stable").reset_index(drop=True)


def empty_rows(schema: pa.Schema) -> pd.DataFrame:
    frame = schema.empty_table().to_pandas()
    frame[RESOLVE] = pd.Series(dtype="int64")
    return frame


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """The rows as an Arrow table with exactly ``schema`` (same types in every part and split)."""
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
