"""The analyzer's database stage on SQLite and PostgreSQL: incremental runs equal a full rebuild."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from kolray.analyzer import (
    WINDOWS,
    AnalyzeBusy,
    analyze,
    analyzer_lock,
    build_positions,
    iter_wallet_positions,
    kol_stats,
)
from kolray.analyzer import stage as stage_module
from kolray.analyzer.outcomes import attach_outcomes, paths_from_swaps
from kolray.chain.types import Swap
from kolray.db.tables import KolStatRow, Meta, PositionRow, Run, SwapRow

SOL = 1_000_000_000
T0 = 1_700_000_000
DAY = 86_400
WALLETS = [f"Wallet{i}" + "1" * 37 for i in range(5)]
MINTS = [f"Mint{i}" + "1" * 39 for i in range(7)]
_counter = iter(range(10**9))


def swap(wallet: str, mint: str, side: str, tokens: int, lamports: int, t: int, **extra: Any) -> Swap:
    n = next(_counter)
    return Swap(
        signature=extra.pop("signature", f"sig{n:09d}"),
        slot=extra.pop("slot", t // 2),
        block_time=t,
        wallet=wallet,
        mint=mint,
        side=side,
        token_amount=tokens,
        token_decimals=6,
        sol_amount=lamports,
        dex=extra.pop("dex", "raydium"),
        **extra,
    )


def random_swaps(rng: random.Random, n: int, start: int, span: int) -> list[Swap]:
    """Trading that produces every case: re-entries, partial exits, dust, untracked sells,
    token-to-token legs, huge raw amounts, and swaps without a price."""
    swaps = []
    for _ in range(n):
        side = rng.choice(["buy", "buy", "sell", "sell", "sell"])
        tokens = rng.choice([1_000, 2_000, 999, 1, 5_000, 2**64 - 1])
        extra: dict[str, Any] = {"fee": rng.randint(0, 10_000), "tips": rng.choice([0, 0, 50_000])}
        if rng.random() < 0.05:
            extra.update(quote_mint="USDC", quote_amount=10**6)
            lamports = 0
        else:
            lamports = rng.choice([0, rng.randint(1, 5 * SOL)])
        if rng.random() < 0.3:
            extra["price_sol"] = rng.uniform(1e-6, 1.0)
        swaps.append(
            swap(
                rng.choice(WALLETS),
                rng.choice(MINTS),
                side,
                tokens,
                lamports,
                start + rng.randint(0, span),
                **extra,
            )
        )
    return swaps


def insert_swaps(engine, swaps: list[Swap]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(SwapRow), [s.to_dict() for s in swaps])


def tables(engine) -> tuple[list[dict], list[dict]]:
    """Positions and statistics without their surrogate ids, in key order."""
    pos_columns = [c for c in PositionRow.__table__.columns if c.name != "id"]
    with engine.connect() as conn:
        positions = [r._asdict() for r in conn.execute(select(*pos_columns))]
        stats = [
            r._asdict()
            for r in conn.execute(
                select(KolStatRow.wallet, KolStatRow.as_of, KolStatRow.window, KolStatRow.stats)
            )
        ]
    positions.sort(key=lambda r: (r["wallet"], r["mint"], r["seq"]))
    stats.sort(key=lambda r: (r["wallet"], r["window"]))
    return positions, stats


def stored_swaps(engine) -> list[Any]:
    columns = [c for c in SwapRow.__table__.columns if c.name not in ("id", "ingested_at")]
    with engine.connect() as conn:
        return conn.execute(select(*columns)).all()


def expected_tables(engine, as_of: int) -> tuple[list[dict], list[dict]]:
    """What the tables must hold, computed by the pure functions from every stored swap."""
    swaps = stored_swaps(engine)
    positions = build_positions(swaps)
    attach_outcomes(positions, paths_from_swaps(swaps))
    rows = sorted((p.to_row() for p in positions), key=lambda r: (r["wallet"], r["mint"], r["seq"]))
    stats = []
    for wallet in sorted({s.wallet for s in swaps}):
        mine = [p for p in positions if p.wallet == wallet]
        for window in WINDOWS:
            stats.append(
                {
                    "wallet": wallet,
                    "as_of": as_of,
                    "window": window,
                    "stats": kol_stats(mine, as_of, window).snapshot(),
                }
            )
    stats.sort(key=lambda r: (r["wallet"], r["window"]))
    return rows, stats


def assert_tables_equal(
    actual: tuple[list[dict], list[dict]], expected: tuple[list[dict], list[dict]]
) -> None:
    positions, stats = actual
    want_positions, want_stats = expected
    assert len(positions) == len(want_positions)
    for got, want in zip(positions, want_positions, strict=True):
        assert got == want, (got["wallet"], got["mint"], got["seq"])
    assert stats == want_stats


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny batches so that a test's few hundred swaps cross many batch boundaries."""
    monkeypatch.setattr(stage_module, "BATCH_SWAPS", 40)
    monkeypatch.setattr(stage_module, "BATCH_PAIRS", 7)
    monkeypatch.setattr(stage_module, "BATCH_WALLETS", 2)


