"""Render a community's events as mainnet-shaped transactions, in time order.

Each KOL trade becomes the transaction a trading bot or wallet would send: ComputeBudget
instructions (priority fee), the token's associated token account created on a first buy (rent
2,039,280 lamports) and closed on a full exit, wSOL wrapped and unwrapped around AMM swaps, the venue
program (pump.fun's bonding curve, PumpSwap or Raydium AMM v4 — directly or routed through
Jupiter v6) with its CPIs and events, Jito tips and bot fees. Noise is rendered too: failed swaps,
plain SOL transfers, wallet top-ups, token sends, spam and promotional airdrops (with memos), and
the pump.fun ``create`` transaction of every traded token.

KOL wallets' SOL and token balances are tracked across transactions, so ``preBalances`` of one
transaction equal ``postBalances`` of the wallet's previous one and ``getBalance`` is consistent.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kolray.chain.accounts import bonding_curve_address
from kolray.chain.types import Swap
from kolray.sim import keys
from kolray.sim.market import Fill, curve_real_reserves, reserves_at
from kolray.sim.market import buy as buy_fill
from kolray.sim.market import sell as sell_fill
from kolray.sim.params import (
    ATA_PROGRAM,
    BOT_FEE_ACCOUNTS,
    COMPUTE_BUDGET_PROGRAM,
    INFRA_ACCOUNTS,
    JITO_TIP_ACCOUNTS,
    JUPITER_EVENT_AUTHORITY,
    JUPITER_V6_PROGRAM,
    LAMPORTS_PER_SOL,
    MEMO_PROGRAM,
    MINT_RENT,
    OPENBOOK_PROGRAM,
    PUMPFUN_CREATOR_FEE_BPS,
    PUMPFUN_EVENT_AUTHORITY,
    PUMPFUN_FEE_BPS,
    PUMPFUN_FEE_RECIPIENT,
    PUMPFUN_GLOBAL,
    PUMPFUN_PROGRAM,
    PUMPSWAP_CREATOR_FEE_BPS,
    PUMPSWAP_EVENT_AUTHORITY,
    PUMPSWAP_FEE_RECIPIENT,
    PUMPSWAP_FEE_RECIPIENT_ATA,
    PUMPSWAP_GLOBAL_CONFIG,
    PUMPSWAP_LP_FEE_BPS,
    PUMPSWAP_PROGRAM,
    PUMPSWAP_PROTOCOL_FEE_BPS,
    RAYDIUM_AMM_V4_PROGRAM,
    RAYDIUM_AUTHORITY,
    RENT_SYSVAR,
    SYSTEM_PROGRAM,
    TOKEN_ACCOUNT_RENT,
    TOKEN_DECIMALS,
    TOKEN_PROGRAM,
    TOKEN_SUPPLY_RAW,
    WSOL_MINT,
    WorldParams,
    block_time_of_slot,
    slot_at,
)
from kolray.sim.simulate import Airdrop, CommunityResult, FailedTrade, SolTransfer, TokenSend, Trade
from kolray.sim.txbuild import (
    TxBuilder,
    anchor_discriminator,
    close_account,
    compute_budget,
    create_ata,
    emit_cpi,
    pk,
    sync_native,
    system_create_account_data,
    system_transfer,
    token_transfer,
)

PUMP_BUY = anchor_discriminator("global", "buy")
PUMP_SELL = anchor_discriminator("global", "sell")
PUMP_CREATE = anchor_discriminator("global", "create")
JUPITER_ROUTE = anchor_discriminator("global", "route")
TRADE_EVENT = anchor_discriminator("event", "TradeEvent")
CREATE_EVENT = anchor_discriminator("event", "CreateEvent")
BUY_EVENT = anchor_discriminator("event", "BuyEvent")
SELL_EVENT = anchor_discriminator("event", "SellEvent")
SWAP_EVENT = anchor_discriminator("event", "SwapEvent")
METADATA_PROGRAM = "metaqbxxUerdq28cj1RbAWkYQm3ybzjb6a8bt518x1s"
VENUE_PROGRAM = {
    "pumpfun": PUMPFUN_PROGRAM,
    "pumpswap": PUMPSWAP_PROGRAM,
    "raydium_amm_v4": RAYDIUM_AMM_V4_PROGRAM,
}
# Programs' own lamports (as mainnet shows them in pre/postBalances)
PROGRAM_LAMPORTS = {
    SYSTEM_PROGRAM: 1,
    COMPUTE_BUDGET_PROGRAM: 1,
    TOKEN_PROGRAM: 934_087_680,
    ATA_PROGRAM: 731_913_600,
    MEMO_PROGRAM: 521_498_880,
    PUMPFUN_PROGRAM: 1_141_440,
    PUMPSWAP_PROGRAM: 1_141_440,
    RAYDIUM_AMM_V4_PROGRAM: 1_141_440,
    JUPITER_V6_PROGRAM: 1_141_440,
    OPENBOOK_PROGRAM: 1_141_440,
    METADATA_PROGRAM: 1_141_440,
    RENT_SYSVAR: 1_009_200,
    WSOL_MINT: 1_051_692_845_520,
}
CUSTOM_ERRORS = {
    PUMPFUN_PROGRAM: (
        6002,
        "TooMuchSolRequired",
        "slippage: Too much SOL required to buy the given amount of tokens.",
    ),
    PUMPSWAP_PROGRAM: (6004, "ExceededSlippage", "Exceeded slippage"),
    RAYDIUM_AMM_V4_PROGRAM: (30, None, None),
    JUPITER_V6_PROGRAM: (6001, "SlippageToleranceExceeded", "Slippage tolerance exceeded"),
}


@dataclass(slots=True)
class Rendered:
    """One transaction: the index row, the json-encoding result and wire bytes, and its swaps."""

    signature: str
    slot: int
    block_time: int
    legacy: bool
    err: dict | None
    memo: str | None
    result: dict[str, Any]
    wire: bytes
    addresses: list[str]
    swaps: list[Swap] = field(default_factory=list)
    kind: str = "swap"
    position: int = -1  # the ground-truth position the swap belongs to (-1: none or untracked)
    community: int = 0
    trade: Trade | None = None  # the simulated trade behind a swap
    route: str = "direct"  # how the swap reached its venue: "direct" or "jupiter"


@dataclass(slots=True)
class _Wallet:
    lamports: int
    tokens: dict[str, int] = field(default_factory=dict)
    atas: set[str] = field(default_factory=set)  # mints with an existing token account
    sends: int = 0


def _price(fill: Fill) -> tuple[float | None, float | None]:
    """SOL per whole token and market cap as a reader of the chain finds them: from the pump.fun /
    PumpSwap event's reserves after the trade (supply: pump.fun's fixed billion), else (Raydium)
    from the trade's own amounts, with no market cap."""
    scale = 10**TOKEN_DECIMALS
    if fill.venue in ("pumpfun", "pumpswap") and fill.reserve_tokens > 0:
        price = (fill.reserve_sol / LAMPORTS_PER_SOL) / (fill.reserve_tokens / scale)
        return price, price * TOKEN_SUPPLY_RAW / scale
    if fill.sol_amount > 0 and fill.token_amount > 0:
        return (fill.sol_amount / LAMPORTS_PER_SOL) / (fill.token_amount / scale), None
    return None, None


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def _big_balance(address: str, lo: int = 50, hi: int = 5_000) -> int:
    """A deterministic, plausible balance for accounts whose history the twin does not track."""
    return (lo + _stable_int("balance", address) % (hi - lo)) * LAMPORTS_PER_SOL + _stable_int(
        "dust", address
    ) % 999_999


