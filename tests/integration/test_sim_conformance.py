"""The twin's transactions look like mainnet's, and the chain says exactly what the ground truth says.

- **Shape**: in each encoding, every object of a twin transaction has only keys that real
  ``getTransaction`` results (``../shared/fixtures/mainnet``) have at the same place, with the same
  JSON types; every key that all real results of that encoding carry is there; solders (what
  solana-py parses with) accepts every twin transaction in every encoding.
- **Content**: :func:`kolray.chain.swaps.extract_swaps` recovers exactly the ground-truth trades
  (every ``Swap`` field), from ``json``, ``jsonParsed`` and ``base64`` alike, and finds no trade in
  failed swaps, airdrops, transfers and token creations; an independent reading of the balances by
  the fixtures' README rules (token deltas, SOL delta, rent, tips) agrees with every trade.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from kolray.sim.node import Node
from kolray.sim.params import JITO_TIP_ACCOUNTS, WSOL_MINT
from kolray.sim.world import generate_world, load_world

Shape = dict[str, set[str]]  # path → JSON types seen there


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return {str: "str", list: "list", dict: "dict"}[type(value)]


def walk(value: Any, path: str, shape: Shape, keys: dict[str, set[str]]) -> None:
    shape.setdefault(path, set()).add(json_type(value))
    if isinstance(value, dict):
        keys.setdefault(path, set()).update(value)
        for k, v in value.items():
            walk(v, f"{path}.{k}", shape, keys)
    elif isinstance(value, list):
        for v in value:
            walk(v, f"{path}[]", shape, keys)


def encoding_of(fixture: dict[str, Any], manifest_encoding: str) -> str:
    return "base64" if isinstance(fixture["transaction"], list) else manifest_encoding


@pytest.fixture(scope="module")
def reference(mainnet_fixtures: Path) -> dict[str, dict[str, Any]]:
    """Per encoding: the types seen at each path, the keys seen at each object path (union), and
    the keys every real result has at the fixed objects (intersection)."""
    manifest = json.loads((mainnet_fixtures / "MANIFEST.json").read_text())
    out: dict[str, dict[str, Any]] = {}
    for entry in manifest:
        if entry["kind"] == "malformed":
            continue
        fixture = json.loads((mainnet_fixtures / entry["file"]).read_text())
        encoding = encoding_of(fixture, entry["encoding"])
        ref = out.setdefault(encoding, {"shape": {}, "keys": {}, "always": None})
        keys: dict[str, set[str]] = {}
        walk(fixture, "", ref["shape"], keys)
        for path, names in keys.items():
            ref["keys"].setdefault(path, set()).update(names)
        fixed = {p: keys.get(p, set()) for p in ("", ".meta", ".transaction.message")}
        ref["always"] = fixed if ref["always"] is None else {p: ref["always"][p] & fixed[p] for p in fixed}
    # Fields an encoding does not change are compared with every encoding's fixtures: the base64
    # encoding's meta is the json one (and there are two base64 fixtures only); the version and
    # the error of a failed transaction read the same in all encodings (the jsonParsed fixtures
    # happen to be v0 successes only).
    shared = {"base64": (".meta", ".version", ".blockTime", ".slot"), "jsonParsed": (".version", ".meta.err",
                                                                                   ".meta.status")}  # fmt: skip
    for encoding, prefixes in shared.items():
        for table in ("shape", "keys"):
            for path, values in out["json"][table].items():
                if path.startswith(prefixes):
                    out[encoding][table].setdefault(path, set()).update(values)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("sim-conformance") / "world"
    generate_world(path, kols=40, days=4, seed=3)
    return load_world(path)


@pytest.fixture(scope="module")
def node(world) -> Node:
    return Node(world, lambda: int(world.meta["last_slot"]))


def fetch(node: Node, signature: str, encoding: str) -> dict[str, Any]:
    raw = node.get_transaction([signature, {"encoding": encoding, "maxSupportedTransactionVersion": 0}],
                               node.current_slot())  # fmt: skip
    assert raw is not None
    return orjson.loads(raw)


def all_signatures(world) -> list[str]:
    from kolray.sim.node import _sig_string

    sigs = []
    for part in world.chain_parts():
        sigs.extend(_sig_string(part, row) for row in range(len(part.tx)))
    return sigs


def kind_of(tx: dict[str, Any]) -> str:
    """What a twin transaction is, read from its logs (for coverage of the sample)."""
    logs = " ".join(tx["meta"]["logMessages"])
    if tx["meta"]["err"] is not None:
        return "failed"
    for marker, name in (("JUP6Lkb", "jupiter"), ("675kPX9", "raydium"), ("pAMMBay6", "pumpswap"),
                         ("Instruction: Create", "create"), ("6EF8rre", "pumpfun"), ("Memo", "airdrop_memo"),
                         ("TransferChecked", "token_transfer")):  # fmt: skip
        if marker in logs:
            return name
    return "sol_transfer"


@pytest.fixture(scope="module")
def sample(world, node) -> dict[str, list[str]]:
    """Signatures of up to 40 transactions of every kind."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for signature in all_signatures(world):
        tx = fetch(node, signature, "json")
        kind = kind_of(tx)
        if len(by_kind[kind]) < 40:
            by_kind[kind].append(signature)
    return by_kind


