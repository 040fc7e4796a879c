"""A token's price before kolray watched it, from its own trades: the twin serves the crowd's trades
on every bonding curve and PumpSwap pool as real transactions, and the market stage's history reads
them back to the twin's true price, once, within a per-token call budget, never a wrong price."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sqlalchemy.engine import Engine

from kolray.chain.accounts import bonding_curve_address, canonical_pumpswap_pool
from kolray.chain.rpc import RpcClient
from kolray.chain.swaps import extract_swaps
from kolray.market.history import REFINE_BATCH, HistoryWindow, history_windows, next_picks
from kolray.market.read import TapePoint
from kolray.market.stage import MarketOptions, MarketWatcher
from kolray.market.store import read_tape, store_tape
from kolray.sim.market import price_of
from kolray.sim.node import Node
from kolray.sim.params import LAMPORTS_PER_SOL, TOKEN_DECIMALS, slot_start
from kolray.sim.server import start_server
from kolray.sim.world import World, generate_world, load_world
from kolray.testing.market_world import database_with_world_swaps, true_prices

pytestmark = pytest.mark.slow

ENCODINGS = ("json", "jsonParsed", "base64")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    path = tmp_path_factory.mktemp("twin") / "world"
    generate_world(path, kols=8, days=2, seed=5)
    return load_world(path)


def end_node(world: World) -> Node:
    last = int(world.meta["last_slot"])
    return Node(world, lambda: last)


def every_signature(node: Node, address: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The address's whole signature list, paged backwards ``limit`` at a time."""
    out: list[dict[str, Any]] = []
    while True:
        config: dict[str, Any] = {"limit": limit, **({"before": out[-1]["signature"]} if out else {})}
        page = node.get_signatures_for_address([address, config], node.current_slot())
        out += page
        if len(page) < limit:
            return out


def busiest_curve(world: World, node: Node) -> tuple[str, list[dict[str, Any]]]:
    """The mint whose curve lists the most signatures, and that list."""
    best: tuple[str, list[dict[str, Any]]] = ("", [])
    for mint in world.tapes().mints:
        entries = every_signature(node, bonding_curve_address(mint))
        if len(entries) > len(best[1]):
            best = (mint, entries)
    return best


def true_price(world: World, mint: str, slot: int) -> float:
    state = world.tapes().at(mint, slot_start(world.start, slot))
    assert state is not None
    return price_of(state[0]) * 10**TOKEN_DECIMALS / LAMPORTS_PER_SOL


def fee_payer(tx: dict[str, Any]) -> str:
    from solders.transaction import VersionedTransaction

    transaction = tx["transaction"]
    if isinstance(transaction, list):
        import base64

        return str(VersionedTransaction.from_bytes(base64.b64decode(transaction[0])).message.account_keys[0])
    first = transaction["message"]["accountKeys"][0]
    return first["pubkey"] if isinstance(first, dict) else first


# The twin serves the crowd's trades


