"""``kolray backtest --delays``: the same decisions replayed at each delay, on the hand-checked world
of test_backtest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from kolray.backtest import BacktestOptions, Execution, StrategySpec, delay_table_text, run_backtest
from kolray.testing import backtest_world as sample

STRATEGIES = [StrategySpec.parse(s) for s in ("copy_all", "top_kols:1")]


def test_each_delay_replays_the_same_decisions(db, tmp_path: Path) -> None:
    world = sample.populate(db)
    store = str(tmp_path / "store")
    version = sample.write_token_dataset(db, world, store)
    url = db.url.render_as_string(hide_password=False)

    def run(delays: list[int], delay_s: int = 30):
        options = BacktestOptions(
            strategies=STRATEGIES,
            dataset_version=version,
            delays_s=delays,
            execution=Execution(delay_s=delay_s),
        )
        return run_backtest(options, database_url=url, storage_uri=store).report

    report = run([300, 0, 30, 2, 10, 60, 30])
    assert set(report.by_delay) == {"copy_all", "top_kols:1"}
    for result in report.strategies:
        rows = report.by_delay[result.name]
        assert [r.delay_s for r in rows] == [0, 2, 10, 30, 60, 300]
        # The run's own delay (30 s) gives the run's own figures.
        assert rows[3].metrics == result.metrics
        # Each delay is a replay at that delay: the same as a run made with it.
        for row in rows:
            alone = run([], delay_s=row.delay_s).strategy(result.name).metrics
            assert row.metrics == alone
    assert report.by_delay["copy_all"][0].metrics != report.by_delay["copy_all"][-1].metrics
    table = delay_table_text(report)
    assert table.splitlines()[0].startswith("| return per trade") and "300 s" in table
    assert delay_table_text(run([])) == ""
    with pytest.raises(ValueError):
        BacktestOptions(delays_s=[-1])


@pytest.mark.parametrize("value", ["0,2,x", "-5,10"])
def test_cli_refuses_a_bad_delay_list_in_one_line(data_dir: Path, capsys, value: str) -> None:
    from kolray.cli import main

    assert main(["backtest", "--delays", value]) != 0
    err = capsys.readouterr().err
    assert "--delays" in err and "Traceback" not in err