@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_runs_equal_a_full_rebuild(db, seed: int, small_batches: None, monkeypatch) -> None:
    rng = random.Random(seed)
    history = random_swaps(rng, 500, T0, 60 * DAY)
    history.sort(key=lambda s: s.block_time)
    # Arrivals: in time order, in batches of varied size, with old swaps backfilled late into
    # every batch after the first.
    late = set(rng.sample(range(len(history)), 60))
    on_time = [s for i, s in enumerate(history) if i not in late]
    sizes = [120, 12, 90, 8, 60, 15]
    arrivals: list[list[Swap]] = []
    while on_time:
        size = sizes[len(arrivals) % len(sizes)]
        arrivals.append(on_time[:size])
        on_time = on_time[size:]
    for i in sorted(late):
        arrivals[rng.randrange(1, len(arrivals))].append(history[i])
    # Small batches rebuild (wallet, mint) pairs; big ones take the whole-wallet path.
    monkeypatch.setattr(stage_module, "MAX_PAIRS", 25)

    modes = []
    for batch in arrivals:
        insert_swaps(db, batch)
        summary = analyze(db)
        modes.append((summary.mode, summary.pairs is None))
        assert_tables_equal(tables(db), expected_tables(db, summary.as_of))
    assert modes[0] == ("full", True) and all(mode == "incremental" for mode, _ in modes[1:])
    assert any(whole for _, whole in modes[1:]) and any(not whole for _, whole in modes[1:])
    incremental = tables(db)
    # Read back per wallet, the positions are the pure function's, field for field.
    expected = build_positions(stored_swaps(db))
    attach_outcomes(expected, paths_from_swaps(stored_swaps(db)))
    streamed = [p for _, positions in iter_wallet_positions(db, batch_wallets=2) for p in positions]
    assert streamed == expected
    assert [w for w, _ in iter_wallet_positions(db, [WALLETS[1], WALLETS[0]])] == sorted(WALLETS[:2])
    rebuilt = analyze(db, full=True)
    assert rebuilt.mode == "full" and tables(db) == incremental
    # Nothing new: nothing to do, same tables.
    again = analyze(db)
    assert (again.wallets, again.swaps_read, again.stats_wallets) == (0, 0, 0) and tables(db) == incremental


def test_a_late_swap_rebuilds_only_its_pair(db) -> None:
    a, b = WALLETS[:2]
    insert_swaps(
        db,
        [
            swap(a, MINTS[0], "sell", 1_000, 3 * SOL, T0 + 500),  # nothing bought yet (as far as we know)
            swap(a, MINTS[1], "buy", 1_000, SOL, T0 + 100),
            swap(b, MINTS[0], "buy", 1_000, SOL, T0 + 200),
        ],
    )
    first = analyze(db)
    assert first.untracked_sells == 1
    with db.connect() as conn:
        assert (
            conn.scalar(select(PositionRow.id).where(PositionRow.wallet == a, PositionRow.mint == MINTS[0]))
            is None
        )
    insert_swaps(db, [swap(a, MINTS[0], "buy", 1_000, SOL, T0 + 50)])  # the backfill finds the buy
    second = analyze(db)
    assert (second.mode, second.wallets, second.pairs, second.swaps_read) == ("incremental", 1, 1, 2)
    assert second.untracked_sells == 0
    with db.connect() as conn:
        row = conn.execute(
            select(PositionRow.__table__).where(PositionRow.wallet == a, PositionRow.mint == MINTS[0])
        ).one()
    assert (row.status, row.multiple, row.entry_time, row.exit_time) == ("closed", 3.0, T0 + 50, T0 + 500)
    assert_tables_equal(tables(db), expected_tables(db, T0 + 501))


