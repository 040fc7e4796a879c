"""Swaps → positions: FIFO lots per (wallet, mint), exactly as ``docs/analysis.md`` ("Position rules") defines them.

Everything here is a pure function of the swaps it is given, so the database stage, the feature
pipeline, the chain twin's checks and the tests all compute the same positions. Sums are kept in
integers (lamports, raw token units) and turned into floats only at the edge, so a position is
reproducible bit for bit from its swaps.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from kolray.analyzer.outcomes import Outcome
from kolray.chain.types import LAMPORTS_PER_SOL, WSOL_MINT

# A position closes at the sell after which what is left is at most this fraction of the tokens
# bought in it. Compared in integers: remaining * DUST_DENOMINATOR <= tokens_bought.
DUST_FRACTION = 0.001
DUST_DENOMINATOR = 1000

FLAG_UNTRACKED_SELL = "untracked_sell"
FLAG_NON_SOL_LEG = "non_sol_leg"

Status = Literal["open", "closed"]


class SwapLike(Protocol):
    """What positions are built from: a :class:`kolray.chain.types.Swap`, a ``SwapRow``, a SQL row
    with those column names, or a mapping with those keys (see :func:`_leg`)."""

    signature: str
    slot: int | None
    block_time: int | None
    wallet: str
    mint: str
    side: str
    token_amount: int
    token_decimals: int
    sol_amount: int
    dex: str


def unrealised_value(tokens: int, decimals: int, price_sol: float) -> float:
    """SOL value of ``tokens`` raw units at ``price_sol`` per whole token."""
    return tokens / 10**decimals * price_sol


def unrealised_pnl(value_sol: float, cost_lamports: int, tokens_bought: int, tokens_held: int) -> float:
    """What the tokens still held gain at the mark over their share of the cost (the position's
    average cost per token: its lots are one FIFO sequence, so which lots remain does not change
    the SOL spent per token of the position)."""
    if tokens_bought <= 0:
        return value_sol
    return value_sol - cost_lamports * (tokens_held / tokens_bought) / LAMPORTS_PER_SOL


def is_sol_valued(flags: Iterable[str], cost_lamports: int) -> bool:
    """Whether a position has a SOL multiple: every leg was against SOL and SOL was spent."""
    return FLAG_NON_SOL_LEG not in flags and cost_lamports > 0


@dataclass(slots=True, frozen=True)
class Mark:
    """The last known price of a mint: SOL per whole token, and when it was seen."""

    price_sol: float
    time: int


@dataclass(slots=True)
class Position:
    """One (wallet, mint, seq): opened by a buy, closed at the sell that leaves only dust.

    Integer fields are exact sums; the SOL floats (``cost_sol``, ``multiple``, ...) are derived
    from them, so two positions built from the same swaps compare equal.
    """

    wallet: str
    mint: str
    seq: int
    status: Status
    entry_time: int
    entry_signature: str
    entry_dex: str
    token_decimals: int
    exit_time: int | None = None
    exit_signature: str | None = None
    entry_price_sol: float | None = None
    entry_market_cap_sol: float | None = None
    tokens_bought: int = 0
    tokens_sold: int = 0  # tracked tokens only: consumed from the position's lots
    tokens_untracked: int = 0  # sold beyond what the position held (transfers, airdrops)
    cost_lamports: int = 0
    proceeds_lamports: int = 0  # tracked share of the sells' SOL
    untracked_lamports: int = 0  # the untracked share, left out of proceeds and PnL
    fees_lamports: int = 0  # fee + tips of the position's swaps
    hold_weighted_s: float | None = None
    n_buys: int = 0
    n_sells: int = 0
    flags: list[str] = field(default_factory=list)
    last_price_sol: float | None = None  # mark for open positions
    mark_time: int | None = None
    # The market around the position (kolray.analyzer.outcomes), from the mint's price path.
    peak_multiple: float | None = None
    peak_time: int | None = None
    drawdown: float | None = None
    missed_gain_sol: float | None = None
    copy_multiple: float | None = None

    # Derived values (docs/analysis.md, "Position rules")

    @property
    def closed(self) -> bool:
        return self.status == "closed"

    @property
    def sol_valued(self) -> bool:
        """Whether the position has a SOL multiple: every leg was against SOL and SOL was spent."""
        return is_sol_valued(self.flags, self.cost_lamports)

    @property
    def cost_sol(self) -> float:
        return self.cost_lamports / LAMPORTS_PER_SOL

    @property
    def proceeds_sol(self) -> float:
        return self.proceeds_lamports / LAMPORTS_PER_SOL

    @property
    def fees_sol(self) -> float:
        return self.fees_lamports / LAMPORTS_PER_SOL

    @property
    def realised_pnl_lamports(self) -> int | None:
        if not (self.closed and self.sol_valued):
            return None
        return self.proceeds_lamports - self.cost_lamports - self.fees_lamports

    @property
    def realised_pnl_sol(self) -> float | None:
        pnl = self.realised_pnl_lamports
        return None if pnl is None else pnl / LAMPORTS_PER_SOL

    @property
    def multiple(self) -> float | None:
        """Proceeds / cost, gross of fees; closed, SOL-valued positions only."""
        if not (self.closed and self.sol_valued):
            return None
        return self.proceeds_lamports / self.cost_lamports

    @property
    def realised_3x(self) -> bool:
        multiple = self.multiple
        return multiple is not None and multiple >= 3

    @property
    def hold_s(self) -> int | None:
        return None if self.exit_time is None else self.exit_time - self.entry_time

    @property
    def tokens_remaining(self) -> int:
        return self.tokens_bought - self.tokens_sold

    @property
    def unrealised_value_sol(self) -> float | None:
        """What the open position's remaining tokens are worth at the mark."""
        if self.closed or self.last_price_sol is None:
            return None
        return unrealised_value(self.tokens_remaining, self.token_decimals, self.last_price_sol)

    @property
    def unrealised_pnl_sol(self) -> float | None:
        """The open position's gain at the mark over the cost of the tokens it still holds."""
        value = self.unrealised_value_sol
        if value is None or not self.sol_valued:
            return None
        return unrealised_pnl(value, self.cost_lamports, self.tokens_bought, self.tokens_remaining)

    def set_outcome(self, outcome: Outcome) -> None:
        self.peak_multiple = outcome.peak_multiple
        self.peak_time = outcome.peak_time
        self.drawdown = outcome.drawdown
        self.missed_gain_sol = outcome.missed_gain_sol
        self.copy_multiple = outcome.copy_multiple

    # Database rows (kolray.db.tables.PositionRow)

    def to_row(self) -> dict[str, Any]:
        """Column values for ``PositionRow`` (without ``id``)."""
        return {
            "wallet": self.wallet,
            "mint": self.mint,
            "seq": self.seq,
            "status": self.status,
            "entry_time": self.entry_time,
            "exit_time": self.exit_time,
            "entry_signature": self.entry_signature,
            "exit_signature": self.exit_signature,
            "entry_dex": self.entry_dex,
            "entry_price_sol": self.entry_price_sol,
            "entry_market_cap_sol": self.entry_market_cap_sol,
            "token_decimals": self.token_decimals,
            "tokens_bought": self.tokens_bought,
            "tokens_sold": self.tokens_sold,
            "tokens_untracked": self.tokens_untracked,
            "cost_lamports": self.cost_lamports,
            "proceeds_lamports": self.proceeds_lamports,
            "untracked_lamports": self.untracked_lamports,
            "fees_lamports": self.fees_lamports,
            "cost_sol": self.cost_sol,
            "proceeds_sol": self.proceeds_sol,
            "fees_sol": self.fees_sol,
            "realised_pnl_sol": self.realised_pnl_sol,
            "multiple": self.multiple,
            "hold_s": self.hold_s,
            "hold_weighted_s": self.hold_weighted_s,
            "n_buys": self.n_buys,
            "n_sells": self.n_sells,
            "last_price_sol": self.last_price_sol,
            "mark_time": self.mark_time,
            "unrealised_value_sol": self.unrealised_value_sol,
            "unrealised_pnl_sol": self.unrealised_pnl_sol,
            "peak_multiple": self.peak_multiple,
            "peak_time": self.peak_time,
            "drawdown": self.drawdown,
            "missed_gain_sol": self.missed_gain_sol,
            "copy_multiple": self.copy_multiple,
            "flags": list(self.flags),
        }

    @classmethod
    def from_row(cls, row: Any) -> Position:
        """A position read back from ``positions`` (a ``PositionRow``, a SQL row or a mapping)."""
        get: Callable[[str], Any] = row.get if isinstance(row, Mapping) else (lambda name: getattr(row, name))
        return cls(
            wallet=get("wallet"),
            mint=get("mint"),
            seq=get("seq"),
            status=get("status"),
            entry_time=get("entry_time"),
            entry_signature=get("entry_signature"),
            entry_dex=get("entry_dex"),
            token_decimals=get("token_decimals"),
            exit_time=get("exit_time"),
            exit_signature=get("exit_signature"),
            entry_price_sol=get("entry_price_sol"),
            entry_market_cap_sol=get("entry_market_cap_sol"),
            tokens_bought=get("tokens_bought"),
            tokens_sold=get("tokens_sold"),
            tokens_untracked=get("tokens_untracked"),
            cost_lamports=get("cost_lamports"),
            proceeds_lamports=get("proceeds_lamports"),
            untracked_lamports=get("untracked_lamports"),
            fees_lamports=get("fees_lamports"),
            hold_weighted_s=get("hold_weighted_s"),
            n_buys=get("n_buys"),
            n_sells=get("n_sells"),
            flags=list(get("flags") or []),
            last_price_sol=get("last_price_sol"),
            mark_time=get("mark_time"),
            peak_multiple=get("peak_multiple"),
            peak_time=get("peak_time"),
            drawdown=get("drawdown"),
            missed_gain_sol=get("missed_gain_sol"),
            copy_multiple=get("copy_multiple"),
        )


