"""``kolray sim calibrate``: the real figures read from ../shared/market, the twin's beside them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kolray.cli import main
from kolray.sim.calibrate import (
    CALLS_FILE,
    FACTS_ENV,
    MarketFactsError,
    calibrate,
    market_facts_dir,
    real_market,
)
from kolray.sim.world import generate_world, load_world

SHARED_MARKET = Path(__file__).resolve().parents[3] / "shared" / "market"


def test_real_figures_are_facts_md_section_1() -> None:
    real = real_market(SHARED_MARKET)
    assert real.calls == 4898
    # FACTS.md §1: 38.9% / 23.9% / 12.4% / 5.2% / 0.3% reach 2x / 3x / 5x / 10x / 100x
    assert [round(real.peak_share[m] * 100, 1) for m in ("2", "3", "5", "10", "100")] == [
        38.9,
        23.9,
        12.4,
        5.2,
        0.3,
    ]
    # peak p50 / p75 / p90 / p95 / p99: 1.64 / 2.89 / 5.74 / 10.4 / 35.3 (quantile rules differ a little)
    expected = {"0.5": 1.64, "0.75": 2.89, "0.9": 5.74, "0.95": 10.4, "0.99": 35.3}
    for q, value in expected.items():
        assert real.peak_quantile[q] == pytest.approx(value, rel=0.03)
    assert real.mc_usd_p10 == pytest.approx(7419, rel=0.01) and real.mc_usd_p90 == pytest.approx(
        18830, rel=0.01
    )


def test_facts_dir_found_beside_the_repository_or_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FACTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # not under the repository: found from the package's own location
    assert market_facts_dir() == SHARED_MARKET
    monkeypatch.setenv(FACTS_ENV, str(tmp_path))
    with pytest.raises(MarketFactsError, match=f"has no {CALLS_FILE}"):
        market_facts_dir()
    (tmp_path / CALLS_FILE).write_text('{"mint": "m", "t": 1, "mc": 9000, "peak": 2.5}\n{"mint": "x"}\n')
    assert market_facts_dir() == tmp_path
    with pytest.raises(MarketFactsError, match=r":2: not a call \(t: Field required\)"):
        real_market()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("calibrate") / "world"
    generate_world(path, kols=10, days=3.0, seed=11)
    return load_world(path)


def test_the_table_has_a_row_per_figure_with_slice_and_tolerance(world) -> None:
    table = calibrate(world, facts_dir=SHARED_MARKET)
    figures = [r.figure for r in table.rows]
    for m in ("2", "3", "5", "10", "100"):
        assert f"P(peak ≥ {m}x)" in figures
    for q in (50, 75, 90, 95, 99):
        assert f"peak multiple p{q}" in figures
    assert "launches that graduate" in figures and "KOLs whose median hold is under 60 s (farmers)" in figures
    assert table.sol_usd == 124.0
    positions = world.positions()
    lo, hi = 7419 / 124, 18830 / 124
    for row in table.rows:
        assert row.slice and row.tolerance
        if row.twin is not None and row.low is not None and row.high is not None and row.n == 0:
            assert row.within == (row.low <= row.twin <= row.high)
    # The twin's peak shares are those of its pump.fun opening buys in the calls' market-cap range.
    sliced = positions[
        (positions.venue_at_entry == "pumpfun")
        & positions.market_cap_sol_at_entry.between(lo, hi, inclusive="both")
    ]
    share = next(r for r in table.rows if r.figure == "P(peak ≥ 2x)")
    assert share.twin == pytest.approx((sliced.max_multiple_7d >= 2).mean(), rel=0.05)
    assert share.n == sliced.mint.nunique()


def test_cli_prints_the_table_writes_world_json_and_json_for_machines(
    world, capsys: pytest.CaptureFixture[str]
) -> None:
    before = json.loads((world.path / "world.json").read_text())
    assert main(["sim", "calibrate", str(world.path), "--facts", str(SHARED_MARKET)]) == 0
    printed = capsys.readouterr().out
    assert "SOL/USD 124" in printed and "P(peak ≥ 3x)" in printed and "23.9%" in printed
    after = json.loads((world.path / "world.json").read_text())
    assert {k: v for k, v in after.items() if k != "calibration"} == before
    assert after["calibration"]["sol_usd"] == 124.0
    assert {r["figure"] for r in after["calibration"]["rows"]} >= {"P(peak ≥ 3x)", "launches that graduate"}
    assert main(["sim", "calibrate", str(world.path), "--json", "--facts", str(SHARED_MARKET)]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {"figure", "slice", "real", "twin", "tolerance", "within"} <= set(rows[0])


def test_cli_says_in_one_line_where_the_real_data_is_missing(
    world, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim", "calibrate", str(world.path), "--facts", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"has no {CALLS_FILE}" in err and len(err.strip().splitlines()) == 1
    assert main(["sim", "calibrate", str(tmp_path / "nope")]) == 2
    assert "not a twin world" in capsys.readouterr().err
