"""The twin's pubsub: Solana's WebSocket subscriptions on the RPC server's own port.

A client upgrades ``GET /`` to a WebSocket (RFC 6455) and speaks JSON-RPC as on mainnet's
``wss://`` endpoint:

- ``logsSubscribe`` with ``{"mentions": [address]}`` (exactly one address, as agave requires) and an
  optional ``{"commitment": ...}``; the reply is an integer subscription id, and each transaction
  that mentions the address arrives as ``logsNotification`` with
  ``{"context": {"slot": s}, "value": {"signature", "err", "logs"}}``. ``processed`` is sent in the
  transaction's slot, ``confirmed`` ``confirm_slots`` later, ``finalized`` (the default, as on
  mainnet) 32 slots later. ``logsUnsubscribe`` answers ``true`` (or agave's "Invalid subscription
  id." error).
- ``slotSubscribe`` / ``slotUnsubscribe``: ``slotNotification`` ``{"parent", "root", "slot"}`` for
  every slot the clock reaches.

Notifications follow the server's clock: with ``clock="realtime"`` a transaction is announced when
its slot is reached. Faults, drawn from the server's seeded generator:

- ``ws_miss_rate``: a notification is silently not sent (as a provider that drops messages);
- ``ws_drop_rate``: after a notification is sent, the connection is dropped (TCP reset, no close
  frame), and every notification until the client resubscribes is lost;
- ``ws_max_subscriptions``: a provider's cap on subscriptions per connection; over it,
  ``logsSubscribe`` / ``slotSubscribe`` answer agave's "subscription refused" error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import heapq
import itertools
import random
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from solders.signature import Signature

from kolray.sim.node import Node, RpcError
from kolray.sim.store import ChainPart, addr_bytes

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 1 << 20
FINALIZED_SLOTS = 32  # how far the root trails the tip on mainnet: finalized notifications wait this long
SUBSCRIPTION_REFUSED = "Internal Error: Subscription refused. Node subscription limit reached"


@dataclass(frozen=True)
class PubSubConfig:
    confirm_slots: int = 1
    miss_rate: float = 0.0
    drop_rate: float = 0.0
    max_subscriptions: int | None = None  # per connection; None: no cap

    def __post_init__(self) -> None:
        if not (0 <= self.miss_rate <= 1 and 0 <= self.drop_rate <= 1):
            raise ValueError("ws_miss_rate and ws_drop_rate must be between 0 and 1")
        if self.confirm_slots < 0 or (self.max_subscriptions is not None and self.max_subscriptions < 0):
            raise ValueError("ws_confirm_slots and ws_max_subscriptions must be ≥ 0")


def is_upgrade(headers: dict[str, str]) -> bool:
    """An RFC 6455 §4.1 opening handshake (header names lower-cased)."""
    return headers.get("upgrade", "").lower() == "websocket" and "sec-websocket-key" in headers


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2, step 5.4)."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked server frame (RFC 6455 §5.2: servers never mask, §5.1)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


class ProtocolError(Exception):
    """The peer broke RFC 6455: the connection closes with ``code`` (§7.4.1)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


