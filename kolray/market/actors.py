"""The Ray edge of the market stage: one async actor that watches every token's market.

It reserves its RPC calls from the tracker's cluster-wide limiter (``kolray-rate-limiter``, made
here if the tracker has not made it), so tracking and the market stay inside one rate budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

from kolray.chain.rpc import RpcClient
from kolray.logs import configure_logging
from kolray.market.stage import MarketOptions, MarketWatcher
from kolray.secrets import register_secret
from kolray.tracker.actors import LIMITER_NAME, NAMESPACE, RateLimiterActor
from kolray.tracker.actors import remote as tracker_remote
from kolray.tracker.source import ActorLimiter

MARKET_NAME = "kolray-market"

log = logging.getLogger(__name__)


class MarketActor:
    def __init__(self, options: MarketOptions, rps: float, burst: float) -> None:
        configure_logging()
        for url in options.rpc_urls:
            register_secret(url)
        self.options = options
        self.limiter = (
            tracker_remote(RateLimiterActor)
            .options(name=LIMITER_NAME, namespace=NAMESPACE, get_if_exists=True)
            .remote(rps, burst)
        )
        self.stop_event: asyncio.Event | None = None
        self.watcher: MarketWatcher | None = None

    async def run(self) -> dict[str, Any]:
        """Watch until :meth:`stop`; returns the stage's summary."""
        self.stop_event = asyncio.Event()
        limiter = ActorLimiter(self.limiter)
        async with RpcClient(self.options.rpc_urls, limiter=limiter, **self.options.client_options) as rpc:
            self.watcher = MarketWatcher(self.options, rpc)
            summary = await self.watcher.run(self.stop_event)
        return summary.model_dump()

    def summary(self) -> dict[str, Any]:
        return self.watcher.summary.model_dump() if self.watcher is not None else {}

    def stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()


@functools.cache
def market_actor_class() -> Any:
    import ray

    return ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(MarketActor)


def market_actor(options: MarketOptions, rps: float, burst: float) -> Any:
    """The cluster's market actor (``kolray-market``), made if there is none."""
    return (
        market_actor_class()
        .options(name=MARKET_NAME, namespace=NAMESPACE, get_if_exists=True)
        .remote(options, rps, burst)
    )


def keep_running(actor: Any, run: Any) -> Any:
    """The market actor's current run (an ObjectRef), started when there is none or started again
    when it has ended (a crash, or Ray restarting the actor)."""
    import ray

    if run is not None:
        ready, _ = ray.wait([run], timeout=0)
        if not ready:
            return run
        with contextlib.suppress(Exception):
            ray.get(run)  # a crash shows in the actor's log
        log.warning("market stage stopped; starting it again")
    return actor.run.remote()
