"""A Solana pubsub client: ``logsSubscribe`` (``mentions`` of each address) over WebSocket.

:class:`LogsSubscriptions` spreads its addresses over several connections (``per_connection`` each:
providers cap subscriptions per connection), and keeps them: a dropped connection reconnects with
exponential backoff and jitter, and subscribes again to all of its addresses.

Subscriptions are a fast path, never the record: a notification can be missed (a drop, a provider
that sheds load), and nothing tells the client which. So the client reports the moments it cannot
vouch for: ``on_gap(addresses)`` after every (re)subscription of a connection — what happened to
those addresses before it was live was not announced — and for addresses the provider refused
(its subscription cap), which stay uncovered until the next reconnect. The caller fills the gaps
by polling (:mod:`kolray.tracker.live`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from kolray.secrets import redact_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogsNotice:
    """One ``logsNotification``: a transaction that mentions ``address``."""

    address: str
    signature: str
    slot: int
    err: Any
    logs: list[str]
    received_at: float  # unix s, when the notification was read


def ws_url_of(rpc_url: str) -> str:
    """The pubsub URL of an RPC endpoint served on the same host and path (``https`` → ``wss``)."""
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if rpc_url.startswith(http):
            return ws + rpc_url.removeprefix(http)
    return rpc_url


class LogsSubscriptions:
    """Holds ``logsSubscribe`` subscriptions of ``addresses`` until :meth:`aclose`."""

    def __init__(
        self,
        ws_urls: Sequence[str],
        addresses: Sequence[str],
        on_notice: Callable[[LogsNotice], None],
        on_gap: Callable[[list[str]], None] = lambda addresses: None,
        per_connection: int = 1000,
        commitment: str = "confirmed",
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 15.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        if not ws_urls:
            raise ValueError("no pubsub URL")
        if per_connection < 1:
            raise ValueError("per_connection must be ≥ 1")
        self.ws_urls = list(ws_urls)
        self.on_notice = on_notice
        self.on_gap = on_gap
        self.commitment = commitment
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        unique = list(dict.fromkeys(addresses))
        self.groups = [unique[i : i + per_connection] for i in range(0, len(unique), per_connection)]
        self.counts: Counter[str] = Counter()
        self.live: dict[int, set[str]] = {}  # connection index → addresses subscribed now
        self.refused: dict[int, set[str]] = {}
        self.subscriptions: dict[int, dict[int, str]] = {}  # connection index → id → address
        self._tasks: list[asyncio.Task[None]] = []
        self._ready: dict[int, asyncio.Event] = {}
        self._random = random.Random()

    async def start(self, wait_s: float | None = 30.0) -> None:
        """Open every connection; wait (at most ``wait_s``) until each has subscribed once."""
        loop = asyncio.get_running_loop()
        for index, group in enumerate(self.groups):
            self._ready[index] = asyncio.Event()
            url = self.ws_urls[index % len(self.ws_urls)]
            self._tasks.append(loop.create_task(self._hold(index, url, group)))
        if wait_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._ready.values())), wait_s)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def covered(self) -> set[str]:
        """Addresses with a live subscription now."""
        return set().union(*self.live.values()) if self.live else set()

    def uncovered(self) -> set[str]:
        """Addresses without a live subscription now (refused, or their connection is down)."""
        return {a for group in self.groups for a in group} - self.covered()

    def stats(self) -> dict[str, int]:
        return {
            **dict(self.counts),
            "connections": len(self.groups),
            "subscribed": sum(len(a) for a in self.live.values()),
            "refused_now": sum(len(a) for a in self.refused.values()),
        }

    async def _hold(self, index: int, url: str, addresses: list[str]) -> None:
        attempt = 0
        while True:
            try:
                async with connect(
                    url, open_timeout=self.open_timeout_s, max_size=1 << 22, ping_interval=20
                ) as ws:
                    self.counts["connects"] += 1
                    await self._subscribe(index, ws, addresses)
                    attempt = 0
                    await self._listen(index, ws)
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError) as error:
                self.counts["disconnects"] += 1
                log.info(
                    "pubsub connection lost",
                    extra={"connection": index, "error": redact_text(f"{type(error).__name__}: {error}")},
                )
            finally:
                self.live.pop(index, None)
            attempt += 1
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(attempt - 1, 16))
            await asyncio.sleep(delay * self._random.uniform(0.5, 1.0))

    async def _subscribe(self, index: int, ws: ClientConnection, addresses: list[str]) -> None:
        """Send every ``logsSubscribe`` at once, then read the replies (notifications that arrive
        meanwhile are delivered as they come)."""
        pending: dict[Any, str] = {}
        for request_id, address in enumerate(addresses, start=1):
            pending[request_id] = address
            params = [{"mentions": [address]}, {"commitment": self.commitment}]
            await ws.send(
                orjson.dumps(
                    {"jsonrpc": "2.0", "id": request_id, "method": "logsSubscribe", "params": params}
                )
            )
        ids = self.subscriptions[index] = {}
        live: set[str] = set()
        refused: set[str] = set()
        while pending:
            message = orjson.loads(await ws.recv())
            if self._deliver(index, message):
                continue
            answered = pending.pop(message.get("id"), None)
            if answered is None:
                continue
            if isinstance(message.get("result"), int):
                ids[message["result"]] = answered
                live.add(answered)
            else:
                refused.add(answered)
        self.live[index] = live
        self.refused[index] = refused
        self.counts["subscriptions"] += len(live)
        if refused:
            self.counts["refused"] += len(refused)
            log.warning("pubsub subscriptions refused", extra={"connection": index, "refused": len(refused)})
        self._ready[index].set()
        # Whatever the addresses did before the subscriptions were live was not announced.
        self.on_gap(list(addresses))

    async def _listen(self, index: int, ws: ClientConnection) -> None:
        async for raw in ws:
            self._deliver(index, orjson.loads(raw))

    def _deliver(self, index: int, message: dict[str, Any]) -> bool:
        if message.get("method") != "logsNotification":
            return False
        params = message.get("params") or {}
        sub_id = params.get("subscription")
        address = self.subscriptions.get(index, {}).get(sub_id) if isinstance(sub_id, int) else None
        result = params.get("result") or {}
        value = result.get("value") or {}
        if address is None or not isinstance(value.get("signature"), str):
            self.counts["unknown_notifications"] += 1
            return True
        self.counts["notifications"] += 1
        self.on_notice(
            LogsNotice(
                address,
                value["signature"],
                int((result.get("context") or {}).get("slot") or 0),
                value.get("err"),
                list(value.get("logs") or []),
                time.time(),
            )
        )
        return True
