"""``generate_world``: deterministic bytes, consistent ground truth, clear errors, bounded parts."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kolray.cli import main
from kolray.sim.positions import build_positions
from kolray.sim.world import WorldError, generate_world, load_world

SMALL = {"kols": 12, "days": 3.0, "seed": 5}


def digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("sim") / "world"
    generate_world(path, **SMALL)
    return load_world(path)


def test_same_seed_same_bytes_other_seed_other_world(tmp_path: Path, world) -> None:
    again = tmp_path / "again"
    generate_world(again, **SMALL)
    assert digest(again) == digest(world.path)
    other = tmp_path / "other"
    generate_world(other, **{**SMALL, "seed": 6})
    assert digest(other)["trades.parquet"] != digest(world.path)["trades.parquet"]
    assert set(load_world(other).kols().wallet).isdisjoint(world.kols().wallet)


def test_layout_and_summary(world) -> None:
    names = {p.name for p in world.path.iterdir()}
    assert {"world.json", "kols.parquet", "tokens.parquet", "trades.parquet", "positions.parquet",
            "kol_daily.parquet", "chain"} <= names  # fmt: skip
    meta = json.loads((world.path / "world.json").read_text())
    assert meta["format"] == 1 and meta["params"]["seed"] == SMALL["seed"]
    assert meta["summary"]["trades"] == len(world.trades()) > 0
    assert meta["summary"]["positions"] == len(world.positions())
    assert meta["first_slot"] <= meta["last_slot"]
    assert len(world.kols()) == SMALL["kols"]


def test_kol_wallets_are_real_keys_derived_from_the_seed(world) -> None:
    from kolray.sim import keys

    wallets = list(world.kols().sort_values("kol_index").wallet)
    assert wallets == [keys.kol_wallet(SMALL["seed"], i) for i in range(SMALL["kols"])]
    assert keys.kol_keypair(SMALL["seed"], 0).pubkey().__str__() == wallets[0]


def test_positions_are_the_shared_rules_applied_to_the_trades(world) -> None:
    trades = world.trades()
    rows = trades[trades.columns[:19]].to_dict("records")
    rebuilt, _ = build_positions(rows, cutoff=world.end)
    positions = world.positions()
    ours = pd.DataFrame(rebuilt).set_index("entry_signature").sort_index()
    stored = positions.set_index("entry_signature").sort_index()
    for column in ("wallet", "mint", "seq", "status", "cost_sol", "proceeds_sol", "fees_sol", "multiple",
                   "n_buys", "n_sells", "label_3x", "usable"):  # fmt: skip
        left, right = ours[column], stored[column]
        assert left.equals(right) or np.allclose(left.astype(float), right.astype(float), equal_nan=True), (
            column
        )
    assert trades.opens_position.sum() == len(positions)


def test_every_entry_has_an_oracle_and_latents(world) -> None:
    positions = world.positions()
    assert positions.oracle_p3x.between(0, 1).all()
    assert positions.kol_style.isin(["farmer", "scalper", "swing", "diamond"]).all()
    assert positions.outcome.isin(["closed", "abandoned", "open_at_end"]).all()
    # Abandoned bags and positions still running at the end stay open.
    assert (positions[positions.outcome != "closed"].status == "open").all()
    assert (positions.max_multiple_7d > 0).all()


def test_kol_daily_oracle_rates_cover_the_next_days(world) -> None:
    daily = world.kol_daily()
    positions = world.positions()
    row = daily[daily.n_next_7d > 0].iloc[0]
    window = positions[(positions.wallet == row.wallet) & (positions.entry_time >= row.day)
                       & (positions.entry_time < row.day + 7 * 86_400)]  # fmt: skip
    assert row.n_next_7d == len(window)
    assert math.isclose(row.oracle_rate_7d, window.oracle_p3x.mean())
    assert not daily.window_complete_30d.any()  # a 3-day world never completes a 30-day window


def test_trades_match_tokens_and_kols(world) -> None:
    trades = world.trades()
    assert set(trades.wallet) <= set(world.kols().wallet)
    assert set(trades.mint) <= set(world.tokens().mint)
    assert (trades.token_decimals == 6).all() and (trades.sol_amount > 0).all()
    assert set(trades.dex) <= {"pumpfun", "pumpswap", "raydium_amm_v4", "jupiter_v6"}


def test_many_kols_are_written_community_by_community(tmp_path: Path) -> None:
    summary = generate_world(tmp_path / "w", kols=7, days=1.0, seed=2, community_size=3)
    world = load_world(tmp_path / "w")
    assert world.meta["parts"] == ["part-00000", "part-00001", "part-00002"]
    assert summary["kols"] == 7 and len(world.kols()) == 7
    assert world.kols().community.tolist() == [0, 0, 0, 1, 1, 1, 2]
    # Communities simulated in parallel processes are appended in order: the same bytes.
    generate_world(tmp_path / "parallel", kols=7, days=1.0, seed=2, community_size=3, workers=2)
    assert digest(tmp_path / "parallel") == digest(tmp_path / "w")


def test_bad_input_is_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(WorldError, match="kols must be between"):
        generate_world(tmp_path / "a", kols=0)
    with pytest.raises(WorldError, match="days must be"):
        generate_world(tmp_path / "a", days=-1)
    with pytest.raises(WorldError, match="unknown world parameter"):
        generate_world(tmp_path / "a", kols=2, days=1, sigmaa=1)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(WorldError, match="not empty"):
        generate_world(busy, kols=2, days=1)
    with pytest.raises(WorldError, match="not a twin world"):
        generate_world(busy, kols=2, days=1, overwrite=True)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="not a twin world"):
        load_world(tmp_path / "nowhere")


def test_cli_generate_writes_a_world_and_reports_calibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    assert main(["sim", "generate", "--out", str(out), "--kols", "4", "--days", "1", "--seed", "9"]) == 0
    text = capsys.readouterr().out
    assert "world written to" in text and "calibration:" in text
    assert load_world(out).summary["kols"] == 4
    assert main(["sim", "generate", "--out", str(out), "--kols", "4", "--days", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["sim", "generate", "--out", str(tmp_path / "x"), "--kols", "-3"]) == 2
    assert "--kols must be at least 1" in capsys.readouterr().err


def test_cli_start_places_the_world_in_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    dated = tmp_path / "dated"
    assert (
        main(["sim", "generate", "--out", str(dated), "--kols", "2", "--days", "1", "--start", "2026-01-05"])
        == 0
    )
    assert load_world(dated).params.start == 1_767_571_200  # 2026-01-05T00:00:00Z
    recent = tmp_path / "recent"
    assert (
        main(["sim", "generate", "--out", str(recent), "--kols", "2", "--days", "2", "--start", "now"]) == 0
    )
    world = load_world(recent)
    # Ends now: its whole history lies inside the tracker's default first-sight backfill (30 days).
    assert abs(world.end - time.time()) < 120
    capsys.readouterr()
    assert main(["sim", "generate", "--out", str(tmp_path / "bad"), "--start", "yesterday-ish"]) == 2
    assert "--start must be an ISO-8601 date/time or 'now'" in capsys.readouterr().err
