"""Backtests on the market tape beside the trades tape, through the database: by hand on the world of
test_backtest.py (its module docstring gives the execution and the arithmetic), on a chain-twin
world against the twin's true prices, and through ``kolray backtest --tape``.

The market tape here is stored with :func:`kolray.market.store.store_tape`, as the market stage
stores it: by hand for the hand world, and for the twin world its true tape
(:mod:`kolray.testing.backtest_twin`), a stand-in for what the market stage records from the
twin's accounts (the stage itself is held to the twin's price within 3e-9 by test_market.py and
bench/market.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from kolray.backtest import BacktestError, BacktestOptions, Execution, StrategySpec, run_backtest
from kolray.cli import main
from kolray.db.tables import TapePointRow
from kolray.market.read import Gap, TapePoint
from kolray.market.store import store_tape
from kolray.sim.tapes import Tapes
from kolray.sim.world import World, generate_world, load_world
from kolray.testing import backtest_world as sample
from kolray.testing.backtest_twin import (
    SLIDE_STEP,
    database_with_world_positions,
    store_true_tape,
    true_price,
    write_twin_token_dataset,
)
from kolray.testing.backtest_world import END, HOUR, T

HAND = [StrategySpec.parse(s) for s in ("copy_all", "top_kols:1", "oracle:0.5")]


def point(mint: str, t: int, price: float) -> TapePoint:
    return TapePoint(
        mint=mint,
        slot=2 * t + 1,  # the hand world's swaps are at slot 2t: the market is read just after
        time=t,
        price_sol=price,
        market_cap_sol=price * 1e9,
        liquidity_sol=30.0,
        venue="pumpfun",
        graduated=False,
    )


def store_hand_market(engine, world: sample.HandWorld) -> None:
    """The market of M1 and M2 (none of M3: not a token the market stage could read).

    M1 runs to 3.9e-6 at T+20 min, between A's buy and A's first sell (3e-6 at T+1 h), a price no
    tracked wallet traded at; it is 1.25e-6 when a 30 s copy of A's buy fills (B paid 1.2e-6 at
    T+10). M2 is read until T+8 h, then lost (a gap) to the end of the data.
    """
    m1, m2 = world.mints["M1"], world.mints["M2"]
    points = [
        point(m1, T, 1e-6),
        point(m1, T + 20, 1.25e-6),
        point(m1, T + 1_200, 3.9e-6),
        point(m1, T + 1_800, 2.5e-6),
        point(m1, T + HOUR, 3e-6),
        point(m1, T + 2 * HOUR, 2e-6),
        point(m1, T + 3 * HOUR, 5e-7),
        point(m1, END + 60, 9e-6),  # after the end of the data: never seen
        point(m2, T + 5 * HOUR, 2e-6),
        point(m2, T + 5 * HOUR + 60, 2.2e-6),
    ]
    gaps = [Gap(mint=m2, slot=2 * (T + 8 * HOUR) + 1, time=T + 8 * HOUR, reason="graduated, but no pool")]
    store_tape(engine, points, gaps)


@pytest.fixture
def hand(db, tmp_path: Path) -> tuple[str, str, str, sample.HandWorld]:
    world = sample.populate(db)
    store = str(tmp_path / "store")
    version = sample.write_token_dataset(db, world, store)
    store_hand_market(db, world)
    return db.url.render_as_string(hide_password=False), store, version, world


def test_the_market_tape_beside_the_trades_tape_by_hand(hand) -> None:
    url, store, version, _ = hand
    report = run_backtest(
        BacktestOptions(strategies=HAND, dataset_version=version, execution=Execution(take_profit=3.0)),
        database_url=url,
        storage_uri=store,
    ).report
    # Both tapes by default, the market's first; the same decisions on each.
    assert report.tape == "market" and report.tapes == ["market", "trades"]
    assert [s.name for s in report.other_tapes["trades"]] == [s.name for s in report.strategies]

    # The market tape prices M1 and M2, not M3: A's M3 buy is never copied on it, and says so.
    market = report.coverage["market"]
    assert (market.tokens, market.tokens_priced, market.signals_unpriced) == (3, 2, 1)
    assert (market.points, market.gaps) == (9, 1)  # the point after the end of the data is left out
    assert report.coverage["trades"].signals_unpriced == 0
    assert any("1 signals are never copied on it" in note for note in report.notes)

    tokens_1 = 0.99 / (1.01 * 1.25e-6)  # A's M1 buy copied at T+30 at the market's 1.25e-6
    # 3.9e-6 ≥ 3 × 1.2625e-6 at T+20 min: take-profit, sold at T+20 min+30 s at 3.9e-6.
    take_profit_1 = tokens_1 * 3.9e-6 * 0.99**2 - 1 - 2 * 0.0005
    # C's M2 copy (2e-6 at T+5 h+30) is still held when the data ends in the gap: valued at 2.2e-6,
    # the last price before it.
    held_2 = 0.99 / (1.01 * 2e-6) * 2.2e-6 * 0.99**2 - 1 - 2 * 0.0005
    on_market = report.strategy("copy_all").metrics
    assert (on_market.trades, on_market.skipped_held, on_market.skipped_unfillable) == (2, 1, 1)
    assert on_market.exits == {"take_profit": 1, "end": 1} and on_market.gap_fills == 1
    assert on_market.total_pnl_sol == pytest.approx(take_profit_1 + held_2, rel=1e-9)

    # On the trades tape the take-profit never triggers (3e-6 < 3 × 1.212e-6): the copies exit with
    # the KOLs, as in test_backtest.py.
    tokens_t = 0.99 / (1.01 * 1.2e-6)
    pnl_1 = tokens_t * (0.5 * 3e-6 + 0.5 * 2e-6) * 0.99**2 - 1 - 3 * 0.0005
    pnl_3 = 0.99 / (1.01 * 2e-6) * 2e-6 * 0.99**2 - 1 - 2 * 0.0005
    pnl_4 = 0.99 / (1.01 * 1e-6) * 4e-7 * 0.99**2 - 1 - 2 * 0.0005
    on_trades = report.strategy("copy_all", tape="trades").metrics
    assert on_trades.trades == 3 and on_trades.exits == {"kol": 2, "end": 1} and on_trades.gap_fills == 0
    assert on_trades.total_pnl_sol == pytest.approx(pnl_1 + pnl_3 + pnl_4, rel=1e-9)
    with pytest.raises(KeyError, match="did not run on the nope tape"):
        report.strategy("copy_all", tape="nope")

    # One tape when asked: the trades tape alone is the report as before the market tape.
    trades_only = run_backtest(
        BacktestOptions(
            strategies=HAND, dataset_version=version, execution=Execution(take_profit=3.0), tape="trades"
        ),
        database_url=url,
        storage_uri=store,
    ).report
    assert trades_only.tape == "trades" and trades_only.other_tapes == {}
    assert trades_only.strategy("copy_all").metrics == on_trades
    market_only = run_backtest(
        BacktestOptions(
            strategies=HAND, dataset_version=version, execution=Execution(take_profit=3.0), tape="market"
        ),
        database_url=url,
        storage_uri=store,
    ).report
    assert market_only.tapes == ["market"] and market_only.strategy("copy_all").metrics == on_market


def test_without_a_market_tape_the_default_is_the_trades_tape_and_says_why(db, tmp_path: Path) -> None:
    world = sample.populate(db)
    store = str(tmp_path / "store")
    version = sample.write_token_dataset(db, world, store)
    # A tape that only has gaps, or only prices after the end of the data, prices nothing.
    store_tape(
        db,
        [point(world.mints["M1"], END, 1e-6)],
        [Gap(mint=world.mints["M2"], slot=1, time=T, reason="no pump.fun bonding curve for this mint")],
    )
    url = db.url.render_as_string(hide_password=False)
    report = run_backtest(
        BacktestOptions(strategies=HAND, dataset_version=version), database_url=url, storage_uri=store
    ).report
    assert report.tapes == ["trades"] and list(report.coverage) == ["trades"]
    assert any(note.startswith("No market tape") and "trades tape only" in note for note in report.notes)
    for choice in ("market", "both"):
        with pytest.raises(BacktestError, match=f"--tape {choice}: no market tape.*--tape trades"):
            run_backtest(
                BacktestOptions(strategies=HAND, dataset_version=version, tape=choice),  # type: ignore[arg-type]
                database_url=url,
                storage_uri=store,
            )


# A chain-twin world, against its true prices


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> World:
    directory = tmp_path_factory.mktemp("twin") / "world"
    generate_world(directory, kols=14, days=8, seed=11)
    return load_world(directory)


def test_on_a_twin_world_market_fills_are_the_true_price_and_rules_see_its_path(db, twin, tmp_path) -> None:
    url = db.url.render_as_string(hide_password=False)
    engine = database_with_world_positions(url, twin)
    store = str(tmp_path / "store")
    version = write_twin_token_dataset(engine, twin, store)
    stored = store_true_tape(engine, twin)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(TapePointRow)) == stored > 0

    execution = Execution(take_profit=2.0, stop_loss=0.5)
    run = run_backtest(
        BacktestOptions(
            strategies=[StrategySpec.parse("copy_all"), StrategySpec.parse("oracle:0.2")],
            dataset_version=version,
            execution=execution,
        ),
        database_url=url,
        storage_uri=store,
    )
    report = run.report
    assert report.tape == "market" and report.coverage["market"].signals_unpriced == 0
    on_market = report.strategy("copy_all").metrics
    on_trades = report.strategy("copy_all", tape="trades").metrics
    assert on_market.trades > 50 and on_trades.trades > 50

    tapes = twin.tapes()
    copies = [t for t in run.trades["copy_all"] if t["tape"] == "market"]
    assert len(copies) == on_market.trades
    exact, missed, false_triggers = 0, [], []
    for copy in copies:
        mint, entry, fill_in = (
            copy["mint"],
            copy["entry_time"],
            copy["entry_price"] * (1 + execution.slippage),
        )
        # The entry fills at the twin's true price in the second of the fill (block times are whole
        # seconds; the stand-in stores a change at the first slot after it, and a dead token's slide
        # each SLIDE_STEP).
        low, high = true_span(tapes, mint, entry - 1, entry + 1)
        assert low * (1 - 1e-9) <= copy["entry_price"] <= high * math.exp(SLIDE_STEP) * (1 + 1e-9)
        exact += abs(copy["entry_price"] / true_price(tapes, mint, entry) - 1) < 1e-9
        if copy["exit_reason"] in ("take_profit", "stop_loss"):
            # A rule triggers only where the true path reached it...
            trigger = copy["exit_time"] - execution.delay_s
            low, high = true_span(tapes, mint, trigger - 1, trigger + 1)
            reached = (
                high >= 2.0 * fill_in / 1.001
                if copy["exit_reason"] == "take_profit"
                else low <= 0.5 * fill_in * 1.001
            )
            if not reached:
                false_triggers.append(copy)
        else:
            # ... and a copy that left otherwise never saw the true path cross 2x or 0.5x of its fill
            # at a change of the tape while it could still react.
            begin, stop = tapes.ranges[mint]
            times = tapes.time[begin:stop]
            window = times[(times > entry + 1) & (times <= copy["exit_time"] - execution.delay_s - 1)]
            prices = np.array([true_price(tapes, mint, t) for t in window], dtype=np.float64)
            if ((prices >= 2.0 * fill_in * 1.001) | (prices <= 0.5 * fill_in / 1.001)).any():
                missed.append(copy)
    assert exact / len(copies) > 0.75  # most at the very price of the fill's second (measured: 83%)
    assert missed == [] and false_triggers == []
    # The market tape sees the path between KOL trades: more copies reach a rule on it.
    ruled = lambda m: m.exits.get("take_profit", 0) + m.exits.get("stop_loss", 0)  # noqa: E731
    assert ruled(on_market) > ruled(on_trades)


def true_span(tapes: Tapes, mint: str, after: float, upto: float) -> tuple[float, float]:
    """The lowest and highest true price of ``mint`` over ``[after, upto]``: at both ends, at each
    change of its tape in between, and just before each (where a slide after a death bottoms)."""
    begin, stop = tapes.ranges[mint]
    times = tapes.time[begin:stop]
    inside = times[(times > after) & (times <= upto)]
    moments = [after, upto, *inside, *(inside - 1e-6)]
    prices = [p for p in (true_price(tapes, mint, t) for t in moments) if p is not None]
    return min(prices), max(prices)


# The command


@pytest.fixture
def cli_world(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, sample.HandWorld]:
    from kolray.config import get_settings
    from kolray.db import upgrade

    url = f"sqlite:///{data_dir / 'kolray.db'}"
    store = str(data_dir / "store")
    monkeypatch.setenv("KOLRAY_DATABASE_URL", url)
    monkeypatch.setenv("KOLRAY_STORAGE_URI", store)
    get_settings.cache_clear()
    engine = upgrade(url)
    world = sample.populate(engine)
    sample.write_token_dataset(engine, world, store)
    return url, world


def test_cli_prints_both_tapes_side_by_side(cli_world, capsys) -> None:
    url, world = cli_world
    args = ["backtest", "-s", "copy_all", "-s", "oracle:0.5", "--take-profit", "3", "--no-save"]
    # No market tape yet: the trades tape, and a line that says why.
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fills on the trades tape" in printed and "note: No market tape" in printed
    assert main([*args, "--tape", "market"]) == 1
    assert "--tape market: no market tape" in capsys.readouterr().err

    from kolray.db import upgrade

    store_hand_market(upgrade(url), world)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fills on the market and trades tapes, side by side" in printed
    assert "market tape: 9 prices of 2 of the signals' 3 tokens, 1 gaps; 1 signals" in printed
    assert "| strategy   | tape   |" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| copy_all")]
    assert [row.split("|")[2].strip() for row in rows] == ["market", "trades"]

    assert main([*args, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["tape"] == "market" and list(body["other_tapes"]) == ["trades"]
    assert body["coverage"]["market"]["signals_unpriced"] == 1
    assert body["strategies"][0]["metrics"]["exits"] == {"take_profit": 1, "end": 1}

    assert main([*args, "--tape", "trades"]) == 0
    printed = capsys.readouterr().out
    assert "fills on the trades tape" in printed and "| market" not in printed
    assert main([*args, "--tape", "sideways"]) == 2
    assert "--tape" in capsys.readouterr().err


def test_a_report_saved_before_the_market_tape_still_loads_as_a_trades_tape_report(hand) -> None:
    from kolray.backtest import BacktestReport, table_rows, tapes_table_rows

    url, store, version, _ = hand
    report = run_backtest(
        BacktestOptions(strategies=HAND, dataset_version=version, tape="trades"),
        database_url=url,
        storage_uri=store,
    ).report
    # The fields older reports lack: the tape, the other tapes, the coverage and gap fills.
    body = report.model_dump(mode="json")
    for field in ("tape", "other_tapes", "coverage"):
        body.pop(field)
    for result in body["strategies"]:
        result["metrics"].pop("gap_fills")
    old = BacktestReport.model_validate_json(json.dumps(body))
    assert old.tape == "trades" and old.tapes == ["trades"] and old.coverage == {}
    assert old.strategy("copy_all").metrics.gap_fills == 0
    # The API and the UI read its strategies, one row each; the paired table names their tape.
    assert [row[0] for row in table_rows(old)] == ["copy_all", "top_kols:1", "oracle:0.5"]
    assert [row[:2] for row in tapes_table_rows(old)] == [[s.name, "trades"] for s in old.strategies]
