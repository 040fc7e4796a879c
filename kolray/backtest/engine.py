"""The copy-trading simulation: pure functions of signals, observed prices and execution rules.

Nothing here reads a database or a model: :mod:`kolray.backtest.data` turns stored swaps,
positions and a feature dataset into :class:`Signal` and :class:`PriceTape`, the strategies
(:mod:`kolray.backtest.strategies`) turn signals into yes/no decisions, and this module replays the
copies. That keeps the arithmetic testable by hand.

Execution model (every fill is point in time):

- A **fill at time τ** uses the last price of the mint on the tape at or before τ, worsened by the
  slippage: buys pay ``p × (1 + slippage)``, sells receive ``p × (1 − slippage)``; the trading fee
  (``fee_bps``) is taken from the SOL of every fill and each transaction costs ``tx_fee_sol``. The
  tape is either the **trades** tape (every tracked wallet's swap that reveals a SOL price) or the
  **market** tape (the token's own bonding curve or pool, read by the market stage).
- A **gap** on the tape (the market could not be read from then on) is not a price: an entry that
  would fill in a gap is not made; a sell that would fill in one fills at the first price after it
  (at that later time); a copy still held when the data ends in a gap is valued at the last price
  before the gap. Each such fill is counted (``gap_fills``).
- **Entry**: the KOL's opening buy at ``t`` is seen ``delay_s`` later; the copy buys ``stake_sol``
  at ``t + delay_s``. Only the opening buy is copied (not the KOL's adds).
- **Exit with the KOL**: each KOL sell of the position is mirrored ``delay_s`` later, selling the
  same share of the copy's holding as the KOL sold of its own; the sell that closes the KOL's
  position (what is left is dust) sells everything.
- **Rules** (optional): take-profit / stop-loss trigger on an observed price after entry at or
  above ``take_profit ×`` / at or below ``stop_loss ×`` the copy's entry fill price, and fill
  ``delay_s`` after that observation (a gap fills at the later, observed price, not at the stop
  level); ``max_hold_s`` after entry the copy sells at once (its own timer, no delay).
- **End of data**: a copy still holding at ``end`` is valued as sold at the last price before
  ``end`` (slippage and fees included), with exit reason ``end``.

PnL is booked when the copy is flat (at its last fill); the stake is committed from entry to then.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

ExitReason = Literal["kol", "take_profit", "stop_loss", "max_hold", "end"]
EXIT_REASONS: tuple[str, ...] = ("kol", "take_profit", "stop_loss", "max_hold", "end")
BPS = 10_000


class Execution(BaseModel):
    """How copies are executed: latency, costs, size and exit rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay_s: int = Field(
        default=30,
        ge=0,
        description="Seconds from a KOL's trade to the copy's fill. 30 s: half kolray's default poll interval.",
    )
    slippage_bps: float = Field(default=100.0, ge=0, lt=BPS, description="Price impact per fill (1% = 100).")
    fee_bps: float = Field(default=100.0, ge=0, lt=BPS, description="Trading fee per fill (pump.fun: 100).")
    tx_fee_sol: float = Field(default=0.0005, ge=0, description="Network + priority fee per transaction.")
    stake_sol: float = Field(default=1.0, gt=0, description="SOL spent on each copy.")
    take_profit: float | None = Field(
        default=None,
        gt=1,
        description="Sell all when an observed price reaches this multiple of the entry fill.",
    )
    stop_loss: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Sell all when an observed price falls to this multiple of the entry fill.",
    )
    max_hold_s: int | None = Field(default=None, gt=0, description="Sell all this long after entry.")
    one_per_token: bool = Field(
        default=True, description="Skip a signal while the strategy still holds a copy of the same token."
    )
    capital_sol: float | None = Field(
        default=None,
        gt=0,
        description="Capital that total return and drawdown are relative to. Default: each strategy's "
        "capital needed: the least starting cash that never runs out (stakes out, realised PnL back).",
    )

    @model_validator(mode="after")
    def _finite(self) -> Execution:
        for name in (
            "slippage_bps",
            "fee_bps",
            "tx_fee_sol",
            "stake_sol",
            "take_profit",
            "stop_loss",
            "capital_sol",
        ):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite")
        return self

    @property
    def slippage(self) -> float:
        return self.slippage_bps / BPS

    @property
    def fee(self) -> float:
        return self.fee_bps / BPS


