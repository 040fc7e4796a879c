"""Point-in-time KOL statistics from positions.

Statistics as of ``t`` use only positions **closed before t** (``exit_time < t``) and position
entries before ``t``: whatever happens at or after ``t`` cannot change them (a closed position is
fixed by swaps up to its exit). :func:`kol_stats` is the plain, direct definition;
:class:`KolStatsIndex` answers the same question for many times in O(log n) each, for the feature
pipeline.

Definitions (also in the README, "KOL statistics"):

- window ``7d`` / ``30d``: positions with ``as_of − 7/30 days <= exit_time < as_of``; ``all``: every
  ``exit_time < as_of``. ``trades`` counts positions *entered* in the same window.
- ``scored``: closed positions with a SOL multiple (no token-to-token leg, SOL spent). Win rate,
  3x rate, multiples, PnL, consistency and the Diamond Hand score are over scored positions; the
  hold times over all closed positions.
- win: ``realised_pnl > 0`` (net of fees). 3x: ``multiple >= 3`` (gross, as the label).
- ``consistency``: the Wilson score lower bound (95%, z = 1.96) of the win rate,
  ``(p + z²/2n − z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = wins/n``, ``n = scored``. It
  is the win rate the record supports with confidence: high only for many positions that are
  mostly wins, never for a short lucky streak (3 of 3 gives 0.44; 60 of 100 gives 0.50).
- ``dh_score`` (Diamond Hand): the mean over scored positions of ``h × o``, where
  ``h = min(hold_weighted_s / 1 day, 1)`` is how long the tokens were held (size-weighted, FIFO)
  and ``o = clip(ln(multiple) / ln 3, −1, 1)`` the outcome (+1 at 3x or better, 0 at break-even,
  −1 at a third or worse; a multiple of 0 is −1). Holding winners scores up to +1, holding losers
  (bag-holding) down to −1, quick flips about 0 whatever they made: it rewards holding *winners*,
  not holding.
- recent form: the last ``RECENT_N`` scored positions closed before ``as_of`` (in close order,
  ties broken by entry time, mint, seq), whatever the window.
- copyability: over the scored positions with a follower result (``copy_multiple``, see
  :mod:`kolray.analyzer.outcomes`: buy ``COPY_DELAY_S`` after the KOL's opening buy, sell everything
  with its closing sell), ``copy_scored`` counts them, ``copy_pnl_sol`` is what a follower
  putting in the KOL's own cost would have made, ``Σ cost × (copy_multiple − 1)`` (gross of fees),
  and ``copy_roi`` that over the cost.
- ``copy_farmed_rate``: the share of those positions the KOL won (net PnL > 0) while its copier
  lost (``copy_multiple < 1``), trade by trade.
- ``farming``: on at least ``FARMING_MIN_COPIES`` copied positions, ``copy_farmed_rate >=
  FARMING_RATE`` and the copier lost overall (``copy_pnl < 0``): the KOL wins by selling to the
  crowd it calls in. ``None`` on fewer positions. The two thresholds were set on one twin world
  (60 KOLs × 10 days, seed 7: two of its farmers at 0.28 and 0.30, every other KOL with 20+
  copies at 0.15 or less) and checked on another (docs/analysis.md, "Copyability").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple

import numpy as np

from kolray.analyzer.positions import FLAG_UNTRACKED_SELL, Position
from kolray.chain.types import LAMPORTS_PER_SOL

Window = Literal["7d", "30d", "all"]
WINDOWS: dict[str, int | None] = {"7d": 7 * 86_400, "30d": 30 * 86_400, "all": None}
RECENT_N = 10
DH_HOLD_SCALE_S = 86_400
WILSON_Z = 1.96
FARMING_MIN_COPIES = 20
FARMING_RATE = 0.25
_LN3 = math.log(3.0)


@dataclass(slots=True, frozen=True)
class KolStats:
    """One wallet's statistics as of a time over a window (``None``: no position to compute from)."""

    wallet: str | None
    as_of: int
    window: str
    trades: int  # positions entered in the window
    closed: int  # positions closed in the window
    scored: int  # of those, with a SOL multiple
    wins: int
    n_3x: int
    win_rate: float | None
    rate_3x: float | None
    mean_multiple: float | None
    median_multiple: float | None
    mean_hold_s: float | None
    mean_hold_weighted_s: float | None
    total_cost_sol: float
    total_pnl_sol: float
    roi: float | None  # total PnL / total cost
    consistency: float | None
    dh_score: float | None
    untracked_sell_positions: int  # closed positions with the untracked_sell flag
    recent_n: int
    recent_win_rate: float | None
    recent_rate_3x: float | None
    recent_mean_multiple: float | None
    last_entry_time: int | None  # latest entry before as_of (any window)
    last_exit_time: int | None  # latest close before as_of (any window)
    copy_scored: int  # scored positions with a follower result
    copy_pnl_sol: float  # what a follower copying them made (gross)
    copy_roi: float | None
    copy_farmed_rate: float | None  # share of copied trades the KOL won and its copier lost
    farming: bool | None  # the KOL wins while its followers lose (None: too few copies)

    def to_dict(self) -> dict[str, Any]:
        # Flat fields only: a comprehension, not dataclasses.asdict's recursive deep copy.
        return {name: getattr(self, name) for name in _ALL_FIELDS}

    def snapshot(self) -> dict[str, Any]:
        """What ``kol_stats.stats`` stores: everything but the row's own key."""
        values = self.to_dict()
        for key in ("wallet", "as_of", "window"):
            values.pop(key)
        return values


