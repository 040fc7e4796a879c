"""The tracker against the chain twin: exactly once under faults and killed pollers, on SQLite and
PostgreSQL; continuous mode sees new trades within one interval."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from kolray.db.migrate import upgrade
from kolray.kols import KolIn, upsert_kols
from kolray.market.stage import MarketOptions
from kolray.market.store import read_tape
from kolray.sim.server import FAULT_KINDS, start_server
from kolray.sim.world import World, generate_world, load_world
from kolray.tracker.poller import PollPolicy
from kolray.tracker.supervisor import Tracker, TrackerOptions, run_forever

pytestmark = pytest.mark.slow

FIELDS = (
    "signature",
    "wallet",
    "mint",
    "side",
    "token_amount",
    "token_decimals",
    "sol_amount",
    "fee",
    "rent",
    "tips",
    "dex",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    path = tmp_path_factory.mktemp("twin") / "world"
    generate_world(path, kols=10, days=3, seed=11)
    return load_world(path)


def normalise(row: tuple) -> tuple:
    """The same swap from Parquet (numpy ints) and from either database (ints, Decimals, text)."""
    signature, wallet, mint, side, *amounts, dex = row
    return (signature, wallet, mint, side, *(int(a) for a in amounts), dex)


def truth(world: World, until: float | None = None) -> set[tuple]:
    trades = world.trades()
    if until is not None:
        trades = trades[trades.block_time <= until]
    return {normalise(tuple(row)) for row in trades[list(FIELDS)].itertuples(index=False)}


def cursor_of(engine, wallet: str) -> dict | None:
    """The wallet's cursor row, for failure messages."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM cursors WHERE wallet = :w"), {"w": wallet}).mappings().first()
    return dict(row) if row else None