def test_the_sample_covers_every_kind_of_transaction(sample) -> None:
    expected = {"pumpfun", "pumpswap", "raydium", "jupiter", "failed", "create", "airdrop_memo", "token_transfer",
                "sol_transfer"}  # fmt: skip
    assert expected <= set(sample), sorted(sample)


@pytest.mark.parametrize("encoding", ["json", "jsonParsed", "base64"])
def test_shape_matches_mainnet(encoding: str, reference, node, sample) -> None:
    ref = reference[encoding]
    seen_keys: dict[str, set[str]] = {}
    unverifiable: set[str] = set()
    for kind, signatures in sample.items():
        for signature in signatures:
            tx = fetch(node, signature, encoding)
            shape: Shape = {}
            keys: dict[str, set[str]] = {}
            walk(tx, "", shape, keys)
            for path, names in keys.items():
                seen_keys.setdefault(path, set()).update(names)
                if path not in ref["keys"]:
                    continue  # checked through its parent's keys
                extra = names - ref["keys"][path]
                if extra and path.endswith(".parsed.info"):
                    # Instruction types the fixtures do not contain in jsonParsed (e.g.
                    # transferChecked, mintTo): their fields follow agave's parsers.
                    unverifiable |= {f"{path}.{n}" for n in extra}
                    continue
                assert not extra, f"{kind} {signature}: keys {sorted(extra)} at {path or 'top level'}"
            for path, kinds in shape.items():
                if path in ref["shape"] and not any(path.startswith(u) for u in unverifiable):
                    unexpected = kinds - ref["shape"][path]
                    # Integral floats (uiAmount 2.0) are floats in JSON from Rust; a fixture file
                    # written by JavaScript may show them as ints: either is a JSON number.
                    unexpected -= {"float"} if "int" in ref["shape"][path] else set()
                    # A Memo instruction's "parsed" is its text (agave's parse_memo: Value::String);
                    # the fixtures have no memo in jsonParsed.
                    unexpected -= {"str"} if path.endswith(".parsed") else set()
                    assert not unexpected, (
                        f"{kind}: type {unexpected} at {path} (mainnet: {ref['shape'][path]})"
                    )
            for path, always in ref["always"].items():
                missing = always - keys.get(path, set())
                # A legacy message has no addressTableLookups (mainnet omits it too).
                missing -= {"addressTableLookups"} if tx.get("version") == "legacy" else set()
                assert not missing, f"{kind}: missing {sorted(missing)} at {path or 'top level'}"


@pytest.mark.parametrize("encoding", ["json", "jsonParsed", "base64"])
def test_solders_parses_every_kind_in_every_encoding(encoding: str, node, sample) -> None:
    from solders.rpc.responses import GetTransactionResp

    for kind, signatures in sample.items():
        for signature in signatures[:10]:
            raw = node.get_transaction([signature, {"encoding": encoding, "maxSupportedTransactionVersion": 0}],
                                       node.current_slot())  # fmt: skip
            parsed = GetTransactionResp.from_json('{"jsonrpc":"2.0","id":1,"result":' + raw.decode() + "}")
            assert (
                parsed.value is not None
                and str(parsed.value.transaction.transaction.signatures[0]) == signature
            ), kind


def test_extract_swaps_recovers_exactly_the_ground_truth(world, node) -> None:
    from kolray.chain.swaps import extract_swaps

    trades = world.trades()
    kols = set(world.kols().wallet)
    truth = {(r["signature"], r["wallet"], r["mint"]): r for r in trades.to_dict("records")}
    fields = ["signature", "slot", "block_time", "wallet", "mint", "side", "token_amount", "token_decimals",
              "sol_amount", "dex", "program_id", "quote_mint", "quote_amount", "quote_decimals", "fee", "rent",
              "tips", "price_sol", "market_cap_sol"]  # fmt: skip
    found = set()
    for signature in all_signatures(world):
        tx = fetch(node, signature, "json")
        keys = tx["transaction"]["message"]["accountKeys"]
        for wallet in (k for k in keys if k in kols):
            for swap in extract_swaps(tx, wallet):
                key = (swap.signature, swap.wallet, swap.mint)
                assert key in truth, f"a swap the ground truth does not have: {key}"
                expected = truth[key]
                got = swap.to_dict()
                for name in fields:
                    want = expected[name]
                    want = None if want != want else want  # NaN (absent) → None
                    assert got[name] == want, f"{signature} {name}: extracted {got[name]!r}, truth {want!r}"
                found.add(key)
    assert found == set(truth)


