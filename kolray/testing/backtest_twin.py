"""A twin world made ready for a backtest without the tracker, the feature pipeline or the market
stage: its swaps and positions in a database, a token dataset over them, and its true price tapes
in ``market_tape``, for the backtest tests and ``bench/backtest.py``.

The true tape stands in for what the market stage records (the stage itself is held to the twin's
price within 3e-9 by ``tests/integration/test_market.py`` and ``bench/market.py``): each change
point of the world's tape (:mod:`kolray.sim.tapes`, kept to 0.1%) is stored at the first slot that
starts at or after it, with that slot's block time, and a price sliding after a death on a pool is
stored each time it has moved 1% (the stage stores a price when it moved more than 0.1%). Each
token is covered while the stage would watch it: from the first tracked buy to 7 days after the
last. Beside a recording, the stand-in has the price at the very second of the first buy (the
stage reads it once the tracker has stored that buy) and no heartbeat rows (a flat tape and a tape
with heartbeats give the same last price).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from kolray.analyzer import analyze
from kolray.datasets import write_dataset
from kolray.db.tables import PositionRow
from kolray.features import TOKEN_FEATURES
from kolray.features.definitions import TOKEN_ID_COLUMNS
from kolray.market.read import TapePoint
from kolray.market.store import store_tape
from kolray.sim.market import market_cap_sol, price_of
from kolray.sim.params import (
    GENESIS_SLOT,
    LAMPORTS_PER_SOL,
    SLOTS_PER_SECOND,
    TOKEN_DECIMALS,
    block_time_of_slot,
    slot_start,
)
from kolray.sim.tapes import Tapes
from kolray.sim.world import World
from kolray.testing.market_world import database_with_world_swaps

HOUR = 3_600
DAY = 86_400
WHOLE_TOKEN_SOL = 10**TOKEN_DECIMALS / LAMPORTS_PER_SOL  # lamports per raw unit → SOL per whole token
WATCH_S = 7 * DAY
# A dead token's slide is stored each 1% (the stage: each 0.1%): a week of it is ~800 rows, not ~8,000;
# a fill on it errs by under 1%.
SLIDE_STEP = 0.01
STORE_CHUNK = 20_000


def database_with_world_positions(url: str, world: World) -> Engine:
    """A migrated database with every KOL swap of ``world`` and the analyzer's positions."""
    engine = database_with_world_swaps(url, world)
    analyze(engine, full=True)
    return engine


def write_twin_token_dataset(
    engine: Engine, world: World, storage_uri: str, test_fraction: float = 0.3
) -> str:
    """A token dataset over the stored positions, split by entry time: the last ``test_fraction``
    of the world's span is the test period (the backtest's), with ``oracle_p3x`` and ``multiple``
    from the world's ground truth and the data's end at the world's end. Its features are zeros:
    the strategies these callers run (copy_all, top_kols, oracle) do not read them; a model
    strategy needs the feature pipeline's dataset (``kolray features``). Returns its version."""
    with engine.connect() as conn:
        stored = conn.execute(
            select(PositionRow.wallet, PositionRow.mint, PositionRow.entry_time, PositionRow.entry_signature)
        ).all()
    frame = pd.DataFrame(stored, columns=["wallet", "mint", "entry_time", "entry_signature"])
    truth = world.positions().set_index("entry_signature")
    frame = frame[frame["entry_signature"].isin(truth.index)].sort_values("entry_time", kind="stable")
    frame["entry_time"] = frame["entry_time"].astype(np.int64)
    for column in TOKEN_FEATURES:
        frame[column] = np.float32(0.0)
    matched = truth.loc[frame["entry_signature"]]
    frame["label_3x"] = matched["label_3x"].to_numpy().astype(np.int8)
    frame["multiple"] = matched["multiple"].to_numpy(dtype=np.float64)
    frame["oracle_p3x"] = matched["oracle_p3x"].to_numpy(dtype=np.float64)
    span = world.end - world.start
    test_start = world.start + int((1 - test_fraction) * span)
    val_start = world.start + int((1 - 2 * test_fraction) * span)
    t = frame["entry_time"]
    splits = {
        "train": frame[t < val_start - HOUR],
        "val": frame[(t >= val_start) & (t < test_start - HOUR)],
        "test": frame[t >= test_start],
    }
    manifest = write_dataset(
        "token",
        {name: split.reset_index(drop=True) for name, split in splits.items()},
        feature_columns=list(TOKEN_FEATURES),
        label_columns=["label_3x"],
        id_columns=list(TOKEN_ID_COLUMNS),
        eval_only_columns=["multiple", "oracle_p3x"],
        time_column="entry_time",
        horizon_s=7 * DAY,
        embargo_s=HOUR,
        source={
            "sample": "backtest-twin",
            "cutoff": world.end,
            "split_plan": {"val_start": val_start, "test_start": test_start, "embargo_s": HOUR},
        },
        storage_uri=storage_uri,
    )
    return manifest.version