def test_a_curve_lists_the_kols_and_the_crowds_trades_newest_first_and_pages_through_each_once(
    world: World,
) -> None:
    node = end_node(world)
    mint, everything = busiest_curve(world, node)
    kol_signatures = set(world.trades()["signature"])
    listed = [e["signature"] for e in everything]
    assert len(listed) == len(set(listed)) > 100
    crowd = [s for s in listed if s not in kol_signatures]
    assert crowd and len(crowd) < len(listed), "both the crowd's and the KOLs' trades are listed"
    # Newest first: by slot, then by signature bytes, as agave orders an address's signatures.
    from kolray.sim.store import sig_bytes

    order = [(e["slot"], sig_bytes(e["signature"])) for e in everything]
    assert order == sorted(order, reverse=True)
    assert all(e["blockTime"] == node.block_time(e["slot"]) for e in everything)
    assert all(e["err"] is None and e["memo"] is None for e in everything if e["signature"] in crowd)
    # Paging backwards with `before` visits every signature exactly once, in the same order,
    # whatever the page size; one page holds at most 1000.
    assert [e["signature"] for e in every_signature(node, bonding_curve_address(mint), 7)] == listed
    first_page = node.get_signatures_for_address([bonding_curve_address(mint)], node.current_slot())
    assert [e["signature"] for e in first_page] == listed[:1000]
    # `until` stops before a crowd signature, `before` starts after one; with `limit` they frame a window.
    middle = crowd[len(crowd) // 2]
    at = listed.index(middle)
    curve = bonding_curve_address(mint)
    newer = node.get_signatures_for_address([curve, {"until": middle}], node.current_slot())
    assert [e["signature"] for e in newer] == listed[:at]
    after = node.get_signatures_for_address([curve, {"before": middle, "limit": 5}], node.current_slot())
    assert [e["signature"] for e in after] == listed[at + 1 : at + 6]
    newest_kol = next(s for s in listed if s in kol_signatures)
    window = node.get_signatures_for_address(
        [curve, {"before": newest_kol, "until": middle}], node.current_slot()
    )
    assert [e["signature"] for e in window] == listed[listed.index(newest_kol) + 1 : at]


def test_nothing_after_the_clock(world: World) -> None:
    mint, everything = busiest_curve(world, end_node(world))
    slots = sorted({e["slot"] for e in everything})
    clock = slots[len(slots) // 2]
    node = Node(world, lambda: clock)
    curve = bonding_curve_address(mint)
    seen = node.get_signatures_for_address([curve], clock)
    assert seen and max(e["slot"] for e in seen) <= clock
    assert {e["signature"] for e in seen} == {e["signature"] for e in everything if e["slot"] <= clock}
    future = next(e for e in everything if e["slot"] > clock)["signature"]
    assert node.get_transaction([future, {"maxSupportedTransactionVersion": 0}], clock) is None
    assert node.get_signatures_for_address([curve, {"before": future}], clock) == []


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_the_crowds_transactions_decode_through_extract_swaps_to_the_tape_price(
    world: World, encoding: str
) -> None:
    node = end_node(world)
    tokens = world.tokens()
    graduated = tokens[tokens["migration_time"].notna() & tokens["amm"].eq("pumpswap")]["mint"]
    mint = next(m for m in graduated if m in world.tapes())
    kols = set(world.kols()["wallet"])
    checked = {"pumpfun": 0, "pumpswap": 0}
    for address in (bonding_curve_address(mint), canonical_pumpswap_pool(mint)):
        entries = every_signature(node, address)
        previous: float | None = None
        for entry in entries[::-1][:300]:
            raw = node.get_transaction(
                [entry["signature"], {"encoding": encoding, "maxSupportedTransactionVersion": 0}],
                node.current_slot(),
            )
            tx = orjson.loads(raw)
            trader = fee_payer(tx)
            if trader in kols:
                continue
            swaps = extract_swaps(tx, trader)
            if not swaps:  # the token's creation, the one other transaction on its curve
                assert "Program log: Instruction: Create" in tx["meta"]["logMessages"]
                continue
            (swap,) = swaps
            truth = true_price(world, mint, entry["slot"])
            assert swap.mint == mint and swap.signature == entry["signature"] and swap.slot == entry["slot"]
            assert swap.dex in checked and swap.market_cap_sol is not None
            assert swap.price_sol == pytest.approx(truth, rel=1e-6)
            if previous is not None:  # a buy where the price rises, a sell where it falls
                assert swap.side == ("buy" if truth > previous else "sell")
            previous = truth
            checked[swap.dex] += 1
    assert min(checked.values()) > 10, checked


def test_a_raydium_pools_crowd_trades_leave_the_tape_price_in_its_vaults(world: World) -> None:
    from kolray.market.history import price_of_trade
    from kolray.market.read import Pool
    from kolray.sim import keys

    node = end_node(world)
    tokens = world.tokens()
    graduated = tokens[tokens["migration_time"].notna() & tokens["amm"].eq("raydium_amm_v4")]
    token = next(t for t in graduated.itertuples() if t.mint in world.tapes())
    accounts = keys.pool_accounts(world.params.seed, int(token.community), int(token.token_index), token.amm)
    pool = Pool(
        "raydium_amm_v4", accounts["pool"], accounts["base_vault"], accounts["quote_vault"], token.mint
    )
    kols = set(world.kols()["wallet"])
    checked = 0
    for entry in every_signature(node, pool.address)[:200]:
        for encoding in ENCODINGS:
            raw = node.get_transaction(
                [entry["signature"], {"encoding": encoding, "maxSupportedTransactionVersion": 0}],
                node.current_slot(),
            )
            tx = orjson.loads(raw)
            if fee_payer(tx) in kols:
                break
            (swap,) = extract_swaps(tx, fee_payer(tx))
            assert swap.dex == "raydium_amm_v4" and swap.market_cap_sol is None  # no event: amounts only
            point = price_of_trade(tx, token.mint, pool)
            assert isinstance(point, TapePoint) and point.venue == "raydium_amm_v4"
            assert point.price_sol == pytest.approx(true_price(world, token.mint, entry["slot"]), rel=1e-6)
            # Without the pool, the trade's own amounts are no price of the market after it.
            assert isinstance(price_of_trade(tx, token.mint), str)
            checked += 1
    assert checked > 30


def test_crowd_signatures_are_the_twins_own_and_unknown_ones_stay_unknown(world: World) -> None:
    from solders.signature import Signature

    node = end_node(world)
    _, everything = busiest_curve(world, node)
    signature = bytearray(bytes(Signature.from_string(everything[0]["signature"])))
    signature[40] ^= 1  # one bit off: no transaction
    assert node.get_transaction([str(Signature.from_bytes(bytes(signature)))], node.current_slot()) is None
    # A v0 crowd transaction without maxSupportedTransactionVersion is refused as on mainnet.
    kols = set(world.trades()["signature"])
    crowd = next(e["signature"] for e in everything if e["signature"] not in kols)
    from kolray.sim.node import RpcError

    with pytest.raises(RpcError) as refused:
        node.get_transaction([crowd], node.current_slot())
    assert refused.value.code == -32015


# The market stage reads the history


class Recording(RpcClient):
    """Remembers every signature whose transaction it was asked for."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(urls)
        self.asked: list[str] = []

    async def get_transactions(self, signatures: Any) -> list[dict[str, Any] | None]:
        self.asked += signatures
        return await super().get_transactions(signatures)


async def backfill(
    url: str, db_url: str, engine: Engine, budget: int, rpc: RpcClient | None = None
) -> MarketWatcher:
    async with RpcClient([url], timeout_s=2.0, backoff_base_s=0.05, backoff_max_s=0.5) as own:
        options = MarketOptions(rpc_urls=[url], database_url=db_url, history_budget=budget)
        watcher = MarketWatcher(options, rpc or own, engine)
        mints = await watcher.refresh(time.monotonic())
        await watcher.backfill(mints)
    return watcher


def history_rows(engine: Engine) -> Any:
    tape = read_tape(engine)
    return tape[tape["source"] == "history"]


def test_the_history_records_the_twins_true_price_once_within_the_budget(world: World, db_url: str) -> None:
    engine = database_with_world_swaps(db_url, world)
    budget = 12

    async def recorded(url: str) -> tuple[MarketWatcher, list[str]]:
        recording = Recording([url])
        async with recording:
            return await backfill(url, db_url, engine, budget, recording), recording.asked

    with start_server(world, rps=None) as twin:
        watcher, asked = asyncio.run(recorded(twin.url))
        calls = twin.stats()["methods"]["getTransaction"]
        rows = history_rows(engine)
        priced = rows[rows["price_sol"].notna()]
        summary = watcher.summary
        assert summary.history_tokens > 20 and len(priced) > 10 * summary.history_tokens
        error = np.abs(priced["price_sol"].to_numpy() / true_prices(world, priced) - 1)
        assert error.max() < 0.01, f"worst history point {error.max():.2%} off the twin's price"
        assert set(priced["venue"]) == {"pumpfun", "pumpswap", "raydium_amm_v4"}
        # A pump event gives the price, not the reserves' SOL; a Raydium pool's vaults give both.
        pump = priced["venue"] != "raydium_amm_v4"
        assert (
            priced.loc[pump, "liquidity_sol"].isna().all() and priced.loc[~pump, "liquidity_sol"].gt(0).all()
        )
        assert rows["price_sol"].isna().sum() == summary.history_gaps == 0
        assert not read_tape(engine).duplicated(["mint", "slot"]).any()
        # The budget: never more than `budget` getTransaction calls per token, counted by the node.
        assert len(asked) == summary.history_transactions <= budget * summary.history_tokens
        # Besides: for a Raydium-graduated token, the stored swap(s) read to find its pool.
        trades = world.trades()
        raydium = trades.loc[trades["dex"].isin(["raydium_amm_v4", "jupiter_v6"]), "mint"].nunique()
        assert calls - len(asked) == watcher.pool_lookups and raydium <= watcher.pool_lookups <= 3 * raydium
        assert priced.groupby("mint").size().max() <= budget
        # None of the tracked wallets' own trades is read again: their prices are in `swaps`.
        assert not set(asked) & set(world.trades()["signature"])
        # Re-running stores nothing and reads nothing.
        again = asyncio.run(backfill(twin.url, db_url, engine, budget))
        assert again.summary.history_tokens == 0
        assert twin.stats()["methods"]["getTransaction"] == calls
    assert len(history_rows(engine)) == len(rows)


def test_reading_every_trade_finds_every_price_the_tape_took(world: World, sqlite_url: str) -> None:
    engine = database_with_world_swaps(sqlite_url, world)
    with start_server(world, rps=None) as twin:
        asyncio.run(backfill(twin.url, sqlite_url, engine, 10**6))
    rows = history_rows(engine)
    tapes = world.tapes()
    tokens = world.tokens().set_index("mint")
    buys = world.trades().query("side == 'buy'").groupby("mint")["block_time"].min()
    scale = 10**TOKEN_DECIMALS / LAMPORTS_PER_SOL
    checked = 0
    trades = world.trades()
    raydium_swapped = set(trades.loc[trades["dex"] == "raydium_amm_v4", "mint"])
    for mint, got in rows.groupby("mint"):
        graduated = not np.isnan(tokens.loc[mint, "migration_time"])
        if graduated and tokens.loc[mint, "amm"] == "raydium_amm_v4" and mint not in raydium_swapped:
            continue  # no stored swap names its Raydium pool: the history has only its curve
        first = int(buys[mint])
        begin, end = tapes.ranges[mint]
        times, levels = tapes.time[begin:end], tapes.level[begin:end]
        later = levels[(times >= first + 1) & (times <= world.end)]
        # Every price the tape took after the first tracked buy is a trade the history read, and
        # the history never reads a price higher than the tape's peak over its window.
        assert got["price_sol"].max() <= price_of(tapes.peak(mint, first, world.end)) * scale * (1 + 1e-6)
        if len(later):
            assert got["price_sol"].max() >= price_of(float(later.max())) * scale * (1 - 1e-6)
            checked += 1
    assert checked > 20


def test_the_history_stops_where_the_live_tape_begins(world: World, sqlite_url: str) -> None:
    engine = database_with_world_swaps(sqlite_url, world)
    trades = world.trades()
    buys = trades[trades["side"] == "buy"].groupby("mint")["block_time"].agg(["min", "max"])
    mint = buys.index[0]
    first = int(buys.loc[mint, "min"])
    live_from = first + 30
    store_tape(engine, [TapePoint(mint, 10**12, live_from, 1e-6, 1.0, 1.0, "pumpfun", False)], [])
    windows = {w.mint: w for w in history_windows(engine, list(buys.index), world.end)}
    assert windows[mint] == HistoryWindow(mint, first, live_from)
    other = buys.index[1]
    assert windows[other].end == min(int(buys.loc[other, "max"]) + 7 * 86_400, world.end)
    # A token with a history stored already has none to read.
    store_tape(engine, [TapePoint(other, 1, first, 1e-6, 1.0, None, "pumpfun", False)], [], source="history")
    assert other not in {w.mint for w in history_windows(engine, list(buys.index), world.end)}


class Tampering(RpcClient):
    """Answers some transactions with their pump events stripped (a trade another program priced)
    and some cut short (account keys missing): what a node of another chain, or a bug, would send."""

    async def get_transactions(self, signatures: Any) -> list[dict[str, Any] | None]:
        answers = await super().get_transactions(signatures)
        for i, tx in enumerate(answers):
            if tx is None or i % 3 == 2:
                continue
            meta = tx["meta"]
            if i % 3 == 0:
                meta["logMessages"] = [
                    line for line in meta["logMessages"] if not line.startswith("Program data:")
                ]
                meta["innerInstructions"] = []
            else:
                tx["transaction"]["message"]["accountKeys"] = tx["transaction"]["message"]["accountKeys"][:3]
        return answers


def test_faults_and_transactions_that_do_not_price_are_gaps_never_a_wrong_price(
    world: World, sqlite_url: str
) -> None:
    engine = database_with_world_swaps(sqlite_url, world)
    with start_server(world, rps=None, fault_rate=0.3, seed=4) as twin:
        watcher = asyncio.run(backfill(twin.url, sqlite_url, engine, 8))
        assert sum(twin.stats()["faults"].values()) > 10
    rows = history_rows(engine)
    priced = rows[rows["price_sol"].notna()]
    assert len(priced) > 50 and watcher.summary.history_tokens > 10
    error = np.abs(priced["price_sol"].to_numpy() / true_prices(world, priced) - 1)
    assert error.max() < 0.01

    engine = database_with_world_swaps(
        f"sqlite:///{Path(sqlite_url[10:]).with_suffix('.tampered.db')}", world
    )

    async def tampered(url: str) -> MarketWatcher:
        async with Tampering([url]) as rpc:
            return await backfill(url, str(engine.url), engine, 9, rpc)

    with start_server(world, rps=None) as twin:
        watcher = asyncio.run(tampered(twin.url))
    rows = history_rows(engine)
    priced, gaps = rows[rows["price_sol"].notna()], rows[rows["price_sol"].isna()]
    # A third of the answers is intact: those are prices; the others are gaps saying why.
    assert len(priced) > 20 and len(gaps) >= len(priced)
    error = np.abs(priced["price_sol"].to_numpy() / true_prices(world, priced) - 1)
    assert error.max() < 0.01
    notes = set(gaps["note"].str.split(":").str[0])
    assert "transaction does not decode" in notes and len(notes) >= 2
    assert notes <= {
        "transaction does not decode",
        "trade on pumpfun (6EF8rrecthR5Dkzon8Nwu78hRvfCKubJ14M5uBEwF6P)",
        "trade on pumpswap (pAMMBay6oceH9fJKBRHGP5D4bD4sWpmSwMn52FMfXEA)",
    }, notes
    assert watcher.summary.history_gaps == len(gaps)


# Choosing which trades to read


def test_reading_around_the_best_price_finds_a_peak_more_often_than_even_spacing() -> None:
    """On random walks of 400 trades and a budget of 40 reads, the refined search's highest price
    is within 5% of the walk's true peak far more often than 40 evenly spaced reads'."""
    rng = np.random.default_rng(11)
    refined_hits = even_hits = 0
    walks = 300
    for _ in range(walks):
        walk = np.cumsum(rng.normal(0, 0.03, 400))
        seen: dict[int, float | None] = {}
        first = True
        while len(seen) < 40:
            want = min(40 - len(seen), 20 if first else REFINE_BATCH)
            picks = [i for i in next_picks(len(walk), seen, want) if i not in seen]
            first = False
            if not picks:
                break
            seen.update({i: float(walk[i]) for i in picks})
        assert len(seen) <= 40
        refined_hits += max(p for p in seen.values() if p is not None) >= walk.max() - 0.05
        even = np.unique(np.round(np.linspace(0, len(walk) - 1, 40)).astype(int))
        even_hits += walk[even].max() >= walk.max() - 0.05
    assert refined_hits / walks > 0.9 and refined_hits > even_hits + walks // 10, (refined_hits, even_hits)


def test_the_first_reads_are_evenly_spaced_and_later_ones_never_repeat_a_read() -> None:
    assert next_picks(101, {}, 5) == [0, 25, 50, 75, 100]
    assert next_picks(3, {}, 10) == [0, 1, 2]
    seen: dict[int, float | None] = {0: 0.0, 50: None, 100: 1.0}
    picks = next_picks(101, seen, 2)
    assert picks == [75, 25] or sorted(picks) == [25, 75]
    assert next_picks(101, seen, 1) == [75], "the gap next to the highest price goes first"
    assert next_picks(2, {0: 1.0, 1: 2.0}, 5) == []


def test_market_once_reads_histories_from_the_command_line(
    world: World, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kolray.cli import main
    from kolray.config import get_settings

    engine = database_with_world_swaps(get_settings().database_url, world)
    with start_server(world, rps=None) as twin:
        assert main(["market", "--once", "--rpc-url", twin.url, "--no-history", "--json"]) == 0
        assert '"history_tokens": 0' in capsys.readouterr().out
        assert history_rows(engine).empty
        live = twin.stats()["methods"].get("getTransaction", 0)  # finding Raydium pools
        assert main(["market", "--once", "--rpc-url", twin.url, "--history-budget", "4", "--json"]) == 0
        summary = orjson.loads(capsys.readouterr().out)
        rows = history_rows(engine)
        assert summary["history_tokens"] == rows["mint"].nunique() > 0 and rows["price_sol"].notna().all()
        assert twin.stats()["methods"]["getTransaction"] == 2 * live + summary["history_transactions"]
        assert summary["history_transactions"] <= 4 * summary["history_tokens"]
    assert main(["market", "--once", "--history-budget", "1"]) != 0


def test_the_watcher_reads_histories_beside_its_live_reads_and_each_ends_where_the_live_tape_begins(
    world: World, sqlite_url: str
) -> None:
    engine = database_with_world_swaps(sqlite_url, world)

    async def watch(url: str) -> MarketWatcher:
        async with RpcClient([url], timeout_s=1.0, backoff_base_s=0.05, backoff_max_s=0.5) as rpc:
            options = MarketOptions(
                rpc_urls=[url],
                database_url=sqlite_url,
                fast_s=0.2,
                slow_s=2.0,
                refresh_s=1.0,
                history_budget=6,
            )
            watcher = MarketWatcher(options, rpc, engine)
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(6, stop.set)
            await watcher.run(stop)
        return watcher

    # An hour of the world per second, from its second day: tokens bought on its first day are
    # watched from their first live read on, and their history fills the time before.
    with start_server(world, rps=None, clock="realtime", speed=3600, clock_offset_s=86_400) as twin:
        watcher = asyncio.run(watch(twin.url))
    assert watcher.summary.errors == [] and watcher.summary.rounds > 5
    tape = read_tape(engine)
    live, history = tape[tape["source"] == "live"], tape[tape["source"] == "history"]
    # Every history point is stored, save one whose trade shares the slot of its token's first
    # live read: that (mint, slot) is stored once, as the live read (seen once in ten runs).
    summary = watcher.summary
    assert summary.history_tokens > 5
    assert summary.history_points - summary.history_tokens <= len(history) <= summary.history_points
    first_live = live.groupby("mint")["time"].min()
    last_history = history.groupby("mint")["time"].max()
    both = first_live.index.intersection(last_history.index)
    assert len(both) > 5 and (last_history[both] <= first_live[both]).all()
    priced = history[history["price_sol"].notna()]
    error = np.abs(priced["price_sol"].to_numpy() / true_prices(world, priced) - 1)
    assert error.max() < 0.01
