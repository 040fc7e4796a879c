"""The crowd's trades on every traded token's bonding curve and AMM pool, rendered on demand.

The world's true tape (:mod:`kolray.sim.tapes`) is the price the crowd's buys and sells make. The
twin serves that crowd as transactions: one trade per slot in which the tape changes, a buy where
the price rises and a sell where it falls, sized so that the venue's reserves move from the price
before it to the tape's price at that slot. Its pump.fun ``TradeEvent`` (virtual reserves after the
trade) or PumpSwap ``BuyEvent``/``SellEvent`` (pool reserves before it, plus what entered or left),
or on a Raydium AMM v4 pool the vaults' balances after it, therefore give exactly the price the
curve and pool accounts show at that slot. The transactions
are built by the same code as the KOLs' swaps (:class:`kolray.sim.chain.Renderer`'s venue
instructions, :class:`kolray.sim.txbuild.TxBuilder`), by one of :data:`CROWD_WALLETS` wallets.

Nothing is stored: a trade is found from its address (``getSignaturesForAddress`` on the curve or
the pool) or from its signature (``getTransaction``). A crowd signature names its trade: 8 bytes of
locator (token number, trade number), masked with a hash of the other 56 bytes, which are a keyed
hash of the locator; decoding checks that hash, so no KOL signature (a real ed25519 signature) is
ever taken for a crowd one. They are therefore not ed25519 signatures of their messages: nothing
that reads ``getTransaction`` results checks that, and rendering every crowd trade of a world to
sign it would cost minutes per long-lived token.

Limits: crowd wallets have no signature list of their own; the KOLs' own trades are not on the
tape (their events carry their own price impact).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from kolray.chain.accounts import bonding_curve_address
from kolray.sim import keys
from kolray.sim.accounts import TwinAccounts, TwinAddress
from kolray.sim.chain import Renderer, open_wsol_leg
from kolray.sim.market import Fill, price_of
from kolray.sim.params import (
    CURVE_K,
    GENESIS_SLOT,
    LAMPORTS_PER_SOL,
    MINT_RENT,
    POOL_K,
    PUMPFUN_CREATOR_FEE_BPS,
    PUMPFUN_FEE_BPS,
    PUMPSWAP_CREATOR_FEE_BPS,
    PUMPSWAP_LP_FEE_BPS,
    PUMPSWAP_PROTOCOL_FEE_BPS,
    RAYDIUM_FEE_BPS,
    SLOTS_PER_SECOND,
    TOKEN_ACCOUNT_RENT,
    TOKEN_DECIMALS,
    block_time_of_slot,
    slot_start,
)
from kolray.sim.simulate import CommunityResult
from kolray.sim.tapes import Tapes
from kolray.sim.txbuild import (
    TxBuilder,
    close_account,
    compute_budget,
    create_ata,
)
from kolray.sim.world import World

CROWD_WALLETS = 10_000  # distinct traders in a world's crowd
CURVE, POOL = 0, 1  # where a crowd trade happens: the bonding curve or the PumpSwap pool
_CACHED_TOKENS = 2048  # tokens whose trade lists are kept in memory


@dataclass(frozen=True, slots=True)
class TokenTrades:
    """One token's crowd trades in slot order: where, at which slot, and the log-price before and
    after (from the launch price)."""

    slot: np.ndarray  # int64, strictly increasing
    before: np.ndarray
    after: np.ndarray
    venue: np.ndarray  # CURVE or POOL

    def __len__(self) -> int:
        return len(self.slot)


def _ceil_bps(amount: int, bps: int) -> int:
    return -((-amount * bps) // 10_000)


def _reserves(k: float, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(SOL, token) reserves whose ratio is the price at ``level``: :func:`kolray.sim.market.reserves_at`."""
    price = np.array([price_of(float(x)) for x in level])
    return np.round(np.sqrt(k * price)).astype(np.int64), np.round(np.sqrt(k / price)).astype(np.int64)


