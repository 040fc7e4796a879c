"""The twin's JSON-RPC server over HTTP: a clock, per-client rate limits, latency and faults.

- **Clock.** ``clock="end"`` serves the whole world. ``clock="realtime"`` starts at the world's
  start (plus ``clock_offset_s``) and advances ``speed`` simulated seconds per second: a
  transaction (and its signature in ``getSignaturesForAddress``) appears only once its slot has
  been reached. WebSocket pubsub on the same port (:mod:`kolray.sim.pubsub`) announces
  transactions as the clock reaches them; its faults are the ``ws_*`` fields.
- **Rate limits**, per client (its IP address, or the ``X-Twin-Client`` header when a test or
  benchmark wants several clients from one host): like public mainnet by default — 100 requests per
  10 s, and 40 per 10 s for any one method; every call of a batch counts. Over the limit the reply
  is HTTP 429 with ``Retry-After`` (seconds) and mainnet's JSON error body. ``rps=R`` sets 10·R per
  10 s (and 40% of that per method); ``rps=0`` or ``None`` turns limits off.
- **Latency**: ``latency_ms`` added to every response (±50%, seeded).
- **Faults**: with probability ``fault_rate`` a request gets one of ``fault_kinds``: ``http_5xx``
  (500/502/503/504), ``hang`` (no answer for ``hang_s`` seconds, then the connection closes),
  ``drop`` (connection closed at once), ``truncated`` (a body shorter than its Content-Length),
  ``malformed`` (invalid JSON with status 200), ``null`` (``getTransaction`` answers ``null``, as
  for a transaction not yet available; a signature is answered ``null`` at most ``max_nulls`` times,
  then it is served). Kinds are dealt from a shuffled deck rather than drawn independently, so every
  kind turns up within each ``len(fault_kinds)`` faults even in a short run (``null`` only on
  requests that call ``getTransaction``). Draws come from a generator seeded with ``seed``.

The HTTP layer is a small HTTP/1.1 implementation on asyncio streams (uvloop when installed):
keep-alive, Content-Length bodies, ``GET /health``. :func:`start_server` runs it in a background
thread and returns a handle with ``.url``, ``.stats()`` and ``.stop()``; :func:`serve` blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kolray.sim.node import Node, RpcError, call, response
from kolray.sim.params import slot_at, slot_start
from kolray.sim.pubsub import PubSub, PubSubConfig, is_upgrade
from kolray.sim.world import World, load_world

FAULT_KINDS = ("http_5xx", "hang", "drop", "truncated", "malformed", "null")
MAX_BODY = 1 << 20  # agave allows 50 kB; batches of a few hundred calls need more
RATE_LIMIT_IP = "Too many requests from your IP, contact your app developer or support@rpcpool.com."
RATE_LIMIT_METHOD = (
    "Too many requests for a specific RPC call, contact your app developer or support@rpcpool.com."
)
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class ServerConfig:
    rps: float | None = 10.0
    method_share: float = 0.4
    window_s: float = 10.0
    latency_ms: float = 0.0
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    hang_s: float = 30.0
    max_nulls: int = 2
    clock: str = "end"
    speed: float = 1.0
    clock_offset_s: float = 0.0  # realtime: start this far into the world (its history before)
    seed: int = 0
    # Pubsub over WebSocket on the same port (kolray.sim.pubsub): confirmation lag and faults.
    ws_confirm_slots: int = 1
    ws_miss_rate: float = 0.0
    ws_drop_rate: float = 0.0
    ws_max_subscriptions: int | None = None

    def __post_init__(self) -> None:
        problems = []
        try:
            self.pubsub  # noqa: B018 - validates the ws_* fields
        except ValueError as error:
            problems.append(str(error))
        if self.rps is not None and self.rps < 0:
            problems.append(f"rps must be ≥ 0 (got {self.rps})")
        if not 0 <= self.fault_rate <= 1:
            problems.append(f"fault rate must be between 0 and 1 (got {self.fault_rate})")
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown or not self.fault_kinds:
            problems.append(
                f"fault kinds must be among {', '.join(FAULT_KINDS)} (got {', '.join(sorted(unknown))})"
            )
        if self.latency_ms < 0 or self.hang_s < 0:
            problems.append("latency and hang time must be ≥ 0")
        if self.clock not in ("end", "realtime"):
            problems.append(f"clock must be 'end' or 'realtime' (got {self.clock!r})")
        if self.speed <= 0:
            problems.append(f"speed must be > 0 (got {self.speed})")
        if not 0 < self.method_share <= 1 or self.window_s <= 0:
            problems.append("method_share must be in (0, 1] and window_s > 0")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def pubsub(self) -> PubSubConfig:
        return PubSubConfig(
            self.ws_confirm_slots, self.ws_miss_rate, self.ws_drop_rate, self.ws_max_subscriptions
        )

    @property
    def limit_total(self) -> int | None:
        return None if not self.rps else max(1, round(self.rps * self.window_s))

    @property
    def limit_method(self) -> int | None:
        total = self.limit_total
        return None if total is None else max(1, round(total * self.method_share))


@dataclass
class Stats:
    requests: int = 0
    calls: int = 0
    rate_limited: int = 0
    methods: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    connections: int = 0

    def snapshot(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("methods", "faults", "statuses"):
            out[key] = dict(sorted(getattr(self, key).items(), key=lambda kv: str(kv[0])))
        return out


class RateLimiter:
    """Sliding-window counts per client and per (client, method)."""

    def __init__(self, config: ServerConfig, now: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.now = now
        self.total: dict[str, deque[float]] = {}
        self.per_method: dict[tuple[str, str], deque[float]] = {}

    def admit(self, client: str, methods: list[str]) -> tuple[bool, float, str]:
        """Record the calls if all limits allow them; else (False, seconds to wait, message)."""
        limit_total, limit_method = self.config.limit_total, self.config.limit_method
        if limit_total is None or limit_method is None:
            return True, 0.0, ""
        now = self.now()
        horizon = now - self.config.window_s
        window = self.total.setdefault(client, deque())
        while window and window[0] <= horizon:
            window.popleft()
        counts = Counter(methods)
        if len(window) + len(methods) > limit_total:
            wait = self._wait(window, len(window) + len(methods) - limit_total, now)
            return False, wait, RATE_LIMIT_IP
        for method, n in counts.items():
            mw = self.per_method.setdefault((client, method), deque())
            while mw and mw[0] <= horizon:
                mw.popleft()
            if len(mw) + n > limit_method:
                return False, self._wait(mw, len(mw) + n - limit_method, now), RATE_LIMIT_METHOD
        window.extend([now] * len(methods))
        for method, n in counts.items():
            self.per_method[(client, method)].extend([now] * n)
        return True, 0.0, ""

    def _wait(self, window: deque[float], excess: int, now: float) -> float:
        if excess > len(window):  # a batch larger than the limit itself never fits
            return self.config.window_s
        return max(window[excess - 1] + self.config.window_s - now, 0.0)


def _method_name(request: Any) -> str:
    """A request's method, or "" when it has none (the limiter and the faults still count it)."""
    method = request.get("method") if isinstance(request, dict) else None
    return method if isinstance(method, str) else ""