@dataclass(slots=True, frozen=True)
class UntrackedSell:
    """A sell while the wallet had no open position in the mint: no position, no PnL."""

    wallet: str
    mint: str
    signature: str
    block_time: int
    token_amount: int
    sol_amount: int


@dataclass(slots=True)
class Ledger:
    """Everything :func:`build_ledger` makes of a set of swaps."""

    positions: list[Position]
    untracked_sells: list[UntrackedSell]
    skipped: int = 0  # swaps without a block time or with no tokens: they cannot be placed or counted


class _Leg(NamedTuple):
    """A swap reduced to what positions need, in chain order by its first three fields."""

    block_time: int
    slot: int
    signature: str
    wallet: str
    mint: str
    side: str
    tokens: int
    lamports: int
    sol_leg: bool
    costs: int  # fee + tips
    dex: str
    decimals: int
    price_sol: float | None
    market_cap_sol: float | None


SWAP_FIELDS = (
    "block_time",
    "slot",
    "signature",
    "wallet",
    "mint",
    "side",
    "token_amount",
    "sol_amount",
    "quote_mint",
    "fee",
    "tips",
    "dex",
    "token_decimals",
    "price_sol",
    "market_cap_sol",
)
_OPTIONAL = {"slot": None, "quote_mint": None, "fee": 0, "tips": 0, "price_sol": None, "market_cap_sol": None}
# One C-level call per swap: this runs for every swap of a full rebuild.
_get_fields = operator.attrgetter(*SWAP_FIELDS)