def stored(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [normalise(tuple(row)) for row in conn.execute(text(f"SELECT {', '.join(FIELDS)} FROM swaps"))]


# Small batches: many requests, so that every fault kind turns up in a short run.
SMALL_BATCHES = PollPolicy(batch_size=8, backfill_seconds=10**9, backfill_max_signatures=10**6)


def options(url: str, twin_url: str, **overrides) -> TrackerOptions:
    values = dict(
        rpc_urls=[twin_url],
        database_url=url,
        actors=2,
        rps=2000,
        burst=200,
        policy=PollPolicy(batch_size=25, backfill_seconds=10**9, backfill_max_signatures=10**6),
        client_options={"timeout_s": 1.0, "max_retries": 10, "backoff_base_s": 0.05, "backoff_max_s": 0.5},
    )
    values.update(overrides)
    return TrackerOptions(**values)


def test_faults_and_killed_pollers_lose_and_duplicate_nothing(ray_session, world: World, db_url: str) -> None:
    engine = upgrade(db_url)
    wallets = list(world.kols().wallet)
    upsert_kols(engine, [KolIn(wallet=w) for w in wallets])
    kinds = set(FAULT_KINDS)
    with start_server(world, rps=None, fault_rate=0.3, hang_s=1.5, max_nulls=2, seed=5) as twin:
        with Tracker(options(db_url, twin.url, policy=SMALL_BATCHES)) as tracker:
            stop = threading.Event()
            kills = []
            rng = random.Random(3)

            def killer() -> None:
                while len(kills) < 3 and not stop.wait(rng.uniform(0.5, 1.5)):
                    victim = rng.choice(tracker.pollers)
                    ray_session.kill(victim, no_restart=False)  # Ray restarts it (max_restarts=-1)
                    kills.append(time.time())

            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            first = tracker.sync(wallets)
            stop.set()
            thread.join()
        # "Again after a restart": a new pool of actors resumes from the committed cursors.
        passes = []
        for _ in range(4):
            with Tracker(options(db_url, twin.url, policy=SMALL_BATCHES)) as tracker:
                again = tracker.sync(wallets)
            passes.append(again)
            if not again.unavailable and not again.wallet_errors:
                break
        faults = twin.stats()["faults"]

    rows = stored(engine)
    assert len(rows) == len(set(rows)), "a swap was stored twice"
    missing, extra = truth(world) - set(rows), set(rows) - truth(world)
    # On failure, say whose swaps and what the resumed passes saw (a rare failure must explain itself).
    by_wallet = Counter(swap[1] for swap in missing)
    cursors = {w: cursor_of(engine, w) for w in by_wallet}
    assert not missing and not extra, (
        f"stored swaps differ from the twin's ground truth: {len(missing)} missing {dict(by_wallet)}, "
        f"{len(extra)} extra; cursors {cursors}; first pass {first}; resumed passes {passes}"
    )
    assert kills, "no poller was killed: the test did not test restarts"
    assert set(faults) == kinds, f"every fault kind must have happened, saw {faults}"
    # A killed poller's counts die with it, so the summaries cannot be added up; the resumed pool
    # must simply have finished: nothing left unavailable, no wallet in error.
    assert first.signatures > 0
    assert not again.unavailable and not again.wallet_errors, again


def test_continuous_mode_picks_up_new_trades_within_one_interval(
    ray_session, world: World, sqlite_url: str
) -> None:
    engine = upgrade(sqlite_url)
    wallets = list(world.kols().wallet)
    upsert_kols(engine, [KolIn(wallet=w) for w in wallets])
    span = world.end - world.start
    # The whole world unfolds in 15 s; the first cycle (actors starting) takes ~6 s of it on 2 cores.
    speed = span / 15.0
    interval = 1.0
    checks: list[tuple[int, int]] = []
    with start_server(world, rps=None, clock="realtime", speed=speed) as twin:
        stop = threading.Event()

        def on_cycle(cycle: int, summary) -> None:
            # Everything that existed when this cycle listed signatures must be stored now.
            listed_at = twin.server.sim_time() - summary.elapsed_s * speed
            expected = truth(world, until=listed_at - 1)
            have = set(stored(engine))
            checks.append((len(expected), len(expected - have)))
            if listed_at > world.end:  # this cycle listed after the last trade: all must be in
                stop.set()

        # The market stage runs beside the pollers (as `kolray track` runs it), in their rate budget.
        market = MarketOptions(
            rpc_urls=[twin.url], database_url=sqlite_url, fast_s=0.5, slow_s=2, refresh_s=1
        )
        cycles = run_forever(
            options(sqlite_url, twin.url, market=market),
            interval_s=interval,
            on_cycle=on_cycle,
            stop=stop,
            max_cycles=60,
        )
    assert cycles >= 4
    tape = read_tape(engine)
    priced = tape[tape["price_sol"].notna()]
    assert priced["mint"].nunique() > 10, f"the market stage recorded {len(tape)} tape rows"
    assert checks[-1][0] == len(truth(world)), "the world did not finish unfolding"
    grew = [n for n, _ in checks]
    assert grew == sorted(grew) and grew[-1] > grew[0], "new trades kept arriving"
    assert all(missing == 0 for _, missing in checks), (
        f"a cycle missed trades that existed when it started: {checks}"
    )


def test_track_cli_once_prints_a_summary(
    ray_session,
    world: World,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kolray.cli import main
    from kolray.config import get_settings

    monkeypatch.setenv("KOLRAY_BACKFILL_DAYS", "100000")  # the twin's history is years "old"
    get_settings.cache_clear()
    with start_server(world, rps=None) as twin:
        assert main(["kols", "add", str(world.kols().wallet[0])]) == 0
        capsys.readouterr()
        assert main(["track", "--once", "--rpc-url", twin.url, "--json"]) == 0
    summary = capsys.readouterr().out
    assert '"wallets": 1' in summary and '"wallet_errors": 0' in summary


def test_track_once_on_a_world_older_than_the_backfill_window_says_so_and_how_to_widen_it(
    ray_session,
    world: World,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A twin world starts on 2025-03-01: with the default 30-day backfill, first sight finds no
    signature in the window. Storing 0 swaps without a word was the trap; the note names the
    setting, and the option it names does read the history back."""
    import json
    import re

    from kolray.cli import main

    wallets = [str(w) for w in world.kols().wallet[:2]]
    trades = world.trades()
    expected = int(trades.wallet.isin(wallets).sum())
    assert expected > 0
    with start_server(world, rps=None) as twin:
        for wallet in wallets:
            assert main(["kols", "add", wallet]) == 0
        capsys.readouterr()
        assert main(["track", "--once", "--rpc-url", twin.url]) == 0
        first = capsys.readouterr()
        assert re.search(r"│ swaps stored +│ 0 +│", first.out), first.out
        assert "2 wallets have transactions, but none in the first-sight backfill window" in first.err
        assert "KOLRAY_BACKFILL_DAYS" in first.err and "--backfill-days" in first.err
        assert "0 swaps stored: of 2 wallets, 2 with history only before the backfill window" in first.err

        args = ["track", "--once", "--rpc-url", twin.url, "--json", "--backfill-days", "100000"]
        assert main([*args, "--backfill-max-signatures", "1000000"]) == 0
        second = capsys.readouterr()
    summary = json.loads(second.out)
    assert (summary["swaps"], summary["wallets_outside_backfill"]) == (expected, 0)
    assert "backfill" not in second.err
