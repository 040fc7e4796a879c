"""Tables the CLI prints never cut an address, a mint or a signature: piped (``| grep WALLET`` must
find it) or in a narrow terminal (other columns fold instead)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.table import Table
from solders.pubkey import Pubkey

from kolray.cli import main
from kolray.commands._common import CliConsole


def addresses(count: int, length: int = 44) -> list[str]:
    """Deterministic public keys whose base58 form is ``length`` characters (the longest kind)."""
    found = []
    seed = 0
    while len(found) < count:
        key = str(Pubkey.from_bytes(hashlib.sha256(f"kolray-{seed}".encode()).digest()))
        seed += 1
        if len(key) == length:
            found.append(key)
    return found


WALLETS = addresses(3)
SIGNATURE = "5" + "x" * 40 + "Q" * 47  # 88 base58 characters, as long as a signature gets


def kols_file(tmp_path: Path) -> Path:
    path = tmp_path / "kols.json"
    rows = [
        {
            "wallet": wallet,
            "name": f"a rather long display name for kol number {i}",
            "links": [f"https://x.com/some_long_handle_{i}", f"https://t.me/another_long_channel_{i}"],
        }
        for i, wallet in enumerate(WALLETS)
    ]
    path.write_text(json.dumps(rows))
    return path


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed CLI with stdout a pipe, as in ``kolray kols list | grep WALLET``."""
    return subprocess.run(
        [sys.executable, "-m", "kolray", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def cli_env(data_dir: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env["KOLRAY_DATA_DIR"] = str(data_dir)
    assert main(["kols", "import", str(kols_file(tmp_path))]) == 0
    return env


def test_kols_list_through_a_pipe_keeps_every_wallet_whole_on_one_line(cli_env: dict[str, str]) -> None:
    done = cli(["kols", "list"], cli_env)
    assert done.returncode == 0, done.stderr
    for i, wallet in enumerate(WALLETS):
        # What grep would print: the wallet's row, whole, with its name and links beside it.
        (line,) = [line for line in done.stdout.splitlines() if wallet in line]
        assert f"kol number {i}" in line and f"https://t.me/another_long_channel_{i}" in line
    assert "…" not in done.stdout


def test_kols_list_in_a_narrow_terminal_folds_other_columns_never_a_wallet(cli_env: dict[str, str]) -> None:
    # rich is told it writes to a 60-column terminal: the table cannot fit, something must give.
    done = cli(["kols", "list"], cli_env | {"TTY_COMPATIBLE": "1", "COLUMNS": "60", "NO_COLOR": "1"})
    assert done.returncode == 0, done.stderr
    for wallet in WALLETS:
        assert sum(wallet in line for line in done.stdout.splitlines()) == 1
    assert "…" not in done.stdout
    # The names wrapped at their spaces, word for word.
    words = done.stdout.split()
    assert all(word in words for word in ("a", "rather", "long", "display", "name", "for", "kol", "number"))


def test_kols_list_in_process_is_not_cut_to_80_columns(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["kols", "list"]) == 0
    output = capsys.readouterr().out
    for wallet in WALLETS:
        assert any(wallet in line for line in output.splitlines())
    assert "…" not in output


def render(table: Table, *, terminal: bool, width: int = 80) -> str:
    buffer = io.StringIO()
    console = CliConsole(file=buffer, force_terminal=terminal, width=width, color_system=None)
    console.print(table)
    return buffer.getvalue()


def alerts_like_table() -> Table:
    """Addresses inside free text (as ``kolray alerts list`` prints them), next to other columns."""
    table = Table("id", "time (UTC)", "rule", "alert", "delivered")
    for i, wallet in enumerate(WALLETS):
        table.add_row(
            str(i),
            "2025-03-01 12:00:00",
            "consensus",
            f"3 KOLs bought {WALLETS[(i + 1) % 3]} within 1h: {wallet} and two others; tx {SIGNATURE}",
            "1/1",
        )
    return table


@pytest.mark.parametrize(("terminal", "width"), [(False, 80), (True, 100), (True, 60), (True, 30)])
def test_addresses_inside_text_columns_stay_whole_at_any_width(terminal: bool, width: int) -> None:
    output = render(alerts_like_table(), terminal=terminal, width=width)
    lines = output.splitlines()
    for wallet in WALLETS:
        assert sum(wallet in line for line in lines) == 2, output  # once as a buyer, once as the mint
    assert sum(SIGNATURE in line for line in lines) == 3, output
    assert "…" not in output
    if not terminal:  # piped: one line per row, whatever the width rich guessed
        assert len([line for line in lines if "consensus" in line]) == 3


def test_a_table_that_fits_is_laid_out_as_before() -> None:
    table = Table("model", "version", "metric")
    table.add_row("token", "20250601T000000Z-0000abcd", "pr_auc=0.1234")
    output = render(table, terminal=True, width=100)
    assert max(map(len, output.splitlines())) < 60


def test_long_text_lines_on_a_pipe_are_not_wrapped() -> None:
    buffer = io.StringIO()
    console = CliConsole(file=buffer, force_terminal=False, width=80, color_system=None)
    console.print(f"warning: {SIGNATURE}: transaction could not be read, counted as malformed")
    assert len(buffer.getvalue().splitlines()) == 1
