"""The twin's JSON-RPC server answers like mainnet: paging, encodings, errors, limits, faults, clock.

Paging is checked against a hand-written table on a hand-made chain (slots and signature bytes
chosen so that every rule of agave's ordering matters); everything else on a small generated world.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from solders.signature import Signature

from kolray.sim.node import Node
from kolray.sim.params import GENESIS_SLOT, WorldParams
from kolray.sim.server import FAULT_KINDS, start_server
from kolray.sim.store import FORMAT_VERSION, PartWriter
from kolray.sim.world import generate_world, load_world

A = "A1111111111111111111111111111111111111111111"  # base58 of 32 bytes, like real addresses
B = "B1111111111111111111111111111111111111111111"


def sig(first: int) -> str:
    return str(Signature.from_bytes(bytes([first]) + bytes(63)))


# A's transactions: (name, slot, first signature byte). B has two of its own in between.
CHAIN = [
    ("e1", 100, 0x10, [A]),
    ("e2", 100, 0x20, [A]),
    ("b1", 100, 0x25, [B]),
    ("e3", 100, 0x30, [A]),
    ("e4", 101, 0x05, [A, B]),
    ("e5", 102, 0x40, [A]),
    ("e6", 102, 0x41, [A]),
    ("b2", 103, 0x77, [B]),
    ("e7", 105, 0x01, [A]),
]
SIG = {name: sig(first) for name, _, first, _ in CHAIN}
NEWEST_FIRST = ["e7", "e6", "e5", "e4", "e3", "e2", "e1"]


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("handmade")
    writer = PartWriter(root / "chain" / "part-00000")
    for name, slot, _, addresses in CHAIN:
        result = {"blockTime": 1_700_000_000 + slot, "meta": {"err": None}, "slot": GENESIS_SLOT + slot,
                  "transaction": {"message": {}, "signatures": [SIG[name]]}}  # fmt: skip
        err = {"InstructionError": [0, {"Custom": 1}]} if name == "e4" else None
        memo = "[2] hi" if name == "e5" else None
        writer.add(SIG[name], GENESIS_SLOT + slot, 1_700_000_000 + slot, result, b"\x01wire", False, err, memo,
                   addresses)  # fmt: skip
    writer.close({})
    meta = {"format": FORMAT_VERSION, "params": WorldParams(kols=1, days=1).to_dict(), "start": 0, "end": 86_400,
            "first_slot": GENESIS_SLOT + 100, "last_slot": GENESIS_SLOT + 105, "parts": ["part-00000"],
            "summary": {}}  # fmt: skip
    (root / "world.json").write_text(json.dumps(meta))
    return load_world(root)


def names(entries: list[dict[str, Any]]) -> list[str]:
    by_sig = {v: k for k, v in SIG.items()}
    return [by_sig[e["signature"]] for e in entries]


PAGING = [
    # config → A's signatures, newest first (slot, then signature bytes, descending)
    ({}, NEWEST_FIRST),
    ({"limit": 3}, ["e7", "e6", "e5"]),
    ({"before": "e5"}, ["e4", "e3", "e2", "e1"]),
    ({"before": "e5", "limit": 2}, ["e4", "e3"]),
    ({"until": "e3"}, ["e7", "e6", "e5", "e4"]),
    ({"before": "e6", "until": "e2"}, ["e5", "e4", "e3"]),
    ({"before": "e1"}, []),
    ({"until": "e7"}, []),
    ({"before": "e3", "until": "e3"}, []),
    # `before`/`until` need not involve the address: they mark a (slot, signature) position.
    ({"before": "b1"}, ["e2", "e1"]),
    ({"until": "b1"}, ["e7", "e6", "e5", "e4", "e3"]),
    ({"before": "b2"}, ["e6", "e5", "e4", "e3", "e2", "e1"]),
    # An unknown `before` returns nothing; an unknown `until` is ignored (agave).
    ({"before": "unknown"}, []),
    ({"until": "unknown"}, NEWEST_FIRST),
    ({"limit": 1000}, NEWEST_FIRST),
]


@pytest.mark.parametrize(("config", "expected"), PAGING)
def test_get_signatures_for_address_paging(handmade, config: dict[str, Any], expected: list[str]) -> None:
    node = Node(handmade, lambda: GENESIS_SLOT + 105)
    resolved = {k: (SIG.get(v, sig(0x99)) if k in ("before", "until") else v) for k, v in config.items()}
    result = node.get_signatures_for_address([A, resolved], node.current_slot())
    assert names(result) == expected


def test_paging_backwards_visits_everything_once(handmade) -> None:
    node = Node(handmade, lambda: GENESIS_SLOT + 105)
    seen: list[str] = []
    before = None
    while True:
        config = {"limit": 2, **({"before": before} if before else {})}
        page = node.get_signatures_for_address([A, config], node.current_slot())
        if not page:
            break
        seen += names(page)
        before = page[-1]["signature"]
    assert seen == NEWEST_FIRST


def test_entries_carry_slot_time_err_memo_and_status(handmade) -> None:
    node = Node(handmade, lambda: GENESIS_SLOT + 105)
    by_name = dict(zip(NEWEST_FIRST, node.get_signatures_for_address([A], node.current_slot()), strict=True))
    assert by_name["e4"]["err"] == {"InstructionError": [0, {"Custom": 1}]}
    assert by_name["e5"]["memo"] == "[2] hi" and by_name["e6"]["memo"] is None
    assert by_name["e7"] == {"blockTime": 1_700_000_105, "confirmationStatus": "finalized", "err": None,
                             "memo": None, "signature": SIG["e7"], "slot": GENESIS_SLOT + 105}  # fmt: skip


def test_the_clock_hides_the_future(handmade) -> None:
    node = Node(handmade, lambda: GENESIS_SLOT + 102)
    assert names(node.get_signatures_for_address([A], node.current_slot())) == [
        "e6",
        "e5",
        "e4",
        "e3",
        "e2",
        "e1",
    ]
    assert node.get_signatures_for_address([A, {"before": SIG["e7"]}], node.current_slot()) == []
    assert (
        node.get_transaction([SIG["e7"], {"maxSupportedTransactionVersion": 0}], node.current_slot()) is None
    )


def test_bad_paging_parameters_are_refused_like_mainnet(handmade) -> None:
    from kolray.sim.node import RpcError

    node = Node(handmade, lambda: GENESIS_SLOT + 105)
    for config, message in (
        ({"limit": 0}, "Invalid limit; max 1000"),
        ({"limit": 1001}, "Invalid limit; max 1000"),
        ({"before": "not-a-signature"}, "Invalid param: Invalid"),
        ({"commitment": "processed"}, "Method does not support commitment below `confirmed`"),
    ):
        with pytest.raises(RpcError, match=message.replace("(", r"\(")) as error:
            node.get_signatures_for_address([A, config], node.current_slot())
        assert error.value.code == -32602
    with pytest.raises(RpcError, match="Invalid param: WrongSize"):
        node.get_signatures_for_address(["1" * 50], node.current_slot())


# Everything else on a generated world, over HTTP


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("sim-server") / "world"
    generate_world(path, kols=10, days=2, seed=4)
    return load_world(path)


@pytest.fixture(scope="module")
def server(world):
    with start_server(world, rps=0) as handle:
        yield handle


def rpc(
    url: str,
    method: str,
    params: list[Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, **({"params": params} if params is not None else {})}
    return httpx.post(url, json=body, headers=headers, timeout=timeout).json()


def test_get_transaction_encodings_and_versions(world, server) -> None:
    trades = world.trades()
    signature = trades.signature.iloc[0]
    for encoding in ("json", "jsonParsed", "base64", "base58"):
        result = rpc(server.url, "getTransaction",
                     [signature, {"encoding": encoding, "maxSupportedTransactionVersion": 0}])["result"]  # fmt: skip
        assert result["slot"] == trades.slot.iloc[0] and result["version"] in (0, "legacy")
        if encoding in ("base64", "base58"):
            assert result["transaction"][1] == encoding
        else:
            assert result["transaction"]["signatures"][0] == signature
    v0 = next(s for s in trades.signature if rpc(server.url, "getTransaction", [s, {"maxSupportedTransactionVersion":
                                                                                      0}])["result"]["version"] == 0)  # fmt: skip
    error = rpc(server.url, "getTransaction", [v0, "json"])["error"]
    assert error["code"] == -32015 and '"maxSupportedTransactionVersion": 0' in error["message"]
    legacy = [s for s in trades.signature[:200] if rpc(server.url, "getTransaction", [s, {
        "maxSupportedTransactionVersion": 0}])["result"]["version"] == "legacy"]  # fmt: skip
    if legacy:  # without the parameter a legacy transaction comes back with no "version" key
        assert "version" not in rpc(server.url, "getTransaction", [legacy[0]])["result"]
    unknown = sig(0x42)
    assert (
        rpc(server.url, "getTransaction", [unknown, {"maxSupportedTransactionVersion": 0}])["result"] is None
    )
    bad = rpc(server.url, "getTransaction", ["xyz"])["error"]
    assert bad == {"code": -32602, "message": "Invalid param: Invalid"} or bad["message"].startswith(
        "Invalid param"
    )
    wrong = rpc(server.url, "getTransaction", [signature, {"encoding": "yaml"}])["error"]
    assert wrong["code"] == -32602 and "unknown variant `yaml`" in wrong["message"]


def test_failed_transactions_and_memos_show_in_signature_lists(world, server) -> None:
    kols = list(world.kols().wallet)
    entries = [e for w in kols for e in rpc(server.url, "getSignaturesForAddress", [w])["result"]]
    assert any(e["err"] is not None for e in entries)  # failed swaps are listed with their error
    memos = [e["memo"] for e in entries if e["memo"]]
    assert memos and all(m.startswith("[") and "] " in m for m in memos)  # "[len] text"
    for w in kols[:3]:
        page = rpc(server.url, "getSignaturesForAddress", [w])["result"]
        assert [e["slot"] for e in page] == sorted((e["slot"] for e in page), reverse=True)


def test_balances_supplies_and_node_info(world, server) -> None:
    wallet = world.trades().wallet.iloc[0]
    latest = rpc(server.url, "getSignaturesForAddress", [wallet, {"limit": 1}])["result"][0]
    tx = rpc(server.url, "getTransaction", [latest["signature"], {"maxSupportedTransactionVersion": 0}])[
        "result"
    ]
    keys = tx["transaction"]["message"]["accountKeys"]
    balance = rpc(server.url, "getBalance", [wallet])["result"]
    assert balance["value"] == tx["meta"]["postBalances"][keys.index(wallet)]
    assert balance["context"]["slot"] == rpc(server.url, "getSlot")["result"]
    mint = world.trades().mint.iloc[0]
    supply = rpc(server.url, "getTokenSupply", [mint])["result"]["value"]
    assert supply == {
        "amount": "1000000000000000",
        "decimals": 6,
        "uiAmount": 1e9,
        "uiAmountString": "1000000000",
    }
    assert (
        rpc(server.url, "getTokenSupply", [wallet])["error"]["message"] == "Invalid param: not a Token mint"
    )
    assert rpc(server.url, "getHealth")["result"] == "ok"
    assert "solana-core" in rpc(server.url, "getVersion")["result"]
    assert httpx.get(server.url + "/health").text == "ok"
    assert httpx.get(server.url + "/").status_code == 405


def test_json_rpc_errors_and_batches(server) -> None:
    assert httpx.post(server.url, content=b"{not json").json()["error"] == {
        "code": -32700,
        "message": "Parse error",
    }
    reply = httpx.post(server.url, json=[
        {"jsonrpc": "2.0", "id": 1, "method": "getSlot"},
        {"jsonrpc": "2.0", "id": 2, "method": "noSuchMethod"},
        {"id": 3, "method": "getSlot"},
        {"jsonrpc": "2.0", "id": 4, "method": "getBalance", "params": ["short"]},
    ]).json()  # fmt: skip
    assert [r["id"] for r in reply] == [1, 2, 3, 4]
    assert isinstance(reply[0]["result"], int)
    assert reply[1]["error"] == {"code": -32601, "message": "Method not found"}
    assert reply[2]["error"]["code"] == -32600
    assert reply[3]["error"]["code"] == -32602
    assert httpx.post(server.url, json=[]).json()["error"]["code"] == -32600


def test_rate_limits_per_client_and_per_method(world) -> None:
    with start_server(world, rps=1) as handle:  # 10 requests per 10 s, 4 per method
        one = {"X-Twin-Client": "one"}
        for _ in range(4):
            assert "result" in rpc(handle.url, "getSlot", headers=one)
        reply = httpx.post(handle.url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"}, headers=one)
        assert reply.status_code == 429 and int(reply.headers["Retry-After"]) >= 1
        assert (
            reply.json()["error"]["code"] == 429 and "specific RPC call" in reply.json()["error"]["message"]
        )
        for _ in range(4):
            assert "result" in rpc(handle.url, "getHealth", headers=one)
        for _ in range(2):
            assert "result" in rpc(handle.url, "getVersion", headers=one)
        reply = httpx.post(handle.url, json={"jsonrpc": "2.0", "id": 1, "method": "getBalance"}, headers=one)
        assert reply.status_code == 429 and "from your IP" in reply.json()["error"]["message"]
        # Every call of a batch counts; another client has its own budget.
        batch = [{"jsonrpc": "2.0", "id": i, "method": "getSlot"} for i in range(5)]
        assert httpx.post(handle.url, json=batch, headers={"X-Twin-Client": "two"}).status_code == 429
        assert httpx.post(handle.url, json=batch[:4], headers={"X-Twin-Client": "two"}).status_code == 200
        stats = handle.stats()
        assert stats["rate_limited"] == 3 and stats["statuses"][429] == 3


@pytest.mark.parametrize("kind", ["http_5xx", "drop", "hang", "truncated", "malformed"])
def test_every_http_fault(world, kind: str) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "getSignaturesForAddress",
        "params": [world.trades().wallet.iloc[0]],
    }
    with start_server(world, rps=0, fault_rate=1.0, fault_kinds=(kind,), hang_s=3, seed=1) as handle:
        if kind == "http_5xx":
            assert httpx.post(handle.url, json=body).status_code in (500, 502, 503, 504)
        elif kind == "hang":
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(handle.url, json=body, timeout=0.5)
            assert time.monotonic() - started < 2
        elif kind == "malformed":
            reply = httpx.post(handle.url, json=body)
            assert reply.status_code == 200
            with pytest.raises(json.JSONDecodeError):
                json.loads(reply.text)
        else:  # drop, truncated: the connection ends without a complete response
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                httpx.post(handle.url, json=body)
        assert handle.stats()["faults"] == {kind: 1}


def test_null_transactions_become_available(world) -> None:
    signature = world.trades().signature.iloc[0]
    params = [signature, {"maxSupportedTransactionVersion": 0}]
    with start_server(world, rps=0, fault_rate=1.0, fault_kinds=("null",), max_nulls=2) as handle:
        answers = [rpc(handle.url, "getTransaction", params)["result"] for _ in range(3)]
        assert (
            answers[0] is None
            and answers[1] is None
            and answers[2]["transaction"]["signatures"] == [signature]
        )
        assert handle.stats()["faults"] == {"null": 2}


def test_mixed_faults_at_a_rate(world) -> None:
    with start_server(world, rps=0, fault_rate=0.5, hang_s=0.2, seed=3) as handle:
        outcomes = []
        for _ in range(40):
            try:
                reply = httpx.post(
                    handle.url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"}, timeout=0.1
                )
                json.loads(reply.text)
                outcomes.append(reply.status_code)
            except (httpx.HTTPError, json.JSONDecodeError):
                outcomes.append("fault")
        faults = handle.stats()["faults"]
        assert 8 <= sum(faults.values()) <= 32
        # Kinds are dealt from a deck: all five that apply to getSlot, about equally often; null
        # (a getTransaction fault) never.
        assert set(faults) == {"http_5xx", "hang", "drop", "truncated", "malformed"}
        assert max(faults.values()) - min(faults.values()) <= 1
        assert outcomes.count(200) >= 8


def test_every_fault_kind_turns_up_within_one_deck(world) -> None:
    signature = world.trades().signature.iloc[0]
    params = [signature, {"maxSupportedTransactionVersion": 0}]
    body = {"jsonrpc": "2.0", "id": 1, "method": "getTransaction", "params": params}
    with start_server(world, rps=0, fault_rate=1.0, hang_s=0.05, max_nulls=10, seed=9) as handle:
        for _ in range(6):
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(handle.url, json=body, timeout=0.5)
        assert handle.stats()["faults"] == dict.fromkeys(FAULT_KINDS, 1)


def test_realtime_clock_unfolds_the_world(world) -> None:
    wallet = world.trades().wallet.value_counts().index[0]
    day = 86_400
    with start_server(world, rps=0, clock="realtime", speed=day) as handle:  # a simulated day per second
        first_slot = rpc(handle.url, "getSlot")["result"]
        early = rpc(handle.url, "getSignaturesForAddress", [wallet])["result"]
        after_early = rpc(handle.url, "getSlot")["result"]
        time.sleep(1.2)
        later = rpc(handle.url, "getSignaturesForAddress", [wallet])["result"]
        after_later = rpc(handle.url, "getSlot")["result"]
    assert after_later > first_slot + 2 * 86_400  # over a simulated day went by (2.5 slots/s)
    assert len(later) > len(early)
    # Nothing from the future: every entry's slot had been reached when the list was answered.
    assert all(e["slot"] <= after_early for e in early) and all(e["slot"] <= after_later for e in later)
    assert [e["signature"] for e in early] == [e["signature"] for e in later[len(later) - len(early) :]]


def test_solana_py_client_talks_to_the_twin_unmodified(world, server) -> None:
    from solana.rpc.async_api import AsyncClient
    from solders.pubkey import Pubkey

    wallet = Pubkey.from_string(world.trades().wallet.iloc[0])
    mint = Pubkey.from_string(world.trades().mint.iloc[0])

    async def session() -> None:
        async with AsyncClient(server.url) as client:
            assert await client.is_connected()
            slot = (await client.get_slot()).value
            page = (await client.get_signatures_for_address(wallet, limit=3)).value
            assert len(page) == 3 and all(e.slot <= slot for e in page)
            rest = (await client.get_signatures_for_address(wallet, before=page[-1].signature, limit=2)).value
            assert rest and rest[0].slot <= page[-1].slot
            for encoding in ("json", "jsonParsed", "base64"):
                tx = (await client.get_transaction(page[0].signature, encoding=encoding,
                                                   max_supported_transaction_version=0)).value  # fmt: skip
                assert tx is not None and tx.slot == page[0].slot
            assert (await client.get_balance(wallet)).value > 0
            assert (await client.get_token_supply(mint)).value.decimals == 6

    asyncio.run(session())


def test_cli_serve_refuses_bad_options(tmp_path: Path, world, capsys: pytest.CaptureFixture[str]) -> None:
    from kolray.cli import main

    assert main(["sim", "serve", "--world", str(tmp_path / "none")]) == 2
    assert "not a twin world" in capsys.readouterr().err
    assert main(["sim", "serve", "--world", str(world.path), "--fault-rate", "2"]) == 2
    assert "fault rate must be between 0 and 1" in capsys.readouterr().err
    assert main(["sim", "serve", "--world", str(world.path), "--clock", "sometimes"]) == 2
    assert "clock must be" in capsys.readouterr().err
