"""Read tokens' markets from chain state: bonding curves, then the pools of the graduated ones.

One round reads every token asked for with a few batched ``getMultipleAccounts`` calls (100
accounts each): the pump.fun curves (the curve PDA of each mint), the pools of tokens whose curve has
completed (PumpSwap's canonical pool; a Raydium AMM v4 pool found once from a stored swap), and the
pools' vaults. Every account is decoded with :mod:`kolray.chain.accounts`; a token whose accounts
cannot be read or decoded gets a :class:`Gap` with the reason, never a price.

Each point's time is the block time of the slot its accounts were read at (``getBlockTime``, one
call per distinct slot of the round): a reader's clock is the chain's, never the machine's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from kolray.chain.accounts import (
    PUMP_TOKEN_DECIMALS,
    PUMP_TOKEN_SUPPLY,
    TOKEN_OWNERS,
    AccountLayoutError,
    account_bytes,
    bonding_curve_address,
    canonical_pumpswap_pool,
    decode_bonding_curve,
    decode_pumpswap_pool,
    decode_raydium_amm,
    decode_token_account,
)
from kolray.chain.programs import PUMPFUN, PUMPSWAP, RAYDIUM_AMM_V4
from kolray.chain.types import LAMPORTS_PER_SOL, WSOL_MINT

MAX_ACCOUNTS_PER_CALL = 100  # getMultipleAccounts' limit on mainnet nodes
UNTIMED = 0  # a point's or gap's time until the round has its slots' block times


class Rpc(Protocol):
    """What the reader needs of :class:`kolray.chain.rpc.RpcClient`."""

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class TapePoint:
    """A token's market at one slot."""

    mint: str
    slot: int
    time: int
    price_sol: float  # SOL per whole token
    market_cap_sol: float
    liquidity_sol: (
        float | None
    )  # SOL on the curve (real reserves) or in the pool's quote vault; None: unknown (a trade's history)
    venue: str  # pumpfun | pumpswap | raydium_amm_v4
    graduated: bool


@dataclass(frozen=True, slots=True)
class Gap:
    """A token whose market could not be read this round, and why."""

    mint: str
    slot: int
    time: int
    reason: str


@dataclass(frozen=True, slots=True)
class Pool:
    venue: str
    address: str
    base_vault: str
    quote_vault: str
    base_mint: str


# Finds a graduated token's non-canonical pool (Raydium) from what the tracker stored; None if unknown.
PoolFinder = Callable[[str], Awaitable[Pool | None]]


