"""The analyzer on a chain-twin world: positions and realised multiples
equal the twin's ground truth exactly, through the pure function and through the database stage;
KOL statistics equal a direct computation from the ground truth.

Written against the twin's documented API (docs/chain-twin.md: ``generate_world(out, ...)``,
``load_world(dir)``) while ``kolray.sim`` was still being built. :func:`ground_truth` is the one
place that reads the twin's ground truth: adjust it there if the twin's shape differs.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from kolray.analyzer import (
    WINDOWS,
    KolStatsIndex,
    analyze,
    build_positions,
    iter_wallet_positions,
    kol_stats,
)
from kolray.analyzer.outcomes import attach_outcomes, paths_from_swaps
from kolray.chain.types import LAMPORTS_PER_SOL, Swap
from kolray.db.tables import SwapRow

SWAP_KEYS = [f for f in Swap.__dataclass_fields__]


def _records(table: Any) -> list[dict[str, Any]]:
    """Rows as dicts, from a list of mappings/objects or a pandas/pyarrow table."""
    if hasattr(table, "to_pylist"):  # pyarrow
        return table.to_pylist()
    if hasattr(table, "to_dict") and hasattr(table, "columns"):  # pandas
        return table.to_dict("records")
    rows = []
    for row in table:
        if isinstance(row, Mapping):
            rows.append(dict(row))
        elif hasattr(row, "to_dict"):
            rows.append(row.to_dict())
        else:
            rows.append({k: getattr(row, k) for k in dir(row) if not k.startswith("_")})
    return rows


def _missing_to_none(row: dict[str, Any]) -> dict[str, Any]:
    """Parquet → pandas gives NaN for a missing number (a swap without a quote leg, an open
    position's exit time): the analyzer's types say None."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


_INT_FIELDS = {
    "slot",
    "block_time",
    "token_amount",
    "token_decimals",
    "sol_amount",
    "fee",
    "rent",
    "tips",
    "quote_amount",
    "quote_decimals",
    "exit_time",
    "entry_time",
    "hold_s",
}


def _ints(row: dict[str, Any]) -> dict[str, Any]:
    return {k: int(v) if k in _INT_FIELDS and v is not None else v for k, v in row.items()}


def ground_truth(world: Any) -> tuple[list[Swap], list[dict[str, Any]]]:
    """The twin's ground-truth trades (as Swaps) and positions (docs/analysis.md field names)."""
    trades = _records(world.trades())
    positions = [_ints(_missing_to_none(row)) for row in _records(world.positions())]
    swaps = [
        Swap(**_ints(_missing_to_none({k: v for k, v in row.items() if k in SWAP_KEYS}))) for row in trades
    ]
    for row in positions:  # the twin writes flags as an array: compare as a list
        row["flags"] = list(row["flags"]) if row.get("flags") is not None else []
    return swaps, positions


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    sim = pytest.importorskip("kolray.sim")
    if not hasattr(sim, "generate_world"):
        pytest.skip("kolray.sim has no generate_world/load_world: the twin test cannot run")
    out = Path(tmp_path_factory.mktemp("twin"))
    sim.generate_world(out, kols=20, days=14, seed=11)  # ~1,600 positions, a few of them 3x
    return sim.load_world(out)


@pytest.fixture(scope="module")
def truth(world: Any) -> tuple[list[Swap], list[dict[str, Any]]]:
    swaps, positions = ground_truth(world)
    assert swaps and positions, "the twin world has no trades or positions"
    return swaps, positions


def _key(row: Mapping[str, Any]) -> tuple[str, str, int]:
    return (row["wallet"], row["mint"], int(row["seq"]))


def _lamports(row: Mapping[str, Any], name: str) -> int:
    """A SOL amount of a ground-truth position in lamports (from ``name_lamports`` or ``name_sol``)."""
    if row.get(f"{name}_lamports") is not None:
        return int(row[f"{name}_lamports"])
    return round(row[f"{name}_sol"] * LAMPORTS_PER_SOL)


def test_positions_and_multiples_equal_the_ground_truth(
    truth: tuple[list[Swap], list[dict[str, Any]]],
) -> None:
    swaps, expected = truth
    built = {(p.wallet, p.mint, p.seq): p for p in build_positions(swaps)}
    wanted = {_key(row): row for row in expected}
    assert built.keys() == wanted.keys()
    for key, row in wanted.items():
        p = built[key]
        assert p.status == row["status"], key
        assert (p.entry_time, p.exit_time) == (row["entry_time"], row.get("exit_time")), key
        assert p.cost_lamports == _lamports(row, "cost"), key
        assert p.proceeds_lamports == _lamports(row, "proceeds"), key
        assert p.multiple == row.get("multiple"), key  # exactly: the same integer sums, one division
        if "fees_sol" in row or "fees_lamports" in row:
            assert p.fees_lamports == _lamports(row, "fees"), key
        for name in ("tokens_bought", "tokens_sold", "n_buys", "n_sells", "hold_s", "hold_weighted_s"):
            if name in row and name == "hold_weighted_s" and None not in (p.hold_weighted_s, row[name]):
                # a float mean: the last bit may differ
                assert math.isclose(p.hold_weighted_s, row[name], rel_tol=1e-12), (key, name)
            elif name in row:  # the optional columns the twin records
                assert getattr(p, name) == row[name], (key, name)
        if "flags" in row:
            assert sorted(p.flags) == sorted(row["flags"] or []), key
    assert any(p.realised_3x for p in built.values()), "a twin world should have some 3x positions"


def test_the_database_stage_gives_the_same_positions(
    db, truth: tuple[list[Swap], list[dict[str, Any]]]
) -> None:
    swaps, _ = truth
    ordered = sorted(swaps, key=lambda s: (s.block_time, s.slot or 0, s.signature))
    half = len(ordered) // 2
    with db.begin() as conn:
        conn.execute(insert(SwapRow), [s.to_dict() for s in ordered[:half]])
    analyze(db)
    with db.begin() as conn:  # the rest arrives later, the oldest last (a backfill)
        conn.execute(insert(SwapRow), [s.to_dict() for s in reversed(ordered[half:])])
    analyze(db)
    stored = [p for _, positions in iter_wallet_positions(db) for p in positions]
    expected = build_positions(swaps)
    attach_outcomes(expected, paths_from_swaps(swaps))
    assert stored == expected


def _direct(rows: Iterable[Mapping[str, Any]], as_of: int, window: str) -> dict[str, Any]:
    """KOL statistics computed straight from ground-truth position records, independently of the
    analyzer's code: the definitions in docs/analysis.md "KOL statistics, point in time"."""
    span = WINDOWS[window]
    closed = [
        r
        for r in rows
        if r.get("exit_time") is not None
        and r["exit_time"] < as_of
        and (span is None or r["exit_time"] >= as_of - span)
    ]
    scored = [r for r in closed if r.get("multiple") is not None]
    multiples = [r["multiple"] for r in scored]
    pnl = [_lamports(r, "proceeds") - _lamports(r, "cost") - _lamports(r, "fees") for r in scored]
    n = len(scored)
    return {
        "closed": len(closed),
        "scored": n,
        "n_3x": sum(m >= 3 for m in multiples),
        "wins": sum(v > 0 for v in pnl),
        "rate_3x": sum(m >= 3 for m in multiples) / n if n else None,
        "mean_multiple": sum(multiples) / n if n else None,
        "median_multiple": statistics.median(multiples) if n else None,
        "total_pnl_sol": sum(pnl) / LAMPORTS_PER_SOL,
        "trades": sum(
            1 for r in rows if r["entry_time"] < as_of and (span is None or r["entry_time"] >= as_of - span)
        ),
    }


def test_kol_statistics_equal_a_direct_computation_from_the_ground_truth(
    truth: tuple[list[Swap], list[dict[str, Any]]],
) -> None:
    swaps, expected = truth
    by_wallet: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in expected:
        by_wallet[row["wallet"]].append(row)
    positions = defaultdict(list)
    for p in build_positions(swaps):
        positions[p.wallet].append(p)
    exits = sorted(r["exit_time"] for r in expected if r.get("exit_time") is not None)
    times = [exits[int(q * (len(exits) - 1))] + d for q in (0.1, 0.5, 0.9, 1.0) for d in (0, 1)]
    for wallet, rows in by_wallet.items():
        index = KolStatsIndex(positions[wallet], wallet=wallet)
        for as_of in times:
            for window in WINDOWS:
                want = _direct(rows, as_of, window)
                for got in (
                    kol_stats(positions[wallet], as_of, window, wallet=wallet),
                    index.at(as_of, window),
                ):
                    for name, value in want.items():
                        actual = getattr(got, name)
                        if isinstance(value, float):
                            assert actual is not None and math.isclose(
                                actual, value, rel_tol=1e-12, abs_tol=1e-12
                            ), (
                                wallet,
                                as_of,
                                window,
                                name,
                            )
                        else:
                            assert actual == value, (wallet, as_of, window, name)
