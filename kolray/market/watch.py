"""Which tokens to watch, and how often: the tokens tracked KOLs bought within the label horizon or
still hold, read fast while their price moves and less and less often while it does not."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Engine

from kolray.chain.types import WSOL_MINT

LABEL_HORIZON_S = 7 * 86_400


def watched_mints(engine: Engine, chain_now: int, horizon_s: int = LABEL_HORIZON_S) -> list[str]:
    """Mints with a SOL-quoted buy by a tracked wallet in ``[chain_now - horizon_s, chain_now]``,
    and mints of positions still open (the analyzer's), sorted."""
    bought = (
        "SELECT DISTINCT s.mint FROM swaps s WHERE s.side = 'buy' AND s.block_time >= :since "
        "AND s.block_time <= :now "
        f"AND (s.quote_mint IS NULL OR s.quote_mint = '{WSOL_MINT}')"
    )
    held = "SELECT DISTINCT p.mint FROM positions p WHERE p.status = 'open'"
    with engine.connect() as conn:
        mints = {r[0] for r in conn.execute(text(bought), {"since": chain_now - horizon_s, "now": chain_now})}
        mints |= {r[0] for r in conn.execute(text(held))}
    return sorted(mints)


@dataclass
class Cadence:
    """Per-token read schedule (monotonic seconds): ``fast_s`` after a move, doubling up to
    ``slow_s`` while the price stands still. A token that could not be read backs off the same way
    from where it was: a curve that just completed, whose pool no stored swap names yet, is read
    again within seconds (a KOL's swap on the pool is stored seconds later), while a mint that is
    no pump.fun token settles at ``slow_s``."""

    fast_s: float = 2.0
    slow_s: float = 60.0
    move: float = 0.001  # a relative change above this is a move
    due: dict[str, float] = field(default_factory=dict)
    interval: dict[str, float] = field(default_factory=dict)
    price: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.fast_s <= self.slow_s:
            raise ValueError(f"cadence needs 0 < fast_s <= slow_s, got {self.fast_s} and {self.slow_s}")

    def watch(self, mints: list[str], now: float) -> None:
        """Start watching new ``mints`` (due at once) and forget the others."""
        wanted = set(mints)
        for gone in [m for m in self.due if m not in wanted]:
            for table in (self.due, self.interval, self.price):
                table.pop(gone, None)
        for mint in mints:
            if mint not in self.due:
                self.due[mint] = now
                self.interval[mint] = self.fast_s

    def due_now(self, now: float) -> list[str]:
        return sorted(m for m, t in self.due.items() if t <= now)

    def next_due(self) -> float | None:
        return min(self.due.values()) if self.due else None

    def read(self, mint: str, price: float | None, now: float) -> bool:
        """Schedule ``mint``'s next read after reading ``price`` (None: a gap); True if it moved."""
        if mint not in self.due:
            return False
        last = self.price.get(mint)
        moved = price is not None and (last is None or abs(price / last - 1) > self.move)
        if price is not None and moved:
            self.interval[mint] = self.fast_s
            self.price[mint] = price
        else:  # still, or a gap: back off from where it was
            self.interval[mint] = min(self.interval[mint] * 2, self.slow_s)
        self.due[mint] = now + self.interval[mint]
        return moved
