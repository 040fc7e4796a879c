"""What a wallet did in one transaction, as the rest of kolray sees it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Side = Literal["buy", "sell"]

LAMPORTS_PER_SOL = 1_000_000_000
WSOL_MINT = "So11111111111111111111111111111111111111112"


@dataclass(slots=True)
class Swap:
    """One trade of one token by one wallet in one transaction (unique on signature, wallet, mint).

    Amounts are raw integers: ``token_amount`` in the token's base units, SOL in lamports. The
    trade's ``sol_amount`` is the SOL leg only (what went to or came from the pool, after DEX
    and platform fees the wallet paid inside the route); what the wallet also spent on the network
    fee, rent for token accounts and tips is kept apart in ``fee``, ``rent`` and ``tips``, so that
    ``-sol_delta == sol_amount + fee + rent + tips`` for a buy (signs flipped for a sell).

    A token-to-token trade (no SOL leg, e.g. USDC → token) has ``quote_mint``/``quote_amount`` set
    and ``sol_amount`` 0.
    """

    signature: str
    slot: int | None
    block_time: int | None  # unix seconds, as the RPC gives it
    wallet: str
    mint: str
    side: Side
    token_amount: int
    token_decimals: int
    sol_amount: int
    dex: str
    program_id: str | None = None
    quote_mint: str | None = None
    quote_amount: int | None = None
    quote_decimals: int | None = None
    fee: int = 0
    rent: int = 0
    tips: int = 0
    price_sol: float | None = None  # SOL per whole token at this trade
    market_cap_sol: float | None = None  # price × supply when the supply is known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
