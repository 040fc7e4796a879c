"""Account layouts of the venues a KOL's token trades on, and the addresses that find them.

One module reads and writes these bytes: the market stage decodes what ``getMultipleAccounts``
returns from mainnet or from the twin, and the twin (``kolray sim serve``) encodes its state with the
same layouts, so a layout mistake shows up as a wrong price in the twin's tests, not only on mainnet.

Layouts (all integers little-endian, Anchor accounts prefixed by ``sha256("account:<Name>")[:8]``):

- pump.fun ``BondingCurve`` (program ``6EF8rrec…``; pump-fun/pump-public-docs, ``idl/pump.json``):
  ``virtual_token_reserves u64, virtual_sol_reserves u64, real_token_reserves u64,
  real_sol_reserves u64, token_total_supply u64, complete bool, creator Pubkey`` (the creator was
  appended in 2025; older curves end after ``complete``, newer ones carry more padding).
  The curve's price is ``virtual_sol_reserves / virtual_token_reserves``.
- PumpSwap ``Pool`` (program ``pAMMBay6…``; ``idl/pump_amm.json`` and PUMP_SWAP_CREATOR_FEE_README):
  ``pool_bump u8, index u16, creator, base_mint, quote_mint, lp_mint, pool_base_token_account,
  pool_quote_token_account Pubkey, lp_supply u64, coin_creator Pubkey`` (the account is padded to 300
  bytes). The price comes from the two vaults' token balances.
- Raydium AMM v4 ``AmmInfo`` (program ``675kPX9M…``; raydium-io/raydium-amm ``state.rs``, 752 bytes, no
  discriminator): 32 ``u64`` fields (status … orderbook_to_init_time; base/quote decimals at fields 4
  and 5, need_take_pnl at 24 and 25), swap counters (``u128 u128 u64 u128 u128 u64``), then
  ``base_vault`` at byte 336, ``quote_vault`` 368, ``base_mint`` 400, ``quote_mint`` 432, …
  The price is ``(quote vault − quote need_take_pnl) / (base vault − base need_take_pnl)``.
- SPL Token account (``spl-token`` ``state.rs``, 165 bytes, Token-2022 appends extensions):
  ``mint Pubkey, owner Pubkey, amount u64, …``.

A pump.fun token has 6 decimals and SOL 9, so prices here are SOL per whole token.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from solders.pubkey import Pubkey

from kolray.chain.programs import PUMPFUN, PUMPSWAP, TOKEN_2022_PROGRAM, TOKEN_PROGRAM
from kolray.chain.types import LAMPORTS_PER_SOL, WSOL_MINT

PUMP_TOKEN_DECIMALS: Final = 6
PUMP_TOKEN_SUPPLY: Final = 1_000_000_000 * 10**PUMP_TOKEN_DECIMALS


def anchor_account_discriminator(name: str) -> bytes:
    return hashlib.sha256(f"account:{name}".encode()).digest()[:8]


BONDING_CURVE_DISCRIMINATOR: Final = anchor_account_discriminator("BondingCurve")
POOL_DISCRIMINATOR: Final = anchor_account_discriminator("Pool")

_CURVE = struct.Struct("<QQQQQ?")  # after the discriminator; the creator follows when present
_CURVE_SIZE_WITH_CREATOR: Final = 8 + _CURVE.size + 32
CURVE_ACCOUNT_SIZE: Final = 150  # what the program allocates today (the tail is reserved)
_POOL = struct.Struct("<BH32s32s32s32s32s32sQ")
_POOL_SIZE_WITH_COIN_CREATOR: Final = 8 + _POOL.size + 32
POOL_ACCOUNT_SIZE: Final = 300
RAYDIUM_AMM_SIZE: Final = 752
TOKEN_ACCOUNT_SIZE: Final = 165


class AccountLayoutError(ValueError):
    """Bytes that are not the account the caller asked for (wrong size, discriminator or owner)."""


@dataclass(frozen=True, slots=True)
class BondingCurve:
    virtual_token_reserves: int
    virtual_sol_reserves: int
    real_token_reserves: int
    real_sol_reserves: int
    token_total_supply: int
    complete: bool
    creator: str | None = None

    def price_sol(self, decimals: int = PUMP_TOKEN_DECIMALS) -> float:
        """SOL per whole token at the curve's margin."""
        if self.virtual_token_reserves <= 0:
            raise AccountLayoutError("bonding curve with no virtual token reserves has no price")
        return (self.virtual_sol_reserves / LAMPORTS_PER_SOL) / (self.virtual_token_reserves / 10**decimals)


