"""Deterministic addresses of a world: every key is derived from the world seed and a role.

KOL wallets and the other signers are real ed25519 keypairs (``Keypair.from_seed``), so the twin's
transactions carry valid signatures. Token accounts are the real associated-token-account PDAs of
their owner and mint, and pump.fun bonding curves the program's PDAs, as on mainnet.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from kolray.chain.accounts import canonical_pumpswap_pool
from kolray.sim.params import ATA_PROGRAM, PUMPFUN_PROGRAM, TOKEN_PROGRAM

_TOKEN_PROGRAM = Pubkey.from_string(TOKEN_PROGRAM)
_ATA_PROGRAM = Pubkey.from_string(ATA_PROGRAM)
_PUMPFUN = Pubkey.from_string(PUMPFUN_PROGRAM)


def _digest(seed: int, *parts: object) -> bytes:
    text = "/".join(["kolray-sim", str(seed), *map(str, parts)])
    return hashlib.sha256(text.encode()).digest()


@lru_cache(maxsize=65_536)
def keypair(seed: int, role: str, *index: int) -> Keypair:
    return Keypair.from_seed(_digest(seed, "keypair", role, *index))


@lru_cache(maxsize=262_144)
def _signer(seed: int, role: str, *index: int) -> str:
    return str(keypair(seed, role, *index).pubkey())


def kol_wallet(seed: int, index: int) -> str:
    return _signer(seed, "kol", index)


def kol_keypair(seed: int, index: int) -> Keypair:
    return keypair(seed, "kol", index)


def spammer(seed: int, community: int, index: int) -> str:
    return _signer(seed, "spammer", community, index)


def dev_wallet(seed: int, community: int, token: int) -> str:
    return _signer(seed, "dev", community, token)


def funder(seed: int, community: int) -> str:
    """The exchange hot wallet that tops KOL wallets up."""
    return _signer(seed, "funder", community)


def outside_wallet(seed: int, community: int, index: int) -> str:
    """Wallets outside the tracked set (friends, other accounts of the KOL, buyers of gifts)."""
    return _signer(seed, "outside", community, index)


def _address(seed: int, *parts: object) -> str:
    return str(Pubkey.from_bytes(_digest(seed, *parts)))


def mint_address(seed: int, community: int, token: int) -> str:
    return _signer(seed, "mint", community, token)


def spam_mint(seed: int, community: int, index: int) -> str:
    return _signer(seed, "spam-mint", community, index)


def pool_accounts(seed: int, community: int, token: int, venue: str) -> dict[str, str]:
    """The AMM accounts of a migrated token (pool, vaults, and Raydium's market accounts)."""
    names = (
        "pool",
        "base_vault",
        "quote_vault",
        "lp_mint",
        "open_orders",
        "target_orders",
        "market",
        "market_bids",
        "market_asks",
        "market_events",
        "market_base_vault",
        "market_quote_vault",
        "market_authority",
        "creator_vault",
        "creator_vault_ata",
    )
    accounts = {name: _address(seed, "pool", venue, community, token, name) for name in names}
    if venue == "pumpswap":
        # The pool pump.fun's migrate creates sits at its canonical PDA, as on mainnet, so a reader
        # finds a graduated token's pool from its mint alone.
        accounts["pool"] = canonical_pumpswap_pool(mint_address(seed, community, token))
    return accounts


@lru_cache(maxsize=4096)
def _blockhash(seed: int, epoch: int) -> str:
    return str(Pubkey.from_bytes(_digest(seed, "blockhash", epoch)))


def blockhash(seed: int, slot: int) -> str:
    """A recent blockhash for a transaction landing in ``slot`` (a new one every 150 slots)."""
    return _blockhash(seed, slot // 150)


def lookup_table(seed: int, index: int) -> str:
    return _address(seed, "alt", index)


@lru_cache(maxsize=262_144)
def ata(owner: str, mint: str) -> str:
    """The associated token account of ``owner`` for ``mint``."""
    address, _ = Pubkey.find_program_address(
        [bytes(Pubkey.from_string(owner)), bytes(_TOKEN_PROGRAM), bytes(Pubkey.from_string(mint))],
        _ATA_PROGRAM,
    )
    return str(address)


@lru_cache(maxsize=65_536)
def creator_vault(creator: str) -> str:
    address, _ = Pubkey.find_program_address([b"creator-vault", bytes(Pubkey.from_string(creator))], _PUMPFUN)
    return str(address)
