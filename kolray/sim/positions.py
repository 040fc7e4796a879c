"""Positions from swaps, exactly as ``docs/analysis.md`` ("Position rules") defines them (the twin's ground truth).

This is a reference implementation for the ground truth the analyzer must reproduce:
FIFO lots per (wallet, mint), a new position after a close, closing at dust (≤ 0.1% of the
position's bought tokens left), untracked sells, fees kept apart, multiple = proceeds / cost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kolray.sim.params import DUST_FRACTION, LABEL_HORIZON_S, LAMPORTS_PER_SOL, THREE_X


@dataclass(slots=True)
class _Lot:
    time: int
    tokens: int  # bought
    left: int


@dataclass(slots=True)
class _Position:
    wallet: str
    mint: str
    seq: int
    entry_time: int
    entry_signature: str
    lots: list[_Lot] = field(default_factory=list)
    cost: int = 0
    proceeds: int = 0
    fees: int = 0
    bought: int = 0
    sold: int = 0
    n_buys: int = 0
    n_sells: int = 0
    hold_weighted: float = 0.0
    flags: set[str] = field(default_factory=set)
    exit_time: int | None = None
    exit_signature: str | None = None
    venue: str | None = None
    market_cap_sol: float | None = None

    @property
    def remaining(self) -> int:
        return sum(lot.left for lot in self.lots)


def chain_order(swap: dict[str, Any]) -> tuple[int, int, str]:
    """Swaps of a wallet are processed by block time, slot, then signature."""
    return (swap["block_time"] or 0, swap["slot"] or 0, swap["signature"])


def build_positions(
    swaps: Iterable[dict[str, Any]], cutoff: int | None = None
) -> tuple[list[dict], dict[str, int]]:
    """Positions from swap rows (dicts with the ``Swap`` fields).

    Returns the positions (one dict per (wallet, mint, seq)) and the number of untracked sells per
    wallet (sells with no open position). ``cutoff`` (unix seconds, e.g. the end of the world) makes
    ``label_3x`` usable only for positions whose horizon has elapsed by then.
    """
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for swap in swaps:
        by_key[(swap["wallet"], swap["mint"])].append(swap)
    positions: list[_Position] = []
    untracked: dict[str, int] = defaultdict(int)
    for (wallet, mint), rows in by_key.items():
        rows.sort(key=chain_order)
        current: _Position | None = None
        seq = -1
        for row in rows:
            t = int(row["block_time"] or 0)
            non_sol = row.get("quote_mint") is not None and not row["sol_amount"]
            if row["side"] == "buy":
                if current is None:
                    seq += 1
                    current = _Position(
                        wallet,
                        mint,
                        seq,
                        t,
                        row["signature"],
                        venue=row.get("dex"),
                        market_cap_sol=row.get("market_cap_sol"),
                    )
                    positions.append(current)
                current.lots.append(_Lot(t, int(row["token_amount"]), int(row["token_amount"])))
                current.cost += int(row["sol_amount"])
                current.bought += int(row["token_amount"])
                current.n_buys += 1
                current.fees += int(row.get("fee") or 0) + int(row.get("tips") or 0)
                if non_sol:
                    current.flags.add("non_sol_leg")
                continue
            if current is None:
                untracked[wallet] += 1
                continue
            amount = int(row["token_amount"])
            available = current.remaining
            tracked = min(amount, available)
            if amount > available:
                current.flags.add("untracked_sell")
            current.proceeds += int(row["sol_amount"]) * tracked // amount if amount else 0
            current.sold += tracked
            current.n_sells += 1
            current.fees += int(row.get("fee") or 0) + int(row.get("tips") or 0)
            if non_sol:
                current.flags.add("non_sol_leg")
            need = tracked
            for lot in current.lots:
                if need <= 0:
                    break
                used = min(lot.left, need)
                if used:
                    lot.left -= used
                    need -= used
                    current.hold_weighted += (t - lot.time) * used / current.bought
            if current.remaining <= DUST_FRACTION * current.bought:
                current.exit_time = t
                current.exit_signature = row["signature"]
                current = None
    out = []
    for p in positions:
        exit_time = p.exit_time
        closed = exit_time is not None
        multiple = p.proceeds / p.cost if closed and p.cost else None
        label = bool(
            exit_time is not None
            and multiple is not None
            and exit_time <= p.entry_time + LABEL_HORIZON_S
            and multiple >= THREE_X
            and "non_sol_leg" not in p.flags
        )
        out.append(
            {
                "wallet": p.wallet,
                "mint": p.mint,
                "seq": p.seq,
                "entry_time": p.entry_time,
                "exit_time": p.exit_time,
                "entry_signature": p.entry_signature,
                "exit_signature": p.exit_signature,
                "status": "closed" if closed else "open",
                "cost_sol": p.cost / LAMPORTS_PER_SOL,
                "proceeds_sol": p.proceeds / LAMPORTS_PER_SOL,
                "fees_sol": p.fees / LAMPORTS_PER_SOL,
                "realised_pnl_sol": (p.proceeds - p.cost - p.fees) / LAMPORTS_PER_SOL if closed else None,
                "multiple": multiple,
                "hold_s": (exit_time - p.entry_time) if exit_time is not None else None,
                "hold_weighted_s": p.hold_weighted if closed else None,
                "n_buys": p.n_buys,
                "n_sells": p.n_sells,
                "tokens_bought": p.bought,
                "tokens_sold": p.sold,
                "flags": ",".join(sorted(p.flags)),
                "venue_at_entry": p.venue,
                "market_cap_sol_at_entry": p.market_cap_sol,
                "label_3x": label,
                "usable": cutoff is None or p.entry_time + LABEL_HORIZON_S <= cutoff,
            }
        )
    return out, dict(untracked)