@dataclass(frozen=True, slots=True)
class PumpSwapPool:
    pool_bump: int
    index: int
    creator: str
    base_mint: str
    quote_mint: str
    lp_mint: str
    pool_base_token_account: str
    pool_quote_token_account: str
    lp_supply: int
    coin_creator: str | None = None


@dataclass(frozen=True, slots=True)
class RaydiumAmm:
    base_decimals: int
    quote_decimals: int
    base_need_take_pnl: int
    quote_need_take_pnl: int
    base_vault: str
    quote_vault: str
    base_mint: str
    quote_mint: str


@dataclass(frozen=True, slots=True)
class TokenAccount:
    mint: str
    owner: str
    amount: int


def _key(raw: bytes) -> str:
    return str(Pubkey.from_bytes(raw))


def _raw(address: str) -> bytes:
    return bytes(Pubkey.from_string(address))


def _check(data: bytes, what: str, minimum: int, discriminator: bytes | None = None) -> None:
    if len(data) < minimum:
        raise AccountLayoutError(f"{what}: {len(data)} bytes, the layout needs at least {minimum}")
    if discriminator is not None and data[:8] != discriminator:
        raise AccountLayoutError(f"{what}: discriminator {data[:8].hex()} is not {discriminator.hex()}")


def decode_bonding_curve(data: bytes) -> BondingCurve:
    _check(data, "pump.fun BondingCurve", 8 + _CURVE.size, BONDING_CURVE_DISCRIMINATOR)
    vt, vs, rt, rs, supply, complete = _CURVE.unpack_from(data, 8)
    creator = (
        _key(data[8 + _CURVE.size : _CURVE_SIZE_WITH_CREATOR])
        if len(data) >= _CURVE_SIZE_WITH_CREATOR
        else None
    )
    return BondingCurve(vt, vs, rt, rs, supply, bool(complete), creator)


def encode_bonding_curve(curve: BondingCurve) -> bytes:
    body = BONDING_CURVE_DISCRIMINATOR + _CURVE.pack(
        curve.virtual_token_reserves,
        curve.virtual_sol_reserves,
        curve.real_token_reserves,
        curve.real_sol_reserves,
        curve.token_total_supply,
        curve.complete,
    )
    if curve.creator is not None:
        body += _raw(curve.creator)
    return body.ljust(CURVE_ACCOUNT_SIZE, b"\0")


def decode_pumpswap_pool(data: bytes) -> PumpSwapPool:
    _check(data, "PumpSwap Pool", 8 + _POOL.size, POOL_DISCRIMINATOR)
    bump, index, creator, base, quote, lp, base_acc, quote_acc, lp_supply = _POOL.unpack_from(data, 8)
    coin_creator = (
        _key(data[8 + _POOL.size : _POOL_SIZE_WITH_COIN_CREATOR])
        if len(data) >= _POOL_SIZE_WITH_COIN_CREATOR
        else None
    )
    return PumpSwapPool(
        bump, index, _key(creator), _key(base), _key(quote), _key(lp), _key(base_acc), _key(quote_acc),
        lp_supply, coin_creator,
    )  # fmt: skip


def encode_pumpswap_pool(pool: PumpSwapPool) -> bytes:
    body = POOL_DISCRIMINATOR + _POOL.pack(
        pool.pool_bump,
        pool.index,
        _raw(pool.creator),
        _raw(pool.base_mint),
        _raw(pool.quote_mint),
        _raw(pool.lp_mint),
        _raw(pool.pool_base_token_account),
        _raw(pool.pool_quote_token_account),
        pool.lp_supply,
    )
    if pool.coin_creator is not None:
        body += _raw(pool.coin_creator)
    return body.ljust(POOL_ACCOUNT_SIZE, b"\0")


_RAYDIUM_U64S = struct.Struct("<32Q")
_RAYDIUM_KEYS_AT = 336


def decode_raydium_amm(data: bytes) -> RaydiumAmm:
    _check(data, "Raydium AMM v4 AmmInfo", RAYDIUM_AMM_SIZE)
    fields = _RAYDIUM_U64S.unpack_from(data, 0)
    keys = [_key(data[_RAYDIUM_KEYS_AT + 32 * i : _RAYDIUM_KEYS_AT + 32 * (i + 1)]) for i in range(4)]
    if not 0 < fields[4] <= 18 or not 0 < fields[5] <= 18:
        raise AccountLayoutError(f"Raydium AMM v4 AmmInfo: decimals {fields[4]}/{fields[5]} out of range")
    return RaydiumAmm(fields[4], fields[5], fields[24], fields[25], *keys)


