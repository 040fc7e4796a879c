"""A position's bookkeeping, shared by the simulator and the oracle so both see the same fills.

The simulator walks a token's path and applies ladder actions when barriers are touched; the oracle
enumerates the same actions in every branch of the ladder. Both go through :func:`apply`, so the
multiple the oracle assigns to a branch is exactly the one the simulated trades realise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from kolray.sim.behaviour import Action
from kolray.sim.market import Fill, buy, level_of, sell
from kolray.sim.params import (
    CURVE_K,
    POOL_K,
    PUMPFUN_CREATOR_FEE_BPS,
    PUMPFUN_FEE_BPS,
    PUMPSWAP_CREATOR_FEE_BPS,
    PUMPSWAP_LP_FEE_BPS,
    PUMPSWAP_PROTOCOL_FEE_BPS,
    RAYDIUM_FEE_BPS,
    THREE_X,
)


@dataclass(frozen=True, slots=True)
class Holding:
    """What a position has done so far, in lamports and raw token units."""

    cost: int
    tokens: int
    proceeds: int

    @property
    def realised_multiple(self) -> float:
        return self.proceeds / self.cost if self.cost else 0.0

    @property
    def three_x(self) -> bool:
        return self.proceeds >= THREE_X * self.cost


def venue_for(migrated: bool, amm: str) -> str:
    return amm if migrated else "pumpfun"


def apply(
    holding: Holding, action: Action, level: float, venue: str, entry_budget: int
) -> tuple[Holding, Fill]:
    """Execute a ladder action at ``level`` (absolute log-price) on ``venue``."""
    if action.kind == "add":
        fill = buy(venue, level, max(int(entry_budget * action.fraction), 1))
        return replace(
            holding, cost=holding.cost + fill.sol_amount, tokens=holding.tokens + fill.token_amount
        ), fill
    amount = holding.tokens if action.fraction >= 1.0 else int(holding.tokens * action.fraction)
    amount = max(min(amount, holding.tokens), 1)
    fill = sell(venue, level, amount)
    return replace(holding, tokens=holding.tokens - amount, proceeds=holding.proceeds + fill.sol_amount), fill


def sell_all_value(holding: Holding, level: float, venue: str) -> int:
    """Proceeds so far plus those of selling everything left at ``level``."""
    if holding.tokens <= 0:
        return holding.proceeds
    return holding.proceeds + sell(venue, level, holding.tokens).sol_amount


def three_x_threshold(holding: Holding, venue: str, lo: float, hi: float) -> float:
    """Lowest level in [lo, hi] at which selling everything makes the position ≥ 3x.

    ``+inf`` when not even ``hi`` does, ``-inf`` when already ``lo`` does. Selling ``N`` tokens into
    a constant-product pool with reserves ``(s u, s / u)`` (``s = sqrt(k)``, ``u = sqrt(price)``)
    returns ``s N u² / (s + N u)`` before fees, so the crossing solves a quadratic in ``u``.
    """
    target = THREE_X * holding.cost
    if holding.proceeds >= target:
        return -math.inf
    if holding.tokens <= 0 or sell_all_value(holding, hi, venue) < target:
        return math.inf
    if sell_all_value(holding, lo, venue) >= target:
        return -math.inf
    need = float(target - holding.proceeds)
    if venue == "pumpfun":
        keep, tokens = 1 - (PUMPFUN_FEE_BPS + PUMPFUN_CREATOR_FEE_BPS) / 10_000, float(holding.tokens)
    elif venue == "pumpswap":
        fees = PUMPSWAP_LP_FEE_BPS + PUMPSWAP_PROTOCOL_FEE_BPS + PUMPSWAP_CREATOR_FEE_BPS
        keep, tokens = 1 - fees / 10_000, float(holding.tokens)
    else:  # Raydium takes its fee from the input
        keep, tokens = 1.0, holding.tokens * (1 - RAYDIUM_FEE_BPS / 10_000)
    s = math.sqrt(CURVE_K if venue == "pumpfun" else POOL_K)
    # s N keep u² - need N u - need s = 0
    a_, b_, c_ = s * tokens * keep, -need * tokens, -need * s
    u = (-b_ + math.sqrt(b_ * b_ - 4 * a_ * c_)) / (2 * a_)
    # The closed form ignores the integer rounding of fills and fees (a few lamports): well inside
    # any precision that matters for a probability.
    return min(max(level_of(u * u), lo), hi)
