"""The twin's program accounts: bonding curves, PumpSwap and Raydium pools and their vaults, at any
moment of the world, in the programs' own layouts (:mod:`kolray.chain.accounts`).

Their state comes from the true tapes (:mod:`kolray.sim.tapes`): on the bonding curve the virtual
reserves whose ratio is the tape's price (:func:`kolray.sim.market.reserves_at`), the real ones
being the virtual ones less the curve's offsets; once the curve completes, the AMM pool (at its
canonical PDA for PumpSwap) whose vaults hold the reserves of a pool at that price. An account does
not exist before its token's launch (curve) or migration (pool, vaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kolray.chain.accounts import (
    BondingCurve,
    PumpSwapPool,
    RaydiumAmm,
    TokenAccount,
    account_info,
    bonding_curve_address,
    encode_bonding_curve,
    encode_pumpswap_pool,
    encode_raydium_amm,
    encode_token_account,
    pump_pool_authority,
)
from kolray.chain.programs import PUMPFUN, PUMPSWAP, RAYDIUM_AMM_V4, TOKEN_PROGRAM
from kolray.chain.types import WSOL_MINT
from kolray.sim import keys
from kolray.sim.market import curve_real_reserves, reserves_at
from kolray.sim.params import CURVE_K, CURVE_VIRTUAL_TOKENS_AT_COMPLETION, TOKEN_DECIMALS, TOKEN_SUPPLY_RAW
from kolray.sim.tapes import Tapes
from kolray.sim.world import World


@dataclass(frozen=True, slots=True)
class TwinAddress:
    """A program account of a traded token: which token, what it is, and the token's pool accounts."""

    mint: str
    kind: str  # curve | pool | base_vault | quote_vault
    amm: str  # the venue the token migrates to: pumpswap | raydium_amm_v4
    creator: str
    pool: dict[str, str] | None
    community: int = 0
    token_index: int = 0


class TwinAccounts:
    """Answers "what is in this account at time t" for every program account of a traded token."""

    def __init__(self, world: World) -> None:
        try:
            self.tapes: Tapes | None = world.tapes()
        except FileNotFoundError:
            self.tapes = None  # a world from before tapes: no program accounts to serve
        self.addresses: dict[str, TwinAddress] = {}
        self.curves: dict[str, TwinAddress] = {}  # mint → its bonding curve's entry
        if self.tapes is None:
            return
        tokens = world.tokens()
        seed = world.params.seed
        for mint, community, index, amm in zip(
            tokens["mint"], tokens["community"], tokens["token_index"], tokens["amm"], strict=True
        ):
            if mint not in self.tapes:
                continue
            creator = keys.dev_wallet(seed, int(community), int(index))
            pool = keys.pool_accounts(seed, int(community), int(index), str(amm))
            where = (int(community), int(index))
            curve = TwinAddress(mint, "curve", str(amm), creator, pool, *where)
            self.addresses[bonding_curve_address(mint)] = curve
            self.curves[mint] = curve
            for kind in ("pool", "base_vault", "quote_vault"):
                self.addresses[pool[kind]] = TwinAddress(mint, kind, str(amm), creator, pool, *where)

    def __len__(self) -> int:
        return len(self.addresses)

    def info(self, address: str, t: float) -> dict[str, Any] | None:
        """The account's ``AccountInfo`` (base64) at unix time ``t``, or None if it does not exist."""
        entry = self.addresses.get(address)
        if entry is None or self.tapes is None:
            return None
        state = self.tapes.at(entry.mint, t)
        if state is None:
            return None  # before the launch
        level, migrated = state
        if entry.kind == "curve":
            return account_info(encode_bonding_curve(_curve(level, migrated, entry.creator)), PUMPFUN)
        if not migrated:
            return None
        assert entry.pool is not None  # pool accounts are registered with their pool
        sol, tokens = reserves_at(entry.amm, level)
        if entry.kind == "base_vault":
            return account_info(
                encode_token_account(TokenAccount(entry.mint, entry.pool["pool"], tokens)), TOKEN_PROGRAM
            )
        if entry.kind == "quote_vault":
            return account_info(
                encode_token_account(TokenAccount(WSOL_MINT, entry.pool["pool"], sol)), TOKEN_PROGRAM
            )
        if entry.amm == "pumpswap":
            pool = PumpSwapPool(
                pool_bump=255,
                index=0,
                creator=pump_pool_authority(entry.mint),
                base_mint=entry.mint,
                quote_mint=WSOL_MINT,
                lp_mint=entry.pool["lp_mint"],
                pool_base_token_account=entry.pool["base_vault"],
                pool_quote_token_account=entry.pool["quote_vault"],
                lp_supply=TOKEN_SUPPLY_RAW // 5,
                coin_creator=entry.creator,
            )
            return account_info(encode_pumpswap_pool(pool), PUMPSWAP)
        amm = RaydiumAmm(
            base_decimals=TOKEN_DECIMALS,
            quote_decimals=9,
            base_need_take_pnl=0,
            quote_need_take_pnl=0,
            base_vault=entry.pool["base_vault"],
            quote_vault=entry.pool["quote_vault"],
            base_mint=entry.mint,
            quote_mint=WSOL_MINT,
        )
        return account_info(encode_raydium_amm(amm), RAYDIUM_AMM_V4)


def _curve(level: float, migrated: bool, creator: str) -> BondingCurve:
    if migrated:  # complete: the reserves went to the pool, the virtual ones stay at completion
        sol = round(CURVE_K / CURVE_VIRTUAL_TOKENS_AT_COMPLETION)
        return BondingCurve(CURVE_VIRTUAL_TOKENS_AT_COMPLETION, sol, 0, 0, TOKEN_SUPPLY_RAW, True, creator)
    sol, tokens = reserves_at("pumpfun", level)
    real_sol, real_tokens = curve_real_reserves(sol, tokens)
    return BondingCurve(tokens, sol, real_tokens, real_sol, TOKEN_SUPPLY_RAW, False, creator)