@dataclass
class MarketReader:
    """Reads rounds of token markets; remembers each graduated token's pool across rounds."""

    rpc: Rpc
    find_pool: PoolFinder | None = None
    pools: dict[str, Pool] = field(default_factory=dict)
    calls: int = 0
    untimed: int = 0  # reads left out: the node had no block time for their slot

    async def _accounts(
        self, addresses: list[str], groups: Sequence[int] | None = None
    ) -> tuple[list[int], list[dict[str, Any] | None]]:
        """(slot each value was read at, values) for ``addresses``, in calls of up to 100 sent as one
        batch. ``groups`` (sizes, summing to ``len(addresses)``) are never split across calls, so one
        pool's vaults are always read at the same slot."""
        config = {"encoding": "base64", "commitment": "confirmed"}
        chunks: list[list[str]] = []
        at = 0
        for size in groups if groups is not None else [1] * len(addresses):
            group = addresses[at : at + size]
            at += size
            if not chunks or len(chunks[-1]) + size > MAX_ACCOUNTS_PER_CALL:
                chunks.append([])
            chunks[-1].extend(group)
        if not chunks:
            return [], []
        self.calls += len(chunks)
        answers = await self.rpc.batch([("getMultipleAccounts", [chunk, config]) for chunk in chunks])
        values: list[dict[str, Any] | None] = []
        slots: list[int] = []
        for chunk, answer in zip(chunks, answers, strict=True):
            if not isinstance(answer, dict) or not isinstance(answer.get("value"), list):
                raise AccountLayoutError(f"getMultipleAccounts answered {str(answer)[:80]}")
            if len(answer["value"]) != len(chunk):
                raise AccountLayoutError(
                    f"getMultipleAccounts: {len(answer['value'])} values for {len(chunk)} keys"
                )
            values.extend(answer["value"])
            slots.extend([int(answer["context"]["slot"])] * len(chunk))
        return slots, values

    async def read(self, mints: Sequence[str]) -> tuple[list[TapePoint], list[Gap]]:
        """One round over ``mints``: a point or a gap for each."""
        if not mints:
            return [], []
        curves = [bonding_curve_address(m) for m in mints]
        slots, values = await self._accounts(curves)
        points: list[TapePoint] = []
        gaps: list[Gap] = []
        graduated: dict[str, int] = {}  # mint → the slot its completed curve was read at
        for mint, slot, value in zip(mints, slots, values, strict=True):
            try:
                data = account_bytes(value, PUMPFUN)
                if data is None:
                    gaps.append(Gap(mint, slot, UNTIMED, "no pump.fun bonding curve for this mint"))
                    continue
                curve = decode_bonding_curve(data)
                if curve.complete:
                    graduated[mint] = slot
                    continue
                price = curve.price_sol()
                points.append(
                    TapePoint(
                        mint, slot, UNTIMED, price, price * curve.token_total_supply / 10**PUMP_TOKEN_DECIMALS,
                        curve.real_sol_reserves / LAMPORTS_PER_SOL, "pumpfun", False,
                    )
                )  # fmt: skip
            except AccountLayoutError as error:
                gaps.append(Gap(mint, slot, UNTIMED, f"bonding curve {bonding_curve_address(mint)}: {error}"))
        if graduated:
            more_points, more_gaps = await self._read_pools(graduated)
            points += more_points
            gaps += more_gaps
        times = await self._block_times({p.slot for p in points} | {g.slot for g in gaps})
        # A read at a slot the node gives no block time for cannot be placed on the tape: it is
        # left out (the token is read again next round), never stored at a guessed time.
        self.untimed += sum(p.slot not in times for p in points) + sum(g.slot not in times for g in gaps)
        return (
            [replace(p, time=times[p.slot]) for p in points if p.slot in times],
            [replace(g, time=times[g.slot]) for g in gaps if g.slot in times],
        )

    async def _block_times(self, slots: set[int]) -> dict[int, int]:
        ordered = sorted(slots)
        self.calls += len(ordered)
        answers = await self.rpc.batch([("getBlockTime", [s]) for s in ordered])
        return {s: int(t) for s, t in zip(ordered, answers, strict=True) if isinstance(t, int)}

    async def _read_pools(self, curve_slots: dict[str, int]) -> tuple[list[TapePoint], list[Gap]]:
        """Points (or gaps) for graduated tokens, from their pools; ``curve_slots`` gives the slot of
        each token's completed curve (a gap about finding its pool is placed there)."""
        gaps: list[Gap] = []
        unknown = [m for m in curve_slots if m not in self.pools]
        if unknown:
            _, values = await self._accounts([canonical_pumpswap_pool(m) for m in unknown])
            for mint, value in zip(unknown, values, strict=True):
                try:
                    pool = await self._pool_of(mint, value)
                except AccountLayoutError as error:
                    gaps.append(Gap(mint, curve_slots[mint], UNTIMED, f"pool: {error}"))
                    continue
                if pool is None:
                    reason = "graduated, but no canonical PumpSwap pool and no known AMM pool"
                    gaps.append(Gap(mint, curve_slots[mint], UNTIMED, reason))
                    continue
                self.pools[mint] = pool
        known = [m for m in curve_slots if m in self.pools]
        if not known:
            return [], gaps
        # The vaults, and a Raydium pool's own account (its pending PnL is in the vaults but not the pool's).
        groups = [_pool_accounts(self.pools[m]) for m in known]
        slots, values = await self._accounts([a for group in groups for a in group], [len(g) for g in groups])
        points: list[TapePoint] = []
        at = 0
        for mint, group in zip(known, groups, strict=True):
            pool = self.pools[mint]
            slot, mine = slots[at], values[at : at + len(group)]
            at += len(group)
            try:
                base_amount, quote_amount = _reserves(pool, mine)
            except AccountLayoutError as error:
                self.pools.pop(mint, None)  # look the pool up again next round
                gaps.append(Gap(mint, slot, UNTIMED, f"{pool.venue} pool {pool.address}: {error}"))
                continue
            price = (quote_amount / LAMPORTS_PER_SOL) / (base_amount / 10**PUMP_TOKEN_DECIMALS)
            market_cap = price * PUMP_TOKEN_SUPPLY / 10**PUMP_TOKEN_DECIMALS
            points.append(
                TapePoint(
                    mint, slot, UNTIMED, price, market_cap, quote_amount / LAMPORTS_PER_SOL, pool.venue, True
                )
            )
        return points, gaps

    async def _pool_of(self, mint: str, canonical: dict[str, Any] | None) -> Pool | None:
        data = account_bytes(canonical, PUMPSWAP)
        if data is not None:
            pool = decode_pumpswap_pool(data)
            if pool.base_mint != mint or pool.quote_mint != WSOL_MINT:
                raise AccountLayoutError(
                    f"PumpSwap pool trades {pool.base_mint}/{pool.quote_mint}, not {mint}/wSOL"
                )
            address = canonical_pumpswap_pool(mint)
            return Pool(
                "pumpswap", address, pool.pool_base_token_account, pool.pool_quote_token_account, mint
            )
        return await self.find_pool(mint) if self.find_pool is not None else None


