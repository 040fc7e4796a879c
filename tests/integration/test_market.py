"""The market stage against the chain twin: the tape it records is the twin's true price, stored
exactly once; faults and unreadable accounts leave gaps, never a wrong price."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from kolray.chain.rpc import RpcClient
from kolray.market.read import MarketReader
from kolray.market.stage import MarketOptions, MarketWatcher
from kolray.market.store import read_tape, store_tape
from kolray.sim.server import start_server
from kolray.sim.world import World, generate_world, load_world
from kolray.testing.market_world import database_with_world_swaps, true_prices

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    path = tmp_path_factory.mktemp("twin") / "world"
    generate_world(path, kols=12, days=4, seed=5)
    return load_world(path)


async def watch(url: str, engine: Engine, twin_url: str, seconds: float) -> MarketWatcher:
    async with RpcClient([twin_url], timeout_s=1.0, backoff_base_s=0.05, backoff_max_s=0.5) as rpc:
        options = MarketOptions(rpc_urls=[twin_url], database_url=url, fast_s=0.2, slow_s=2.0, refresh_s=1.0)
        watcher = MarketWatcher(options, rpc, engine)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await watcher.run(stop)
    return watcher


def test_the_recorded_tape_is_the_twins_true_price_and_is_stored_once(world: World, db_url: str) -> None:
    engine = database_with_world_swaps(db_url, world)
    # An hour of the world per second, from its second day: tokens launch, run, graduate and die.
    with start_server(world, rps=None, clock="realtime", speed=3600, clock_offset_s=86_400) as twin:
        watcher = asyncio.run(watch(db_url, engine, twin.url, seconds=8))
    tape = read_tape(engine)
    priced = tape[tape["price_sol"].notna()]
    assert watcher.summary.errors == []
    assert len(priced) > 300 and priced["mint"].nunique() > 50, watcher.summary
    error = np.abs(priced["price_sol"].to_numpy() / true_prices(world, priced) - 1)
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
    engine = database_with_world_swaps(sqlite_url, world)
    with start_server(
        world, rps=None, clock="realtime", speed=3600, clock_offset_s=86_400, fault_rate=0.5, seed=3
    ) as twin:
        watcher = asyncio.run(watch(sqlite_url, engine, twin.url, seconds=6))
    tape = read_tape(engine)
    priced = tape[tape["price_sol"].notna()]
    assert watcher.summary.rounds > 0 and len(priced) > 0
    error = np.abs(priced["price_sol"].to_numpy() / true_prices(world, priced) - 1)
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

    engine = database_with_world_swaps(get_settings().database_url, world)
    with start_server(world, rps=None) as twin:
        assert main(["market", "--once", "--rpc-url", twin.url, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"errors": []' in out
    tape = read_tape(engine)
    # At the world's end a week of buys is watched: every one has a point or a gap.
    assert tape["mint"].nunique() > 0 and not tape.duplicated(["mint", "slot"]).any()


def test_open_positions_are_marked_at_the_market_once_it_is_newer_than_their_last_swap(
    world: World, db_url: str
) -> None:
    from sqlalchemy import select

    from kolray.analyzer import analyze
    from kolray.db.tables import PositionRow
    from kolray.market.read import TapePoint

    engine = database_with_world_swaps(db_url, world)
    analyze(engine)
    with engine.connect() as conn:
        open_positions = conn.execute(
            select(PositionRow.id, PositionRow.mint, PositionRow.mark_time, PositionRow.last_price_sol).where(
                PositionRow.status == "open", PositionRow.mark_time.is_not(None)
            )
        ).all()
    assert open_positions, "the world leaves positions open"
    _, mint, mark_time, _ = open_positions[0]
    assert mark_time is not None  # selected for it
    store_tape(engine, [TapePoint(mint, 10**9, mark_time + 60, 1.5e-5, 15.0, 30.0, "pumpswap", True)], [])
    summary = analyze(engine)  # no new swap: the market alone moves the mark
    assert summary.marks_updated >= 1
    with engine.connect() as conn:
        marked = conn.execute(
            select(PositionRow.mark_time, PositionRow.last_price_sol, PositionRow.unrealised_value_sol).where(
                PositionRow.mint == mint, PositionRow.status == "open"
            )
        ).all()
    assert all(t == mark_time + 60 and p == 1.5e-5 and v is not None for t, p, v in marked), marked
    # An older tape point never replaces a newer swap's price.
    store_tape(engine, [TapePoint(mint, 10**9 - 1, mark_time - 3600, 9.0, 9e9, 1.0, "pumpswap", True)], [])
    analyze(engine)
    with engine.connect() as conn:
        prices = conn.scalars(
            select(PositionRow.last_price_sol).where(PositionRow.mint == mint, PositionRow.status == "open")
        ).all()
    assert set(prices) == {1.5e-5}


def test_the_follower_label_sees_a_peak_only_the_market_tape_caught(world: World, sqlite_url: str) -> None:
    from kolray.features.peaks import peak_labels, read_all_prices
    from kolray.market.read import TapePoint

    engine = database_with_world_swaps(sqlite_url, world)
    trades = world.trades()
    trades = trades[trades["price_sol"].notna()]
    horizon = 7 * 86_400

    def swaps_peak(buy) -> float:
        later = trades[
            (trades["mint"] == buy["mint"])
            & (trades["block_time"] > buy["block_time"])
            & (trades["block_time"] <= buy["block_time"] + horizon)
        ]
        return float(later["price_sol"].max() / buy["price_sol"]) if len(later) else 0.0

    opening = trades[(trades["side"] == "buy") & trades["opens_position"]]
    buy = next(b for _, b in opening.iterrows() if swaps_peak(b) < 2.5)  # the swaps alone never reach 3x
    rows = pd.DataFrame(
        {
            "entry_signature": [buy["signature"]],
            "wallet": [buy["wallet"]],
            "mint": [buy["mint"]],
            "entry_time": [int(buy["block_time"])],
        }
    )

    def label() -> list[int]:
        return peak_labels(rows, read_all_prices(str(engine.url), 10**12), horizon).tolist()

    price, t = float(buy["price_sol"]), int(buy["block_time"])
    assert label() == [0]
    store_tape(engine, [TapePoint(buy["mint"], 1, t + horizon + 60, 50 * price, 0, 0, "pumpfun", False)], [])
    assert label() == [0], "a peak after the horizon does not count"
    store_tape(engine, [TapePoint(buy["mint"], 2, t + 600, 3.2 * price, 0, 0, "pumpfun", False)], [])
    assert label() == [1], "a 3.2x tape point within the horizon makes peak_3x"


def test_a_token_that_leaves_the_watch_list_gets_a_gap_not_a_stale_price(
    world: World, sqlite_url: str
) -> None:
    from kolray.market.stage import NO_LONGER_WATCHED

    engine = database_with_world_swaps(sqlite_url, world)

    async def refresh_twice(twin_url: str) -> tuple[list[str], list[str], list[str]]:
        async with RpcClient([twin_url], timeout_s=1.0, backoff_base_s=0.05, backoff_max_s=0.5) as rpc:
            options = MarketOptions(rpc_urls=[twin_url], database_url=sqlite_url, history=False)
            watcher = MarketWatcher(options, rpc, engine)
            first = await watcher.refresh(0.0)
            await watcher.read(first, 0.0)
            # The horizon shrinks to a second: every token without an open position leaves.
            watcher.options.horizon_s = 1
            second = await watcher.refresh(1.0)
            third = await watcher.refresh(2.0)  # leaving is told once
            return first, second, third

    with start_server(world, rps=None, clock="realtime", speed=3600, clock_offset_s=86_400) as twin:
        first, second, third = asyncio.run(refresh_twice(twin.url))
    left = set(first) - set(second)
    assert first and left and set(second) == set(third)
    tape = read_tape(engine)
    gaps = tape[tape["note"] == NO_LONGER_WATCHED]
    assert set(gaps["mint"]) == left and len(gaps) == len(left)
    assert gaps["price_sol"].isna().all()
    # Each gap comes after the token's last price: a later fill finds the gap, not that price.
    last_price = tape[tape["price_sol"].notna()].groupby("mint")["slot"].max()
    assert all(
        slot >= last_price.get(mint, -1) for mint, slot in zip(gaps["mint"], gaps["slot"], strict=True)
    )