_ALL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(KolStats))
STAT_FIELDS: tuple[str, ...] = tuple(
    name for name in _ALL_FIELDS if name not in ("wallet", "as_of", "window")
)


def window_seconds(window: str) -> int | None:
    try:
        return WINDOWS[window]
    except KeyError:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}, not {window!r}") from None


def wilson_lower_bound(wins: int, n: int, z: float = WILSON_Z) -> float | None:
    """Lower bound of the Wilson score interval for a proportion; ``None`` when ``n == 0``."""
    if n <= 0:
        return None
    p = wins / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - margin) / (1 + z2 / n)


def dh_term(multiple: float, hold_weighted_s: float) -> float:
    """One scored position's Diamond Hand contribution ``h × o`` (see the module docstring)."""
    hold = min(hold_weighted_s / DH_HOLD_SCALE_S, 1.0)
    outcome = -1.0 if multiple <= 0 else max(-1.0, min(1.0, math.log(multiple) / _LN3))
    return hold * outcome


def close_order(position: Position) -> tuple[int, int, str, int]:
    """The order positions close in (exit time, then a fixed tie-break)."""
    assert position.exit_time is not None
    return (position.exit_time, position.entry_time, position.mint, position.seq)


def _single_wallet(positions: Sequence[Position], wallet: str | None) -> str | None:
    wallets = {p.wallet for p in positions}
    if wallet is not None:
        wallets.add(wallet)
    if len(wallets) > 1:
        raise ValueError(f"KOL statistics are per wallet; got positions of {len(wallets)} wallets")
    return next(iter(wallets), None)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


class _Score(NamedTuple):
    """What the statistics read of a scored (closed, SOL-valued) position."""

    multiple: float
    pnl: int  # lamports, net of fees
    cost: int
    dh: float
    copy_pnl: int | None  # lamports a follower made with the same cost (None: no copy price)

    @property
    def farmed(self) -> bool:
        """The KOL won this trade and its copier lost it."""
        return self.copy_pnl is not None and self.pnl > 0 and self.copy_pnl < 0


def farming_flag(copies: int, farmed: int, copy_pnl: int) -> bool | None:
    """The module docstring's ``farming`` from the copied positions' count, how many of them were
    farmed, and the copier's summed PnL."""
    if copies < FARMING_MIN_COPIES:
        return None
    return farmed >= FARMING_RATE * copies and copy_pnl < 0


class _Closed(NamedTuple):
    """A closed position reduced to what the statistics read (computed once per position)."""

    exit_time: int
    hold_s: int
    hold_weighted_s: float
    untracked: bool
    score: _Score | None  # None: not SOL-valued