def test_windows_slide_for_wallets_without_new_swaps(db) -> None:
    quiet, busy = WALLETS[:2]
    insert_swaps(
        db,
        [
            swap(quiet, MINTS[0], "buy", 1_000, SOL, T0),
            swap(quiet, MINTS[0], "sell", 1_000, 4 * SOL, T0 + DAY),
            swap(busy, MINTS[1], "buy", 1_000, SOL, T0 + 2 * DAY),
        ],
    )
    analyze(db)
    with db.connect() as conn:
        stats = {
            r.window: r.stats
            for r in conn.execute(select(KolStatRow.__table__).where(KolStatRow.wallet == quiet))
        }
    assert stats["7d"]["closed"] == 1 and stats["7d"]["n_3x"] == 1
    # Only the busy wallet trades, 10 days later: the quiet wallet's 7d window empties all the same.
    insert_swaps(db, [swap(busy, MINTS[1], "sell", 1_000, SOL, T0 + 10 * DAY)])
    summary = analyze(db)
    assert summary.wallets == 1 and summary.stats_wallets == 2 and summary.as_of == T0 + 10 * DAY + 1
    with db.connect() as conn:
        rows = conn.execute(select(KolStatRow.__table__).where(KolStatRow.wallet == quiet)).all()
    stats = {r.window: r.stats for r in rows}
    assert {r.as_of for r in rows} == {T0 + 10 * DAY + 1}
    assert stats["7d"]["closed"] == 0 and stats["30d"]["closed"] == 1 and stats["all"]["n_3x"] == 1
    assert_tables_equal(tables(db), expected_tables(db, T0 + 10 * DAY + 1))
    # An explicit as-of, earlier or later, also moves every wallet's snapshot correctly.
    for as_of in (T0 + DAY, T0 + 40 * DAY):
        analyze(db, as_of=as_of)
        assert_tables_equal(tables(db), expected_tables(db, as_of))


def test_open_positions_are_marked_by_other_wallets_trades(db) -> None:
    holder, trader = WALLETS[:2]
    insert_swaps(db, [swap(holder, MINTS[0], "buy", 2_000_000, SOL, T0)])  # 0.5 SOL per token
    analyze(db)
    # Another wallet's round trip, last at 4 SOL per token: it leaves no open position of its own.
    insert_swaps(
        db,
        [
            swap(trader, MINTS[0], "buy", 1_000_000, 3 * SOL, T0 + 60),
            swap(trader, MINTS[0], "sell", 1_000_000, 4 * SOL, T0 + 70),
        ],
    )
    summary = analyze(db)
    assert summary.wallets == 1  # only the trader's positions were rebuilt...
    with db.connect() as conn:
        row = conn.execute(select(PositionRow.__table__).where(PositionRow.wallet == holder)).one()
    assert (row.last_price_sol, row.mark_time, row.unrealised_value_sol) == (
        4.0,
        T0 + 70,
        8.0,
    )  # ...yet marked
    assert_tables_equal(tables(db), expected_tables(db, T0 + 71))


