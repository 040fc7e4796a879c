"""A token's price before the market stage watched it, from its own trades (a new wallet's backfill).

The live stage sees a token's price from the moment it starts reading its accounts. A position
opened earlier (a wallet tracked after the fact) has no tape between its entry and that moment. The
token's trades fill it: ``getSignaturesForAddress`` on its pump.fun bonding curve, its canonical
PumpSwap pool and (found from a stored swap, as the live reader finds it) its Raydium AMM v4 pool,
then ``getTransaction`` of those signatures; each trade's pump.fun ``TradeEvent`` (virtual reserves
after it) or PumpSwap ``BuyEvent``/``SellEvent`` (pool reserves) gives the price, decoded by
:func:`kolray.chain.swaps.extract_swaps` (the trader being the fee payer); a Raydium swap emits no
reserves, so its price is the pool's vaults' balances after it (``postTokenBalances``; a pool's
pending PnL, which the live reader subtracts, is not in a transaction and is left in). The prices
go to ``market_tape`` with ``source = 'history'``, once per (mint, slot).

Which window: from the token's earliest tracked buy to the earliest of its latest tracked buy + 7
days, its first live tape row and the chain's clock. Which trades: not the failed ones, and not the
tracked wallets' own (their prices are in ``swaps`` already). How many: at most ``budget``
``getTransaction`` calls per token. With more trades than that, :func:`next_picks` chooses: half
the budget evenly spaced over the trades in time order, then, two at a time, the middle of the
gap between fetched trades whose *plausible peak* is highest: its higher end's log-price plus the
typical excursion of the price over that many trades (σ·√n, σ estimated from the fetched pairs).
Gaps next to the highest price found get split until they close, so the search converges on the
peak, while a long unexplored gap still gets its turn.

Faults never become prices: an RPC error, a transaction the node does not return, one that does
not decode, or a trade of the token whose price comes neither from a pump event nor from its known
Raydium pool's vaults (another program) is a log line and a gap row at that trade's slot. A transaction with no trade of the token (the
token's creation, a transfer) is neither.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from solders.transaction import VersionedTransaction
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine

from kolray.chain.accounts import (
    PUMP_TOKEN_SUPPLY,
    AccountLayoutError,
    bonding_curve_address,
    canonical_pumpswap_pool,
)
from kolray.chain.rpc import RpcClient, RpcError, SignatureInfo
from kolray.chain.swaps import MalformedTransaction, extract_swaps
from kolray.chain.types import LAMPORTS_PER_SOL, WSOL_MINT
from kolray.market.read import Gap, Pool, PoolFinder, TapePoint
from kolray.market.watch import LABEL_HORIZON_S
from kolray.secrets import redact_text

log = logging.getLogger("kolray.market")

# getTransaction calls per token. 200: the peak within 5% for 95.3% of positions, against 87.5% at
# 50, for 69.6 calls per token once against 33.1 (bench/market_history.py, docs/market.md); the
# live reads of a watched token cost about 12 calls an hour (bench/market.py).
HISTORY_BUDGET = 200
# Trades fetched per refinement round (one JSON-RPC batch): few, so that each round learns from the
# last (on a twin world's tapes, 20 calls find 88% of tokens' peaks to 5% in rounds of 1 or 2, 73% in 5).
REFINE_BATCH = 2
PAGE = 1000  # getSignaturesForAddress's largest page
PUMP_VENUES = frozenset({"pumpfun", "pumpswap"})
_DEFAULT_STEP = 0.05  # log-price per trade before two fetched trades say otherwise


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """The stretch of a token's life the tape lacks: unix seconds, both ends included."""

    mint: str
    start: int
    end: int


@dataclass
class HistoryResult:
    mint: str
    points: list[TapePoint] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    trades: int = 0  # the token's trades in the window (signatures, less failed and tracked ones)
    fetched: int = 0  # getTransaction calls made
    signature_calls: int = 0  # getSignaturesForAddress pages read


