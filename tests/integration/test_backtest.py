"""Backtests through the database and the dataset format, checked by hand; the no-lookahead guard
with real registered models; ``kolray backtest``.

The world is :mod:`kolray.testing.backtest_world` (its docstring lists every trade). Execution: delay
30 s, slippage 1%, fee 1% per fill, 0.0005 SOL per transaction, stake 1 SOL. A copy paying the
observed price p holds 0.99 / (1.01 p) tokens; a sell of a share of them at p' returns
tokens × share × p' × 0.99².
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kolray import storage
from kolray.backtest import (
    BacktestError,
    BacktestOptions,
    Execution,
    LookaheadError,
    StrategySpec,
    list_reports,
    load_report,
    run_backtest,
    save_report,
)
from kolray.cli import main
from kolray.learn import registry
from kolray.testing import backtest_world as sample
from kolray.testing.backtest_world import HOUR, T

DAY = 86_400
HAND = [StrategySpec.parse(s) for s in ("copy_all", "top_kols:1", "oracle:0.5")]


def url_of(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def hand(db, tmp_path: Path) -> tuple[str, str, str, sample.HandWorld]:
    """(database URL, storage URI, dataset version, world)."""
    world = sample.populate(db)
    store = str(tmp_path / "store")
    version = sample.write_token_dataset(db, world, store)
    return url_of(db), store, version, world


def run(hand, strategies=HAND, **options):
    url, store, version, _ = hand
    return run_backtest(
        BacktestOptions(strategies=strategies, dataset_version=version, **options),
        database_url=url,
        storage_uri=store,
    )


# What each copy makes, by hand (see the module docstring and kolray.testing.backtest_world).
TOKENS_1 = 0.99 / (1.01 * 1.2e-6)  # A's M1 buy copied 30 s late, after B paid 1.2e-6 at T+10
PNL_1 = TOKENS_1 * (0.5 * 3e-6 + 0.5 * 2e-6) * 0.99**2 - 1 - 3 * 0.0005  # half at 3e-6, rest at 2e-6
PNL_3 = 0.99 / (1.01 * 2e-6) * 2e-6 * 0.99**2 - 1 - 2 * 0.0005  # C still holds: valued at 2e-6 at the end
PNL_4 = 0.99 / (1.01 * 1e-6) * 4e-7 * 0.99**2 - 1 - 2 * 0.0005  # A's close at 4e-7 (D's 4.5e-7 is earlier)


def test_hand_computed_backtest(hand) -> None:
    report = run(hand).report
    assert report.signals == 4 and report.dropped == {}
    assert (report.period_start, report.period_end) == (T, T + 10 * HOUR)

    copy_all = report.strategy("copy_all").metrics
    # B's M1 buy (T+10) comes while the copy of A's M1 is open until T+2h+30: skipped.
    assert (copy_all.selected, copy_all.trades, copy_all.skipped_held) == (4, 3, 1)
    assert copy_all.total_pnl_sol == pytest.approx(PNL_1 + PNL_3 + PNL_4, rel=1e-9)
    assert pytest.approx(0.9999418, abs=1e-7) == PNL_1 and pytest.approx(-0.6167232, abs=1e-7) == PNL_4
    assert copy_all.hit_rate == pytest.approx(1 / 3) and copy_all.hits_3x == 0 and copy_all.kol_3x == 0
    assert copy_all.return_per_trade == pytest.approx((PNL_1 + PNL_3 + PNL_4) / 3, rel=1e-9)
    # The copies of C's M2 (T+5h+30 → end) and A's M3 (T+6h+30 → T+6h+630) overlap: 2 SOL at peak,
    # paid partly with what the M1 copy brought back: the capital needed is 2 − PNL_1.
    capital = 2 - PNL_1
    assert copy_all.peak_deployed_sol == 2 and copy_all.capital_sol == pytest.approx(capital, rel=1e-9)
    assert copy_all.total_return == pytest.approx((PNL_1 + PNL_3 + PNL_4) / capital, rel=1e-9)
    # Equity: capital → capital + PNL_1 = 2 (T+2h+30) → + PNL_4 → + PNL_3: the fall from that peak.
    assert copy_all.max_drawdown == pytest.approx(-(PNL_4 + PNL_3) / 2, rel=1e-9)
    assert copy_all.max_drawdown_sol == pytest.approx(-(PNL_4 + PNL_3), rel=1e-9)
    # Open [T+30, T+2h+30] and [T+5h+30, T+10h] out of 10 hours.
    assert copy_all.exposure == pytest.approx((2 * HOUR + (5 * HOUR - 30)) / (10 * HOUR))
    assert copy_all.exits == {"kol": 2, "end": 1}

    # A and B have five closed positions before their buys (C two): A ranks first, B second.
    top = report.strategy("top_kols:1").metrics
    assert top.trades == 2 and top.total_pnl_sol == pytest.approx(PNL_1 + PNL_4, rel=1e-9)
    # Oracle ≥ 0.5: only A's M1 buy (0.6).
    oracle = report.strategy("oracle").metrics
    assert oracle.trades == 1 and oracle.total_pnl_sol == pytest.approx(PNL_1, rel=1e-9)
    assert report.strategy("oracle").threshold == 0.5
    # Equity curves start at the capital and end at capital + total PnL.
    curve = report.strategy("copy_all").equity
    assert curve[0] == (T, pytest.approx(capital)) and curve[-1][1] == pytest.approx(
        capital + copy_all.total_pnl_sol
    )
    assert run(hand).png[:8] == b"\x89PNG\r\n\x1a\n"


def test_exit_rules_by_hand(hand) -> None:
    report = run(hand, execution=Execution(take_profit=2.0, stop_loss=0.5)).report
    m = report.strategy("copy_all").metrics
    assert m.exits == {"take_profit": 1, "stop_loss": 1, "end": 1}
    # M1: A's half sale at 3e-6 (T+1h) is ≥ 2 × 1.212e-6: everything sells at 3e-6 at T+1h+30
    # (the KOL's half first, then the rest: three transactions).
    tp = TOKENS_1 * 3e-6 * 0.99**2 - 1 - 3 * 0.0005
    # M3: D's untracked sale at 4.5e-7 (T+6h+300) is ≤ 0.5 × 1.01e-6: sold at 4.5e-7 at T+6h+330.
    sl = 0.99 / (1.01 * 1e-6) * 4.5e-7 * 0.99**2 - 1 - 2 * 0.0005
    assert m.total_pnl_sol == pytest.approx(tp + sl + PNL_3, rel=1e-9)
    held = run(hand, execution=Execution(max_hold_s=1800)).report.strategy("copy_all").metrics
    # Max hold 30 min: M1 sells at T+1830 at B's 1.2e-6; M2 at T+5h+1830 at 2e-6; M3's KOL exit
    # (T+6h+630) comes first.
    mh_1 = TOKENS_1 * 1.2e-6 * 0.99**2 - 1 - 2 * 0.0005
    assert held.exits == {"max_hold": 2, "kol": 1}
    assert held.total_pnl_sol == pytest.approx(mh_1 + PNL_3 + PNL_4, rel=1e-9)


def test_default_strategies_skip_what_cannot_run_explicit_ones_fail(hand) -> None:
    report = run(hand, strategies=BacktestOptions().strategies).report
    assert [s.name for s in report.strategies] == ["copy_all", "top_kols:10", "oracle:0.5"]
    assert "no champion token model" in report.skipped["model"]
    # Without a model threshold: the top 5% of the history's oracle values (0.5: A's buys).
    assert "no model threshold" in (report.strategy("oracle").note or "")
    assert report.strategy("oracle").threshold == 0.5
    with pytest.raises(BacktestError, match="no champion token model"):
        run(hand, strategies=[StrategySpec.parse("model")])


def test_a_dataset_from_another_database_is_refused(hand, tmp_path: Path) -> None:
    from kolray.db import upgrade

    other = upgrade(f"sqlite:///{tmp_path / 'other.db'}")
    _, store, version, _ = hand
    with pytest.raises(BacktestError, match="another database"):
        run_backtest(BacktestOptions(dataset_version=version), database_url=url_of(other), storage_uri=store)
    with pytest.raises(BacktestError, match="not found"):
        run_backtest(
            BacktestOptions(dataset_version="20990101T000000Z-00000000"),
            database_url=url_of(other),
            storage_uri=store,
        )


# The no-lookahead guard, with real models trained and registered on datasets of chosen periods


def train_model(store: str, first: int, days: float, *, plan: bool) -> tuple[str, str]:
    """A small token model trained on a synthetic dataset of buys from ``first`` over ``days``
    (60/20/20 by time, 1 h embargo); the dataset records its split plan when ``plan``. Returns
    (model version, dataset version)."""
    import torch

    from kolray.datasets import load_dataset, write_dataset
    from kolray.features import TOKEN_FEATURES
    from kolray.learn.train import TokenTrainConfig, token_arrays, train_token_model

    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    n = 600
    times = np.sort(rng.integers(first, first + int(days * DAY), n)).astype(np.int64)
    x = rng.normal(size=(n, len(TOKEN_FEATURES))).astype(np.float32)
    label = (rng.random(n) < 1 / (1 + np.exp(-(2 * x[:, 1] - 1.5)))).astype(np.int8)
    frame = pd.DataFrame(x, columns=TOKEN_FEATURES)
    frame.insert(0, "wallet", [f"w{i % 9}" for i in range(n)])
    frame.insert(1, "mint", [f"m{i}" for i in range(n)])
    frame.insert(2, "entry_time", times)
    frame.insert(3, "entry_signature", [f"sig{i}" for i in range(n)])
    frame["label_3x"], frame["multiple"], frame["oracle_p3x"] = label, np.where(label, 4.0, 0.5), np.nan
    span = int(days * DAY)
    val_start, test_start = first + int(0.6 * span), first + int(0.8 * span)
    splits = {
        "train": frame[times < val_start - HOUR],
        "val": frame[(times >= val_start) & (times < test_start - HOUR)],
        "test": frame[times >= test_start],
    }
    manifest = write_dataset(
        "token",
        {k: v.reset_index(drop=True) for k, v in splits.items()},
        feature_columns=list(TOKEN_FEATURES),
        label_columns=["label_3x"],
        id_columns=["wallet", "mint", "entry_time", "entry_signature"],
        eval_only_columns=["multiple", "oracle_p3x"],
        time_column="entry_time",
        horizon_s=DAY,
        embargo_s=HOUR,
        source={"split_plan": {"val_start": val_start, "test_start": test_start, "embargo_s": HOUR}}
        if plan
        else {},
        storage_uri=store,
    )
    ds = load_dataset("token", manifest.version, store)
    model, _ = train_token_model(
        token_arrays(ds), TokenTrainConfig(widths=[8], max_epochs=2, seed=0, device="cpu")
    )
    meta = registry.register(model, dataset_version=ds.version, storage_uri=store)
    return meta.version, ds.version


@pytest.fixture
def sqlite_hand(tmp_path: Path) -> tuple[str, str, str, sample.HandWorld]:
    from kolray.db import upgrade

    engine = upgrade(f"sqlite:///{tmp_path / 'hand.db'}")
    world = sample.populate(engine)
    store = str(tmp_path / "store")
    return url_of(engine), store, sample.write_token_dataset(engine, world, store), world


def test_no_lookahead_guard(sqlite_hand) -> None:
    url, store, version, _ = sqlite_hand
    model_only = [StrategySpec.parse("model:0")]

    def backtest(model: str, allow: bool = False):
        return run_backtest(
            BacktestOptions(
                strategies=model_only, dataset_version=version, model_version=model, allow_lookahead=allow
            ),
            database_url=url,
            storage_uri=store,
        ).report

    # Trained on buys from T − 40 days to T − 10 days: its test split (and everything it used)
    # starts before T, the backtest's first signal. Walk-forward.
    early, early_ds = train_model(store, T - 40 * DAY, 30, plan=True)
    report = backtest(early)
    assert report.model is not None and report.model.walk_forward and report.model.signals_before == 0
    assert report.model.trained_through == T - 40 * DAY + int(0.8 * 30 * DAY)
    assert report.model.dataset_version == early_ds and not report.model.same_dataset
    assert report.notes[0].startswith("walk-forward") and report.strategies[0].metrics.trades == 3

    # Trained on buys from T − 10 days to T + 20 days: it saw the replayed period. Refused...
    late, _ = train_model(store, T - 10 * DAY, 30, plan=True)
    with pytest.raises(LookaheadError, match=r"LOOKAHEAD.*after 4 of 4 signals"):
        backtest(late)
    # ... or run and flagged, in the model check, the notes and the strategy itself.
    flagged = backtest(late, allow=True)
    assert flagged.model is not None and not flagged.model.walk_forward and flagged.model.signals_before == 4
    assert flagged.notes[0].startswith("LOOKAHEAD") and flagged.strategies[0].note.startswith("LOOKAHEAD")

    # A dataset without a split plan: its last validation entry plus the horizon bounds what the
    # model knew. Ending 3 days before T it is clean; ending after T it is not.
    clean, _ = train_model(store, T - 33 * DAY, 30, plan=False)
    assert backtest(clean).model.walk_forward
    leaky, leaky_ds = train_model(store, T - 20 * DAY, 30, plan=False)
    with pytest.raises(LookaheadError, match="LOOKAHEAD"):
        backtest(leaky)

    # The model's dataset is gone: nothing can be verified, so it is refused too.
    storage.remove(storage.join(store, "datasets", "token", leaky_ds))
    with pytest.raises(LookaheadError, match="NOT VERIFIED"):
        backtest(leaky)


def test_model_strategy_scores_the_dataset_rows(sqlite_hand) -> None:
    url, store, version, _ = sqlite_hand
    early, _ = train_model(store, T - 40 * DAY, 30, plan=True)
    registry.promote("token", early, reason="test", storage_uri=store)
    from kolray.datasets import load_dataset

    rows = load_dataset("token", version, store).test
    model = registry.load_version("token", early, store)
    p = np.sort(model.predict_proba(rows[model.feature_columns]))
    threshold = float((p[1] + p[2]) / 2)  # two of the four buys are at or above it
    report = run_backtest(
        BacktestOptions(
            dataset_version=version,
            strategies=[StrategySpec.parse(f"model:{threshold}"), StrategySpec.parse("oracle")],
        ),
        database_url=url,
        storage_uri=store,
    ).report
    assert report.strategy("model").metrics.selected == 2
    # The oracle takes the model's threshold when none is given.
    assert report.strategy("oracle").threshold == pytest.approx(threshold)
    assert {t for t in report.notes if "same test split" in t} == set()  # the model's dataset is another


def test_reports_are_stored_and_listed(sqlite_hand) -> None:
    url, store, version, _ = sqlite_hand
    result = run_backtest(
        BacktestOptions(dataset_version=version, strategies=HAND), database_url=url, storage_uri=store
    )
    location = save_report(result.report, result.png, result.trades, store)
    assert list_reports(store) == [result.report.id]
    assert load_report(result.report.id, store) == result.report
    assert storage.read_bytes(storage.join(location, "equity.png"))[:4] == b"\x89PNG"
    lines = storage.read_bytes(storage.join(location, "trades.csv")).decode().splitlines()
    assert lines[0].startswith("strategy,wallet,mint") and len(lines) == 1 + 3 + 2 + 1
    with pytest.raises(FileNotFoundError, match="no backtest"):
        load_report("20990101T000000Z-00000000", store)


# The command


@pytest.fixture
def cli_world(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    from kolray.config import get_settings
    from kolray.db import upgrade

    url = f"sqlite:///{data_dir / 'kolray.db'}"
    store = str(data_dir / "store")
    monkeypatch.setenv("KOLRAY_DATABASE_URL", url)
    monkeypatch.setenv("KOLRAY_STORAGE_URI", store)
    get_settings.cache_clear()
    engine = upgrade(url)
    version = sample.write_token_dataset(engine, sample.populate(engine), store)
    return store, version


def test_cli_prints_the_table_and_stores_the_report(cli_world, capsys, tmp_path: Path) -> None:
    store, _ = cli_world
    assert (
        main(
            [
                "backtest",
                "-s",
                "copy_all",
                "-s",
                "top_kols:1",
                "-s",
                "oracle:0.5",
                "--out",
                str(tmp_path / "bt"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| strategy" in printed and "| copy_all" in printed and "| oracle:0.5" in printed
    assert "+0.34" in printed  # copy_all's total PnL, as computed by hand above
    assert len(list_reports(store)) == 1
    assert (tmp_path / "bt" / "equity.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["backtest", "--json", "--take-profit", "2", "--stop-loss", "0.5", "--no-save"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["saved_to"] is None and body["execution"]["take_profit"] == 2.0
    names = [s["name"] for s in body["strategies"]]
    assert names == ["copy_all", "top_kols:10", "oracle:0.5"] and "model" in body["skipped"]
    assert len(list_reports(store)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "everything"], "--strategy: unknown strategy"),
        (["--slippage-bps", "-5"], "--slippage-bps"),
        (["--stop-loss", "1.5"], "--stop-loss"),
        (["--max-hold-hours", "0"], "--max-hold-hours must be > 0"),
        (["-s", "model"], "no champion token model"),
        (["--dataset-version", "nope"], "dataset token/nope not found"),
    ],
)
def test_cli_bad_input_is_one_line(cli_world, capsys, args: list[str], message: str) -> None:
    code = main(["backtest", *args])
    # Progress lines may come first; the failure is one line, the last.
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert code in (1, 2) and errors == [err[-1]] and message in err[-1], err


def test_cli_refuses_lookahead(cli_world, capsys) -> None:
    store, _ = cli_world
    late, _ = train_model(store, T - 10 * DAY, 30, plan=True)
    registry.promote("token", late, reason="test", storage_uri=store)
    _, version = cli_world
    assert main(["backtest", "-s", "model:0", "--dataset-version", version]) == 1
    assert "LOOKAHEAD" in capsys.readouterr().err
    assert (
        main(["backtest", "-s", "model:0", "--dataset-version", version, "--allow-lookahead", "--no-save"])
        == 0
    )
    assert "note: LOOKAHEAD" in capsys.readouterr().out