def test_runs_meta_and_definition_changes(db, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = analyze(db)
    assert (empty.as_of, empty.wallets, empty.swap_watermark) == (None, 0, 0)
    insert_swaps(db, [swap(WALLETS[0], MINTS[0], "buy", 10, SOL, T0)])
    summary = analyze(db)
    with db.connect() as conn:
        runs = conn.execute(select(Run.__table__).where(Run.kind == "analyze").order_by(Run.id)).all()
        meta = conn.scalar(select(Meta.value).where(Meta.key == "analyzer"))
    assert [r.status for r in runs] == ["ok", "ok"] and runs[-1].id == summary.run_id
    assert runs[-1].summary["positions_written"] == 1 and runs[-1].finished_at is not None
    assert meta == {
        "version": stage_module.ANALYZER_VERSION,
        "swap_id": summary.swap_watermark,
        "tape_id": 0,  # no market tape read yet
        "as_of": T0 + 1,
        "data_as_of": T0 + 1,
        "complete": True,
    }
    monkeypatch.setattr(stage_module, "ANALYZER_VERSION", "next")
    changed = analyze(db)
    assert changed.mode == "full" and changed.reason.startswith("definitions changed")


def test_a_failed_run_is_recorded_and_moves_no_watermark(db, monkeypatch: pytest.MonkeyPatch) -> None:
    insert_swaps(db, [swap(WALLETS[0], MINTS[0], "buy", 10, SOL, T0)])

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(stage_module, "_write_stats", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        analyze(db)
    with db.connect() as conn:
        run = conn.execute(select(Run.__table__).order_by(Run.id.desc())).first()
        assert conn.scalar(select(Meta.value).where(Meta.key == "analyzer")) is None
        assert conn.scalar(select(PositionRow.id)) is None  # the batch rolled back whole
    assert run.status == "failed" and "disk on fire" in run.summary["error"]
    monkeypatch.undo()
    assert analyze(db).positions_written == 1


def test_after_a_run_dies_half_way_the_next_one_rebuilds_in_full(
    db, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_swaps(db, random_swaps(random.Random(5), 120, T0, 20 * DAY))
    analyze(db)
    insert_swaps(db, random_swaps(random.Random(6), 60, T0 + 10 * DAY, 30 * DAY))
    real = stage_module._rebuild_batch
    calls = []

    def dies_on_the_third_batch(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is stopped mid-run; two batches are committed
        real(*args, **kwargs)

    monkeypatch.setattr(stage_module, "_rebuild_batch", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        analyze(db)
    monkeypatch.undo()
    recovered = analyze(db)
    assert (recovered.mode, recovered.reason) == ("full", "the previous run did not finish")
    assert_tables_equal(tables(db), expected_tables(db, recovered.as_of))
    assert analyze(db).mode == "incremental"


def test_two_runs_at_once_are_refused(db) -> None:
    with analyzer_lock(db), pytest.raises(AnalyzeBusy, match="another kolray analyze"):
        analyze(db)


def test_edited_swaps_need_and_get_a_full_rebuild(db) -> None:
    insert_swaps(
        db, [swap(WALLETS[0], MINTS[0], "buy", 10, SOL, T0), swap(WALLETS[1], MINTS[1], "buy", 10, SOL, T0)]
    )
    analyze(db)
    with db.begin() as conn:  # a hand edit: swaps are append-only, so only --full sees it
        conn.execute(update(SwapRow).where(SwapRow.wallet == WALLETS[1]).values(wallet=WALLETS[2]))
    analyze(db, full=True)
    positions, stats = tables(db)
    assert {p["wallet"] for p in positions} == {s["wallet"] for s in stats} == {WALLETS[0], WALLETS[2]}


def test_a_swap_committed_late_under_a_lower_id_is_not_skipped(postgres_url: str) -> None:
    """PostgreSQL hands out ids before commit: id 1 can commit after id 2. The watermark must not
    pass id 1 while it is in flight, or no later run would ever look at it."""
    import threading

    from kolray.db.engine import make_engine
    from kolray.db.migrate import upgrade

    engine = upgrade(postgres_url)
    slow, fast = make_engine(postgres_url), make_engine(postgres_url)
    first = swap(WALLETS[0], MINTS[0], "buy", 1_000, SOL, T0)
    second = swap(WALLETS[1], MINTS[1], "buy", 1_000, SOL, T0 + 10)
    outcome: dict[str, Any] = {}
    with slow.connect() as in_flight:
        in_flight.begin()
        in_flight.execute(insert(SwapRow), [first.to_dict()])  # takes id 1, not committed yet
        insert_swaps(fast, [second])  # id 2, committed
        runner = threading.Thread(target=lambda: outcome.setdefault("summary", analyze(engine)))
        runner.start()
        runner.join(timeout=1.0)
        assert runner.is_alive(), "analyze must wait for the in-flight insert"
        in_flight.commit()
    runner.join(timeout=60)
    assert outcome["summary"].swap_watermark == 2 and outcome["summary"].swaps_read == 2
    analyze(engine)
    assert_tables_equal(tables(engine), expected_tables(engine, T0 + 11))
    slow.dispose()
    fast.dispose()