class TwinServer:
    """Serves one world; run :meth:`start` inside an asyncio loop."""

    def __init__(self, world: World, config: ServerConfig) -> None:
        self.world = world
        self.config = config
        self.stats = Stats()
        self.random = random.Random(config.seed)
        self.limiter = RateLimiter(config)
        self.nulls: dict[str, int] = {}
        self._fault_deck: list[str] = []
        self._started = time.monotonic()
        self._end_slot = max(int(world.meta["last_slot"]), slot_at(world.params, world.end))
        self.node = Node(world, self.current_slot)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self.pubsub = PubSub(
            self.node, self.current_slot, self.seconds_to_slot, config.pubsub, random.Random(config.seed + 1)
        )

    # Clock

    def sim_time(self) -> float:
        if self.config.clock == "end":
            return float(self.world.end)
        return (
            self.world.start
            + self.config.clock_offset_s
            + (time.monotonic() - self._started) * self.config.speed
        )

    def current_slot(self) -> int:
        if self.config.clock == "end":
            return self._end_slot
        return slot_at(self.world.params, self.sim_time())

    def seconds_to_slot(self, slot: int) -> float:
        """Wall-clock seconds until ``slot`` begins (≤ 0 once it has)."""
        if self.config.clock == "end":
            return 0.0 if slot <= self._end_slot else math.inf
        return (slot_start(self.world.start, slot) - self.sim_time()) / self.config.speed

    # Serving

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._started = time.monotonic()
        self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_BODY + 65536)
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def close(self) -> None:
        await self.pubsub.close()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.stats.connections += 1
        peer = writer.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "local"
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                keep = await self._request(head, reader, writer, ip)
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _request(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ip: str
    ) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await self._send(writer, 400, b"bad request line", "text/plain", close=True)
            return False
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        if method == "GET" and is_upgrade(headers):
            await self.pubsub.serve(reader, writer, headers)
            return False
        if method == "GET":
            if target.split("?")[0] == "/health":
                await self._send(writer, 200, b"ok", "text/plain", close=not keep)
            else:
                await self._send(
                    writer,
                    405,
                    b"Used HTTP Method is not allowed. POST or OPTIONS is required",
                    "text/plain",
                    close=not keep,
                )
            return keep
        if method != "POST":
            await self._send(
                writer,
                405,
                b"Used HTTP Method is not allowed. POST or OPTIONS is required",
                "text/plain",
                close=True,
            )
            return False
        if "chunked" in headers.get("transfer-encoding", "").lower() or "content-length" not in headers:
            await self._send(writer, 411, b"Content-Length required", "text/plain", close=True)
            return False
        length = int(headers["content-length"])
        if length > MAX_BODY:
            await self._send(writer, 413, b"Payload Too Large", "text/plain", close=True)
            return False
        body = await reader.readexactly(length)
        self.stats.requests += 1
        return await self._rpc(body, headers.get("x-twin-client", ip), writer, keep)

    async def _rpc(self, body: bytes, client: str, writer: asyncio.StreamWriter, keep: bool) -> bool:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            await self._send(
                writer, 200, response(None, error=RpcError(-32700, "Parse error")), close=not keep
            )
            return keep
        batch = isinstance(payload, list)
        requests = payload if batch else [payload]
        methods = [_method_name(r) for r in requests]
        self.stats.calls += len(requests)
        self.stats.methods.update(m for m in methods if m)
        admitted, wait, message = self.limiter.admit(client, methods)
        if not admitted:
            self.stats.rate_limited += 1
            first_id = requests[0].get("id") if requests and isinstance(requests[0], dict) else None
            error = orjson.dumps(
                {"jsonrpc": "2.0", "error": {"code": 429, "message": message}, "id": first_id}
            )
            await self._send(
                writer, 429, error, extra={"Retry-After": str(max(1, math.ceil(wait)))}, close=not keep
            )
            return keep
        fault = self._draw_fault(methods)
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms * self.random.uniform(0.5, 1.5) / 1000)
        if fault == "drop":
            self.stats.faults["drop"] += 1
            writer.transport.abort()
            return False
        if fault == "hang":
            self.stats.faults["hang"] += 1
            await asyncio.sleep(self.config.hang_s)
            writer.transport.abort()
            return False
        if fault == "http_5xx":
            self.stats.faults["http_5xx"] += 1
            status = self.random.choice((500, 502, 503, 504))
            await self._send(writer, status, REASONS[status].encode(), "text/plain", close=not keep)
            return keep
        slot = self.current_slot()
        hook = self._null_hook if fault == "null" else None
        if batch:
            if not requests:
                out = response(None, error=RpcError(-32600, "Invalid request"))
            else:
                out = b"[" + b",".join(call(self.node, r, slot, hook) for r in requests) + b"]"
        else:
            out = call(self.node, payload, slot, hook)
        if fault == "truncated":
            self.stats.faults["truncated"] += 1
            await self._send(writer, 200, out, truncate=True)
            return False
        if fault == "malformed":
            self.stats.faults["malformed"] += 1
            out = out[: max(len(out) // 2, 1)] + b'",,"}'
        await self._send(writer, 200, out, close=not keep)
        return keep

    def _draw_fault(self, methods: list[str]) -> str | None:
        if not self.config.fault_rate or self.random.random() >= self.config.fault_rate:
            return None
        for _ in range(2):
            for i, kind in enumerate(self._fault_deck):
                if kind != "null" or "getTransaction" in methods:
                    return self._fault_deck.pop(i)
            # Only an inapplicable ``null`` (or nothing) is left: deal a fresh deck.
            self._fault_deck = list(self.config.fault_kinds)
            self.random.shuffle(self._fault_deck)
        return None

    def _null_hook(self, signature: str) -> bool:
        """Answer ``null`` for a transaction "not yet available" — at most ``max_nulls`` times."""
        seen = self.nulls.get(signature, 0)
        if seen >= self.config.max_nulls:
            return False
        self.nulls[signature] = seen + 1
        self.stats.faults["null"] += 1
        return True

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        close: bool = False,
        extra: dict[str, str] | None = None,
        truncate: bool = False,
    ) -> None:
        self.stats.statuses[status] += 1
        head = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
        ]
        if close or truncate:
            head.append("Connection: close")
        for name, value in (extra or {}).items():
            head.append(f"{name}: {value}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + (body[: len(body) // 2] if truncate else body)
        writer.write(data)
        if truncate:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.transport.abort()
            return
        if writer.transport.get_write_buffer_size() > 1 << 20:
            await writer.drain()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _open(world: World | str | Path) -> World:
    return world if isinstance(world, World) else load_world(world)


class ServerHandle:
    """A server running in a background thread."""

    def __init__(
        self,
        server: TwinServer,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        host: str,
        port: int,
    ) -> None:
        self.server = server
        self._loop = loop
        self._thread = thread
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"

    def stats(self) -> dict[str, Any]:
        """Counters: requests, calls, rate_limited, methods, faults (by kind), HTTP statuses."""
        return {**self.server.stats.snapshot(), "pubsub": self.server.pubsub.stats()}

    def current_slot(self) -> int:
        return self.server.current_slot()

    def stop(self, timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.server.close(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    world: World | str | Path, host: str = "127.0.0.1", port: int = 0, **config: Any
) -> ServerHandle:
    """Serve ``world`` (a :class:`World` or its directory) from a background thread.

    ``config`` takes the :class:`ServerConfig` fields (``rps``, ``latency_ms``, ``fault_rate``,
    ``fault_kinds``, ``hang_s``, ``max_nulls``, ``clock``, ``speed``, ``seed``...). Port 0 picks a free
    port; the handle's ``url`` says which.
    """
    server = TwinServer(_open(world), ServerConfig(**config))
    loop = _new_loop()
    ready = threading.Event()
    bound: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            bound["address"] = loop.run_until_complete(server.start(host, port))
        except BaseException as error:  # reported to the caller below
            bound["error"] = error
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=run, name="kolray-sim-server", daemon=True)
    thread.start()
    ready.wait(30)
    if "error" in bound:
        raise bound["error"]
    if "address" not in bound:
        raise TimeoutError("the twin server did not start within 30 s")
    bound_host, bound_port = bound["address"]
    return ServerHandle(server, loop, thread, bound_host, bound_port)


def serve(
    world: World | str | Path,
    host: str = "127.0.0.1",
    port: int = 8899,
    on_ready: Callable[[TwinServer, str], None] | None = None,
    report: Callable[[TwinServer], None] | None = None,
    report_every_s: float = 10.0,
    **config: Any,
) -> None:
    """Serve until SIGINT/SIGTERM (the CLI). ``on_ready`` gets the URL; ``report`` runs periodically."""
    import signal

    server = TwinServer(_open(world), ServerConfig(**config))
    loop = _new_loop()

    async def main() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        bound_host, bound_port = await server.start(host, port)
        if on_ready is not None:
            on_ready(server, f"http://{bound_host}:{bound_port}")
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), report_every_s)
                if report is not None and not stop.is_set():
                    report(server)
        finally:
            await server.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