def encode_raydium_amm(amm: RaydiumAmm) -> bytes:
    fields = [0] * 32
    fields[0] = 6  # status: swap enabled
    fields[4], fields[5] = amm.base_decimals, amm.quote_decimals
    fields[24], fields[25] = amm.base_need_take_pnl, amm.quote_need_take_pnl
    body = _RAYDIUM_U64S.pack(*fields).ljust(_RAYDIUM_KEYS_AT, b"\0")
    body += b"".join(_raw(a) for a in (amm.base_vault, amm.quote_vault, amm.base_mint, amm.quote_mint))
    return body.ljust(RAYDIUM_AMM_SIZE, b"\0")


def decode_token_account(data: bytes) -> TokenAccount:
    _check(data, "SPL token account", TOKEN_ACCOUNT_SIZE)
    if len(data) > TOKEN_ACCOUNT_SIZE and data[TOKEN_ACCOUNT_SIZE] != 2:  # Token-2022: account type byte
        raise AccountLayoutError(
            f"SPL token account: account type {data[TOKEN_ACCOUNT_SIZE]} is not 2 (Account)"
        )
    if data[108] == 0:
        raise AccountLayoutError("SPL token account: uninitialised")
    (amount,) = struct.unpack_from("<Q", data, 64)
    return TokenAccount(_key(data[:32]), _key(data[32:64]), amount)


def encode_token_account(account: TokenAccount) -> bytes:
    body = _raw(account.mint) + _raw(account.owner) + struct.pack("<Q", account.amount)
    body = body.ljust(108, b"\0") + b"\x01"  # no delegate; state Initialized
    return body.ljust(TOKEN_ACCOUNT_SIZE, b"\0")


# Addresses


@lru_cache(maxsize=65_536)
def bonding_curve_address(mint: str) -> str:
    address, _ = Pubkey.find_program_address([b"bonding-curve", _raw(mint)], Pubkey.from_string(PUMPFUN))
    return str(address)


@lru_cache(maxsize=65_536)
def pump_pool_authority(mint: str) -> str:
    """The pump.fun PDA that creates the canonical PumpSwap pool of a graduated curve."""
    address, _ = Pubkey.find_program_address([b"pool-authority", _raw(mint)], Pubkey.from_string(PUMPFUN))
    return str(address)


@lru_cache(maxsize=65_536)
def canonical_pumpswap_pool(mint: str) -> str:
    """The PumpSwap pool pump.fun's ``migrate`` creates: index 0, creator the pool authority, quote wSOL."""
    seeds = [b"pool", struct.pack("<H", 0), _raw(pump_pool_authority(mint)), _raw(mint), _raw(WSOL_MINT)]
    address, _ = Pubkey.find_program_address(seeds, Pubkey.from_string(PUMPSWAP))
    return str(address)


# RPC answers


def account_bytes(info: dict[str, Any] | None, expected_owner: str | frozenset[str]) -> bytes | None:
    """The data of one ``getAccountInfo``/``getMultipleAccounts`` value (encoding ``base64``);
    ``None`` for an account that does not exist. Raises :class:`AccountLayoutError` for an account
    owned by another program or served in another encoding."""
    if info is None:
        return None
    owners = {expected_owner} if isinstance(expected_owner, str) else expected_owner
    owner = info.get("owner")
    if owner not in owners:
        raise AccountLayoutError(f"account owned by {owner}, expected {' or '.join(sorted(owners))}")
    data = info.get("data")
    if not isinstance(data, list) or len(data) != 2 or data[1] != "base64" or not isinstance(data[0], str):
        raise AccountLayoutError(f"account data is not [base64, 'base64']: {str(data)[:60]}")
    try:
        return base64.b64decode(data[0], validate=True)
    except ValueError as error:
        raise AccountLayoutError(f"account data is not valid base64: {error}") from None


def account_info(data: bytes, owner: str) -> dict[str, Any]:
    """An ``AccountInfo`` JSON value (base64), as a node answers it; the twin's side of :func:`account_bytes`."""
    return {
        "data": [base64.b64encode(data).decode(), "base64"],
        "executable": False,
        "lamports": (128 + len(data)) * 6960,  # rent-exempt
        "owner": owner,
        "rentEpoch": 18_446_744_073_709_551_615,
        "space": len(data),
    }


TOKEN_OWNERS: Final = frozenset({TOKEN_PROGRAM, TOKEN_2022_PROGRAM})