def _fields(swap: Any) -> tuple[Any, ...]:
    if isinstance(swap, Mapping):
        return tuple(
            swap[name] if name not in _OPTIONAL else swap.get(name, _OPTIONAL[name]) for name in SWAP_FIELDS
        )
    try:
        return _get_fields(swap)
    except AttributeError:  # a swap-like object without the optional fields
        return tuple(
            getattr(swap, name) if name not in _OPTIONAL else getattr(swap, name, _OPTIONAL[name])
            for name in SWAP_FIELDS
        )


def _leg(swap: Any) -> _Leg | None:
    """Normalise one swap-like object; ``None`` for a swap that cannot enter a position."""
    return leg_from_values(*_fields(swap))


def leg_from_values(
    block_time: int | None,
    slot: int | None,
    signature: str,
    wallet: str,
    mint: str,
    side: str,
    tokens: int,
    lamports: int,
    quote_mint: str | None,
    fee: int | None,
    tips: int | None,
    dex: str,
    decimals: int,
    price: float | None,
    market_cap: float | None,
) -> _Leg | None:
    """A leg from swap values in ``SWAP_FIELDS`` order (the database stage selects its columns in
    that order and skips the attribute lookups); ``None`` for a swap that cannot enter a position."""
    tokens = int(tokens)
    if block_time is None or tokens <= 0:
        return None
    if side not in ("buy", "sell"):
        raise ValueError(f"swap {signature}: side must be 'buy' or 'sell', not {side!r}")
    return _Leg(
        block_time=int(block_time),
        # Chain order ties on time fall back to slot; a missing slot sorts first.
        slot=-1 if slot is None else int(slot),
        signature=signature,
        wallet=wallet,
        mint=mint,
        side=side,
        tokens=tokens,
        lamports=int(lamports),
        # wSOL as the quote is SOL: only another token as the quote makes a leg non-SOL.
        sol_leg=quote_mint is None or quote_mint == WSOL_MINT,
        costs=int(fee or 0) + int(tips or 0),
        dex=dex,
        decimals=int(decimals),
        price_sol=price,
        market_cap_sol=market_cap,
    )