def history_windows(
    engine: Engine, mints: Sequence[str], chain_now: int, window_s: int = LABEL_HORIZON_S
) -> list[HistoryWindow]:
    """The windows of ``mints`` that need a history: tracked buys before the first live tape row
    (or with none yet), and no history stored for the token yet."""
    if not mints:
        return []
    buys = text(
        "SELECT mint, MIN(block_time), MAX(block_time) FROM swaps WHERE side = 'buy' "
        f"AND block_time IS NOT NULL AND (quote_mint IS NULL OR quote_mint = '{WSOL_MINT}') "
        "AND mint IN :mints GROUP BY mint"
    ).bindparams(bindparam("mints", expanding=True))
    live = text(
        "SELECT mint, MIN(time) FROM market_tape WHERE source = 'live' AND mint IN :mints GROUP BY mint"
    ).bindparams(bindparam("mints", expanding=True))
    done = text(
        "SELECT DISTINCT mint FROM market_tape WHERE source = 'history' AND mint IN :mints"
    ).bindparams(bindparam("mints", expanding=True))
    windows = []
    with engine.connect() as conn:
        for begin in range(0, len(mints), 500):
            chunk = list(mints[begin : begin + 500])
            first_live = {str(m): int(t) for m, t in conn.execute(live, {"mints": chunk})}
            stored = {str(r[0]) for r in conn.execute(done, {"mints": chunk})}
            for mint, first, last in conn.execute(buys, {"mints": chunk}):
                if mint in stored:
                    continue
                end = min(int(last) + window_s, first_live.get(mint, chain_now), chain_now)
                if int(first) < end:
                    windows.append(HistoryWindow(str(mint), int(first), end))
    return sorted(windows, key=lambda w: w.mint)


def tracked_signatures(engine: Engine, mint: str) -> set[str]:
    """Signatures of the tracked wallets' swaps of ``mint``: their prices are stored already."""
    with engine.connect() as conn:
        return {
            str(r[0]) for r in conn.execute(text("SELECT signature FROM swaps WHERE mint = :m"), {"m": mint})
        }


