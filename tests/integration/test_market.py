"""The market stage against the chain twin: the tape it records is the twin's true price, stored
exactly once; faults and unreadable accounts leave gaps, never a wrong price."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from kolray.chain.rpc import RpcClient
from kolray.db.engine import session_scope
from kolray.db.migrate import upgrade
from kolray.db.tables import SwapRow
from kolray.market.read import MarketReader
from kolray.market.stage import MarketOptions, MarketWatcher
from kolray.market.store import read_tape, store_tape
from kolray.sim.market import price_of
from kolray.sim.params import GENESIS_SLOT, SLOTS_PER_SECOND
from kolray.sim.server import start_server
from kolray.sim.world import SWAP_FIELDS, World, generate_world, load_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    path = tmp_path_factory.mktemp("twin") / "world"
    generate_world(path, kols=12, days=4, seed=5)
    return load_world(path)


def with_swaps(url: str, world: World) -> Engine:
    """A database holding the world's KOL swaps, as the tracker stores them."""
    engine = upgrade(url)
    rows = world.trades()[list(SWAP_FIELDS)].to_dict("records")
    clean = [
        {
            k: (None if isinstance(v, float) and math.isnan(v) else getattr(v, "item", lambda v=v: v)())
            for k, v in r.items()
        }
        for r in rows
    ]
    with session_scope(engine) as session:
        session.execute(insert(SwapRow), [dict(r, ingested_at=0) for r in clean])
    return engine


def true_price(world: World, tape: pd.DataFrame) -> np.ndarray:
    """The twin's price (SOL per whole token) at each row's slot, from its true tapes."""
    tapes = world.tapes()
    levels = [
        tapes.at(mint, world.start + (slot - GENESIS_SLOT) / SLOTS_PER_SECOND)[0]
        for mint, slot in zip(tape["mint"], tape["slot"], strict=True)
    ]
    return np.array([price_of(level) * 1e-3 for level in levels])


async def watch(url: str, engine: Engine, twin_url: str, seconds: float) -> MarketWatcher:
    async with RpcClient([twin_url], timeout_s=1.0, backoff_base_s=0.05, backoff_max_s=0.5) as rpc:
        options = MarketOptions(rpc_urls=[twin_url], database_url=url, fast_s=0.2, slow_s=2.0, refresh_s=1.0)
        watcher = MarketWatcher(options, rpc, engine)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await watcher.run(stop)
    return watcher


def test_the_recorded_tape_is_the_twins_true_price_and_is_stored_once(world: World, db_url: str) -> None:
    engine = with_swaps(db_url, world)
    # An hour of the world per second, from its second day: tokens launch, run, graduate and die.
    with start_server(world, rps=None, clock="realtime", speed=3600, clock_offset_s=86_400) as twin:
        watcher = asyncio.run(watch(db_url, engine, twin.url, seconds=8))
    tape = read_tape(engine)
    priced = tape[tape["price_sol"].notna()]
    assert watcher.summary.errors == []
    assert len(priced) > 300 and priced["mint"].nunique() > 50, watcher.summary
    error = np.abs(priced["price_sol"].to_numpy() / true_price(world, priced) - 1)
    assert error.max() < 0.01, f"worst tape point {error.max():.2%} off the twin's price"
    assert set(priced["venue"]) >= {"pumpfun", "pumpswap"} and priced["graduated"].any()
    # Gaps say why: the graduated tokens whose Raydium pool no stored swap names.
    gaps = tape[tape["price_sol"].isna()]
    assert set(gaps["note"]) <= {"graduated, but no canonical PumpSwap pool and no known AMM pool"}
    # Exactly once: a slot is stored once per mint, and writing the same points again adds nothing.
    assert not tape.duplicated(["mint", "slot"]).any()
    again = [row for row in priced.head(50).itertuples(index=False)]
    from kolray.market.read import TapePoint

    points = [
        TapePoint(
            r.mint, r.slot, r.time, r.price_sol, r.market_cap_sol, r.liquidity_sol, r.venue, bool(r.graduated)
        )
        for r in again
    ]
    assert store_tape(engine, points, []) == 0


def test_faults_leave_gaps_or_nothing_never_a_wrong_price(world: World, sqlite_url: str) -> None:
    engine = with_swaps(sqlite_url, world)
    with start_server(
        world, rps=None, clock="realtime", speed=3600, clock_offset_s=86_400, fault_rate=0.5, seed=3
    ) as twin:
        watcher = asyncio.run(watch(sqlite_url, engine, twin.url, seconds=6))
    tape = read_tape(engine)
    priced = tape[tape["price_sol"].notna()]
    assert watcher.summary.rounds > 0 and len(priced) > 0
    error = np.abs(priced["price_sol"].to_numpy() / true_price(world, priced) - 1)
    assert error.max() < 0.01


def test_accounts_in_another_layout_or_missing_are_gaps(world: World) -> None:
    """A node that answers with the wrong account (here: the pool asked for in place of the curve)
    or with no account: a gap naming the problem."""
    tokens = world.tokens()
    graduated = tokens[tokens["migration_time"].notna() & (tokens["amm"] == "pumpswap")]["mint"].tolist()
    assert graduated

    class Swapped:
        def __init__(self, rpc: RpcClient) -> None:
            self.rpc = rpc

        async def batch(self, calls):  # answers the curve reads with the canonical pool's account
            from kolray.chain.accounts import bonding_curve_address, canonical_pumpswap_pool

            pools = {bonding_curve_address(m): canonical_pumpswap_pool(m) for m in graduated}
            swapped = [
                (m, [[pools.get(a, a) for a in p[0]], *p[1:]]) if m == "getMultipleAccounts" else (m, p)
                for m, p in calls
            ]
            return await self.rpc.batch(swapped)

    async def read():
        async with RpcClient([twin.url]) as rpc:
            return await MarketReader(Swapped(rpc)).read([*graduated[:3], "11111111111111111111111111111111"])

    with start_server(world, rps=None) as twin:  # the clock at the world's end: every pool exists
        points, gaps = asyncio.run(read())
    assert points == []
    reasons = {g.mint: g.reason for g in gaps}
    assert all("owned by" in reasons[m] for m in graduated[:3]), reasons
    assert "no pump.fun bonding curve" in reasons["11111111111111111111111111111111"]


def test_market_once_from_the_command_line(
    world: World, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kolray.cli import main
    from kolray.config import get_settings

    engine = with_swaps(get_settings().database_url, world)
    with start_server(world, rps=None) as twin:
        assert main(["market", "--once", "--rpc-url", twin.url, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"errors": []' in out
    tape = read_tape(engine)
    # At the world's end a week of buys is watched: every one has a point or a gap.
    assert tape["mint"].nunique() > 0 and not tape.duplicated(["mint", "slot"]).any()