def test_other_encodings_extract_the_same_swaps(world, node, sample) -> None:
    from kolray.chain.swaps import extract_swaps

    kols = set(world.kols().wallet)
    for kind, signatures in sample.items():
        for signature in signatures[:10]:
            base = fetch(node, signature, "json")
            wallets = [k for k in base["transaction"]["message"]["accountKeys"] if k in kols]
            for encoding in ("jsonParsed", "base64"):
                other = fetch(node, signature, encoding)
                for wallet in wallets:
                    assert extract_swaps(other, wallet) == extract_swaps(base, wallet), (kind, encoding)


def test_no_trade_in_noise_transactions(world, node, sample) -> None:
    from kolray.chain.swaps import extract_swaps

    kols = set(world.kols().wallet)
    for kind in ("failed", "create", "airdrop_memo", "token_transfer", "sol_transfer"):
        for signature in sample[kind]:
            tx = fetch(node, signature, "json")
            for wallet in (k for k in tx["transaction"]["message"]["accountKeys"] if k in kols):
                assert extract_swaps(tx, wallet) == [], (kind, signature)


def balance_sheet(tx: dict[str, Any], wallet: str) -> dict[str, Any]:
    """The signer's balance changes by the rules of ../shared/fixtures/mainnet/README.md."""
    meta = tx["meta"]
    keys = tx["transaction"]["message"]["accountKeys"] + meta["loadedAddresses"]["writable"] + meta[
        "loadedAddresses"]["readonly"]  # fmt: skip
    pre = {b["accountIndex"]: b for b in meta["preTokenBalances"]}
    post = {b["accountIndex"]: b for b in meta["postTokenBalances"]}
    tokens: dict[str, int] = defaultdict(int)
    wsol = 0
    rent = 0
    for index in set(pre) | set(post):
        entry = post.get(index) or pre[index]
        if entry["owner"] != wallet:
            continue
        before = int(pre[index]["uiTokenAmount"]["amount"]) if index in pre else 0
        after = int(post[index]["uiTokenAmount"]["amount"]) if index in post else 0
        if entry["mint"] == WSOL_MINT:
            wsol += after - before
        else:
            tokens[entry["mint"]] += after - before
        lamports_before, lamports_after = meta["preBalances"][index], meta["postBalances"][index]
        if lamports_before == 0 and lamports_after > 0 and index in post:
            rent += lamports_after - (after if entry["mint"] == WSOL_MINT else 0)
        if index in pre and lamports_before > 0 and lamports_after == 0:
            rent -= lamports_before - (before if entry["mint"] == WSOL_MINT else 0)
    signer = keys.index(wallet)
    sol = meta["postBalances"][signer] - meta["preBalances"][signer] + meta["fee"] + wsol
    tips = 0
    for ix in tx["transaction"]["message"]["instructions"]:
        program = keys[ix["programIdIndex"]]
        if program == "11111111111111111111111111111111" and len(ix["accounts"]) == 2:
            import base58

            data = base58.b58decode(ix["data"])
            destination = keys[ix["accounts"][1]]
            if data[:4] == bytes([2, 0, 0, 0]) and keys[ix["accounts"][0]] == wallet:
                is_token = any(keys[b["accountIndex"]] == destination for b in meta["preTokenBalances"] + meta[
                    "postTokenBalances"])  # fmt: skip
                temp = meta["preBalances"][keys.index(destination)] == 0 and meta["postBalances"][
                    keys.index(destination)] == 0  # fmt: skip
                if destination in JITO_TIP_ACCOUNTS or not (is_token or temp):
                    tips += int.from_bytes(data[4:12], "little")
    return {"tokens": dict(tokens), "sol_delta": sol, "rent": rent, "tips": tips}


def test_balances_read_by_the_fixture_rules_agree_with_every_trade(world, node) -> None:
    trades = world.trades()
    for row in trades.sample(n=min(400, len(trades)), random_state=1).to_dict("records"):
        tx = fetch(node, row["signature"], "json")
        sheet = balance_sheet(tx, row["wallet"])
        sign = 1 if row["side"] == "buy" else -1
        assert sheet["tokens"] == {row["mint"]: sign * row["token_amount"]}
        assert (
            sheet["rent"] == row["rent"] and sheet["tips"] == row["tips"] and tx["meta"]["fee"] == row["fee"]
        )
        # The trade's SOL leg: -sol_delta = sol_amount + rent + tips for a buy (signs flip for a sell).
        assert -sign * sheet["sol_delta"] == row["sol_amount"] + sign * (row["rent"] + row["tips"])
