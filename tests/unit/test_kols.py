"""Wallet validation and KOL import: a bad wallet or file writes nothing."""

import json
from pathlib import Path

import pytest

from kolray.kols import (
    InvalidWallet,
    KolFileError,
    KolIn,
    list_kols,
    parse_kol_file,
    upsert_kols,
    validate_wallet,
)

GOOD = "AG27WXxPym3K73JFKtpRxwbMfnRnuPu5bn6juzcvq5rp"
GOOD2 = "7rhxnLV8C77o6d8oz26AgK8x8m5ePsdeRawjqvojbjnQ"


@pytest.mark.parametrize(
    ("wallet", "reason"),
    [
        ("", "empty"),
        ("abc", "not 32 bytes"),
        ("0OIl" * 11, "not base58"),
        (GOOD + "1", "not 32 bytes"),
        ("  ", "empty"),
    ],
)
def test_invalid_wallets_are_refused(wallet: str, reason: str) -> None:
    with pytest.raises(InvalidWallet, match=reason):
        validate_wallet(wallet)


def test_valid_wallet_is_returned_trimmed() -> None:
    assert validate_wallet(f"  {GOOD} ") == GOOD


def test_upsert_adds_then_updates(sqlite_url: str) -> None:
    from kolray.db.migrate import upgrade

    engine = upgrade(sqlite_url)
    assert upsert_kols(engine, [KolIn(wallet=GOOD, name="a")]) == (1, 0)
    assert upsert_kols(engine, [KolIn(wallet=GOOD, name="b"), KolIn(wallet=GOOD2)]) == (1, 1)
    assert [(k.wallet, k.name) for k in list_kols(engine)] == [(GOOD, "b"), (GOOD2, None)]


def test_csv_import(tmp_path: Path) -> None:
    path = tmp_path / "kols.csv"
    path.write_text(
        f"Wallet,name,links\n{GOOD},Alpha,https://x.com/a;https://t.me/a\n{GOOD2},,\n{GOOD},dup,\n"
    )
    items = parse_kol_file(path)
    assert [(i.wallet, i.name, i.links) for i in items] == [
        (GOOD, "Alpha", ["https://x.com/a", "https://t.me/a"]),
        (GOOD2, None, []),
    ]


def test_json_import_accepts_objects_strings_and_a_wrapper(tmp_path: Path) -> None:
    path = tmp_path / "kols.json"
    path.write_text(json.dumps({"kols": [{"wallet": GOOD, "name": "A"}, GOOD2]}))
    assert [i.wallet for i in parse_kol_file(path)] == [GOOD, GOOD2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.csv", f"wallet\n{GOOD}\nnotawallet\n", "row 2: invalid wallet address 'notawallet'"),
        ("nowallet.csv", "address\nx\n", "'wallet' column"),
        ("bad.json", "[1, 2", "not valid JSON"),
        ("obj.json", '{"x": 1}', "expected a JSON list"),
        ("item.json", json.dumps([{"name": "no wallet"}]), "item 1: needs a 'wallet'"),
        ("empty.csv", "wallet\n", "no KOLs"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(KolFileError, match=message):
        parse_kol_file(path)