@dataclass(frozen=True, slots=True)
class KolSell:
    """A KOL sell of the copied position: when, and the share of the KOL's holding it sold."""

    time: int
    fraction: float  # 0 < fraction <= 1; the closing sell is 1
    signature: str


@dataclass(frozen=True, slots=True)
class Signal:
    """A tracked KOL's opening buy (a position entry): what a strategy may copy."""

    wallet: str
    mint: str
    time: int
    signature: str
    sells: tuple[KolSell, ...] = ()  # in chain order, up to the end of the data
    closed: bool = False  # the last of ``sells`` closed the KOL's position
    amount_sol: float | None = None
    label_3x: int | None = None  # the dataset's label (KOL realised 3x within the horizon)
    kol_multiple: float | None = None


class PriceTape:
    """SOL prices per mint in chain order, with the gaps where the price was unknown;
    :meth:`price_at` answers "the price at τ" from what was on the tape at or before τ only.

    Prices come as ``series`` (validated: finite, positive, in time order); ``gaps`` are the times
    from which a mint's market could not be read, until its next price. A gap and a price in the
    same second are ordered as given by :meth:`from_observations`; through the constructor the gap
    comes after the price (the unknown wins: a fill never uses a price the market then lost)."""

    def __init__(
        self,
        series: Mapping[str, tuple[Sequence[int], Sequence[float]]],
        gaps: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        # Priced points (what triggers look at) and every row in chain order, NaN for a gap (what a
        # fill looks at).
        self._times: dict[str, np.ndarray] = {}
        self._prices: dict[str, np.ndarray] = {}
        self._row_times: dict[str, np.ndarray] = {}
        self._row_prices: dict[str, np.ndarray] = {}
        gaps = gaps or {}
        for mint in set(series) | set(gaps):
            times, prices = series.get(mint, ((), ()))
            t = np.asarray(times, dtype=np.int64)
            p = np.asarray(prices, dtype=np.float64)
            if t.shape != p.shape:
                raise ValueError(f"mint {mint}: {len(t)} times but {len(p)} prices")
            if len(t) and np.any(np.diff(t) < 0):
                raise ValueError(f"mint {mint}: observations are not in time order")
            if np.any(~np.isfinite(p)) or np.any(p <= 0):
                raise ValueError(f"mint {mint}: prices must be finite and positive")
            g = np.asarray(gaps.get(mint, ()), dtype=np.int64)
            rows_t = np.concatenate([t, g])
            rows_p = np.concatenate([p, np.full(len(g), np.nan)])
            # Stable on (time, gap after price): kind 0 = price, 1 = gap.
            order = np.lexsort((np.r_[np.zeros(len(t)), np.ones(len(g))], rows_t))
            self._set(mint, rows_t[order], rows_p[order])

    def _set(self, mint: str, row_times: np.ndarray, row_prices: np.ndarray) -> None:
        priced = ~np.isnan(row_prices)
        self._row_times[mint], self._row_prices[mint] = row_times, row_prices
        self._times[mint], self._prices[mint] = row_times[priced], row_prices[priced]

    @classmethod
    def from_observations(
        cls, observations: Iterable[tuple[str, tuple[int, int, str], float | None]]
    ) -> PriceTape:
        """From ``(mint, chain key, price)`` in any order, ``None`` for a gap; the chain key
        ``(block_time, slot, signature)`` orders observations within a second."""
        grouped: dict[str, list[tuple[tuple[int, int, str], float | None]]] = {}
        for mint, key, price in observations:
            if price is not None and not (math.isfinite(price) and price > 0):
                raise ValueError(f"mint {mint}: prices must be finite and positive (got {price} at {key})")
            grouped.setdefault(mint, []).append((key, price))
        tape = cls({})
        for mint, items in grouped.items():
            items.sort(key=lambda item: item[0])
            tape._set(
                mint,
                np.array([k[0] for k, _ in items], dtype=np.int64),
                np.array([np.nan if p is None else p for _, p in items], dtype=np.float64),
            )
        return tape

    def __contains__(self, mint: str) -> bool:
        """Whether the tape has at least one price of ``mint``."""
        return len(self._times.get(mint, ())) > 0

    def __len__(self) -> int:
        """Prices on the tape (gaps not counted)."""
        return sum(len(t) for t in self._times.values())

    @property
    def gaps(self) -> int:
        """Gap rows on the tape."""
        return sum(int(np.isnan(p).sum()) for p in self._row_prices.values())

    @property
    def mints(self) -> set[str]:
        """Mints with at least one price."""
        return {mint for mint, times in self._times.items() if len(times)}

    def price_at(self, mint: str, at: int) -> float | None:
        """The last price at or before ``at``; ``None`` when there is none yet or the market is in a
        gap at ``at`` (its last row by then is a gap)."""
        times = self._row_times.get(mint)
        if times is None:
            return None
        index = int(np.searchsorted(times, at, side="right")) - 1
        if index < 0:
            return None
        price = float(self._row_prices[mint][index])
        return None if math.isnan(price) else price

    def last_price(self, mint: str, at: int) -> float | None:
        """The last price at or before ``at``, whether or not a gap came after it."""
        times = self._times.get(mint)
        if times is None:
            return None
        index = int(np.searchsorted(times, at, side="right")) - 1
        return None if index < 0 else float(self._prices[mint][index])

    def next_price(self, mint: str, after: int) -> tuple[int, float] | None:
        """``(time, price)`` of the first price later than ``after``; ``None``: none on the tape."""
        times = self._times.get(mint)
        if times is None:
            return None
        index = int(np.searchsorted(times, after, side="right"))
        return None if index >= len(times) else (int(times[index]), float(self._prices[mint][index]))

    def between(self, mint: str, after: int, upto: int) -> tuple[np.ndarray, np.ndarray]:
        """Prices with ``after < time <= upto``, in chain order (gaps are not prices)."""
        times = self._times.get(mint)
        if times is None:
            return np.zeros(0, np.int64), np.zeros(0)
        lo = int(np.searchsorted(times, after, side="right"))
        hi = int(np.searchsorted(times, upto, side="right"))
        return times[lo:hi], self._prices[mint][lo:hi]


@dataclass(slots=True)
class Trade:
    """One simulated copy."""

    wallet: str
    mint: str
    signal_time: int
    signal_signature: str
    entry_time: int
    entry_price: float  # observed price at entry (before slippage)
    exit_time: int  # the last fill: the copy is flat from here
    exit_reason: str
    stake_sol: float
    proceeds_sol: float  # SOL received from every sell, after slippage and fees
    transactions: int
    tx_fees_sol: float
    label_3x: int | None = None
    score: float | None = None  # what the strategy decided on (P(3x), PnL rank, ...)
    gap_fills: int = 0  # sells a gap on the tape moved to the price after it (or valued before it)

    @property
    def pnl_sol(self) -> float:
        return self.proceeds_sol - self.stake_sol - self.tx_fees_sol

    @property
    def net_multiple(self) -> float:
        """SOL back per SOL staked, after every cost."""
        return (self.stake_sol + self.pnl_sol) / self.stake_sol

    @property
    def ret(self) -> float:
        return self.pnl_sol / self.stake_sol

    def to_dict(self) -> dict[str, object]:
        return {
            "wallet": self.wallet,
            "mint": self.mint,
            "signal_time": self.signal_time,
            "signal_signature": self.signal_signature,
            "entry_time": self.entry_time,
            "entry_price": self.entry_price,
            "exit_time": self.exit_time,
            "exit_reason": self.exit_reason,
            "stake_sol": self.stake_sol,
            "proceeds_sol": self.proceeds_sol,
            "transactions": self.transactions,
            "tx_fees_sol": self.tx_fees_sol,
            "pnl_sol": self.pnl_sol,
            "net_multiple": self.net_multiple,
            "label_3x": self.label_3x,
            "score": self.score,
            "gap_fills": self.gap_fills,
        }


def simulate_copy(
    signal: Signal, tape: PriceTape, execution: Execution, end: int, score: float | None = None
) -> Trade | None:
    """One copy of ``signal`` under ``execution``, replayed up to ``end``; ``None`` when it cannot
    be entered (no price observed by the fill time, or the fill would fall after ``end``)."""
    ex = execution
    entry_time = signal.time + ex.delay_s
    if entry_time > end:
        return None
    observed = tape.price_at(signal.mint, entry_time)
    if observed is None:
        return None
    fill_in = observed * (1 + ex.slippage)
    tokens = ex.stake_sol * (1 - ex.fee) / fill_in  # whole tokens bought
    held = 1.0  # share of those tokens still held
    proceeds = 0.0
    transactions = 1
    gap_fills = 0

    def sell(share: float, at: int) -> int:
        """Sell ``share`` of what is held at ``at``, or later when ``at`` is in a gap; returns when."""
        nonlocal held, proceeds, transactions, gap_fills
        price = tape.price_at(signal.mint, at)
        if price is None:
            # In a gap: the first price after it, if the data has one; else the last before it
            # (there is one: the entry was priced).
            later = tape.next_price(signal.mint, at)
            if later is not None and later[0] <= end:
                at, price = later
            else:
                price = tape.last_price(signal.mint, at)
                assert price is not None
            gap_fills += 1
        proceeds += tokens * held * share * price * (1 - ex.slippage) * (1 - ex.fee)
        held *= 1 - share
        transactions += 1
        return at

    # Every way out as (fill time, order, reason, share), taken in fill order. At equal fill times
    # the KOL's sell goes first (the rules would fill at the same price anyway).
    exits: list[tuple[int, int, str, float]] = []
    for sell_event in signal.sells:
        fill_at = max(sell_event.time + ex.delay_s, entry_time)
        if fill_at <= end:
            share = 1.0 if sell_event is signal.sells[-1] and signal.closed else sell_event.fraction
            exits.append((fill_at, 0, "kol", share))
    if ex.max_hold_s is not None and entry_time + ex.max_hold_s <= end:
        # Our own timer: it fires at its time, with no reaction delay.
        exits.append((entry_time + ex.max_hold_s, 1, "max_hold", 1.0))
    if ex.take_profit is not None or ex.stop_loss is not None:
        # Prices observed after entry whose reaction would still fill by the end of the data.
        times, prices = tape.between(signal.mint, entry_time, end - ex.delay_s)
        take = (
            prices >= ex.take_profit * fill_in if ex.take_profit is not None else np.zeros(len(prices), bool)
        )
        stop = prices <= ex.stop_loss * fill_in if ex.stop_loss is not None else np.zeros(len(prices), bool)
        hit = take | stop
        if hit.any():
            first = int(np.argmax(hit))
            reason = "take_profit" if take[first] else "stop_loss"
            exits.append((int(times[first]) + ex.delay_s, 2, reason, 1.0))
    exits.sort(key=lambda e: (e[0], e[1]))

    exit_time = entry_time
    reason = "end"
    for fill_at, _, why, share in exits:
        # A sell moved past a gap moves the ones queued inside that gap with it: order is kept.
        exit_time = sell(share, max(fill_at, exit_time))
        if share >= 1.0:
            held = 0.0
            reason = why
            break
    if held > 0:
        exit_time = max(sell(1.0, end), exit_time)
        reason = "end"
    return Trade(
        wallet=signal.wallet,
        mint=signal.mint,
        signal_time=signal.time,
        signal_signature=signal.signature,
        entry_time=entry_time,
        entry_price=observed,
        exit_time=exit_time,
        exit_reason=reason,
        stake_sol=ex.stake_sol,
        proceeds_sol=proceeds,
        transactions=transactions,
        tx_fees_sol=transactions * ex.tx_fee_sol,
        label_3x=signal.label_3x,
        score=score,
        gap_fills=gap_fills,
    )


@dataclass
class Replay:
    """What a strategy did over the signals."""

    trades: list[Trade]
    selected: int  # signals the strategy chose to copy
    skipped_held: int = 0  # ... skipped because a copy of the token was still held
    skipped_unfillable: int = 0  # ... skipped for lack of a price (or after the end of the data)


def replay(
    signals: Sequence[Signal],
    decisions: Sequence[bool] | np.ndarray,
    tape: PriceTape,
    execution: Execution,
    end: int,
    scores: Sequence[float | None] | np.ndarray | None = None,
) -> Replay:
    """Copy the chosen signals (in time order) one by one; with ``one_per_token`` a signal is
    skipped while an earlier copy of its token is still open at its entry time (a fact known then)."""
    if len(decisions) != len(signals):
        raise ValueError(f"{len(decisions)} decisions for {len(signals)} signals")
    order = sorted(range(len(signals)), key=lambda i: (signals[i].time, signals[i].signature))
    open_until: dict[str, int] = {}
    result = Replay(trades=[], selected=0)
    for i in order:
        if not decisions[i]:
            continue
        result.selected += 1
        signal = signals[i]
        entry_time = signal.time + execution.delay_s
        if execution.one_per_token and open_until.get(signal.mint, -1) > entry_time:
            result.skipped_held += 1
            continue
        score = None if scores is None else scores[i]
        trade = simulate_copy(
            signal, tape, execution, end, None if score is None or _isnan(score) else float(score)
        )
        if trade is None:
            result.skipped_unfillable += 1
            continue
        result.trades.append(trade)
        open_until[signal.mint] = max(open_until.get(signal.mint, -1), trade.exit_time)
    return result


def _isnan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


# Metrics


class Metrics(BaseModel):
    """One strategy's results. Returns are fractions (0.12 = +12%); SOL amounts in SOL."""

    model_config = ConfigDict(extra="forbid")

    signals: int = Field(description="Signals replayed (KOL opening buys in the period).")
    selected: int = Field(description="Signals the strategy chose to copy.")
    trades: int = Field(description="Copies made.")
    skipped_held: int = 0
    skipped_unfillable: int = 0
    hit_rate: float | None = Field(description="Share of copies with PnL > 0 after every cost.")
    hits_3x: int = Field(description="Copies that returned 3x or more after every cost.")
    kol_3x: int = Field(description="Copies of buys the KOL turned into 3x (the dataset's label).")
    total_pnl_sol: float
    return_per_trade: float | None = Field(description="Mean PnL / stake over the copies.")
    median_return: float | None = None
    total_return: float | None = Field(description="Total PnL / capital.")
    capital_sol: float = Field(
        description="What total return and drawdown are relative to (default: the capital the strategy needed)."
    )
    max_drawdown: float = Field(
        description="Largest fall of realised equity from a peak, as a share of the peak."
    )
    max_drawdown_sol: float
    exposure: float = Field(description="Share of the period with at least one copy open.")
    avg_deployed_sol: float = Field(description="SOL committed to open copies, averaged over the period.")
    peak_deployed_sol: float
    exits: dict[str, int] = Field(default_factory=dict, description="Copies per exit reason.")
    gap_fills: int = Field(
        default=0,
        description="Sells a gap on the tape moved to the first price after it (or, at the end of the "
        "data, valued at the last price before it).",
    )


@dataclass
class Curve:
    """Realised equity over time: ``capital + cumulative PnL`` after each exit."""

    times: list[int] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)


