"""The poller's view of the chain, over :class:`kolray.chain.rpc.RpcClient`, rate-limited by the
cluster-wide limiter actor."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from kolray.chain.rpc import RpcClient
from kolray.tracker.poller import SignatureRef


class ActorLimiter:
    """Adapts the ``RateLimiterActor`` to the client's limiter protocol: reserve remotely, wait here."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.waited_s = 0.0

    async def acquire(self, endpoint: str, calls: int = 1) -> None:
        delay = await self.actor.reserve.remote(endpoint, calls)
        if delay > 0:
            self.waited_s += delay
            await asyncio.sleep(delay)

    async def pause(self, endpoint: str, seconds: float) -> None:
        await self.actor.pause.remote(endpoint, seconds)


class RpcChainSource:
    def __init__(self, client: RpcClient) -> None:
        self.client = client

    @classmethod
    def create(cls, rpc_urls: list[str], limiter: Any = None, **options: Any) -> RpcChainSource:
        wrapped = ActorLimiter(limiter) if limiter is not None and hasattr(limiter, "reserve") else limiter
        return cls(RpcClient(rpc_urls, limiter=wrapped, **options))

    async def signatures(
        self, wallet: str, until: str | None, not_before: int | None, max_count: int | None
    ) -> list[SignatureRef]:
        if until is None and (not_before is not None or max_count is not None):
            age = None if not_before is None else max(0.0, _now() - not_before)
            infos = await self.client.backfill_signatures(wallet, max_age_s=age, max_count=max_count)
        else:
            infos = await self.client.signatures_since(wallet, until, max_count=max_count)
        return [SignatureRef(i.signature, i.slot, i.block_time, i.failed) for i in infos]

    async def transactions(self, signatures: Sequence[str]) -> list[dict[str, Any] | None]:
        return await self.client.get_transactions(signatures)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self.client.stats())
        limiter = self.client.limiter
        if isinstance(limiter, ActorLimiter):
            stats["rate_limit_wait_s"] = round(limiter.waited_s, 3)
        return stats

    async def aclose(self) -> None:
        await self.client.aclose()


def _now() -> float:
    import time

    return time.time()
