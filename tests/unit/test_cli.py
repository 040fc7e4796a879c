"""The command line: every contract command exists, bad input exits non-zero with one line and writes nothing."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kolray.cli import COMMANDS, load_command, main
from kolray.commands.tune import tune
from kolray.learn.tune import TuneOptions

ROOT = Path(__file__).resolve().parents[2]

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


@pytest.mark.parametrize(
    "command",
    [
        *CONTRACT_COMMANDS,
        "status",
        "pipeline",
        "train-continuous",
        "alerts",
        "sim generate",
        "sim serve",
        "kols add",
    ],
)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command.split(), "--help"]) == 0
    text = capsys.readouterr().out
    assert "Usage" in text and "--install-completion" not in text


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


def test_every_listed_command_loads_with_its_summary() -> None:
    for name, spec in COMMANDS.items():
        command = load_command(name)
        assert command.name == name and command.short_help == spec.summary
        assert command.help, name


def test_top_level_help_imports_no_stage() -> None:
    """``kolray --help`` lists the commands without importing them (nor Ray, torch, pandas)."""
    probe = (
        "import sys; from kolray.cli import main; code = main(['--help']); "
        "heavy = [m for m in ('ray', 'torch', 'pandas', 'sqlalchemy', 'kolray.commands.tune') if m in sys.modules]; "
        "print(code, heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout[-2000:] + done.stderr[-2000:]


def test_option_defaults_are_the_options_models() -> None:
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(tune).parameters.items()}
    assert defaults["trials"] == TuneOptions().trials
    assert defaults["max_epochs"] == TuneOptions().max_epochs
    assert defaults["keep"] == TuneOptions().keep


@pytest.mark.parametrize(
    "argv",
    [
        ["pipeline", "--models", "token,frob"],
        ["train-continuous", "--interval-hours", "0"],
        ["tune", "--model", "frob"],
    ],
)
def test_bad_options_of_the_job_commands_exit_2(argv: list[str], data_dir: Path) -> None:
    assert main(argv) == 2


def test_every_job_is_the_command_line() -> None:
    """``jobs/*.py`` are thin: at most 20 lines, each hands its arguments to ``kolray.cli.main``
    with a command that exists."""
    jobs = sorted((ROOT / "jobs").glob("*.py"))
    assert jobs
    for job in jobs:
        text = job.read_text()
        assert len(text.splitlines()) <= 20, job.name
        assert "from kolray.cli import main" in text, job.name
        command = text.split("main([", 1)[1].split(",", 1)[0].strip().strip("\"'")
        assert command in COMMANDS, (job.name, command)