def capital_needed(trades: Sequence[Trade]) -> float:
    """The least starting cash from which every stake can be paid when it is due, given the SOL
    that earlier copies returned by then: ``max over time of (SOL deployed − realised PnL)``."""
    events = sorted(
        [(t.entry_time, 1, t.stake_sol, 0.0) for t in trades]
        + [(t.exit_time, 0, -t.stake_sol, t.pnl_sol) for t in trades],
        key=lambda e: (e[0], e[1]),  # at equal times the SOL coming back is there first
    )
    deployed = realised = need = 0.0
    for _, _, stake, pnl in events:
        deployed += stake
        realised += pnl
        need = max(need, deployed - realised)
    return need


def deployment(trades: Sequence[Trade], start: int, end: int) -> tuple[float, float, float]:
    """``(exposure, average SOL deployed, peak SOL deployed)`` over ``[start, end]``."""
    span = max(end - start, 1)
    events = sorted(
        [(t.entry_time, t.stake_sol) for t in trades] + [(t.exit_time, -t.stake_sol) for t in trades],
        key=lambda e: (e[0], e[1]),  # at equal times exits (negative) first: back-to-back is not overlap
    )
    deployed = 0.0
    peak = 0.0
    area = 0.0
    covered = 0
    last = start
    for time, delta in events:
        clipped = min(max(time, start), end)
        if deployed > 1e-12:
            area += deployed * (clipped - last)
            covered += clipped - last
        last = clipped
        deployed += delta
        peak = max(peak, deployed)
    return covered / span, area / span, peak