async def read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    """(fin, opcode, unmasked payload) of the next client frame (RFC 6455 §5.2)."""
    first, second = await reader.readexactly(2)
    if first & 0x70:
        raise ProtocolError(1002, "reserved bits set without a negotiated extension")  # §5.2 RSV1-3
    if not second & 0x80:
        raise ProtocolError(1002, "client frames must be masked")  # §5.1
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    if length > MAX_MESSAGE:
        raise ProtocolError(1009, "message too big")
    mask = await reader.readexactly(4)
    data = await reader.readexactly(length)
    # §5.3: octet i of the payload is XORed with octet i mod 4 of the masking key.
    unmasked = int.from_bytes(data, "big") ^ int.from_bytes((mask * (length // 4 + 1))[:length], "big")
    return bool(first & 0x80), first & 0x0F, unmasked.to_bytes(length, "big")


class Connection:
    """One client's WebSocket and its subscriptions."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.logs: dict[int, str] = {}  # subscription id → address
        self.slots: set[int] = set()
        self.open = True

    @property
    def subscriptions(self) -> int:
        return len(self.logs) + len(self.slots)

    def send(self, message: bytes) -> None:
        if self.open:
            self.writer.write(frame(OP_TEXT, message))

    def abort(self) -> None:
        self.open = False
        self.writer.transport.abort()


@dataclass
class _Timeline:
    """A subscribed address's transactions not yet announced, oldest first."""

    entries: list[tuple[int, bytes, int, int]]  # (slot, signature key, part index, tx row)
    next: int = 0


def _commitment_delay(params: list[Any], confirm_slots: int) -> int:
    config = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
    commitment = config.get("commitment") or "finalized"
    delays = {"processed": 0, "confirmed": confirm_slots, "finalized": FINALIZED_SLOTS}
    if commitment not in delays:
        raise RpcError(
            -32602,
            f"Invalid params: unknown variant `{commitment}`, expected one of "
            "`processed`, `confirmed`, `finalized`.",
        )
    return delays[commitment]


class PubSub:
    """Subscriptions of every connection, announced by one task that follows the clock."""

    def __init__(
        self,
        node: Node,
        current_slot: Callable[[], int],
        seconds_to_slot: Callable[[int], float],
        config: PubSubConfig,
        rng: random.Random,
    ) -> None:
        self.node = node
        self.parts: list[ChainPart] = node.parts
        self.current_slot = current_slot
        self.seconds_to_slot = seconds_to_slot
        self.config = config
        self.random = rng
        self.ids = itertools.count(1)
        self.connections: set[Connection] = set()
        self.by_address: dict[str, dict[int, tuple[Connection, int]]] = {}  # id → (conn, delay)
        self.slot_subscribers: dict[int, Connection] = {}
        self.timelines: dict[str, _Timeline] = {}
        self.due: list[tuple[int, bytes, str]] = []  # heap of (slot, signature key, address)
        self.outbox: list[tuple[int, int, Connection, int, bytes]] = []  # heap: (send slot, seq, ...)
        self.seq = itertools.count()
        self.announced_slot = current_slot()
        self.counts: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    # Connections

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> None:
        """Finish the opening handshake (RFC 6455 §4.2.2), then serve messages until the close."""
        if headers.get("sec-websocket-version") != "13":  # §4.4: tell the client which we speak
            writer.write(
                b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}\r\n\r\n"
            ).encode()
        )
        self._ensure_running()
        connection = Connection(writer)
        self.connections.add(connection)
        self.counts["connections"] += 1
        try:
            await self._messages(reader, connection)
        except ProtocolError as error:
            with contextlib.suppress(ConnectionError):
                writer.write(frame(OP_CLOSE, struct.pack("!H", error.code) + str(error).encode()[:120]))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._forget(connection)

    async def _messages(self, reader: asyncio.StreamReader, connection: Connection) -> None:
        parts: list[bytes] = []
        while True:
            fin, opcode, payload = await read_frame(reader)
            if opcode == OP_CLOSE:  # §5.5.1: echo the status code, then close
                connection.writer.write(frame(OP_CLOSE, payload[:2]))
                with contextlib.suppress(ConnectionError):
                    await connection.writer.drain()
                return
            if opcode == OP_PING:  # §5.5.2: a pong with the same application data
                connection.writer.write(frame(OP_PONG, payload))
                continue
            if opcode == OP_PONG:
                continue
            if (opcode in (OP_TEXT, OP_BINARY) and parts) or (opcode == OP_CONTINUATION and not parts):
                raise ProtocolError(1002, "bad fragmentation")  # §5.4
            if opcode not in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                raise ProtocolError(1002, f"unknown opcode {opcode}")
            parts.append(payload)
            if sum(len(p) for p in parts) > MAX_MESSAGE:
                raise ProtocolError(1009, "message too big")
            if fin:
                message, parts = b"".join(parts), []
                connection.send(self._answer(message, connection))

    def _forget(self, connection: Connection) -> None:
        connection.open = False
        self.connections.discard(connection)
        for sub_id, address in connection.logs.items():
            self.by_address.get(address, {}).pop(sub_id, None)
        for sub_id in connection.slots:
            self.slot_subscribers.pop(sub_id, None)
        connection.logs.clear()
        connection.slots.clear()

    # JSON-RPC over the socket

    def _answer(self, message: bytes, connection: Connection) -> bytes:
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            return _reply(None, error=RpcError(-32700, "Parse error"))
        if not isinstance(request, dict) or request.get("jsonrpc") != "2.0":
            return _reply(None, error=RpcError(-32600, "Invalid request"))
        request_id = request.get("id")
        params = request.get("params") or []
        method = request.get("method")
        try:
            if not isinstance(params, list):
                raise RpcError(-32602, "Invalid params: invalid type: map, expected a sequence.")
            if method == "logsSubscribe":
                return _reply(request_id, self._logs_subscribe(params, connection))
            if method == "logsUnsubscribe":
                return _reply(request_id, self._unsubscribe(params, connection.logs, connection))
            if method == "slotSubscribe":
                return _reply(request_id, self._slot_subscribe(connection))
            if method == "slotUnsubscribe":
                return _reply(request_id, self._unsubscribe(params, connection.slots, connection))
            raise RpcError(-32601, "Method not found")
        except RpcError as error:
            return _reply(request_id, error=error)

    def _check_cap(self, connection: Connection) -> None:
        cap = self.config.max_subscriptions
        if cap is not None and connection.subscriptions >= cap:
            self.counts["refused"] += 1
            raise RpcError(-32603, SUBSCRIPTION_REFUSED)

    def _logs_subscribe(self, params: list[Any], connection: Connection) -> int:
        spec = params[0] if params else None
        mentions = spec.get("mentions") if isinstance(spec, dict) else None
        if not isinstance(mentions, list):
            raise RpcError(-32602, 'Invalid params: this twin serves {"mentions": [address]} filters only')
        if len(mentions) != 1:
            raise RpcError(-32602, "Invalid Request: Only 1 address supported")
        address = mentions[0]
        try:
            key = addr_bytes(address) if isinstance(address, str) else b""
        except ValueError:
            key = b""
        if not key:
            raise RpcError(-32602, "Invalid Request: Invalid pubkey provided")
        delay = _commitment_delay(params, self.config.confirm_slots)
        self._check_cap(connection)
        sub_id = next(self.ids)
        connection.logs[sub_id] = address
        self.by_address.setdefault(address, {})[sub_id] = (connection, delay)
        self.counts["logs_subscriptions"] += 1
        if address not in self.timelines:
            self._index(address, key)
        return sub_id

    def _slot_subscribe(self, connection: Connection) -> int:
        self._check_cap(connection)
        sub_id = next(self.ids)
        connection.slots.add(sub_id)
        self.slot_subscribers[sub_id] = connection
        return sub_id

    def _unsubscribe(self, params: list[Any], held: Any, connection: Connection) -> bool:
        sub_id = params[0] if params else None
        if not isinstance(sub_id, int) or sub_id not in held:
            raise RpcError(-32602, "Invalid subscription id.")
        if isinstance(held, dict):
            address = held.pop(sub_id)
            self.by_address.get(address, {}).pop(sub_id, None)
        else:
            held.discard(sub_id)
            self.slot_subscribers.pop(sub_id, None)
        return True

    def _index(self, address: str, key: bytes) -> None:
        """The address's transactions after the last announced slot, queued by slot."""
        entries = []
        for index, part in enumerate(self.parts):
            lo, hi = part.address_range(key)
            for i in range(lo, hi):
                slot = int(part.addr["slot"][i])
                if slot <= self.announced_slot:
                    break  # descending by slot
                entries.append((slot, bytes(part.addr["sig"][i]), index, int(part.addr["tx"][i])))
        entries.sort()
        self.timelines[address] = _Timeline(entries)
        if entries:
            heapq.heappush(self.due, (entries[0][0], entries[0][1], address))

    # Announcing

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.tick(self.current_slot())
            await asyncio.sleep(max(0.002, min(self.seconds_to_slot(self.current_slot() + 1), 1.0)))

    def tick(self, slot: int) -> None:
        """Queue what slots up to ``slot`` hold, and send what is due by then."""
        if slot > self.announced_slot:
            first = self.announced_slot + 1
            self.announced_slot = slot
            for reached in range(max(first, slot - 63), slot + 1):  # a long stall sends the last 64
                message = orjson.dumps(
                    {"parent": reached - 1, "root": reached - FINALIZED_SLOTS, "slot": reached}
                )
                for sub_id, connection in list(self.slot_subscribers.items()):
                    connection.send(_notification("slotNotification", message, sub_id))
            while self.due and self.due[0][0] <= slot:
                tx_slot, _, address = heapq.heappop(self.due)
                timeline = self.timelines[address]
                _, _, part_index, row = timeline.entries[timeline.next]
                timeline.next += 1
                if timeline.next < len(timeline.entries):
                    following = timeline.entries[timeline.next]
                    heapq.heappush(self.due, (following[0], following[1], address))
                subscribers = self.by_address.get(address)
                if not subscribers:
                    continue
                value = self._logs_value(tx_slot, self.parts[part_index], row)
                for sub_id, (connection, delay) in list(subscribers.items()):
                    heapq.heappush(self.outbox, (tx_slot + delay, next(self.seq), connection, sub_id, value))
        while self.outbox and self.outbox[0][0] <= slot:
            _, _, connection, sub_id, value = heapq.heappop(self.outbox)
            if not connection.open or sub_id not in connection.logs:
                continue
            if self.config.miss_rate and self.random.random() < self.config.miss_rate:
                self.counts["missed"] += 1
                continue
            connection.send(_notification("logsNotification", value, sub_id))
            self.counts["notifications"] += 1
            if self.config.drop_rate and self.random.random() < self.config.drop_rate:
                self.counts["dropped"] += 1
                connection.abort()
                self._forget(connection)

    def _logs_value(self, slot: int, part: ChainPart, row: int) -> bytes:
        record = orjson.loads(part.record(row)[0])
        meta = record.get("meta") or {}
        signature = str(Signature.from_bytes(bytes(part.tx["sig"][row])[:64]))
        return orjson.dumps(
            {
                "context": {"slot": slot},
                "value": {
                    "signature": signature,
                    "err": meta.get("err"),
                    "logs": meta.get("logMessages") or [],
                },
            }
        )

    def stats(self) -> dict[str, int]:
        return {**dict(sorted(self.counts.items())), "open_connections": len(self.connections)}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for connection in list(self.connections):
            connection.abort()
            self._forget(connection)


def _reply(request_id: Any, result: Any = None, error: RpcError | None = None) -> bytes:
    if error is not None:
        return orjson.dumps({"jsonrpc": "2.0", "error": error.body(), "id": request_id})
    return orjson.dumps({"jsonrpc": "2.0", "result": result, "id": request_id})


def _notification(method: str, result: bytes, sub_id: int) -> bytes:
    return (
        b'{"jsonrpc":"2.0","method":"'
        + method.encode()
        + b'","params":{"result":'
        + result
        + b',"subscription":'
        + str(sub_id).encode()
        + b"}}"
    )