def chain_key(swap: Any) -> tuple[int, int, str]:
    """Chain order: ``(block_time, slot, signature)``; a missing slot sorts first."""
    get: Callable[[str], Any] = swap.get if isinstance(swap, Mapping) else (lambda name: getattr(swap, name))
    slot = get("slot")
    return (get("block_time"), -1 if slot is None else slot, get("signature"))


def _leg_price(leg: _Leg) -> float | None:
    """SOL per whole token at this swap: the swap's own ``price_sol`` when the extractor knew it,
    else the SOL leg over the token amount (a non-SOL leg has no SOL price)."""
    if leg.price_sol is not None:
        return float(leg.price_sol)
    if leg.sol_leg and leg.lamports > 0:
        # Integer numerator and denominator: one correctly rounded division.
        return (leg.lamports * 10**leg.decimals) / (leg.tokens * LAMPORTS_PER_SOL)
    return None


def swap_price_sol(swap: Any) -> float | None:
    """The price a swap reveals (see :func:`_leg_price`); ``None`` if it reveals none."""
    leg = _leg(swap)
    return None if leg is None else _leg_price(leg)


def last_prices(swaps: Iterable[Any], as_of: int | None = None) -> dict[str, Mark]:
    """Per mint, the price of its last swap in chain order (any wallet) that reveals one, among the
    swaps before ``as_of`` (all when ``None``)."""
    best: dict[str, tuple[tuple[int, int, str], Mark]] = {}
    for swap in swaps:
        leg = swap if isinstance(swap, _Leg) else _leg(swap)
        if leg is None or (as_of is not None and leg.block_time >= as_of):
            continue
        price = _leg_price(leg)
        if price is None:
            continue
        key = (leg.block_time, leg.slot, leg.signature)
        current = best.get(leg.mint)
        if current is None or key > current[0]:
            best[leg.mint] = (key, Mark(price, leg.block_time))
    return {mint: mark for mint, (_, mark) in best.items()}


def apply_mark(position: Position, mark: Mark | None) -> None:
    """Set (or clear) an open position's mark; closed positions carry none."""
    if position.closed or mark is None:
        position.last_price_sol = None
        position.mark_time = None
    else:
        position.last_price_sol = mark.price_sol
        position.mark_time = mark.time


def _add_flag(position: Position, flag: str) -> None:
    if flag not in position.flags:
        position.flags.append(flag)
        position.flags.sort()