def equity_curve(trades: Sequence[Trade], capital: float, start: int) -> Curve:
    curve = Curve(times=[start], equity=[capital])
    value = capital
    for trade in sorted(trades, key=lambda t: (t.exit_time, t.entry_time, t.signal_signature)):
        value += trade.pnl_sol
        curve.times.append(trade.exit_time)
        curve.equity.append(value)
    return curve


def max_drawdown(equity: Sequence[float]) -> tuple[float, float]:
    """``(largest fall from a running peak as a share of that peak, the same in SOL)``."""
    peak = -math.inf
    worst = 0.0
    worst_sol = 0.0
    for value in equity:
        peak = max(peak, value)
        fall = peak - value
        if fall > worst_sol:
            worst_sol = fall
        if peak > 0:
            worst = max(worst, fall / peak)
    return worst, worst_sol


def metrics(
    result: Replay, signals: int, execution: Execution, start: int, end: int
) -> tuple[Metrics, Curve]:
    trades = result.trades
    returns = np.array([t.ret for t in trades], dtype=np.float64)
    exposure, average, peak = deployment(trades, start, end)
    capital = execution.capital_sol or capital_needed(trades) or execution.stake_sol
    curve = equity_curve(trades, capital, start)
    drawdown, drawdown_sol = max_drawdown(curve.equity)
    total = float(sum(t.pnl_sol for t in trades))
    reasons = Counter(t.exit_reason for t in trades)
    return (
        Metrics(
            signals=signals,
            selected=result.selected,
            trades=len(trades),
            skipped_held=result.skipped_held,
            skipped_unfillable=result.skipped_unfillable,
            hit_rate=float(np.mean(returns > 0)) if len(trades) else None,
            hits_3x=int(sum(1 for t in trades if t.net_multiple >= 3)),
            kol_3x=int(sum(1 for t in trades if t.label_3x == 1)),
            total_pnl_sol=total,
            return_per_trade=float(returns.mean()) if len(trades) else None,
            median_return=float(np.median(returns)) if len(trades) else None,
            total_return=total / capital if trades else None,
            capital_sol=capital,
            max_drawdown=drawdown,
            max_drawdown_sol=drawdown_sol,
            exposure=exposure,
            avg_deployed_sol=average,
            peak_deployed_sol=peak,
            exits={reason: reasons[reason] for reason in EXIT_REASONS if reasons[reason]},
            gap_fills=sum(t.gap_fills for t in trades),
        ),
        curve,
    )
