"""A twin world's swaps in a database and its true prices beside a recorded tape: what the market
stage's tests and ``bench/market.py`` hold the stage against."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from kolray.db.engine import session_scope
from kolray.db.migrate import upgrade
from kolray.db.tables import SwapRow
from kolray.sim.market import price_of
from kolray.sim.params import LAMPORTS_PER_SOL, TOKEN_DECIMALS, slot_start
from kolray.sim.world import SWAP_FIELDS, World


def database_with_world_swaps(url: str, world: World) -> Engine:
    """A migrated database holding every KOL swap of ``world``, as the tracker would store them."""
    engine = upgrade(url)
    rows = [
        {
            k: None if isinstance(v, float) and math.isnan(v) else getattr(v, "item", lambda v=v: v)()
            for k, v in r.items()
        }
        for r in world.trades()[list(SWAP_FIELDS)].to_dict("records")
    ]
    with session_scope(engine) as session:
        session.execute(insert(SwapRow), [dict(r, ingested_at=0) for r in rows])
    return engine


def true_prices(world: World, tape: pd.DataFrame) -> np.ndarray:
    """The twin's true price (SOL per whole token) at each tape row's slot."""
    tapes = world.tapes()
    scale = 10**TOKEN_DECIMALS / LAMPORTS_PER_SOL
    out = np.full(len(tape), np.nan)
    for i, (mint, slot) in enumerate(zip(tape["mint"], tape["slot"], strict=True)):
        state = tapes.at(mint, slot_start(world.start, slot)) if mint in tapes else None
        if state is not None:
            out[i] = price_of(state[0]) * scale
    return out