def _reduce(position: Position) -> _Closed:
    exit_time, hold_weighted_s = position.exit_time, position.hold_weighted_s
    if exit_time is None or hold_weighted_s is None:
        raise ValueError(f"position {position.wallet} {position.mint} #{position.seq} is not closed")
    multiple, pnl = position.multiple, position.realised_pnl_lamports
    copy = position.copy_multiple
    score = (
        None
        if multiple is None or pnl is None
        else _Score(
            multiple,
            pnl,
            position.cost_lamports,
            dh_term(multiple, hold_weighted_s),
            # Whole lamports, so that sums are exact and the index's farming flag equals the direct one.
            None if copy is None else round(position.cost_lamports * (copy - 1.0)),
        )
    )
    return _Closed(
        exit_time=exit_time,
        hold_s=exit_time - position.entry_time,
        hold_weighted_s=hold_weighted_s,
        untracked=FLAG_UNTRACKED_SELL in position.flags,
        score=score,
    )


def kol_stats(
    positions: Iterable[Position], as_of: int, window: str = "all", *, wallet: str | None = None
) -> KolStats:
    """One wallet's statistics as of ``as_of`` over ``window`` (``7d``, ``30d`` or ``all``), from its
    positions closed before ``as_of``: the direct, readable definition (O(n)). ``wallet`` names
    the KOL when the positions may be empty (else it is taken from them)."""
    return kol_stats_windows(positions, as_of, (window,), wallet=wallet)[window]


def kol_stats_windows(
    positions: Iterable[Position],
    as_of: int,
    windows: Iterable[str] = tuple(WINDOWS),
    *,
    wallet: str | None = None,
) -> dict[str, KolStats]:
    """:func:`kol_stats` for several windows at once (the positions are read once)."""
    positions = list(positions)
    wallet = _single_wallet(positions, wallet)
    closed_before = [
        _reduce(p)
        for p in sorted(
            (p for p in positions if p.closed and p.exit_time is not None and p.exit_time < as_of),
            key=close_order,
        )
    ]
    entries = [p.entry_time for p in positions if p.entry_time < as_of]
    recent = [c.score for c in closed_before if c.score is not None][-RECENT_N:]
    recent_multiples = [c.multiple for c in recent]
    shared: dict[str, Any] = {
        "recent_n": len(recent),
        "recent_win_rate": (sum(1 for c in recent if c.pnl > 0) / len(recent)) if recent else None,
        "recent_rate_3x": (sum(1 for m in recent_multiples if m >= 3) / len(recent)) if recent else None,
        "recent_mean_multiple": _mean(recent_multiples),
        "last_entry_time": max(entries) if entries else None,
        "last_exit_time": closed_before[-1].exit_time if closed_before else None,
    }
    result = {}
    for window in windows:
        span = window_seconds(window)
        low = None if span is None else as_of - span
        closed = closed_before if low is None else [c for c in closed_before if c.exit_time >= low]
        scored = [c.score for c in closed if c.score is not None]
        multiples = [c.multiple for c in scored]
        wins = sum(1 for c in scored if c.pnl > 0)
        n_3x = sum(1 for m in multiples if m >= 3)
        cost = sum(c.cost for c in scored)
        total_pnl = sum(c.pnl for c in scored)
        n = len(scored)
        copied = [c for c in scored if c.copy_pnl is not None]
        copy_cost = sum(c.cost for c in copied)
        copy_pnl = sum(c.copy_pnl for c in copied if c.copy_pnl is not None)
        result[window] = KolStats(
            wallet=wallet,
            as_of=as_of,
            window=window,
            trades=sum(1 for t in entries if low is None or t >= low),
            closed=len(closed),
            scored=n,
            wins=wins,
            n_3x=n_3x,
            win_rate=wins / n if n else None,
            rate_3x=n_3x / n if n else None,
            mean_multiple=_mean(multiples),
            median_multiple=statistics.median(multiples) if multiples else None,
            mean_hold_s=_mean([c.hold_s for c in closed]),
            mean_hold_weighted_s=_mean([c.hold_weighted_s for c in closed]),
            total_cost_sol=cost / LAMPORTS_PER_SOL,
            total_pnl_sol=total_pnl / LAMPORTS_PER_SOL,
            roi=total_pnl / cost if cost else None,
            consistency=wilson_lower_bound(wins, n),
            dh_score=_mean([c.dh for c in scored]),
            untracked_sell_positions=sum(1 for c in closed if c.untracked),
            copy_scored=len(copied),
            copy_pnl_sol=copy_pnl / LAMPORTS_PER_SOL,
            copy_roi=copy_pnl / copy_cost if copy_cost else None,
            copy_farmed_rate=sum(c.farmed for c in copied) / len(copied) if copied else None,
            farming=farming_flag(len(copied), sum(c.farmed for c in copied), copy_pnl),
            **shared,
        )
    return result


