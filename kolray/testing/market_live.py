"""The market stage's live reads against a twin on a realtime clock: the twin in its own process
(so it and the stage do not share one interpreter's lock), and a twin world's KOL swaps stored as
the chain's clock reaches them (plus a delay: a tracker's latency), what ``bench/market_live.py``
holds the stage against."""

from __future__ import annotations

import math
import multiprocessing
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from kolray.db.engine import session_scope
from kolray.db.migrate import upgrade
from kolray.db.tables import SwapRow
from kolray.sim.world import SWAP_FIELDS, World


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain Python values (NaN → None), ready for an insert."""
    return [
        {
            k: None if isinstance(v, float) and math.isnan(v) else getattr(v, "item", lambda v=v: v)()
            for k, v in r.items()
        }
        for r in frame.to_dict("records")
    ]


class SwapFeed:
    """A world's KOL swaps, stored in a database as a clock passes their block time plus ``delay_s``
    (never before: the watch list must not learn of a token before its buy is on chain)."""

    def __init__(self, world: World, engine: Engine, delay_s: float = 0.0) -> None:
        trades = world.trades()[list(SWAP_FIELDS)].sort_values(["block_time", "slot"], kind="stable")
        self.engine = engine
        self.delay_s = delay_s
        self.block_times = trades["block_time"].to_numpy(np.int64)
        self.rows = _records(trades)
        self.stored = 0  # swaps stored so far (a prefix of ``rows``)

    def store_until(self, chain_time: float) -> int:
        """Store every swap whose block time + delay is ≤ ``chain_time``; returns how many were added."""
        upto = int(np.searchsorted(self.block_times, chain_time - self.delay_s, side="right"))
        if upto <= self.stored:
            return 0
        batch = self.rows[self.stored : upto]
        with session_scope(self.engine) as session:
            session.execute(insert(SwapRow), [dict(r, ingested_at=0) for r in batch])
        self.stored = upto
        return len(batch)


def empty_database(url: str) -> Engine:
    return upgrade(url)


def _serve(world_dir: str, config: dict[str, Any], conn: Connection) -> None:
    """The twin's process: serve ``world_dir``, send (url, sim time, monotonic time), wait for stop,
    send the server's counters."""
    from kolray.sim.server import start_server
    from kolray.sim.world import load_world

    with start_server(load_world(world_dir), **config) as twin:
        conn.send((twin.url, twin.server.sim_time(), time.monotonic()))
        conn.recv()
        conn.send(twin.stats())


class TwinProcess:
    """A twin server (:func:`kolray.sim.server.start_server` with ``config``) in a child process.
    ``sim_time()`` is its clock, from one reading and the monotonic clock (shared by the processes
    of one machine)."""

    def __init__(self, world_dir: str | Path, **config: Any) -> None:
        self.world_dir = str(world_dir)
        self.config = config
        self.speed = float(config.get("speed", 1.0))
        self.url = ""
        self.stats: dict[str, Any] = {}
        self._sim0 = 0.0
        self._mono0 = 0.0
        self._conn: Connection | None = None
        self._process: Any = None

    def __enter__(self) -> TwinProcess:
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(self.world_dir, self.config, theirs), name="kolray-twin", daemon=True
        )
        self._process.start()
        if not mine.poll(120):
            self._process.kill()
            raise TimeoutError("the twin process did not start within 120 s")
        self.url, self._sim0, self._mono0 = mine.recv()
        self._conn = mine
        return self

    def sim_time(self) -> float:
        return self._sim0 + (time.monotonic() - self._mono0) * self.speed

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._conn is not None:
            try:
                self._conn.send("stop")
                if self._conn.poll(30):
                    self.stats = self._conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        if self._process is not None:
            self._process.join(30)
            if self._process.is_alive():
                self._process.kill()
