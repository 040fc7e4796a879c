"""What the market did around a position: its peak after the entry, the time to it, the drawdown,
the gain missed after the KOL's exit, and what a follower who copied it would have made.

A token's price path is every price kolray has for the mint: the pool price after each stored swap
(any tracked wallet, SOL-quoted) and the market stage's tape (:mod:`kolray.market`, read from the
token's curve or pool between the swaps). The price at a time is the last one known at or before it.

Per position, with ``p0`` its opening buy's price (``entry_price_sol``) and ``H`` the horizon
(7 days, the label horizon):

- ``peak_multiple``: the highest price in ``(entry, entry + H]`` ÷ ``p0``, at least 1 (right after
  the buy the pool stands at ``p0``: a token that only fell peaked at the entry, ``peak_time =
  entry_time``); ``peak_time`` is when the first such high traded (time to peak = ``peak_time −
  entry_time``). Before ``entry + H`` has passed it is the peak so far; with no price after the
  entry at all it is unknown (``None``).
- ``drawdown``: the largest fall from a running high (starting at ``p0``) within the same window,
  as a fraction of that high (0 = never fell, 0.9 = lost 90% from a high).
- ``missed_gain_sol``: for a closed position, what the tokens it sold would have fetched at the
  highest price after its exit (within ``entry + H``) beyond what they did fetch; 0 when nothing
  traded higher after the exit.
- ``copy_multiple``: a follower who buys ``COPY_DELAY_S`` seconds after the KOL's opening buy and
  exits with the KOL (sells everything at the KOL's closing sell) pays the price at ``entry + d``
  and gets the price at the exit: ``copy_multiple = p(exit) ÷ p(entry + d)``, gross of fees (the
  KOL's ``multiple`` is gross of fees too). The follower buys after the KOL's own buy moved the
  price and after whatever crowd its call drew, and sells after the KOL's sell hit the pool, which
  is what copying costs. It is known at the close, so statistics stay point in time.

Only prices kolray has count: without a market tape, a peak no tracked wallet traded at is missed,
and a copy that no price separates from the KOL's own trade equals it (the statistics then show no
gap between KOL and follower).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kolray.chain.types import WSOL_MINT

PEAK_HORIZON_S = 7 * 86_400  # the follower's label horizon (docs/features.md)
COPY_DELAY_S = 5  # "a few seconds later": a bot reading the KOL's trade from a block stream


# The price path's two sources as SQL (tables ``swaps s`` and ``market_tape t``), shared by the
# analyzer and the feature pipeline so that both see the same prices: swaps that reveal a SOL price
# (the pool's after the trade), and the market stage's tape points (gaps have no price).
PRICED_SWAP_SQL = (
    "s.block_time IS NOT NULL AND s.price_sol IS NOT NULL AND s.price_sol > 0 "
    f"AND (s.quote_mint IS NULL OR s.quote_mint = '{WSOL_MINT}')"
)
TAPE_PRICE_SQL = "t.price_sol IS NOT NULL AND t.price_sol > 0"


@dataclass(frozen=True)
class PricePaths:
    """Prices per mint, time-sorted: ``times[begin:end]`` and ``prices[begin:end]`` for
    ``spans[mint] = (begin, end)``. Non-finite and non-positive prices are left out."""

    spans: dict[str, tuple[int, int]]
    times: np.ndarray  # int64, sorted within each mint
    prices: np.ndarray  # float64

    @classmethod
    def build(
        cls,
        mints: Sequence[str],
        times: Sequence[int],
        prices: Sequence[float],
        slots: Sequence[int | None] | None = None,
    ) -> PricePaths:
        """Paths from parallel columns (``slots`` order the prices of one second)."""
        return cls.from_columns(mints, times, prices, slots)[0]

    @classmethod
    def from_columns(
        cls,
        mints: Sequence[str],
        times: Sequence[int],
        prices: Sequence[float] | np.ndarray,
        slots: Sequence[int | None] | None = None,
    ) -> tuple[PricePaths, np.ndarray]:
        """:meth:`build`, also returning the input row of each kept price (:meth:`from_codes`)."""
        names, codes = np.unique(np.asarray(mints, dtype=object), return_inverse=True)
        return cls.from_codes(
            [str(name) for name in names],
            codes,
            np.asarray(times, dtype=np.int64),
            np.asarray(prices, dtype=np.float64),
            _slots(slots, len(codes)),
        )

    @classmethod
    def from_codes(
        cls, names: Sequence[str], codes: np.ndarray, times: np.ndarray, prices: np.ndarray, slots: np.ndarray
    ) -> tuple[PricePaths, np.ndarray]:
        """Paths from mint codes (indices into ``names``) and parallel columns; also returns, for
        each kept price, its row in the input (for callers that carry more columns). The order —
        mint, time, slot, then price — is total, so the same prices give the same paths whatever
        order they were read in (the price at a time is the last one of that second; a tape point
        has its slot, so it falls among the swaps of its second as the chain placed it)."""
        keep = np.flatnonzero(np.isfinite(prices) & (prices > 0))
        order = keep[np.lexsort((prices[keep], slots[keep], times[keep], codes[keep]))]
        sorted_codes = codes[order]
        spans: dict[str, tuple[int, int]] = {}
        if len(order):
            edges = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1], True])
            for begin, end in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
                spans[names[int(sorted_codes[begin])]] = (begin, end)
        return cls(spans, times[order], prices[order]), order

    def path(self, mint: str) -> tuple[np.ndarray, np.ndarray]:
        """The mint's (times, prices); empty arrays when kolray has no price of it."""
        begin, end = self.spans.get(mint, (0, 0))
        return self.times[begin:end], self.prices[begin:end]

    def window_peak(self, mint: str, after: int, through: int) -> tuple[float, int] | None:
        """The highest price in ``(after, through]`` and the time it first traded, or ``None``."""
        times, prices = self.path(mint)
        lo = int(np.searchsorted(times, after, side="right"))
        hi = int(np.searchsorted(times, through, side="right"))
        if hi <= lo:
            return None
        index = lo + int(np.argmax(prices[lo:hi]))
        return float(prices[index]), int(times[index])

    def price_at(self, mint: str, time: int) -> float | None:
        """The last price at or before ``time`` (``None`` before the first)."""
        times, prices = self.path(mint)
        index = int(np.searchsorted(times, time, side="right")) - 1
        return None if index < 0 else float(prices[index])