def open_wsol_leg(tx: TxBuilder, user: str, sol_in: int | None) -> str:
    """An AMM leg's temporary wSOL account (``user``'s wSOL ATA, created idempotently), funded with
    ``sol_in`` lamports for a buy (``None``: a sell, paid into it); the leg closes it afterwards."""
    wsol_ata = keys.ata(user, WSOL_MINT)
    tx.account(wsol_ata, writable=True)
    tx.balance(wsol_ata, 0)
    create_ata(tx, user, user, wsol_ata, WSOL_MINT, idempotent=True)
    if sol_in is not None:
        system_transfer(tx, user, wsol_ata, sol_in)
        sync_native(tx, wsol_ata)
    return wsol_ata


class Renderer:
    """Renders one community's events; iterate :meth:`render` to get transactions in time order."""

    def __init__(self, params: WorldParams, result: CommunityResult) -> None:
        self.params = params
        self.result = result
        self.seed = params.seed
        self.community = result.index
        self.rng = np.random.default_rng(np.random.SeedSequence([params.seed, result.index, 9]))
        self.kols = {k.index: k for k in result.kols}
        self.wallets = {k.index: _Wallet(k.initial_balance) for k in result.kols}
        self.tokens = result.tokens
        self.funder = keys.funder(self.seed, self.community)
        self._last_slot: dict[str, int] = {}
        self._last_time: dict[int, float] = {}  # last transaction time of each KOL wallet
        self._token_of_mint = {t.mint: t.index for t in self.tokens}

    # Event stream

    def _events(self) -> list[tuple[float, int, int, object]]:
        events: list[tuple[float, int, int, object]] = []
        traded = {t.token for t in self.result.trades} | {
            a.token for a in self.result.airdrops if a.token >= 0
        }
        for index in sorted(traded):
            token = self.tokens[index]
            events.append((token.launch, 0, len(events), ("create", index)))
        for kind, items in (
            (1, self.result.trades),
            (2, self.result.failed),
            (3, self.result.airdrops),
            (4, self.result.sends),
            (5, self.result.transfers),
        ):
            for item in items:
                events.append((item.time, kind, len(events), item))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        return events

    def render(self) -> Iterator[Rendered]:
        for time_, _, _, event in self._events():
            if time_ >= self.params.end:
                continue
            if isinstance(event, tuple):
                if event[0] == "create":
                    yield self._create(time_, event[1])
            elif isinstance(event, Trade):
                yield from self._trade(event, failed=False)
            elif isinstance(event, FailedTrade):
                yield from self._failed(event)
            elif isinstance(event, Airdrop):
                yield self._airdrop(event)
            elif isinstance(event, TokenSend):
                yield from self._token_send(event)
            elif isinstance(event, SolTransfer):
                yield from self._sol_transfer(event)

    # Helpers

    def _slot(self, t: float, who: str) -> tuple[int, int]:
        # A signer's next transaction lands in a later slot: swaps carry no index within a block,
        # so two of one wallet's trades in one slot (a sell and the re-entry after it) would have
        # no order that the analyzer, or anyone reading the chain by slot, could recover.
        last = self._last_slot.get(who)
        slot = slot_at(self.params, t) if last is None else max(slot_at(self.params, t), last + 1)
        self._last_slot[who] = slot
        return slot, block_time_of_slot(self.params, slot)

    def _finish(
        self, tx: TxBuilder, t: float, fee: int, kind: str, err: dict | None = None, memo: str | None = None
    ) -> Rendered:
        slot, block_time = self._slot(t, tx.signer)
        result, wire, signature = tx.build(fee, err=err, slot=slot, block_time=block_time)
        addresses = [a for a in tx.lamports if a not in INFRA_ACCOUNTS and a not in PROGRAM_LAMPORTS]
        return Rendered(
            signature,
            slot,
            block_time,
            tx.legacy,
            err,
            memo,
            result,
            wire,
            addresses,
            kind=kind,
            community=self.community,
        )

    def _priority(self, kol_index: int, units: int) -> tuple[int, int]:
        kol = self.kols[kol_index]
        price = int(kol.priority_micro_lamports * self.rng.uniform(0.5, 1.5))
        return price, 5000 + math.ceil(units * price / 1_000_000)

    def _fund(self, kol_index: int, need: int, t: float) -> Iterator[Rendered]:
        """Top the wallet up from its exchange before a transaction it could not afford."""
        wallet = self.wallets[kol_index]
        if wallet.lamports >= need + LAMPORTS_PER_SOL // 10:
            return
        amount = (need - wallet.lamports) + int(self.rng.uniform(5, 40) * LAMPORTS_PER_SOL)
        kol = self.kols[kol_index]
        tx = TxBuilder(
            self.funder,
            keys.keypair(self.seed, "funder", self.community),
            keys.blockhash(self.seed, slot_at(self.params, t)),
            legacy=True,
        )
        tx.balance(self.funder, _big_balance(self.funder, 50_000, 90_000))
        tx.account(kol.wallet, writable=True)
        tx.balance(kol.wallet, wallet.lamports)
        system_transfer(tx, self.funder, kol.wallet, amount)
        wallet.lamports += amount
        # After the wallet's previous transaction and no later than the one it pays for, so the
        # balances read in slot order stay consistent.
        when = min(
            max(t - float(self.rng.uniform(30, 600)), self._last_time.get(kol_index, -math.inf) + 0.01), t
        )
        self._last_time[kol_index] = when
        yield self._finish(tx, when, 5000, "topup")

    def _kol_tx(self, kol_index: int, t: float, legacy: bool = False) -> TxBuilder:
        kol = self.kols[kol_index]
        self._last_time[kol_index] = t
        tx = TxBuilder(
            kol.wallet,
            keys.kol_keypair(self.seed, kol_index),
            keys.blockhash(self.seed, slot_at(self.params, t)),
            legacy=legacy,
        )
        tx.balance(kol.wallet, self.wallets[kol_index].lamports)
        return tx

    def _programs(self, tx: TxBuilder) -> None:
        for address in tx.lamports:
            if address in PROGRAM_LAMPORTS:
                tx.balance(address, PROGRAM_LAMPORTS[address])

    # Token creation (pump.fun create)

    def _create(self, t: float, token_index: int) -> Rendered:
        token = self.tokens[token_index]
        dev = keys.dev_wallet(self.seed, self.community, token_index)
        mint = token.mint
        curve = bonding_curve_address(mint)
        curve_ata = keys.ata(curve, mint)
        mint_kp = keys.keypair(self.seed, "mint", self.community, token_index)
        tx = TxBuilder(
            dev,
            keys.keypair(self.seed, "dev", self.community, token_index),
            keys.blockhash(self.seed, slot_at(self.params, t)),
            legacy=True,
        )
        tx.extra_signers = [mint_kp]  # the mint keypair signs its own creation
        tx.balance(dev, _big_balance(dev, 2, 30))
        metadata = str(keys.pool_accounts(self.seed, self.community, token_index, "meta")["pool"])
        for address in (mint, curve, curve_ata, metadata):
            tx.account(address, writable=True)
        accounts = [
            mint,
            PUMPFUN_GLOBAL,
            curve,
            curve_ata,
            PUMPFUN_GLOBAL,
            METADATA_PROGRAM,
            metadata,
            dev,
            SYSTEM_PROGRAM,
            TOKEN_PROGRAM,
            ATA_PROGRAM,
            RENT_SYSVAR,
            PUMPFUN_EVENT_AUTHORITY,
            PUMPFUN_PROGRAM,
        ]
        for address in accounts:
            tx.account(address)
        name = f"Twin {token_index:05d}"
        symbol = f"TW{token_index % 10000:04d}"
        uri = f"https://ipfs.example/twin/{self.community}/{token_index}"

        def text(value: str) -> bytes:
            return struct.pack("<I", len(value)) + value.encode()

        compute_budget(tx, 250_000, 200_000)
        top = tx.instruction(
            PUMPFUN_PROGRAM, accounts, PUMP_CREATE + text(name) + text(symbol) + text(uri) + pk(dev)
        )
        tx.invoke(PUMPFUN_PROGRAM, 1)
        tx.log("Instruction: Create")
        tx.cpi(top, SYSTEM_PROGRAM, [dev, mint], system_create_account_data(MINT_RENT, 82, TOKEN_PROGRAM), 2)
        tx.invoke(SYSTEM_PROGRAM, 2)
        tx.success(SYSTEM_PROGRAM)
        tx.move(dev, mint, MINT_RENT)
        tx.cpi(top, TOKEN_PROGRAM, [mint], bytes([20, TOKEN_DECIMALS]) + pk(PUMPFUN_GLOBAL) + bytes([0]), 2)
        tx.invoke(TOKEN_PROGRAM, 2)
        tx.log("Instruction: InitializeMint2")
        tx.success(TOKEN_PROGRAM, 2780)
        curve_rent = 1_231_920
        tx.cpi(
            top, SYSTEM_PROGRAM, [dev, curve], system_create_account_data(curve_rent, 49, PUMPFUN_PROGRAM), 2
        )
        tx.invoke(SYSTEM_PROGRAM, 2)
        tx.success(SYSTEM_PROGRAM)
        tx.move(dev, curve, curve_rent)
        tx.cpi(top, ATA_PROGRAM, [dev, curve_ata, curve, mint, SYSTEM_PROGRAM, TOKEN_PROGRAM], b"", 2)
        tx.invoke(ATA_PROGRAM, 2)
        tx.log("Create")
        tx.move(dev, curve_ata, TOKEN_ACCOUNT_RENT)
        tx.success(ATA_PROGRAM, 19_315)
        tx.cpi(
            top, TOKEN_PROGRAM, [mint, curve_ata, PUMPFUN_GLOBAL], struct.pack("<BQ", 7, TOKEN_SUPPLY_RAW), 2
        )
        tx.invoke(TOKEN_PROGRAM, 2)
        tx.log("Instruction: MintTo")
        tx.success(TOKEN_PROGRAM, 4492)
        tx.token_account(curve_ata, mint, curve, TOKEN_DECIMALS, None, TOKEN_SUPPLY_RAW)
        virtual_sol, virtual_tokens = reserves_at("pumpfun", 0.0)
        event = (
            CREATE_EVENT
            + text(name)
            + text(symbol)
            + text(uri)
            + pk(mint)
            + pk(curve)
            + pk(dev)
            + pk(dev)
            + struct.pack(
                "<qQQQQ",
                int(t),
                virtual_tokens,
                virtual_sol,
                793_100_000 * 10**TOKEN_DECIMALS,
                TOKEN_SUPPLY_RAW,
            )
        )
        tx.data_log(event)
        emit_cpi(tx, top, PUMPFUN_PROGRAM, PUMPFUN_EVENT_AUTHORITY, event, 2)
        tx.success(PUMPFUN_PROGRAM, 118_000)
        self._programs(tx)
        tx.balance(PUMPFUN_GLOBAL, 76_218_421)
        tx.balance(PUMPFUN_EVENT_AUTHORITY, 1_000_000)
        return self._finish(tx, t, 10_000 + math.ceil(250_000 * 200_000 / 1_000_000), "create")

    # Trades

    def _venue_accounts(self, token_index: int, venue: str) -> dict[str, str]:
        token = self.tokens[token_index]
        if venue == "pumpfun":
            curve = bonding_curve_address(token.mint)
            creator = keys.dev_wallet(self.seed, self.community, token_index)
            return {
                "curve": curve,
                "curve_ata": keys.ata(curve, token.mint),
                "creator_vault": keys.creator_vault(creator),
            }
        return keys.pool_accounts(self.seed, self.community, token_index, venue)

    def _trade(self, trade: Trade, failed: bool) -> Iterator[Rendered]:
        kol = self.kols[trade.kol]
        wallet = self.wallets[trade.kol]
        fill = trade.fill
        token = self.tokens[trade.token]
        mint = token.mint
        units = int(self.rng.choice([120_000, 150_000, 200_000, 300_000]))
        price, fee = self._priority(trade.kol, units)
        tip = int(self.rng.integers(10_000, 1_000_000)) if self.rng.random() < kol.jito_prob else 0
        bot_fee = fill.sol_amount * kol.bot_fee_bps // 10_000
        buy = trade.side == "buy"
        need = (
            fee
            + tip
            + bot_fee
            + (fill.sol_amount + 2 * TOKEN_ACCOUNT_RENT if buy else 2 * TOKEN_ACCOUNT_RENT)
        )
        yield from self._fund(trade.kol, need, trade.time)
        legacy = fill.venue == "pumpfun" and trade.route == "direct" and self.rng.random() < 0.15
        tx = self._kol_tx(trade.kol, trade.time, legacy=legacy)
        compute_budget(tx, units, price)
        user_ata = keys.ata(kol.wallet, mint)
        held = wallet.tokens.get(mint, 0)
        create = buy and mint not in wallet.atas
        rent = 0
        if create:
            tx.account(user_ata, writable=True)
            tx.balance(user_ata, 0)
            create_ata(tx, kol.wallet, kol.wallet, user_ata, mint, idempotent=self.rng.random() < 0.7)
            rent += TOKEN_ACCOUNT_RENT
        else:
            tx.account(user_ata, writable=True)
            tx.balance(user_ata, TOKEN_ACCOUNT_RENT)
        after = held + fill.token_amount if buy else held - fill.token_amount
        if after < 0:
            raise AssertionError(f"wallet {kol.wallet} would sell more {mint} than it holds")
        close = (not buy) and trade.close_account and after == 0
        tx.token_account(user_ata, mint, kol.wallet, TOKEN_DECIMALS, None if create else held, after)
        if tip:
            system_transfer(tx, kol.wallet, JITO_TIP_ACCOUNTS[_stable_int(tx.blockhash, trade.time) % 8], tip)
        if bot_fee:
            system_transfer(tx, kol.wallet, BOT_FEE_ACCOUNTS[kol.bot_account], bot_fee)
        venue_ix = self._swap(tx, trade, fill, user_ata, token.index)
        if close:
            close_account(tx, user_ata, kol.wallet, kol.wallet, TOKEN_ACCOUNT_RENT)
            rent -= TOKEN_ACCOUNT_RENT
        tx.account(mint)
        tx.balance(mint, MINT_RENT)
        self._balances_for_others(tx)
        if failed:
            code, name, message = CUSTOM_ERRORS[tx.top[venue_ix].program]
            err = {"InstructionError": [venue_ix, {"Custom": code}]}
            routed = tx.top[venue_ix].program == JUPITER_V6_PROGRAM
            instruction = (
                "Route"
                if routed
                else ("SwapBaseIn" if fill.venue == "raydium_amm_v4" else ("Buy" if buy else "Sell"))
            )
            rendered = self._finish_failed(
                tx, trade.time, fee, err, venue_ix, name, message, code, instruction
            )
            wallet.lamports -= fee
            yield rendered
            return
        rendered = self._finish(tx, trade.time, fee, "swap")
        # Wallet state after the transaction (checked against the rendered balances).
        delta = (-(fill.sol_amount) if buy else fill.sol_amount) - fee - rent - tip - bot_fee
        wallet.lamports += delta
        assert rendered.result["meta"]["postBalances"][0] == wallet.lamports, "signer balance bookkeeping"
        wallet.tokens[mint] = after
        if create:
            wallet.atas.add(mint)
        if close:
            wallet.atas.discard(mint)
        # pump.fun's curve is traded directly: Jupiter routes only the AMM legs here.
        dex = "jupiter_v6" if trade.route == "jupiter" and fill.venue == "raydium_amm_v4" else fill.venue
        price_sol, market_cap = _price(fill)
        rendered.swaps.append(
            Swap(
                signature=rendered.signature,
                slot=rendered.slot,
                block_time=rendered.block_time,
                wallet=kol.wallet,
                mint=mint,
                side=trade.side,
                token_amount=fill.token_amount,
                token_decimals=TOKEN_DECIMALS,
                sol_amount=fill.sol_amount,
                dex=dex,
                program_id=JUPITER_V6_PROGRAM if dex == "jupiter_v6" else VENUE_PROGRAM[fill.venue],
                fee=fee,
                rent=rent,
                tips=tip + bot_fee,
                price_sol=price_sol,
                market_cap_sol=market_cap,
            )
        )
        rendered.position = trade.position
        rendered.trade = trade
        rendered.route = trade.route if fill.venue != "pumpfun" else "direct"
        yield rendered

    def _failed(self, event: FailedTrade) -> Iterator[Rendered]:
        """A swap that fails on slippage: same shape, only the fee is paid."""
        wallet = self.wallets[event.kol]
        mint = self.tokens[event.token].mint
        held = wallet.tokens.get(mint, 0)
        if event.side == "buy":
            fill = buy_fill(event.venue, event.level, max(event.budget, 1))
        else:
            amount = min(event.budget, held)
            if amount <= 0:
                return
            fill = sell_fill(event.venue, event.level, amount)
        trade = Trade(event.time, event.kol, event.token, event.side, fill, event.route, -1)
        yield from self._trade(trade, failed=True)

    def _swap(self, tx: TxBuilder, trade: Trade, fill: Fill, user_ata: str, token_index: int) -> int:
        """The venue instruction (direct or inside a Jupiter route); returns its top-level index."""
        kol = self.kols[trade.kol]
        user = kol.wallet
        token = self.tokens[token_index]
        mint = token.mint
        accounts = self._venue_accounts(token_index, fill.venue)
        buy = trade.side == "buy"
        if fill.venue == "pumpfun":
            return self._pumpfun(tx, fill, user, user_ata, mint, accounts, trade.time, buy, None)
        wsol_ata = open_wsol_leg(tx, user, fill.sol_amount if buy else None)
        if trade.route == "jupiter":  # AMM legs only (a curve trade never gets here)
            index = self._jupiter(tx, trade, fill, user, user_ata, wsol_ata, mint, accounts, token_index)
        elif fill.venue == "pumpswap":
            index = self._pumpswap(tx, fill, user, user_ata, wsol_ata, mint, accounts, trade.time, buy, None)
        else:
            index = self._raydium(tx, fill, user, user_ata, wsol_ata, accounts, buy, None, token_index)
        close_account(tx, wsol_ata, user, user, tx.lamports[wsol_ata][1])
        return index

    def _lookup(self, tx: TxBuilder, address: str, writable: bool, token_index: int, venue: str) -> str:
        table = keys.lookup_table(self.seed, _stable_int(self.community, token_index, venue) % 4096)
        return tx.via_lookup(address, table, _stable_int(address) % 256, writable)

    def _pumpfun(
        self,
        tx: TxBuilder,
        fill: Fill,
        user: str,
        user_ata: str,
        mint: str,
        acc: dict[str, str],
        t: float,
        buy: bool,
        parent: int | None,
    ) -> int:
        curve, curve_ata, creator_vault = acc["curve"], acc["curve_ata"], acc["creator_vault"]
        for address in (PUMPFUN_FEE_RECIPIENT, curve, curve_ata, creator_vault):
            tx.account(address, writable=True)
        real_sol, real_tokens = curve_real_reserves(fill.reserve_sol, fill.reserve_tokens)
        pre_real_sol = max(fill.reserve_sol_before - 30 * LAMPORTS_PER_SOL, 0)
        pre_real_tokens = real_tokens - fill.token_amount if not buy else real_tokens + fill.token_amount
        # The path's price is exogenous (other traders are not simulated), so a large sell can pay
        # out more than the virtual curve's real reserves; the curve account always covers it.
        tx.balance(curve, 1_231_920 + max(pre_real_sol, 0 if buy else fill.pool_sol))
        tx.balance(curve_ata, TOKEN_ACCOUNT_RENT)
        tx.balance(creator_vault, _big_balance(creator_vault, 0, 5))
        tx.balance(PUMPFUN_FEE_RECIPIENT, _big_balance(PUMPFUN_FEE_RECIPIENT, 100_000, 900_000))
        tx.token_account(
            curve_ata,
            mint,
            curve,
            TOKEN_DECIMALS,
            pre_real_tokens + 206_900_000 * 10**TOKEN_DECIMALS,
            real_tokens + 206_900_000 * 10**TOKEN_DECIMALS,
        )
        accounts = [
            PUMPFUN_GLOBAL,
            PUMPFUN_FEE_RECIPIENT,
            mint,
            curve,
            curve_ata,
            user_ata,
            user,
            SYSTEM_PROGRAM,
            TOKEN_PROGRAM if buy else creator_vault,
            creator_vault if buy else TOKEN_PROGRAM,
            PUMPFUN_EVENT_AUTHORITY,
            PUMPFUN_PROGRAM,
        ]
        for address in accounts:
            tx.account(address)
        depth = 1 if parent is None else 2
        if buy:
            max_cost = fill.sol_amount + fill.sol_amount // 20
            data = PUMP_BUY + struct.pack("<QQ", fill.token_amount, max_cost)
        else:
            data = PUMP_SELL + struct.pack("<QQ", fill.token_amount, fill.sol_amount * 95 // 100)
        if parent is None:
            top = tx.instruction(PUMPFUN_PROGRAM, accounts, data)
        else:
            top = parent
            tx.cpi(parent, PUMPFUN_PROGRAM, accounts, data, depth)
        tx.invoke(PUMPFUN_PROGRAM, depth)
        tx.log("Instruction: Buy" if buy else "Instruction: Sell")
        if buy:
            token_transfer(tx, top, curve_ata, user_ata, curve, fill.token_amount, depth + 1)
            system_transfer(tx, user, curve, fill.pool_sol, top, depth + 1)
            system_transfer(tx, user, PUMPFUN_FEE_RECIPIENT, fill.fee, top, depth + 1)
            system_transfer(tx, user, creator_vault, fill.creator_fee, top, depth + 1)
        else:
            token_transfer(tx, top, user_ata, curve_ata, user, fill.token_amount, depth + 1)
            # The curve pays out directly (it owns its lamports): no System transfer.
            tx.move(curve, user, fill.sol_amount)
            tx.move(curve, PUMPFUN_FEE_RECIPIENT, fill.fee)
            tx.move(curve, creator_vault, fill.creator_fee)
        event = TRADE_EVENT + pk(mint) + struct.pack("<QQ?", fill.pool_sol, fill.token_amount, buy) + pk(user)
        event += struct.pack("<qQQQQ", int(t), fill.reserve_sol, fill.reserve_tokens, real_sol, real_tokens)
        event += pk(PUMPFUN_FEE_RECIPIENT) + struct.pack("<QQ", PUMPFUN_FEE_BPS, fill.fee)
        creator = self._creator_of(mint)
        event += pk(creator) + struct.pack("<QQ", PUMPFUN_CREATOR_FEE_BPS, fill.creator_fee)
        emit_cpi(tx, top, PUMPFUN_PROGRAM, PUMPFUN_EVENT_AUTHORITY, event, depth + 1)
        tx.data_log(event)
        tx.success(PUMPFUN_PROGRAM, 34_460 if buy else 30_418)
        tx.balance(PUMPFUN_EVENT_AUTHORITY, 1_000_000)
        tx.balance(PUMPFUN_GLOBAL, 76_218_421)
        return top

    def _creator_of(self, mint: str) -> str:
        return keys.dev_wallet(self.seed, self.community, self._token_of_mint[mint])

    def _pumpswap(
        self,
        tx: TxBuilder,
        fill: Fill,
        user: str,
        user_ata: str,
        wsol_ata: str,
        mint: str,
        acc: dict[str, str],
        t: float,
        buy: bool,
        parent: int | None,
    ) -> int:
        pool, base_vault, quote_vault = acc["pool"], acc["base_vault"], acc["quote_vault"]
        creator_ata, creator_auth = acc["creator_vault_ata"], acc["creator_vault"]
        for address in (pool, base_vault, quote_vault, PUMPSWAP_FEE_RECIPIENT_ATA, creator_ata):
            tx.account(address, writable=True)
        for address in (PUMPSWAP_GLOBAL_CONFIG, mint, WSOL_MINT, PUMPSWAP_FEE_RECIPIENT, creator_auth):
            tx.account(address)
        tx.balance(pool, 3_118_080)
        tx.balance(creator_auth, 0)
        tx.balance(PUMPSWAP_GLOBAL_CONFIG, 2_463_840)
        tx.balance(PUMPSWAP_FEE_RECIPIENT, _big_balance(PUMPSWAP_FEE_RECIPIENT, 1, 10))
        quote_pre, base_pre = fill.reserve_sol_before, fill.reserve_tokens_before
        quote_post, base_post = fill.reserve_sol, fill.reserve_tokens
        protocol_pre = _big_balance(PUMPSWAP_FEE_RECIPIENT_ATA, 100, 1000)
        creator_pre = _big_balance(creator_ata, 0, 3)
        tx.balance(base_vault, TOKEN_ACCOUNT_RENT)
        tx.balance(quote_vault, TOKEN_ACCOUNT_RENT + quote_pre)
        tx.balance(PUMPSWAP_FEE_RECIPIENT_ATA, TOKEN_ACCOUNT_RENT + protocol_pre)
        tx.balance(creator_ata, TOKEN_ACCOUNT_RENT + creator_pre)
        tx.token_account(base_vault, mint, pool, TOKEN_DECIMALS, base_pre, base_post)
        tx.token_account(quote_vault, WSOL_MINT, pool, 9, quote_pre, quote_post)
        tx.token_account(
            PUMPSWAP_FEE_RECIPIENT_ATA,
            WSOL_MINT,
            PUMPSWAP_FEE_RECIPIENT,
            9,
            protocol_pre,
            protocol_pre + fill.fee,
        )
        tx.token_account(creator_ata, WSOL_MINT, creator_auth, 9, creator_pre, creator_pre + fill.creator_fee)
        accounts = [
            pool,
            user,
            PUMPSWAP_GLOBAL_CONFIG,
            mint,
            WSOL_MINT,
            user_ata,
            wsol_ata,
            base_vault,
            quote_vault,
            PUMPSWAP_FEE_RECIPIENT,
            PUMPSWAP_FEE_RECIPIENT_ATA,
            TOKEN_PROGRAM,
            TOKEN_PROGRAM,
            SYSTEM_PROGRAM,
            ATA_PROGRAM,
            PUMPSWAP_EVENT_AUTHORITY,
            PUMPSWAP_PROGRAM,
            creator_ata,
            creator_auth,
        ]
        depth = 1 if parent is None else 2
        if buy:
            data = PUMP_BUY + struct.pack("<QQ", fill.token_amount, fill.sol_amount + fill.sol_amount // 20)
        else:
            data = PUMP_SELL + struct.pack("<QQ", fill.token_amount, fill.sol_amount * 95 // 100)
        if parent is None:
            top = tx.instruction(PUMPSWAP_PROGRAM, accounts, data)
        else:
            top = parent
            tx.cpi(parent, PUMPSWAP_PROGRAM, accounts, data, depth)
        tx.invoke(PUMPSWAP_PROGRAM, depth)
        tx.log("Instruction: Buy" if buy else "Instruction: Sell")
        into_pool = fill.pool_sol + fill.lp_fee
        if buy:
            token_transfer(
                tx, top, base_vault, user_ata, pool, fill.token_amount, depth + 1, mint, TOKEN_DECIMALS
            )
            token_transfer(tx, top, wsol_ata, quote_vault, user, into_pool, depth + 1, WSOL_MINT, 9)
            token_transfer(
                tx, top, wsol_ata, PUMPSWAP_FEE_RECIPIENT_ATA, user, fill.fee, depth + 1, WSOL_MINT, 9
            )
            token_transfer(tx, top, wsol_ata, creator_ata, user, fill.creator_fee, depth + 1, WSOL_MINT, 9)
            tx.move(wsol_ata, quote_vault, into_pool)
            tx.move(wsol_ata, PUMPSWAP_FEE_RECIPIENT_ATA, fill.fee)
            tx.move(wsol_ata, creator_ata, fill.creator_fee)
            fees = (PUMPSWAP_LP_FEE_BPS, fill.lp_fee, PUMPSWAP_PROTOCOL_FEE_BPS, fill.fee)
            body = struct.pack(
                "<q6Q",
                int(t),
                fill.token_amount,
                fill.sol_amount + fill.sol_amount // 20,
                0,
                fill.sol_amount,
                base_pre,
                quote_pre,
            )
            body += struct.pack("<Q4Q2Q", fill.pool_sol, *fees, fill.pool_sol + fill.lp_fee, fill.sol_amount)
            event = BUY_EVENT + body
        else:
            paid_out = fill.sol_amount
            token_transfer(
                tx, top, user_ata, base_vault, user, fill.token_amount, depth + 1, mint, TOKEN_DECIMALS
            )
            token_transfer(tx, top, quote_vault, wsol_ata, pool, paid_out, depth + 1, WSOL_MINT, 9)
            token_transfer(
                tx, top, quote_vault, PUMPSWAP_FEE_RECIPIENT_ATA, pool, fill.fee, depth + 1, WSOL_MINT, 9
            )
            token_transfer(tx, top, quote_vault, creator_ata, pool, fill.creator_fee, depth + 1, WSOL_MINT, 9)
            tx.move(quote_vault, wsol_ata, paid_out)
            tx.move(quote_vault, PUMPSWAP_FEE_RECIPIENT_ATA, fill.fee)
            tx.move(quote_vault, creator_ata, fill.creator_fee)
            fees = (PUMPSWAP_LP_FEE_BPS, fill.lp_fee, PUMPSWAP_PROTOCOL_FEE_BPS, fill.fee)
            body = struct.pack(
                "<q6Q", int(t), fill.token_amount, fill.sol_amount * 95 // 100, 0, 0, base_pre, quote_pre
            )
            body += struct.pack("<Q4Q2Q", fill.pool_sol, *fees, fill.pool_sol - fill.lp_fee, fill.sol_amount)
            event = SELL_EVENT + body
        event += pk(pool) + pk(user) + pk(user_ata) + pk(wsol_ata) + pk(PUMPSWAP_FEE_RECIPIENT)
        event += pk(PUMPSWAP_FEE_RECIPIENT_ATA) + pk(self._creator_of(mint))
        event += struct.pack("<QQ", PUMPSWAP_CREATOR_FEE_BPS, fill.creator_fee)
        tx.data_log(event)
        emit_cpi(tx, top, PUMPSWAP_PROGRAM, PUMPSWAP_EVENT_AUTHORITY, event, depth + 1)
        tx.success(PUMPSWAP_PROGRAM, 70_607)
        tx.balance(PUMPSWAP_EVENT_AUTHORITY, 1_000_000)
        return top

    def _raydium(
        self,
        tx: TxBuilder,
        fill: Fill,
        user: str,
        user_ata: str,
        wsol_ata: str,
        acc: dict[str, str],
        buy: bool,
        parent: int | None,
        token_index: int,
    ) -> int:
        coin_vault, pc_vault = acc["base_vault"], acc["quote_vault"]
        pool = acc["pool"]
        mint = self.tokens[token_index].mint
        writable = [
            pool,
            acc["open_orders"],
            acc["target_orders"],
            coin_vault,
            pc_vault,
            acc["market"],
            acc["market_bids"],
            acc["market_asks"],
            acc["market_events"],
            acc["market_base_vault"],
            acc["market_quote_vault"],
        ]
        for address in writable:
            self._lookup(tx, address, True, token_index, "raydium")
        self._lookup(tx, acc["market_authority"], False, token_index, "raydium")
        self._lookup(tx, RAYDIUM_AUTHORITY, False, token_index, "raydium")
        self._lookup(tx, OPENBOOK_PROGRAM, False, token_index, "raydium")
        for address in [*writable, acc["market_authority"], RAYDIUM_AUTHORITY]:
            tx.balance(address, 6_124_800 if address == pool else TOKEN_ACCOUNT_RENT)
        pc_pre, coin_pre = fill.reserve_sol_before, fill.reserve_tokens_before
        tx.balance(pc_vault, TOKEN_ACCOUNT_RENT + pc_pre, TOKEN_ACCOUNT_RENT + fill.reserve_sol)
        tx.token_account(coin_vault, mint, RAYDIUM_AUTHORITY, TOKEN_DECIMALS, coin_pre, fill.reserve_tokens)
        tx.token_account(pc_vault, WSOL_MINT, RAYDIUM_AUTHORITY, 9, pc_pre, fill.reserve_sol)
        source, destination = (wsol_ata, user_ata) if buy else (user_ata, wsol_ata)
        accounts = [
            TOKEN_PROGRAM,
            pool,
            RAYDIUM_AUTHORITY,
            acc["open_orders"],
            acc["target_orders"],
            coin_vault,
            pc_vault,
            OPENBOOK_PROGRAM,
            acc["market"],
            acc["market_bids"],
            acc["market_asks"],
            acc["market_events"],
            acc["market_base_vault"],
            acc["market_quote_vault"],
            acc["market_authority"],
            source,
            destination,
            user,
        ]
        amount_in = fill.sol_amount if buy else fill.token_amount
        amount_out = fill.token_amount if buy else fill.sol_amount
        data = struct.pack("<BQQ", 9, amount_in, amount_out * 95 // 100)
        depth = 1 if parent is None else 2
        if parent is None:
            top = tx.instruction(RAYDIUM_AMM_V4_PROGRAM, accounts, data)
        else:
            top = parent
            tx.cpi(parent, RAYDIUM_AMM_V4_PROGRAM, accounts, data, depth)
        tx.invoke(RAYDIUM_AMM_V4_PROGRAM, depth)
        user_source = amount_in
        ray_log = struct.pack(
            "<B7Q",
            3,
            amount_in,
            amount_out * 95 // 100,
            1 if buy else 2,
            user_source,
            coin_pre,
            pc_pre,
            amount_out,
        )
        tx.logs.append("Program log: ray_log: " + base64.b64encode(ray_log).decode())
        if buy:
            token_transfer(tx, top, wsol_ata, pc_vault, user, amount_in, depth + 1)
            token_transfer(tx, top, coin_vault, user_ata, RAYDIUM_AUTHORITY, amount_out, depth + 1)
            tx.lamports[wsol_ata][1] -= amount_in  # the vault's balances were set from the fill above
        else:
            token_transfer(tx, top, user_ata, coin_vault, user, amount_in, depth + 1)
            token_transfer(tx, top, pc_vault, wsol_ata, RAYDIUM_AUTHORITY, amount_out, depth + 1)
            tx.lamports[wsol_ata][1] += amount_out
        tx.success(RAYDIUM_AMM_V4_PROGRAM, 29_660)
        return top

    def _jupiter(
        self,
        tx: TxBuilder,
        trade: Trade,
        fill: Fill,
        user: str,
        user_ata: str,
        wsol_ata: str,
        mint: str,
        acc: dict[str, str],
        token_index: int,
    ) -> int:
        buy = trade.side == "buy"
        source, destination = (wsol_ata, user_ata) if buy else (user_ata, wsol_ata)
        in_mint, out_mint = (WSOL_MINT, mint) if buy else (mint, WSOL_MINT)
        amount_in = fill.sol_amount if buy else fill.token_amount
        amount_out = fill.token_amount if buy else fill.sol_amount
        venue_program = VENUE_PROGRAM[fill.venue]
        accounts = [
            TOKEN_PROGRAM,
            user,
            source,
            destination,
            JUPITER_V6_PROGRAM,
            out_mint,
            JUPITER_V6_PROGRAM,
            JUPITER_EVENT_AUTHORITY,
            JUPITER_V6_PROGRAM,
            venue_program,
        ]
        route_plan = struct.pack("<I", 1) + bytes([7 if fill.venue == "raydium_amm_v4" else 61, 100, 0, 1])
        data = JUPITER_ROUTE + route_plan + struct.pack("<QQHB", amount_in, amount_out, 50, 0)
        tx.account(JUPITER_EVENT_AUTHORITY)
        tx.balance(JUPITER_EVENT_AUTHORITY, 1_000_000)
        top = tx.instruction(JUPITER_V6_PROGRAM, accounts, data)
        tx.invoke(JUPITER_V6_PROGRAM, 1)
        tx.log("Instruction: Route")
        if fill.venue == "pumpswap":
            self._pumpswap(tx, fill, user, user_ata, wsol_ata, mint, acc, trade.time, buy, top)
            amm = acc["pool"]
        else:
            self._raydium(tx, fill, user, user_ata, wsol_ata, acc, buy, top, token_index)
            amm = acc["pool"]
        event = SWAP_EVENT + pk(amm) + pk(in_mint) + struct.pack("<Q", amount_in) + pk(out_mint)
        event += struct.pack("<Q", amount_out)
        emit_cpi(tx, top, JUPITER_V6_PROGRAM, JUPITER_EVENT_AUTHORITY, event, 2)
        tx.logs.append(
            f"Program return: {JUPITER_V6_PROGRAM} "
            + base64.b64encode(struct.pack("<Q", amount_out)).decode()
        )
        tx.success(JUPITER_V6_PROGRAM, 48_752)
        return top

    def _balances_for_others(self, tx: TxBuilder) -> None:
        """Pre balances of accounts whose lamports the twin does not track (tip and fee wallets...)."""
        self._programs(tx)
        for address, (pre, post) in list(tx.lamports.items()):
            if address in JITO_TIP_ACCOUNTS or address in BOT_FEE_ACCOUNTS:
                base = _big_balance(address, 1_000, 9_000)
                tx.lamports[address] = [base, base + (post - pre)]

    def _finish_failed(
        self,
        tx: TxBuilder,
        t: float,
        fee: int,
        err: dict,
        index: int,
        name: str | None,
        message: str | None,
        code: int,
        instruction: str,
    ) -> Rendered:
        # The logs stop where the venue program failed.
        program = tx.top[index].program
        marker = f"Program {program} invoke [1]"
        cut = tx.logs.index(marker) + 1 if marker in tx.logs else len(tx.logs)
        tx.logs = tx.logs[:cut]
        if name is not None:
            tx.log(f"Instruction: {instruction}")
            tx.log(
                f"AnchorError occurred. Error Code: {name}. Error Number: {code}. Error Message: {message}."
            )
        tx.logs.append(
            f"Program {program} consumed {int(self.rng.integers(20_000, 60_000))} of "
            f"{max(tx.unit_budget - tx.units, 60_001)} compute units"
        )
        tx.logs.append(f"Program {program} failed: custom program error: {hex(code)}")
        tx.inner = {k: v for k, v in tx.inner.items() if k < index}
        return self._finish(tx, t, fee, "failed", err=err)

    # Noise

    def _airdrop(self, event: Airdrop) -> Rendered:
        kol = self.kols[event.kol]
        wallet = self.wallets[event.kol]
        sender = event.sender
        if event.token >= 0:
            kp = keys.keypair(self.seed, "dev", self.community, event.token)
        else:
            kp = keys.keypair(self.seed, "spammer", self.community, self._spammer_index(sender))
        tx = TxBuilder(sender, kp, keys.blockhash(self.seed, slot_at(self.params, event.time)), legacy=True)
        tx.balance(sender, _big_balance(sender, 1, 20))
        source = keys.ata(sender, event.mint)
        destination = keys.ata(kol.wallet, event.mint)
        tx.account(source, writable=True)
        tx.balance(source, TOKEN_ACCOUNT_RENT)
        tx.account(destination, writable=True)
        tx.account(kol.wallet)
        tx.balance(kol.wallet, wallet.lamports)
        held = wallet.tokens.get(event.mint, 0)
        create = event.mint not in wallet.atas
        tx.balance(destination, 0 if create else TOKEN_ACCOUNT_RENT)
        compute_budget(tx, 30_000, 1_000)
        if create:
            create_ata(tx, sender, kol.wallet, destination, event.mint, idempotent=True)
        stock = event.amount * 50 + _stable_int(sender, event.mint) % 10**12
        tx.token_account(source, event.mint, sender, TOKEN_DECIMALS, stock, stock - event.amount)
        tx.token_account(
            destination, event.mint, kol.wallet, TOKEN_DECIMALS, None if create else held, held + event.amount
        )
        token_transfer(tx, None, source, destination, sender, event.amount, 1, event.mint, TOKEN_DECIMALS)
        tx.account(event.mint)
        tx.balance(event.mint, MINT_RENT)
        if event.memo:
            tx.instruction(MEMO_PROGRAM, [], event.memo.encode())
            tx.invoke(MEMO_PROGRAM, 1)
            tx.log(f'Memo (len {len(event.memo)}): "{event.memo}"')
            tx.success(MEMO_PROGRAM, 3000 + 10 * len(event.memo))
        self._programs(tx)
        wallet.tokens[event.mint] = held + event.amount
        wallet.atas.add(event.mint)
        memo = f"[{len(event.memo)}] {event.memo}" if event.memo else None
        return self._finish(
            tx, event.time, 5000 + math.ceil(30_000 * 1_000 / 1_000_000), "airdrop", memo=memo
        )

    def _spammer_index(self, sender: str) -> int:
        for i in range(8):
            if keys.spammer(self.seed, self.community, i) == sender:
                return i
        raise KeyError(sender)

    def _token_send(self, event: TokenSend) -> Iterator[Rendered]:
        kol = self.kols[event.kol]
        wallet = self.wallets[event.kol]
        mint = self.tokens[event.token].mint
        held = wallet.tokens.get(mint, 0)
        amount = min(event.amount, held)
        if amount <= 0:
            return
        yield from self._fund(event.kol, 3 * TOKEN_ACCOUNT_RENT, event.time)
        tx = self._kol_tx(event.kol, event.time)
        source = keys.ata(kol.wallet, mint)
        destination = keys.ata(event.to, mint)
        tx.account(source, writable=True)
        tx.balance(source, TOKEN_ACCOUNT_RENT)
        tx.account(destination, writable=True)
        tx.balance(destination, 0)
        tx.account(event.to)
        tx.balance(event.to, _big_balance(event.to, 0, 50))
        price, fee = self._priority(event.kol, 40_000)
        compute_budget(tx, 40_000, price)
        create_ata(tx, kol.wallet, event.to, destination, mint, idempotent=True)
        tx.token_account(source, mint, kol.wallet, TOKEN_DECIMALS, held, held - amount)
        tx.token_account(destination, mint, event.to, TOKEN_DECIMALS, None, amount)
        token_transfer(tx, None, source, destination, kol.wallet, amount, 1, mint, TOKEN_DECIMALS)
        tx.account(mint)
        tx.balance(mint, MINT_RENT)
        self._programs(tx)
        rendered = self._finish(tx, event.time, fee, "send")
        wallet.tokens[mint] = held - amount
        wallet.lamports -= fee + TOKEN_ACCOUNT_RENT
        yield rendered

    def _sol_transfer(self, event: SolTransfer) -> Iterator[Rendered]:
        kol = self.kols[event.kol]
        wallet = self.wallets[event.kol]
        amount = min(event.lamports, max(wallet.lamports - 5 * LAMPORTS_PER_SOL, 0))
        if amount <= 0:
            return
        tx = self._kol_tx(event.kol, event.time, legacy=True)
        tx.account(event.to, writable=True)
        tx.balance(event.to, _big_balance(event.to, 0, 50))
        system_transfer(tx, kol.wallet, event.to, amount)
        self._programs(tx)
        rendered = self._finish(tx, event.time, 5000, "transfer")
        wallet.lamports -= amount + 5000
        yield rendered