def _pair_positions(legs: list[_Leg]) -> tuple[list[Position], list[UntrackedSell]]:
    """The positions of one (wallet, mint), from its legs in chain order."""
    positions: list[Position] = []
    untracked: list[UntrackedSell] = []
    position: Position | None = None
    lots: deque[list[int]] = deque()  # [buy time, tokens left in the lot]
    held = 0
    weighted = 0  # Σ (sell time − lot time) × tokens consumed: exact, divided once at close
    for leg in legs:
        if leg.side == "buy":
            if position is None:
                position = Position(
                    wallet=leg.wallet,
                    mint=leg.mint,
                    seq=len(positions),
                    status="open",
                    entry_time=leg.block_time,
                    entry_signature=leg.signature,
                    entry_dex=leg.dex,
                    token_decimals=leg.decimals,
                    entry_price_sol=_leg_price(leg),
                    entry_market_cap_sol=None if leg.market_cap_sol is None else float(leg.market_cap_sol),
                )
                positions.append(position)
                lots.clear()
                held = 0
                weighted = 0
            lots.append([leg.block_time, leg.tokens])
            held += leg.tokens
            position.tokens_bought += leg.tokens
            position.cost_lamports += leg.lamports
            position.fees_lamports += leg.costs
            position.n_buys += 1
            if not leg.sol_leg:
                _add_flag(position, FLAG_NON_SOL_LEG)
            continue

        # A sell
        if position is None:
            untracked.append(
                UntrackedSell(leg.wallet, leg.mint, leg.signature, leg.block_time, leg.tokens, leg.lamports)
            )
            continue
        tracked = min(leg.tokens, held)
        to_consume = tracked
        while to_consume:
            lot = lots[0]
            take = min(lot[1], to_consume)
            weighted += (leg.block_time - lot[0]) * take
            lot[1] -= take
            to_consume -= take
            if lot[1] == 0:
                lots.popleft()
        held -= tracked
        # The untracked part's share of the SOL is left out, rounding the tracked share down.
        share = leg.lamports if tracked == leg.tokens else leg.lamports * tracked // leg.tokens
        position.proceeds_lamports += share
        position.untracked_lamports += leg.lamports - share
        position.tokens_sold += tracked
        position.tokens_untracked += leg.tokens - tracked
        position.fees_lamports += leg.costs
        position.n_sells += 1
        if tracked < leg.tokens:
            _add_flag(position, FLAG_UNTRACKED_SELL)
        if not leg.sol_leg:
            _add_flag(position, FLAG_NON_SOL_LEG)
        if held * DUST_DENOMINATOR <= position.tokens_bought:
            position.status = "closed"
            position.exit_time = leg.block_time
            position.exit_signature = leg.signature
            position.hold_weighted_s = weighted / position.tokens_bought
            position = None
    return positions, untracked


def build_ledger(
    swaps: Iterable[Any],
    *,
    as_of: int | None = None,
    marks: Mapping[str, Mark] | None = None,
) -> Ledger:
    """Positions and untracked sells from swaps of any wallets and mints, in any order.

    Only swaps before ``as_of`` count (all when ``None``): the result is what was known at that
    time. Open positions are marked with ``marks`` when given, else with the last price of their
    mint among the given swaps (any wallet) before ``as_of``. Raises ``ValueError`` for a swap
    given twice (same signature, wallet and mint) or with a side other than buy/sell.
    """
    groups: dict[tuple[str, str], list[_Leg]] = {}
    seen: set[tuple[str, str, str]] = set()
    skipped = 0
    for swap in swaps:
        leg = swap if type(swap) is _Leg else _leg(swap)
        if leg is None:
            skipped += 1
            continue
        key = (leg.signature, leg.wallet, leg.mint)
        if key in seen:
            raise ValueError(f"swap {leg.signature} of {leg.wallet} in {leg.mint} given twice")
        seen.add(key)
        if as_of is not None and leg.block_time >= as_of:
            continue
        groups.setdefault((leg.wallet, leg.mint), []).append(leg)
    if marks is None:
        marks = last_prices(leg for pair_legs in groups.values() for leg in pair_legs)
    positions: list[Position] = []
    untracked: list[UntrackedSell] = []
    for pair in sorted(groups):
        pair_legs = groups[pair]
        pair_legs.sort()  # chain order: (block_time, slot, signature) lead the tuple
        built, orphans = _pair_positions(pair_legs)
        for position in built:
            if not position.closed:
                apply_mark(position, marks.get(position.mint))
        positions.extend(built)
        untracked.extend(orphans)
    return Ledger(positions=positions, untracked_sells=untracked, skipped=skipped)


def build_positions(
    swaps: Iterable[Any],
    *,
    as_of: int | None = None,
    marks: Mapping[str, Mark] | None = None,
) -> list[Position]:
    """Positions from swaps (see :func:`build_ledger`), sorted by (wallet, mint, seq)."""
    return build_ledger(swaps, as_of=as_of, marks=marks).positions