def _pool_accounts(pool: Pool) -> tuple[str, ...]:
    vaults = (pool.base_vault, pool.quote_vault)
    return (*vaults, pool.address) if pool.venue == "raydium_amm_v4" else vaults


def _reserves(pool: Pool, values: list[dict[str, Any] | None]) -> tuple[int, int]:
    """(base, quote) reserves of ``pool`` from its vaults (and Raydium's account), checked."""
    base_data = account_bytes(values[0], TOKEN_OWNERS)
    quote_data = account_bytes(values[1], TOKEN_OWNERS)
    if base_data is None or quote_data is None:
        raise AccountLayoutError("a vault account does not exist")
    base = decode_token_account(base_data)
    quote = decode_token_account(quote_data)
    if base.mint != pool.base_mint or quote.mint != WSOL_MINT:
        raise AccountLayoutError(f"vaults hold {base.mint}/{quote.mint}, not {pool.base_mint}/wSOL")
    base_amount, quote_amount = base.amount, quote.amount
    if pool.venue == "raydium_amm_v4":
        amm_data = account_bytes(values[2], RAYDIUM_AMM_V4)
        if amm_data is None:
            raise AccountLayoutError("the AMM account does not exist")
        amm = decode_raydium_amm(amm_data)
        base_amount -= amm.base_need_take_pnl
        quote_amount -= amm.quote_need_take_pnl
    if base_amount <= 0 or quote_amount <= 0:
        raise AccountLayoutError(f"empty reserves ({base_amount} base, {quote_amount} quote)")
    return base_amount, quote_amount


async def raydium_pool_from_transaction(rpc: Rpc, mint: str, transaction: dict[str, Any]) -> Pool | None:
    """The Raydium AMM v4 pool a stored swap of ``mint`` traded on: the AMM instruction's second
    account (``amm``, in every swap variant), read and checked against ``mint``."""
    message = transaction.get("transaction", {}).get("message", {})
    keys = list(message.get("accountKeys", []))
    loaded = transaction.get("meta", {}).get("loadedAddresses") or {}
    keys += loaded.get("writable", []) + loaded.get("readonly", [])
    keys = [k if isinstance(k, str) else k.get("pubkey") for k in keys]
    instructions = list(message.get("instructions", []))
    for inner in transaction.get("meta", {}).get("innerInstructions") or []:
        instructions += inner.get("instructions", [])
    for ix in instructions:
        program = keys[ix["programIdIndex"]] if "programIdIndex" in ix else ix.get("programId")
        accounts = ix.get("accounts", [])
        if program != RAYDIUM_AMM_V4 or len(accounts) < 2:
            continue
        amm_address = keys[accounts[1]] if isinstance(accounts[1], int) else accounts[1]
        (answer,) = await rpc.batch([("getAccountInfo", [amm_address, {"encoding": "base64"}])])
        data = account_bytes(answer.get("value") if isinstance(answer, dict) else None, RAYDIUM_AMM_V4)
        if data is None:
            continue
        amm = decode_raydium_amm(data)
        if amm.base_mint == mint and amm.quote_mint == WSOL_MINT:
            return Pool("raydium_amm_v4", amm_address, amm.base_vault, amm.quote_vault, mint)
    return None