def next_picks(count: int, log_prices: Mapping[int, float | None], want: int) -> list[int]:
    """Which of ``count`` trades (in time order) to fetch next, at most ``want``, given the
    log-prices fetched so far (None: fetched, no price). The first call spreads ``want`` evenly,
    both ends included; later ones split the gaps with the highest plausible peak."""
    if want <= 0 or count <= 0:
        return []
    if not log_prices:
        return sorted({round(x) for x in np.linspace(0, count - 1, min(want, count))})
    fetched = sorted(log_prices)
    known = [(i, p) for i, p in ((i, log_prices[i]) for i in fetched) if p is not None]
    steps = [abs(p1 - p0) / math.sqrt(i1 - i0) for (i0, p0), (i1, p1) in itertools.pairwise(known)]
    sigma = float(np.median(steps)) if steps and float(np.median(steps)) > 0 else _DEFAULT_STEP
    top = max((p for _, p in known), default=0.0)
    scored = []
    for a, b in itertools.pairwise(fetched):
        if b - a < 2:
            continue
        ends = [p for p in (log_prices[a], log_prices[b]) if p is not None]
        # An end without a price (a fault) is judged by the best price seen so far.
        base = max(ends) if ends else top
        scored.append((base + sigma * math.sqrt(b - a), (a + b) // 2))
    # Trades outside the fetched span (the first round always takes both ends; this covers an
    # initial round of one) are a gap with one end.
    if fetched[0] > 0:
        scored.append((top + sigma * math.sqrt(fetched[0] + 1), fetched[0] // 2))
    if fetched[-1] < count - 1:
        scored.append((top + sigma * math.sqrt(count - fetched[-1]), (fetched[-1] + count) // 2))
    scored.sort(key=lambda s: -s[0])
    return sorted({i for _, i in scored[:want]})


def _fee_payer(tx: dict) -> str:
    """The first account key, in any of the encodings the RPC client asks for."""
    transaction = tx.get("transaction")
    if isinstance(transaction, dict):
        first = transaction["message"]["accountKeys"][0]
        return str(first["pubkey"] if isinstance(first, dict) else first)
    if isinstance(transaction, list) and transaction and transaction[-1] == "base64":
        return str(VersionedTransaction.from_bytes(base64.b64decode(transaction[0])).message.account_keys[0])
    raise MalformedTransaction("transaction is neither an object nor base64")


def _account_keys(tx: dict) -> list[str]:
    """Every account key, loaded ones included, in the order token balances index them."""
    transaction = tx["transaction"]
    loaded = tx["meta"].get("loadedAddresses") or {}
    extra = [*loaded.get("writable", []), *loaded.get("readonly", [])]
    if isinstance(transaction, list):
        message = VersionedTransaction.from_bytes(base64.b64decode(transaction[0])).message
        return [*map(str, message.account_keys), *extra]
    keys = transaction["message"]["accountKeys"]
    if keys and isinstance(keys[0], dict):  # jsonParsed lists the loaded ones already
        return [str(k["pubkey"]) for k in keys]
    return [*map(str, keys), *extra]


def _pool_reserves_after(tx: dict, pool: Pool) -> tuple[int, int, int] | None:
    """(base, quote, base decimals) in ``pool``'s vaults after the transaction, from its token
    balances; None when the transaction does not show both vaults."""
    keys = _account_keys(tx)
    after: dict[str, tuple[int, int]] = {}
    for entry in tx["meta"].get("postTokenBalances") or []:
        amount = entry["uiTokenAmount"]
        after[keys[entry["accountIndex"]]] = (int(amount["amount"]), int(amount["decimals"]))
    if pool.base_vault not in after or pool.quote_vault not in after:
        return None
    (base, decimals), (quote, _) = after[pool.base_vault], after[pool.quote_vault]
    return base, quote, decimals


def price_of_trade(tx: dict, mint: str, pool: Pool | None = None) -> TapePoint | str | None:
    """The token's price after the trade in ``tx``, as a tape point; a reason (str) when the
    transaction cannot give one; None when it holds no trade of ``mint``. ``pool``: the token's
    Raydium AMM v4 pool, priced from its vaults' balances after the trade (its swaps emit no
    reserves event)."""
    try:
        swaps = [s for s in extract_swaps(tx, _fee_payer(tx)) if s.mint == mint]
        if not swaps:
            return None
        swap = swaps[-1]
        if swap.block_time is None or swap.slot is None:
            return "trade without slot or block time"
        if swap.dex in PUMP_VENUES and swap.price_sol is not None and swap.market_cap_sol is not None:
            return TapePoint(
                mint, int(swap.slot), int(swap.block_time), float(swap.price_sol), float(swap.market_cap_sol),
                None, swap.dex, swap.dex == "pumpswap",
            )  # fmt: skip
        reserves = _pool_reserves_after(tx, pool) if pool is not None else None
    except (MalformedTransaction, KeyError, IndexError, TypeError, ValueError) as error:
        return f"transaction does not decode: {error}"
    if pool is None or reserves is None or min(reserves[:2]) <= 0:
        return f"trade on {swap.dex} ({swap.program_id}): no pump.fun or PumpSwap event to price it"
    base, quote, decimals = reserves
    price = (quote / LAMPORTS_PER_SOL) / (base / 10**decimals)
    return TapePoint(
        mint, int(swap.slot), int(swap.block_time), price, price * PUMP_TOKEN_SUPPLY / 10**decimals,
        quote / LAMPORTS_PER_SOL, pool.venue, True,
    )  # fmt: skip


@dataclass
class HistoryReader:
    """Reads tokens' histories within a per-token ``budget`` of getTransaction calls."""

    rpc: RpcClient
    budget: int = HISTORY_BUDGET
    find_pool: PoolFinder | None = None  # a graduated token's Raydium pool (from a stored swap)

    def __post_init__(self) -> None:
        if self.budget < 2:
            raise ValueError(f"a history needs a budget of at least 2 calls per token, got {self.budget}")

    async def _raydium_pool(self, mint: str) -> Pool | None:
        if self.find_pool is None:
            return None
        try:
            found = await self.find_pool(mint)
        except AccountLayoutError as error:  # the stored swap names no usable pool: no Raydium history
            log.warning("market history: no Raydium pool", extra={"mint": mint, "reason": str(error)})
            return None
        return found if found is not None and found.venue == "raydium_amm_v4" else None

    async def trades(
        self, window: HistoryWindow, known: set[str], pool: Pool | None
    ) -> tuple[list[SignatureInfo], int]:
        """The token's trades in the window, oldest first, and the signature pages read."""
        found: dict[str, SignatureInfo] = {}
        pages = 0
        addresses = [bonding_curve_address(window.mint), canonical_pumpswap_pool(window.mint)]
        for address in addresses + ([pool.address] if pool is not None else []):
            before: str | None = None
            while True:
                page = await self.rpc.get_signatures_for_address(address, before=before, limit=PAGE)
                pages += 1
                for info in page:
                    if info.block_time is None or not window.start <= info.block_time <= window.end:
                        continue
                    if not info.failed and info.signature not in known:
                        found[info.signature] = info
                # Newest first: a page reaching before the window's start ends the search.
                if len(page) < PAGE or (page[-1].block_time or 0) < window.start:
                    break
                before = page[-1].signature
        return sorted(found.values(), key=lambda s: (s.slot, s.signature)), pages

    async def read(self, window: HistoryWindow, known: set[str]) -> HistoryResult:
        result = HistoryResult(window.mint)
        try:
            pool = await self._raydium_pool(window.mint)
            trades, result.signature_calls = await self.trades(window, known, pool)
        except RpcError as error:
            reason = redact_text(f"history: signatures unavailable ({error.kind}: {error})")
            log.warning("market history: no signatures", extra={"mint": window.mint, "reason": reason})
            return result
        result.trades = len(trades)
        log_prices: dict[int, float | None] = {}
        first = True
        while result.fetched < self.budget:
            left = self.budget - result.fetched
            want = min(left, max(self.budget // 2, 2)) if first else min(left, REFINE_BATCH)
            picks = [i for i in next_picks(len(trades), log_prices, want) if i not in log_prices]
            first = False
            if not picks:
                break
            result.fetched += len(picks)
            await self._fetch(window.mint, pool, [trades[i] for i in picks], picks, log_prices, result)
        return result

    async def _fetch(
        self,
        mint: str,
        pool: Pool | None,
        infos: list[SignatureInfo],
        picks: list[int],
        log_prices: dict[int, float | None],
        result: HistoryResult,
    ) -> None:
        try:
            transactions = await self.rpc.get_transactions([i.signature for i in infos])
        except RpcError as error:
            reason = redact_text(f"history: getTransaction failed ({error.kind}: {error})")
            transactions = [reason] * len(infos)  # type: ignore[list-item]
        for index, info, tx in zip(picks, infos, transactions, strict=True):
            outcome: TapePoint | str | None
            if isinstance(tx, str):
                outcome = tx
            elif tx is None:
                outcome = "history: the node did not return the transaction"
            else:
                outcome = price_of_trade(tx, mint, pool)
            log_prices[index] = None
            if isinstance(outcome, TapePoint):
                result.points.append(outcome)
                log_prices[index] = math.log(outcome.price_sol)
            elif isinstance(outcome, str):
                log.warning("market history: no price for a trade", extra={"mint": mint, "reason": outcome})
                result.gaps.append(Gap(mint, info.slot, info.block_time or 0, outcome))


async def read_histories(
    reader: HistoryReader, windows: Sequence[HistoryWindow], known: Mapping[str, set[str]], parallel: int = 8
) -> list[HistoryResult]:
    """Histories of ``windows``, ``parallel`` tokens at a time."""
    gate = asyncio.Semaphore(parallel)

    async def one(window: HistoryWindow) -> HistoryResult:
        async with gate:
            return await reader.read(window, known.get(window.mint, set()))

    return list(await asyncio.gather(*(one(w) for w in windows)))
