"""Concurrent small requests share one piece of work: the ingress's micro-batching.

A point-in-time feature lookup has a large fixed cost (database reads, building the wallet and
token context) and a small cost per item, and so has every call to a model replica (one Serve
hop). :class:`Coalescer` runs one ``process(items)`` at a time; requests that arrive while it runs
are queued and go into the next call together. Nothing ever waits for a timer: a lone request is
processed at once, and under load the batches grow by themselves to what arrived during the
previous call. Each caller gets back exactly the results of its own items, in order; if the
shared call fails, every caller in it gets the error.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _LoopState(Generic[T, R]):
    def __init__(self) -> None:
        self.queue: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        self.workers: set[asyncio.Task[None]] = set()


class Coalescer(Generic[T, R]):
    """``max_concurrent`` calls may run at once (2: one can look features up in a thread while
    the other waits for the model replica). Queues and workers are kept per event loop: a Serve
    replica has one loop for its life, but a test client may run each request on a loop of its
    own, and a worker left on a closed loop must not hold up the next one."""

    def __init__(
        self,
        process: Callable[[list[T]], Awaitable[list[R]]],
        max_items: int = 1024,
        max_concurrent: int = 2,
    ) -> None:
        self.process = process
        self.max_items = max_items
        self.max_concurrent = max_concurrent
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState[T, R]] = (
            weakref.WeakKeyDictionary()
        )
        self.calls = 0
        self.items = 0

    async def __call__(self, items: Sequence[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
        future: asyncio.Future[list[R]] = loop.create_future()
        state.queue.append((items, future))
        state.workers = {w for w in state.workers if not w.done()}
        if len(state.workers) < self.max_concurrent:
            state.workers.add(loop.create_task(self._drain(state)))
        return await future

    async def _drain(self, state: _LoopState[T, R]) -> None:
        queue = state.queue
        while queue:
            batch: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
            size = 0
            while queue and (not batch or size + len(queue[0][0]) <= self.max_items):
                items, future = queue.pop(0)
                if future.cancelled():  # the client went away
                    continue
                batch.append((items, future))
                size += len(items)
            if not batch:
                continue
            flat = [item for items, _ in batch for item in items]
            self.calls += 1
            self.items += len(flat)
            try:
                results = await self.process(flat)
                if len(results) != len(flat):
                    raise RuntimeError(
                        f"coalesced call returned {len(results)} results for {len(flat)} items"
                    )
            except BaseException as error:  # every caller of this call sees the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if isinstance(error, asyncio.CancelledError):
                    raise
                continue
            start = 0
            for items, future in batch:
                if not future.done():
                    future.set_result(results[start : start + len(items)])
                start += len(items)