@dataclass(frozen=True, slots=True)
class Outcome:
    """A position's market outcome (the module docstring defines each field)."""

    peak_multiple: float | None = None
    peak_time: int | None = None
    drawdown: float | None = None
    missed_gain_sol: float | None = None
    copy_multiple: float | None = None


def paths_from_swaps(swaps: Iterable[Any]) -> PricePaths:
    """The price paths of swaps in memory (``Swap``, ``SwapRow`` or SQL rows): the rule of
    :data:`PRICED_SWAP_SQL`, for the pure functions and tests (the database stage reads the same
    prices with that SQL, and adds the market tape)."""
    kept = [
        s
        for s in swaps
        if s.block_time is not None
        and s.price_sol is not None
        and s.price_sol > 0
        and getattr(s, "quote_mint", None) in (None, WSOL_MINT)
    ]
    return PricePaths.build(
        [s.mint for s in kept],
        [int(s.block_time) for s in kept],
        [float(s.price_sol) for s in kept],
        [s.slot for s in kept],
    )


def _slots(slots: Sequence[int | None] | None, n: int) -> np.ndarray:
    if slots is None:
        return np.zeros(n, dtype=np.int64)
    return np.fromiter((-1 if v is None else v for v in slots), dtype=np.int64, count=n)


class PositionFacts(Protocol):
    """What an outcome reads of a position: a :class:`kolray.analyzer.positions.Position`, or a
    ``positions`` row with these columns."""

    @property
    def mint(self) -> str: ...
    @property
    def entry_time(self) -> int: ...
    @property
    def entry_price_sol(self) -> float | None: ...
    @property
    def exit_time(self) -> int | None: ...
    @property
    def tokens_sold(self) -> int: ...
    @property
    def token_decimals(self) -> int: ...
    @property
    def proceeds_sol(self) -> float: ...


class PositionLike(PositionFacts, Protocol):
    """A position whose outcome can be set (:class:`kolray.analyzer.positions.Position`)."""

    def set_outcome(self, outcome: Outcome) -> None: ...


def outcome_of(paths: PricePaths, position: PositionFacts) -> Outcome:
    """:func:`position_outcome` of a position."""
    return position_outcome(
        paths,
        mint=position.mint,
        entry_time=position.entry_time,
        entry_price_sol=position.entry_price_sol,
        exit_time=position.exit_time,
        tokens_sold=position.tokens_sold,
        token_decimals=position.token_decimals,
        proceeds_sol=position.proceeds_sol,
    )


def attach_outcomes(positions: Iterable[PositionLike], paths: PricePaths) -> None:
    """Set every position's market outcome from ``paths``."""
    for position in positions:
        position.set_outcome(outcome_of(paths, position))


def position_outcome(
    paths: PricePaths,
    *,
    mint: str,
    entry_time: int,
    entry_price_sol: float | None,
    exit_time: int | None,
    tokens_sold: int,
    token_decimals: int,
    proceeds_sol: float,
    horizon_s: int = PEAK_HORIZON_S,
    copy_delay_s: int = COPY_DELAY_S,
) -> Outcome:
    """The market outcome of one position from its mint's price path (see the module docstring)."""
    if entry_price_sol is None or not np.isfinite(entry_price_sol) or entry_price_sol <= 0:
        return Outcome()
    times, prices = paths.path(mint)
    end = entry_time + horizon_s
    lo = int(np.searchsorted(times, entry_time, side="right"))
    hi = int(np.searchsorted(times, end, side="right"))
    peak_multiple = peak_time = drawdown = None
    if hi > lo:
        window = prices[lo:hi]
        top = int(np.argmax(window))
        if window[top] > entry_price_sol:
            peak_multiple, peak_time = float(window[top]) / entry_price_sol, int(times[lo + top])
        else:
            peak_multiple, peak_time = 1.0, entry_time
        highs = np.maximum.accumulate(np.maximum(window, entry_price_sol))
        drawdown = float(np.max(1.0 - window / highs))
    missed = copy = None
    if exit_time is not None:
        after_exit = paths.window_peak(mint, exit_time, end) if exit_time < end else None
        sold = tokens_sold / 10**token_decimals
        missed = 0.0 if after_exit is None else max(0.0, sold * after_exit[0] - proceeds_sol)
        bought_at = paths.price_at(mint, entry_time + copy_delay_s)
        sold_at = paths.price_at(mint, exit_time)
        if bought_at is not None and sold_at is not None:
            copy = sold_at / bought_at
    return Outcome(peak_multiple, peak_time, drawdown, missed, copy)


__all__ = [
    "COPY_DELAY_S",
    "PEAK_HORIZON_S",
    "PRICED_SWAP_SQL",
    "TAPE_PRICE_SQL",
    "Outcome",
    "PositionFacts",
    "PositionLike",
    "PricePaths",
    "attach_outcomes",
    "outcome_of",
    "paths_from_swaps",
    "position_outcome",
]
