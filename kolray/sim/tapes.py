"""The true price tape of every token the KOLs traded: what the twin's market really did.

A token's price is its path level at the last grid point (``path_step_s``, 5 s: a step stands for
a swap) plus the lift of the SOL in its reserves beyond the path's: the crowds the KOLs drew and
the KOLs' own buys while they hold (:func:`kolray.sim.market.crowd_impact`), taken once the
simulation has added every crowd: the price a KOL's entry or time exit trades at.

The tape is not the twin's ``max_multiple_7d``: that peak is the Brownian bridge's maximum between
grid points (continuous monitoring, what a take-profit touches and what the oracle assumes), with the
crowds known at entry. What a reader of the chain can see is ``tape_max_multiple_7d`` in
``positions.parquet``: the tape's peak, or a tracked wallet's swap between its points if higher (the
pool price a trade leaves is a price the token traded at), over the entry's pool price.
The twin serves its bonding-curve and pool accounts from this tape (:mod:`kolray.sim.accounts`) and
the market stage is held against it.

Stored as change points: a row ``(time, level, drift, pool)`` holds from ``time`` until the next
row, the log-price (from the launch price) being ``level + drift × (t − time)``; ``drift`` is zero
except after a death on an AMM pool, where the price keeps sliding. A grid point is kept when the
level has moved more than :data:`TAPE_TOLERANCE` (0.1%) from the last one kept, so the tape is the
path to within 0.1% at every instant. ``pool`` tells whether the bonding curve has completed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kolray.sim.market import TokenPath

TAPE_TOLERANCE = 0.001  # log-price
TAPES_FILE = "tapes.parquet"
TAPES_SCHEMA = pa.schema(
    [
        ("mint", pa.string()),
        ("time", pa.float64()),
        ("level", pa.float64()),
        ("drift", pa.float64()),  # per second
        ("pool", pa.bool_()),
    ]
)


@dataclass(slots=True)
class TokenTape:
    time: np.ndarray
    level: np.ndarray
    drift: np.ndarray
    pool: np.ndarray


def _thin(levels: np.ndarray, tolerance: float) -> np.ndarray:
    """Indexes of the change points that keep a step function within ``tolerance`` of ``levels``."""
    keep = [0]
    last = levels[0]
    # Python loop over the grid: a token lives minutes (hundreds of points) in most worlds; the
    # long-lived ones are a few per community.
    for i in range(1, len(levels)):
        if abs(levels[i] - last) > tolerance:
            keep.append(i)
            last = levels[i]
    return np.asarray(keep, dtype=np.int64)


def tape_of(path: TokenPath, impact: np.ndarray, until: float) -> TokenTape:
    """The token's tape from its path and final crowd impact, up to ``until`` (the world's end)."""
    levels = path.x + impact
    times = path.launch + np.arange(len(levels)) * path.step
    alive = times < min(path.death_time, until)
    alive[0] = True
    levels, times = levels[alive], times[alive]
    migration_end = (
        path.launch + (path.migration_index + 1) * path.step if path.migration_index >= 0 else math.inf
    )
    keep = _thin(levels, TAPE_TOLERANCE)
    # The step where the curve completes is a change point too (the venue changes there).
    if math.isfinite(migration_end):
        keep = np.union1d(keep, np.searchsorted(times, migration_end, side="left").clip(max=len(times) - 1))
    time = times[keep]
    level = levels[keep]
    drift = np.zeros(len(keep))
    pool = time >= migration_end
    if path.death_time < until:
        death = path.death_time
        on_pool = path.migrated_at(death)
        at_death = float(path.x[path.index_at(death)])  # the crowds are gone: as path.level_at
        dead = at_death - path.death_drop if on_pool else path.curve_dead_level
        time = np.append(time, death)
        level = np.append(level, dead)
        drift = np.append(drift, path.dead_drift if on_pool else 0.0)
        pool = np.append(pool, on_pool)
    return TokenTape(time, level, drift, pool)


def tapes_frame(tapes: dict[str, TokenTape]) -> pd.DataFrame:
    parts = [
        pd.DataFrame({"mint": mint, "time": t.time, "level": t.level, "drift": t.drift, "pool": t.pool})
        for mint, t in sorted(tapes.items())
    ]
    if not parts:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in TAPES_SCHEMA.names})
    return pd.concat(parts, ignore_index=True)


class Tapes:
    """The tapes of a world, by mint: the level at a time, and the peak over a window."""

    def __init__(self, frame: pd.DataFrame) -> None:
        frame = frame.sort_values(["mint", "time"], kind="stable").reset_index(drop=True)
        self.time = frame["time"].to_numpy(np.float64)
        self.level = frame["level"].to_numpy(np.float64)
        self.drift = frame["drift"].to_numpy(np.float64)
        self.pool = frame["pool"].to_numpy(bool)
        mints = frame["mint"].to_numpy(dtype=object)
        edges = np.flatnonzero(np.r_[True, mints[1:] != mints[:-1], True]) if len(mints) else np.array([0])
        self.ranges: dict[str, tuple[int, int]] = {
            str(mints[b]): (int(b), int(e)) for b, e in itertools.pairwise(edges)
        }

    @classmethod
    def read(cls, world_dir: str | Path) -> Tapes:
        path = Path(world_dir) / TAPES_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: this world has no price tapes (generated before tapes existed)")
        return cls(pq.read_table(path).to_pandas())

    def __contains__(self, mint: str) -> bool:
        return mint in self.ranges

    @property
    def mints(self) -> list[str]:
        return list(self.ranges)

    def at(self, mint: str, t: float) -> tuple[float, bool] | None:
        """(log-price level, curve completed) at ``t``; None before the token's first point."""
        begin, end = self.ranges[mint]
        i = int(np.searchsorted(self.time[begin:end], t, side="right")) - 1
        if i < 0:
            return None
        j = begin + i
        return float(self.level[j] + self.drift[j] * (t - self.time[j])), bool(self.pool[j])

    def peak(self, mint: str, after: float, until: float) -> float:
        """The highest level in ``[after, until]``: the level at ``after`` and every change point
        up to ``until`` (a drift only slides down, so a later segment peaks where it starts)."""
        begin, end = self.ranges[mint]
        times = self.time[begin:end]
        first = int(np.searchsorted(times, after, side="right"))
        last = int(np.searchsorted(times, until, side="right"))
        now = self.at(mint, after)
        later = self.level[begin + first : begin + last]
        best = max(float(later.max()) if len(later) else -math.inf, now[0] if now else -math.inf)
        return best if math.isfinite(best) else math.nan
