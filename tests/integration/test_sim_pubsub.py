"""The twin's pubsub over a real WebSocket client: mainnet's message shapes, every transaction of a
subscribed wallet announced once at the realtime clock, errors, and the faults (missed
notifications, dropped connections, a subscription cap)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from kolray.sim.server import start_server
from kolray.sim.world import World, generate_world, load_world

SPEED = 3000.0  # simulated seconds per second: a few dozen transactions in a few seconds


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    path: Path = tmp_path_factory.mktemp("pubsub") / "world"
    generate_world(path, kols=30, days=1, seed=23)
    return load_world(path)


def ws_url(http_url: str) -> str:
    return "ws" + http_url.removeprefix("http")


async def request(ws: Any, request_id: int, method: str, params: list[Any]) -> dict[str, Any]:
    await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
    while True:
        message = orjson.loads(await ws.recv())
        if message.get("id") == request_id:
            return message


async def collect(ws: Any, seconds: float) -> list[dict[str, Any]]:
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(orjson.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            break
    return out


def signatures_between(url: str, wallet: str, low_slot: int, high_slot: int) -> set[str]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "getSignaturesForAddress", "params": [wallet]}
    listed = httpx.post(url, json=body).json()["result"]
    return {s["signature"] for s in listed if low_slot < s["slot"] <= high_slot}


def test_every_transaction_of_a_subscribed_wallet_is_announced_once(world: World) -> None:
    wallets = list(world.kols().wallet[:8])

    async def run(url: str) -> tuple[int, int, dict[int, str], list[dict[str, Any]]]:
        async with connect(ws_url(url)) as ws:
            start_slot = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"}).json()[
                "result"
            ]
            ids = {}
            for i, wallet in enumerate(wallets):
                reply = await request(
                    ws, i + 1, "logsSubscribe", [{"mentions": [wallet]}, {"commitment": "processed"}]
                )
                assert isinstance(reply["result"], int)
                ids[reply["result"]] = wallet
            messages = await collect(ws, 4.0)
            end_slot = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"}).json()["result"]
            await ws.ping()  # answered with a pong (RFC 6455 §5.5.2), or this would hang
        return start_slot, end_slot, ids, messages

    with start_server(world, rps=None, clock="realtime", speed=SPEED) as twin:
        start_slot, end_slot, ids, messages = asyncio.run(run(twin.url))
        assert len(set(ids)) == len(wallets)
        got: dict[str, list[str]] = {w: [] for w in wallets}
        for message in messages:
            assert message["jsonrpc"] == "2.0" and message["method"] == "logsNotification"
            params = message["params"]
            value = params["result"]["value"]
            assert set(params["result"]) == {"context", "value"} and set(value) == {
                "signature",
                "err",
                "logs",
            }
            assert isinstance(params["result"]["context"]["slot"], int) and isinstance(value["logs"], list)
            got[ids[params["subscription"]]].append(value["signature"])
        total = 0
        for wallet in wallets:
            # Slots announced for sure: after the subscription, and up to a little before the end
            # (the last slots may still have been in flight).
            expected = signatures_between(twin.url, wallet, start_slot + 3, end_slot - 3)
            assert len(got[wallet]) == len(set(got[wallet])), "a notification came twice"
            assert expected <= set(got[wallet])
            total += len(expected)
        assert total >= 5, "the window held too few transactions to test anything"


def test_errors_and_unsubscribe(world: World) -> None:
    wallet = str(world.kols().wallet[0])

    async def run(url: str) -> list[dict[str, Any]]:
        async with connect(ws_url(url)) as ws:
            two = await request(ws, 1, "logsSubscribe", [{"mentions": [wallet, wallet]}])
            bad = await request(ws, 2, "logsSubscribe", [{"mentions": ["not-an-address"]}])
            unknown = await request(ws, 3, "logsUnsubscribe", [987654])
            sub = await request(ws, 4, "logsSubscribe", [{"mentions": [wallet]}, {"commitment": "confirmed"}])
            unsub = await request(ws, 5, "logsUnsubscribe", [sub["result"]])
            again = await request(ws, 6, "logsUnsubscribe", [sub["result"]])
            nomethod = await request(ws, 7, "accountSubscribe", [wallet])
            await ws.send(b"{not json")
            parse = orjson.loads(await ws.recv())
            return [two, bad, unknown, unsub, again, nomethod, parse]

    with start_server(world, rps=None, clock="realtime", speed=1.0) as twin:
        two, bad, unknown, unsub, again, nomethod, parse = asyncio.run(run(twin.url))
    assert two["error"] == {"code": -32602, "message": "Invalid Request: Only 1 address supported"}
    assert bad["error"]["code"] == -32602
    assert unknown["error"] == {"code": -32602, "message": "Invalid subscription id."}
    assert unsub["result"] is True and again["error"]["message"] == "Invalid subscription id."
    assert nomethod["error"]["code"] == -32601
    assert parse["error"]["code"] == -32700 and parse["id"] is None


def test_slot_notifications_follow_the_clock(world: World) -> None:
    async def run(url: str) -> list[dict[str, Any]]:
        async with connect(ws_url(url)) as ws:
            sub = await request(ws, 1, "slotSubscribe", [])
            assert isinstance(sub["result"], int)
            return await collect(ws, 1.5)

    with start_server(world, rps=None, clock="realtime", speed=1.0) as twin:
        messages = asyncio.run(run(twin.url))
    slots = [m["params"]["result"] for m in messages if m.get("method") == "slotNotification"]
    assert 2 <= len(slots) <= 6  # 400 ms slots
    assert all(s["parent"] == s["slot"] - 1 and s["root"] < s["slot"] for s in slots)
    assert [s["slot"] for s in slots] == sorted({s["slot"] for s in slots})


def test_faults_missed_dropped_and_capped(world: World) -> None:
    wallets = list(world.kols().wallet[:8])

    async def subscribe_all(url: str, seconds: float) -> tuple[list[dict[str, Any]], bool]:
        closed = False
        messages: list[dict[str, Any]] = []
        async with connect(ws_url(url)) as ws:
            for i, wallet in enumerate(wallets):
                messages.append(
                    await request(
                        ws, i + 1, "logsSubscribe", [{"mentions": [wallet]}, {"commitment": "processed"}]
                    )
                )
            try:
                deadline = time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    messages.append(orjson.loads(await asyncio.wait_for(ws.recv(), left)))
            except TimeoutError:
                pass
            except ConnectionClosed:
                closed = True
        return messages, closed

    with start_server(world, rps=None, clock="realtime", speed=SPEED, ws_miss_rate=1.0) as twin:
        messages, closed = asyncio.run(subscribe_all(twin.url, 2.0))
        stats = twin.stats()["pubsub"]
    assert not closed and not [m for m in messages if m.get("method") == "logsNotification"]
    assert stats["missed"] > 0 and stats.get("notifications", 0) == 0

    with start_server(world, rps=None, clock="realtime", speed=SPEED, ws_drop_rate=1.0) as twin:
        messages, closed = asyncio.run(subscribe_all(twin.url, 4.0))
        stats = twin.stats()["pubsub"]
    assert closed and stats["dropped"] == 1 and stats["open_connections"] == 0
    assert len([m for m in messages if m.get("method") == "logsNotification"]) == 1

    with start_server(world, rps=None, clock="realtime", speed=1.0, ws_max_subscriptions=3) as twin:
        messages, _ = asyncio.run(subscribe_all(twin.url, 0.1))
        stats = twin.stats()["pubsub"]
    replies = [m for m in messages if "id" in m]
    assert [isinstance(m.get("result"), int) for m in replies] == [True] * 3 + [False] * 5
    assert replies[3]["error"]["code"] == -32603 and "subscription limit" in replies[3]["error"]["message"]
    assert stats["refused"] == 5
