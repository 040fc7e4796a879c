"""The command line: every contract command exists, bad input exits non-zero with one line and writes nothing."""

import json
from pathlib import Path

import pytest

from kolray.cli import main

GOOD = "AG27WXxPym3K73JFKtpRxwbMfnRnuPu5bn6juzcvq5rp"
CONTRACT_COMMANDS = [
    "sim",
    "kols",
    "track",
    "analyze",
    "features",
    "tune",
    "evaluate",
    "promote",
    "serve",
    "backtest",
    "demo",
]


def test_help_lists_the_contract_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in CONTRACT_COMMANDS:
        assert f" {command} " in text, command


@pytest.mark.parametrize("command", [*CONTRACT_COMMANDS, "status", "sim generate", "sim serve", "kols add"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command.split(), "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_kols_add_bad_wallet_fails_and_writes_nothing(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["kols", "add", "not-a-wallet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: invalid wallet address 'not-a-wallet'")
    assert len(err.splitlines()) == 1
    assert main(["kols", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_kols_add_import_list(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kols", "add", GOOD, "--name", "alpha"]) == 0
    path = tmp_path / "k.json"
    path.write_text(json.dumps([{"wallet": "7rhxnLV8C77o6d8oz26AgK8x8m5ePsdeRawjqvojbjnQ", "name": "beta"}]))
    assert main(["kols", "import", str(path)]) == 0
    capsys.readouterr()
    assert main(["kols", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["name"] for k in listed] == ["alpha", "beta"]


def test_kols_import_with_one_bad_row_writes_nothing(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k.csv"
    path.write_text(f"wallet,name\n{GOOD},ok\nbroken,bad\n")
    assert main(["kols", "import", str(path)]) == 2
    assert "row 2" in capsys.readouterr().err
    assert main(["kols", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_bad_setting_is_one_line_naming_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KOLRAY_RPC_RPS", "zero")
    assert main(["kols", "list"]) == 2
    assert "KOLRAY_RPC_RPS" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error() -> None:
    assert main(["frobnicate"]) == 2