def first_slot_from(world: World, t: float) -> int:
    """The first slot that starts at or after ``t``."""
    return GENESIS_SLOT + math.ceil((t - world.start) * SLOTS_PER_SECOND - 1e-9)


def watch_windows(world: World, until: float) -> dict[str, tuple[float, float]]:
    """Per traded mint, when the market stage would watch it: from the first tracked buy to 7 days
    after the last one (its label horizon; :func:`kolray.market.watch.watched_mints`), before ``until``."""
    trades = world.trades()
    buys = trades[trades["side"] == "buy"].groupby("mint")["block_time"].agg(["min", "max"])
    return {
        str(mint): (float(first), min(float(last) + WATCH_S, until))
        for mint, first, last in zip(buys.index, buys["min"], buys["max"], strict=True)
        if first < until
    }


def true_tape_points(
    world: World, windows: Mapping[str, tuple[float, float]], slide_step: float = SLIDE_STEP
) -> list[TapePoint]:
    """The world's true tape of each mint over its window ``[since, until)`` as the market stage's
    points (see the module docstring): the price at ``since`` and every change after it; a sliding
    price each time it has moved ``slide_step`` in log-price."""
    tapes = world.tapes()
    params = world.params
    points: list[TapePoint] = []
    for mint, (since, until) in sorted(windows.items()):
        if mint not in tapes:
            continue
        begin, stop = tapes.ranges[mint]
        moments: list[float] = [since]
        for j in range(begin, stop):
            t = float(tapes.time[j])
            segment_end = float(tapes.time[j + 1]) if j + 1 < stop else until
            if t >= until or segment_end <= since:
                continue
            moments.append(max(t, since))
            drift = float(tapes.drift[j])
            if drift:
                step = slide_step / abs(drift)
                moments.extend(np.arange(max(t, since) + step, min(segment_end, until), step).tolist())
        by_slot: dict[int, TapePoint] = {}
        for moment in moments:
            slot = first_slot_from(world, moment)
            state = tapes.at(mint, slot_start(world.start, slot))
            time = block_time_of_slot(params, slot)
            if state is None or time >= until:
                continue
            level, pool = state
            by_slot[slot] = TapePoint(
                mint=mint,
                slot=slot,
                time=time,
                price_sol=price_of(level) * WHOLE_TOKEN_SOL,
                market_cap_sol=market_cap_sol(level),
                liquidity_sol=0.0,  # not modelled here; the backtest reads prices only
                venue="pumpswap" if pool else "pumpfun",
                graduated=pool,
            )
        points.extend(by_slot[slot] for slot in sorted(by_slot))
    return points


def store_true_tape(
    engine: Engine, world: World, until: float | None = None, mints: Collection[str] | None = None
) -> int:
    """:func:`true_tape_points` of every traded mint (or of ``mints``) over its
    :func:`watch_windows` into ``market_tape`` (source ``live``); returns the rows stored."""
    windows = watch_windows(world, world.end if until is None else until)
    if mints is not None:
        windows = {mint: window for mint, window in windows.items() if mint in mints}
    points = true_tape_points(world, windows)
    stored = 0
    for index in range(0, len(points), STORE_CHUNK):
        stored += store_tape(engine, points[index : index + STORE_CHUNK], [])
    return stored


def true_price(tapes: Tapes, mint: str, t: float) -> float | None:
    """The twin's true price (SOL per whole token) at time ``t`` (``tapes``: ``World.tapes()``);
    None before the token's launch."""
    state = tapes.at(mint, t)
    return None if state is None else price_of(state[0]) * WHOLE_TOKEN_SOL