def crowd_fill(venue: str, before: float, after: float) -> Fill:
    """The trade that takes ``venue``'s reserves from the price at log-level ``before`` to the one at
    ``after`` (a buy when it rises), with the venue's fees on top (they never reach the reserves,
    but PumpSwap's LP fee, which stays in the pool)."""
    k = CURVE_K if venue == "pumpfun" else POOL_K
    (sol0, sol1), (tok0, tok1) = _reserves(k, np.array([before, after]))
    sol0, sol1, tok0, tok1 = int(sol0), int(sol1), int(tok0), int(tok1)
    if tok0 == tok1:
        raise ValueError(f"no trade moves the price from level {before} to {after}")
    buy = tok1 < tok0
    tokens = abs(tok0 - tok1)
    if venue == "pumpfun":
        pool_sol = abs(sol1 - sol0)
        fee, creator = _ceil_bps(pool_sol, PUMPFUN_FEE_BPS), _ceil_bps(pool_sol, PUMPFUN_CREATOR_FEE_BPS)
        paid = pool_sol + fee + creator if buy else max(pool_sol - fee - creator, 0)
        return Fill(
            venue, "buy" if buy else "sell", tokens, paid, pool_sol, fee, creator, 0, sol0, tok0, sol1, tok1
        )
    if venue == "raydium_amm_v4":  # the fee is taken from the input and stays in the pool
        if buy:
            paid = sol1 - sol0
            lp = _ceil_bps(paid, RAYDIUM_FEE_BPS)
            return Fill(venue, "buy", tokens, paid, paid - lp, 0, 0, lp, sol0, tok0, sol1, tok1)
        out = sol0 - sol1
        lp = _ceil_bps(tokens, RAYDIUM_FEE_BPS)
        return Fill(venue, "sell", tokens, out, out, 0, 0, lp, sol0, tok0, sol1, tok1)
    if buy:  # what enters the quote vault is the input plus the LP fee
        into_pool = sol1 - sol0
        pool_in = into_pool * 10_000 // (10_000 + PUMPSWAP_LP_FEE_BPS)
        lp = into_pool - pool_in
        fee, creator = (
            _ceil_bps(pool_in, PUMPSWAP_PROTOCOL_FEE_BPS),
            _ceil_bps(pool_in, PUMPSWAP_CREATOR_FEE_BPS),
        )
        return Fill(
            venue,
            "buy",
            tokens,
            pool_in + lp + fee + creator,
            pool_in,
            fee,
            creator,
            lp,
            sol0,
            tok0,
            sol1,
            tok1,
        )
    left_pool = sol0 - sol1  # the output less the LP fee, which stays in the pool
    out = -((-left_pool * 10_000) // (10_000 - PUMPSWAP_LP_FEE_BPS))
    lp = out - left_pool
    fee, creator = _ceil_bps(out, PUMPSWAP_PROTOCOL_FEE_BPS), _ceil_bps(out, PUMPSWAP_CREATOR_FEE_BPS)
    received = max(out - fee - creator - lp, 0)
    return Fill(venue, "sell", tokens, received, out, fee, creator, lp, sol0, tok0, sol1, tok1)


def token_trades(tapes: Tapes, mint: str, start: int) -> TokenTrades:
    """``mint``'s crowd trades from its tape: the last change point of each slot, traded in the
    first slot that begins at or after it (so the accounts read at that slot show its price)."""
    begin, end = tapes.ranges[mint]
    time = tapes.time[begin:end]
    level, drift, pool = tapes.level[begin:end], tapes.drift[begin:end], tapes.pool[begin:end]
    slots = GENESIS_SLOT + np.ceil((time - start) * SLOTS_PER_SECOND).astype(np.int64)
    # The same arithmetic as slot_start, so a slot begins at or after its change point exactly as
    # the accounts (Tapes.at at slot_start) see it.
    starts = start + (slots - GENESIS_SLOT) / SLOTS_PER_SECOND
    slots = np.where(starts < time, slots + 1, slots)
    earlier = start + (slots - 1 - GENESIS_SLOT) / SLOTS_PER_SECOND
    slots = np.where(earlier >= time, slots - 1, slots)
    last = np.flatnonzero(np.r_[slots[1:] != slots[:-1], True])
    slots = slots[last]
    after = level[last] + drift[last] * (start + (slots - GENESIS_SLOT) / SLOTS_PER_SECOND - time[last])
    before = np.r_[0.0, after[:-1]]  # a token starts at the launch price
    venue = np.where(pool[last], POOL, CURVE)
    # A trade needs the reserves to move.
    keep = np.ones(len(slots), dtype=bool)
    for v, k in ((CURVE, CURVE_K), (POOL, POOL_K)):
        here = np.flatnonzero(keep & (venue == v))
        if len(here):
            keep[here] &= _reserves(k, before[here])[1] != _reserves(k, after[here])[1]
    return TokenTrades(slots[keep], before[keep], after[keep], venue[keep])


@dataclass(frozen=True, slots=True)
class _Mint:
    mint: str


class _Venues(Renderer):
    """The KOL renderer's venue instructions (pump.fun, PumpSwap, Raydium AMM v4) for the tokens of
    one community of the world (Raydium's accounts load from that community's lookup tables)."""

    def __init__(self, world: World, accounts: TwinAccounts, community: int) -> None:
        empty = CommunityResult(community, [], [], [], [], [], [], [], [])
        super().__init__(world.params, empty)
        self.twin_accounts = accounts
        # The venue instructions read a token's mint only (by its index in the community).
        self.tokens = {  # type: ignore[assignment]
            a.token_index: _Mint(mint) for mint, a in accounts.curves.items() if a.community == community
        }

    def _creator_of(self, mint: str) -> str:
        return self.twin_accounts.curves[mint].creator


def record_of(result: dict[str, Any]) -> tuple[bytes, int]:
    """A ``getTransaction`` result as the node stores one (:class:`kolray.sim.store.PartWriter`):
    json bytes without ``version``, and where the ``transaction`` value starts."""
    head = orjson.dumps({k: v for k, v in result.items() if k != "transaction"})
    body = head[:-1] + b',"transaction":'
    return body + orjson.dumps(result["transaction"]) + b"}", len(body)


class CrowdHistory:
    """The crowd's trades of a world: signature lists per curve and pool, transactions by signature."""

    def __init__(self, world: World, accounts: TwinAccounts) -> None:
        self.world = world
        self.accounts = accounts
        self.tapes = accounts.tapes
        self.mints: list[str] = self.tapes.mints if self.tapes is not None else []
        self.number = {mint: i for i, mint in enumerate(self.mints)}
        self.seed = world.params.seed
        self._tag = hashlib.sha256(f"kolray-sim/{self.seed}/crowd-signature".encode()).digest()
        self._trades: OrderedDict[str, TokenTrades] = OrderedDict()
        self._venues: dict[int, _Venues] = {}

    # Trades and signatures

    def trades(self, mint: str) -> TokenTrades:
        found = self._trades.get(mint)
        if found is None:
            assert self.tapes is not None  # mints come from the tapes
            found = self._trades[mint] = token_trades(self.tapes, mint, self.world.start)
            if len(self._trades) > _CACHED_TOKENS:
                self._trades.popitem(last=False)
        else:
            self._trades.move_to_end(mint)
        return found

    def signature(self, mint: str, index: int) -> bytes:
        """The 64 signature bytes of ``mint``'s crowd trade number ``index``."""
        locator = struct.pack("<II", self.number[mint], index)
        rest = hashlib.sha512(self._tag + locator).digest()[:56]
        mask = hashlib.sha256(rest).digest()[:8]
        return bytes(a ^ b for a, b in zip(locator, mask, strict=True)) + rest

    def key(self, mint: str, index: int) -> bytes:
        """The signature's index key (:func:`kolray.sim.store.sig_bytes`)."""
        return self.signature(mint, index) + b"\x01"

    def locate(self, key: bytes) -> tuple[str, int, int] | None:
        """``(mint, index, slot)`` of the crowd trade whose signature key is ``key``, or None."""
        signature = key[:64]
        rest = signature[8:]
        mask = hashlib.sha256(rest).digest()[:8]
        locator = bytes(a ^ b for a, b in zip(signature[:8], mask, strict=True))
        number, index = struct.unpack("<II", locator)
        if number >= len(self.mints) or hashlib.sha512(self._tag + locator).digest()[:56] != rest:
            return None
        mint = self.mints[number]
        trades = self.trades(mint)
        if index >= len(trades):
            return None
        return mint, index, int(trades.slot[index])

    def page(
        self, address: str, upper: tuple[int, bytes | None], lower: tuple[int, bytes] | None, limit: int
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` crowd trades on ``address`` (a curve or a PumpSwap pool) as ``(slot, key)``,
        newest first, below ``upper`` (a slot, and a key its slot-mates must sort under) and above
        ``lower`` (exclusive), in getSignaturesForAddress order."""
        entry = self.accounts.addresses.get(address)
        if entry is None or not self._trades_here(entry):
            return []
        trades = self.trades(entry.mint)
        indexes = np.flatnonzero(trades.venue == (CURVE if entry.kind == "curve" else POOL))
        slots = trades.slot[indexes]
        at = int(np.searchsorted(slots, upper[0], side="right")) - 1
        out: list[tuple[int, bytes]] = []
        while at >= 0 and len(out) < limit:
            slot = int(slots[at])
            key = self.key(entry.mint, int(indexes[at]))
            at -= 1
            if upper[1] is not None and slot == upper[0] and key >= upper[1]:
                continue
            if lower is not None and (slot < lower[0] or (slot == lower[0] and key <= lower[1])):
                break
            out.append((slot, key))
        return out

    @staticmethod
    def _trades_here(entry: TwinAddress) -> bool:
        return entry.kind in ("curve", "pool")

    # Transactions

    def render(self, mint: str, index: int) -> tuple[dict[str, Any], bytes]:
        """The crowd trade as a ``getTransaction`` result (json encoding, v0, no ``version``) and
        its wire bytes."""
        curve = self.accounts.curves[mint]
        venues = self._venues.get(curve.community)
        if venues is None:
            venues = self._venues[curve.community] = _Venues(self.world, self.accounts, curve.community)
        trades = self.trades(mint)
        slot = int(trades.slot[index])
        t = slot_start(self.world.start, slot)
        venue = "pumpfun" if trades.venue[index] == CURVE else curve.amm
        fill = crowd_fill(venue, float(trades.before[index]), float(trades.after[index]))
        buy = fill.side == "buy"
        signature = self.signature(mint, index)
        draw = int.from_bytes(signature[8:16], "little")
        wallet = draw % CROWD_WALLETS
        user = str(keys.keypair(self.seed, "crowd", wallet).pubkey())
        tx = TxBuilder(user, keys.keypair(self.seed, "crowd", wallet), keys.blockhash(self.seed, slot))
        # Enough SOL for the trade, the rent of two token accounts and the fees, whatever the draw.
        lamports = fill.sol_amount + (1 + (draw >> 20) % 200) * LAMPORTS_PER_SOL
        tx.balance(user, lamports)
        units, micro_lamports = 120_000, 50_000 + (draw >> 40) % 500_000
        compute_budget(tx, units, micro_lamports)
        fee = 5000 + math.ceil(units * micro_lamports / 1_000_000)
        user_ata = keys.ata(user, mint)
        tx.account(user_ata, writable=True)
        if buy:  # a crowd buyer comes new to the token; a crowd seller sells all it holds
            tx.balance(user_ata, 0)
            create_ata(tx, user, user, user_ata, mint, idempotent=True)
            tx.token_account(user_ata, mint, user, TOKEN_DECIMALS, None, fill.token_amount)
        else:
            tx.balance(user_ata, TOKEN_ACCOUNT_RENT)
            tx.token_account(user_ata, mint, user, TOKEN_DECIMALS, fill.token_amount, 0)
        if venue == "pumpfun":
            venue_accounts = {
                "curve": bonding_curve_address(mint),
                "curve_ata": keys.ata(bonding_curve_address(mint), mint),
                "creator_vault": keys.creator_vault(curve.creator),
            }
            venues._pumpfun(tx, fill, user, user_ata, mint, venue_accounts, t, buy, None)
        else:
            assert curve.pool is not None  # every traded token has its pool accounts
            wsol_ata = open_wsol_leg(tx, user, fill.sol_amount if buy else None)
            if venue == "pumpswap":
                venues._pumpswap(tx, fill, user, user_ata, wsol_ata, mint, curve.pool, t, buy, None)
            else:
                venues._raydium(tx, fill, user, user_ata, wsol_ata, curve.pool, buy, None, curve.token_index)
            close_account(tx, wsol_ata, user, user, tx.lamports[wsol_ata][1])
        tx.account(mint)
        tx.balance(mint, MINT_RENT)
        venues._balances_for_others(tx)
        result, wire, _ = tx.build(
            fee, slot=slot, block_time=block_time_of_slot(self.world.params, slot), signature=signature
        )
        return result, wire