# Many as-of times: prefix sums and a wavelet matrix


class _WaveletMatrix:
    """k-th smallest value in any index range of a fixed array, in O(log n).

    Built over ranks (a permutation of 0..n-1), one bit level at a time; ``kth`` works on numpy
    arrays of ranges at once, so a whole column of queries costs O(Q log n) vectorised.
    """

    def __init__(self, ranks: np.ndarray) -> None:
        n = len(ranks)
        self.bits = max(1, int(n - 1).bit_length())
        self.levels: list[tuple[np.ndarray, int]] = []
        current = ranks.astype(np.int64)
        for bit in reversed(range(self.bits)):
            ones = (current >> bit) & 1
            zeros_before = np.concatenate(([0], np.cumsum(ones == 0)))
            self.levels.append((zeros_before, int(zeros_before[-1])))
            current = np.concatenate((current[ones == 0], current[ones == 1]))  # stable

    def kth(self, lo: np.ndarray, hi: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Rank of the k-th smallest (0-based) in ``[lo, hi)``, element-wise; needs ``k < hi − lo``."""
        lo, hi, k = lo.copy(), hi.copy(), k.copy()
        value = np.zeros_like(lo)
        for zeros_before, n_zeros in self.levels:
            zlo, zhi = zeros_before[lo], zeros_before[hi]
            zeros = zhi - zlo
            left = k < zeros
            value = (value << 1) | (~left).astype(np.int64)
            k = np.where(left, k, k - zeros)
            lo = np.where(left, zlo, n_zeros + lo - zlo)
            hi = np.where(left, zhi, n_zeros + hi - zhi)
        return value


def _prefix(values: Iterable[float] | np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=dtype)
    return np.concatenate((np.zeros(1, dtype=dtype), np.cumsum(array, dtype=dtype)))


# Several wallets in one sorted array: a time of wallet (segment) s becomes the key
# (s << SEGMENT_SHIFT) + time + 1, so every wallet's times lie in one run, in wallet order, and one
# searchsorted finds a query's place in its own wallet's run. Times are clipped to [-1, 2**34]
# (unix seconds stay below 2**34, the year 2514; -1 stands for "before everything").
SEGMENT_SHIFT = 35
_TIME_MAX = 1 << 34


def segment_keys(times: np.ndarray, segments: np.ndarray | int) -> np.ndarray:
    """Sort keys of ``times`` in wallet runs ``segments`` (see :data:`SEGMENT_SHIFT`)."""
    keys = np.clip(np.asarray(times, dtype=np.int64), -1, _TIME_MAX) + 1
    if isinstance(segments, int):
        return keys + (segments << SEGMENT_SHIFT) if segments else keys
    return keys + (np.asarray(segments, dtype=np.int64) << SEGMENT_SHIFT)


def _runs_start(lengths: Sequence[int]) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))[:-1]


class KolStatsIndex:
    """One wallet's positions arranged for statistics at many as-of times.

    Building costs O(n log n); each query O(log n) (binary searches into prefix sums, a wavelet
    matrix for medians), vectorised over arrays of times with :meth:`table`. The values equal
    :func:`kol_stats` (counts exactly; sums up to float rounding of prefix differences), and like
    it they depend only on positions closed before the query time.

    :meth:`stack` puts several wallets' indices side by side: :meth:`tables` then answers queries
    of all of them in one pass (each query names its wallet by position, ``segments``), with the
    very values each index gives alone — its prefix sums are concatenated, never summed again.
    A request for a thousand buys of thirty KOLs costs one pass instead of thirty.
    """

    def __init__(self, positions: Iterable[Position], *, wallet: str | None = None) -> None:
        positions = list(positions)
        self.wallet = _single_wallet(positions, wallet)
        self.wallets: tuple[str | None, ...] = (self.wallet,)
        # Sorted keys (segment 0: time + 1) and, per segment, where its run starts.
        self._entries = segment_keys(np.sort(np.array([p.entry_time for p in positions], dtype=np.int64)), 0)
        closed = [_reduce(p) for p in sorted((p for p in positions if p.closed), key=close_order)]
        self._closed_exit = segment_keys(np.array([c.exit_time for c in closed], dtype=np.int64), 0)
        self._c_hold = _prefix([c.hold_s for c in closed])
        self._c_hold_w = _prefix([c.hold_weighted_s for c in closed])
        self._c_untracked = _prefix([c.untracked for c in closed], np.int64)
        scored = [(c.exit_time, c.score) for c in closed if c.score is not None]
        multiples = np.array([score.multiple for _, score in scored], dtype=np.float64)
        pnl = [score.pnl for _, score in scored]
        self._scored_exit = segment_keys(np.array([exit_time for exit_time, _ in scored], dtype=np.int64), 0)
        self._s_wins = _prefix([v > 0 for v in pnl], np.int64)
        self._s_3x = _prefix(multiples >= 3, np.int64)
        self._s_multiple = _prefix(multiples)
        self._s_cost = _prefix([score.cost for _, score in scored], np.int64)
        self._s_pnl = _prefix(pnl, np.int64)
        self._s_dh = _prefix([score.dh for _, score in scored])
        copy_pnl = [score.copy_pnl for _, score in scored]
        copied = [v is not None for v in copy_pnl]
        self._s_copies = _prefix(copied, np.int64)
        self._s_copy_pnl = _prefix([0 if v is None else v for v in copy_pnl], np.int64)
        self._s_copy_cost = _prefix(
            [score.cost if c else 0 for (_, score), c in zip(scored, copied, strict=True)], np.int64
        )
        self._s_farmed = _prefix([score.farmed for _, score in scored], np.int64)
        self._e_start = self._c_start = self._s_start = np.zeros(1, dtype=np.int64)
        # Medians: ranks of the multiples (ties broken by position) and the values in rank order.
        order = np.argsort(multiples, kind="stable")
        self._sorted_multiples = multiples[order]
        self._ranks = np.empty(len(order), dtype=np.int64)
        self._ranks[order] = np.arange(len(order))
        self._wavelet = _WaveletMatrix(self._ranks) if len(self._ranks) else None

    @classmethod
    def stack(cls, indices: Sequence[KolStatsIndex]) -> KolStatsIndex:
        """The indices of several wallets as one: in :meth:`tables`, segment ``i`` is
        ``indices[i]``. Costs O(n log n) in all their positions (the medians' wavelet matrix)."""
        if not indices or any(len(index.wallets) != 1 for index in indices):
            raise ValueError("KolStatsIndex.stack takes one or more one-wallet indices")
        if len(indices) == 1:
            return indices[0]
        out = cls.__new__(cls)
        out.wallet = None
        out.wallets = tuple(index.wallet for index in indices)

        def keys(name: str) -> np.ndarray:
            return np.concatenate(
                [getattr(index, name) + (i << SEGMENT_SHIFT) for i, index in enumerate(indices)]
            )

        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(index, name) for index in indices])

        out._entries, out._closed_exit, out._scored_exit = (
            keys("_entries"),
            keys("_closed_exit"),
            keys("_scored_exit"),
        )
        out._e_start = _runs_start([len(index._entries) for index in indices])
        out._c_start = _runs_start([len(index._closed_exit) for index in indices])
        out._s_start = _runs_start([len(index._scored_exit) for index in indices])
        for name in (
            "_c_hold",
            "_c_hold_w",
            "_c_untracked",
            "_s_wins",
            "_s_3x",
            "_s_multiple",
            "_s_cost",
            "_s_pnl",
            "_s_dh",
            "_s_copies",
            "_s_copy_pnl",
            "_s_copy_cost",
            "_s_farmed",
            "_sorted_multiples",
        ):
            setattr(out, name, joined(name))
        # A run's values occupy its own block of ranks, so the k-th smallest in a range of one
        # run is that run's k-th smallest, moved by the run's start.
        out._ranks = np.concatenate(
            [index._ranks + start for index, start in zip(indices, out._s_start.tolist(), strict=True)]
        )
        out._wavelet = _WaveletMatrix(out._ranks) if len(out._ranks) else None
        return out

    def __len__(self) -> int:
        return len(self._entries)

    def table(self, as_of: Sequence[int] | np.ndarray, window: str = "all") -> dict[str, np.ndarray]:
        """Every statistic (``STAT_FIELDS``) for each time in ``as_of``: float arrays, NaN for
        ``None``; counts as int64. Times need not be sorted."""
        return self.tables(as_of, (window,))[window]

    def tables(
        self,
        as_of: Sequence[int] | np.ndarray,
        windows: Sequence[str] = ("all", "7d", "30d"),
        segments: np.ndarray | None = None,
    ) -> dict[str, dict[str, np.ndarray]]:
        """:meth:`table` for several windows, computed in one vectorised pass (a point-in-time
        feature row needs every window, and the fixed cost of a pass dominates small queries).
        ``segments``: for a :meth:`stack`, the wallet (its position) of each query."""
        t = np.asarray(as_of, dtype=np.int64).reshape(-1)
        n = len(t)
        if segments is None:
            if len(self.wallets) != 1:
                raise ValueError("a stacked KolStatsIndex needs the segment of each query")
            seg = np.zeros(n, dtype=np.int64)
        else:
            seg = np.asarray(segments, dtype=np.int64).reshape(-1)
            if len(seg) != n:
                raise ValueError(f"{len(seg)} segments for {n} times")
            if n and (seg.min() < 0 or seg.max() >= len(self.wallets)):
                raise ValueError(f"segments must lie in [0, {len(self.wallets)})")
        if not windows:
            return {}
        stacked = self._table(t, seg, [window_seconds(window) for window in windows])
        return {
            window: {name: values[i * n : (i + 1) * n] for name, values in stacked.items()}
            for i, window in enumerate(windows)
        }

    def _table(self, t: np.ndarray, seg: np.ndarray, spans: list[int | None]) -> dict[str, np.ndarray]:
        """The statistics of positions in ``[t - span, t)`` (by entry or exit time; no span:
        everything before ``t``), for each span in turn, each query in its own segment. Positions
        found are global; a prefix array has one more slot per run before it, so a run's prefix
        index is its position plus its segment."""
        t_keys = segment_keys(t, seg)
        low_keys = [None if span is None else segment_keys(t - span, seg) for span in spans]
        k = len(spans)

        def bounds(keys: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # The end (time < as_of) is the same for every window: searched once. Without a
            # window the range starts where the query's run does: nothing to search.
            hi = np.searchsorted(keys, t_keys, side="left")
            lo = [starts[seg] if low is None else np.searchsorted(keys, low, side="left") for low in low_keys]
            return np.concatenate(lo), np.tile(hi, k)

        def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(den > 0, num / np.maximum(den, 1), np.nan)

        e_lo, e_hi = bounds(self._entries, self._e_start)
        c_lo, c_hi = bounds(self._closed_exit, self._c_start)
        s_lo, s_hi = bounds(self._scored_exit, self._s_start)
        seg = np.tile(seg, k)
        closed = c_hi - c_lo
        n = s_hi - s_lo
        cp_lo, cp_hi = c_lo + seg, c_hi + seg
        sp_lo, sp_hi = s_lo + seg, s_hi + seg
        wins = self._s_wins[sp_hi] - self._s_wins[sp_lo]
        n_3x = self._s_3x[sp_hi] - self._s_3x[sp_lo]
        cost = self._s_cost[sp_hi] - self._s_cost[sp_lo]
        pnl = self._s_pnl[sp_hi] - self._s_pnl[sp_lo]
        # Recent form: the last RECENT_N scored positions before as_of, whatever the window.
        s_start = self._s_start[seg]
        r_lo = np.maximum(s_hi - RECENT_N, s_start)
        recent = s_hi - r_lo
        rp_lo = r_lo + seg
        copies = self._s_copies[sp_hi] - self._s_copies[sp_lo]
        copy_pnl = self._s_copy_pnl[sp_hi] - self._s_copy_pnl[sp_lo]
        farmed = self._s_farmed[sp_hi] - self._s_farmed[sp_lo]
        return {
            "trades": e_hi - e_lo,
            "closed": closed,
            "scored": n,
            "wins": wins,
            "n_3x": n_3x,
            "win_rate": ratio(wins, n),
            "rate_3x": ratio(n_3x, n),
            "mean_multiple": ratio(self._s_multiple[sp_hi] - self._s_multiple[sp_lo], n),
            "median_multiple": self._medians(s_lo, s_hi),
            "mean_hold_s": ratio(self._c_hold[cp_hi] - self._c_hold[cp_lo], closed),
            "mean_hold_weighted_s": ratio(self._c_hold_w[cp_hi] - self._c_hold_w[cp_lo], closed),
            "total_cost_sol": cost / LAMPORTS_PER_SOL,
            "total_pnl_sol": pnl / LAMPORTS_PER_SOL,
            "roi": ratio(pnl, cost),
            "consistency": self._wilson(wins, n),
            "dh_score": ratio(self._s_dh[sp_hi] - self._s_dh[sp_lo], n),
            "untracked_sell_positions": self._c_untracked[cp_hi] - self._c_untracked[cp_lo],
            "recent_n": recent,
            "recent_win_rate": ratio(self._s_wins[sp_hi] - self._s_wins[rp_lo], recent),
            "recent_rate_3x": ratio(self._s_3x[sp_hi] - self._s_3x[rp_lo], recent),
            "recent_mean_multiple": ratio(self._s_multiple[sp_hi] - self._s_multiple[rp_lo], recent),
            "last_entry_time": self._last(self._entries, e_hi, self._e_start[seg]),
            "last_exit_time": self._last(self._closed_exit, c_hi, self._c_start[seg]),
            "copy_scored": copies,
            "copy_pnl_sol": copy_pnl / LAMPORTS_PER_SOL,
            "copy_roi": ratio(copy_pnl, self._s_copy_cost[sp_hi] - self._s_copy_cost[sp_lo]),
            "copy_farmed_rate": ratio(farmed, copies),
            # 1 / 0, NaN below FARMING_MIN_COPIES (a feature column; at() turns it into a bool).
            "farming": np.where(
                copies >= FARMING_MIN_COPIES,
                ((farmed >= FARMING_RATE * copies) & (copy_pnl < 0)).astype(np.float64),
                np.nan,
            ),
        }

    def at(self, as_of: int, window: str = "all") -> KolStats:
        """The statistics as of one time, as :func:`kol_stats` returns them."""
        row = self.table([as_of], window)
        values: dict[str, Any] = {}
        for name in STAT_FIELDS:
            value = row[name][0]
            if isinstance(value, np.floating):
                values[name] = None if np.isnan(value) else float(value)
            else:
                values[name] = int(value)
        for name in ("last_entry_time", "last_exit_time"):
            values[name] = None if values[name] is None else int(values[name])
        values["farming"] = None if values["farming"] is None else bool(values["farming"])
        return KolStats(wallet=self.wallet, as_of=int(as_of), window=window, **values)

    def _medians(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        count = hi - lo
        result = np.full(len(lo), np.nan)
        has = count > 0
        if self._wavelet is None or not has.any():
            return result
        lo, hi, count = lo[has], hi[has], count[has]
        upper = self._sorted_multiples[self._wavelet.kth(lo, hi, count // 2)]
        lower = self._sorted_multiples[self._wavelet.kth(lo, hi, (count - 1) // 2)]
        # statistics.median's even case: the mean of the two middle values.
        result[has] = np.where(count % 2 == 1, upper, (lower + upper) / 2)
        return result

    @staticmethod
    def _wilson(wins: np.ndarray, n: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            size = np.maximum(n, 1).astype(np.float64)
            p = wins / size
            z2 = WILSON_Z * WILSON_Z
            centre = p + z2 / (2 * size)
            margin = WILSON_Z * np.sqrt(p * (1 - p) / size + z2 / (4 * size * size))
            return np.where(n > 0, (centre - margin) / (1 + z2 / size), np.nan)

    @staticmethod
    def _last(keys: np.ndarray, end: np.ndarray, start: np.ndarray) -> np.ndarray:
        """The latest time of each query's run ``keys[start:end]`` (sorted keys): float, NaN when
        the run is empty."""
        if not len(keys):
            return np.full(len(end), np.nan)
        latest = (keys[np.maximum(end - 1, 0)] & ((1 << SEGMENT_SHIFT) - 1)) - 1
        return np.where(end > start, latest.astype(np.float64), np.nan)
