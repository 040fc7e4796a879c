"""extract_swaps on small hand-written transactions: the cases the mainnet set lacks.

Each case is written once as accounts, lamports, token balances and instructions, and rendered the
way an RPC node would in ``json``, ``jsonParsed``, ``base64`` and (deprecated) ``base58`` encoding
(legacy, or v0 with lookup-table addresses), so every case also checks that the encodings agree.
"""

from __future__ import annotations

import base64
import copy
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from solders.hash import Hash
from solders.instruction import CompiledInstruction
from solders.message import Message, MessageAddressTableLookup, MessageHeader, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from kolray.chain import programs
from kolray.chain.swaps import MalformedTransaction, Swap, extract_swaps
from kolray.chain.types import WSOL_MINT

SYSTEM = programs.SYSTEM_PROGRAM
TOKEN = programs.TOKEN_PROGRAM
TOKEN_2022 = programs.TOKEN_2022_PROGRAM
RAYDIUM = "675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8"
JUPITER = programs.JUPITER_V6
JITO = "96gYZGLnJYVFmbjzopPSU6QiEV5fGqZNyN9nmNhvrZU5"
USDC = programs.USDC_MINT
RENT = 2_039_280  # a 165-byte SPL token account
RENT_2022 = 2_074_080  # a Token-2022 account with the immutable-owner extension
FEE = 5_000


def addr(n: int) -> str:
    """A distinct, valid address per number (1..255; 0 would be the System program)."""
    return str(Pubkey(bytes([n]) * 32))


WALLET, OTHER, POOL, BOT_FEE, RELAYER = addr(1), addr(2), addr(3), addr(4), addr(5)
MINT, MINT_B, LP_MINT = addr(10), addr(11), addr(12)
ATA, ATA_B, ATA_USDC, ATA_WSOL, TEMP_WSOL, ATA_LP = addr(20), addr(21), addr(22), addr(23), addr(24), addr(25)
VAULT, VAULT_B, VAULT_USDC, VAULT_WSOL, OTHER_ATA = addr(30), addr(31), addr(32), addr(33), addr(34)
UNKNOWN_DEX = addr(50)
LOOKUP_TABLE = addr(60)


# A transaction written by hand, and its three renderings


@dataclass
class Ix:
    program: str
    accounts: list[str]
    data: bytes = b"\x09"
    inner: list[Ix] = field(default_factory=list)  # the CPIs this instruction makes


def transfer(source: str, destination: str, lamports: int) -> Ix:
    return Ix(SYSTEM, [source, destination], struct.pack("<IQ", 2, lamports))


def create_account(source: str, new: str, lamports: int) -> Ix:
    return Ix(SYSTEM, [source, new], struct.pack("<IQQ", 0, lamports, 165) + bytes(32))


def token_ix(*accounts: str, program: str = TOKEN) -> Ix:
    return Ix(program, list(accounts), b"\x03" + bytes(8))


@dataclass
class Bal:
    account: str
    mint: str
    owner: str
    amount: int
    decimals: int = 6
    program: str = TOKEN


@dataclass
class Tx:
    keys: list[str]  # static keys, the fee payer first
    lamports: dict[str, tuple[int, int]]  # (pre, post); a key not listed holds 1 lamport throughout
    pre: list[Bal]
    post: list[Bal]
    instructions: list[Ix]
    fee: int = FEE
    err: Any = None
    loaded_writable: list[str] = field(default_factory=list)
    loaded_readonly: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    @property
    def all_keys(self) -> list[str]:
        """Static keys, any account the instructions or balances use that the case did not list
        (appended, like a compiler would), then the loaded addresses."""
        listed = set(self.keys) | set(self.loaded_writable) | set(self.loaded_readonly)
        extra: list[str] = []

        def visit(ix: Ix) -> None:
            for key in (ix.program, *ix.accounts):
                if key not in listed and key not in extra:
                    extra.append(key)
            for child in ix.inner:
                visit(child)

        for ix in self.instructions:
            visit(ix)
        for bal in self.pre + self.post:
            if bal.account not in listed and bal.account not in extra:
                extra.append(bal.account)
        return self.keys + extra + self.loaded_writable + self.loaded_readonly

    @property
    def static_keys(self) -> list[str]:
        return self.all_keys[: len(self.all_keys) - len(self.loaded_writable) - len(self.loaded_readonly)]

    @property
    def v0(self) -> bool:
        return bool(self.loaded_writable or self.loaded_readonly)

    def _meta(self, index: dict[str, int]) -> dict[str, Any]:
        def balances(entries: list[Bal]) -> list[dict[str, Any]]:
            return [
                {
                    "accountIndex": index[b.account],
                    "mint": b.mint,
                    "owner": b.owner,
                    "programId": b.program,
                    "uiTokenAmount": {
                        "amount": str(b.amount),
                        "decimals": b.decimals,
                        "uiAmount": b.amount / 10**b.decimals,
                        "uiAmountString": str(b.amount / 10**b.decimals),
                    },
                }
                for b in entries
            ]

        return {
            "err": self.err,
            "status": {"Ok": None} if self.err is None else {"Err": self.err},
            "fee": self.fee,
            "preBalances": [self.lamports.get(k, (1, 1))[0] for k in self.all_keys],
            "postBalances": [self.lamports.get(k, (1, 1))[1] for k in self.all_keys],
            "preTokenBalances": balances(self.pre),
            "postTokenBalances": balances(self.post),
            "logMessages": list(self.logs),
            "rewards": [],
            "computeUnitsConsumed": 1000,
        }

    def _envelope(self, transaction: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "slot": 300_000_000,
            "blockTime": 1_750_000_000,
            "version": 0 if self.v0 else "legacy",
            "transaction": transaction,
            "meta": meta,
        }

    def _flat_inner(self, ix: Ix, depth: int = 2) -> list[tuple[Ix, int]]:
        out = []
        for child in ix.inner:
            out.append((child, depth))
            out.extend(self._flat_inner(child, depth + 1))
        return out

    def json(self) -> dict[str, Any]:
        index = {k: i for i, k in enumerate(self.all_keys)}

        def compiled(ix: Ix, depth: int | None) -> dict[str, Any]:
            return {
                "programIdIndex": index[ix.program],
                "accounts": [index[a] for a in ix.accounts],
                "data": b58encode(ix.data),
                "stackHeight": depth,
            }

        message: dict[str, Any] = {
            "accountKeys": self.static_keys,
            "header": {
                "numRequiredSignatures": 1,
                "numReadonlySignedAccounts": 0,
                "numReadonlyUnsignedAccounts": 0,
            },
            "recentBlockhash": str(Hash.default()),
            "instructions": [compiled(ix, None) for ix in self.instructions],
        }
        if self.v0:
            n = len(self.loaded_writable)
            message["addressTableLookups"] = [
                {
                    "accountKey": LOOKUP_TABLE,
                    "writableIndexes": list(range(n)),
                    "readonlyIndexes": list(range(n, n + len(self.loaded_readonly))),
                }
            ]
        meta = self._meta(index)
        meta["innerInstructions"] = [
            {"index": i, "instructions": [compiled(c, d) for c, d in self._flat_inner(ix)]}
            for i, ix in enumerate(self.instructions)
            if ix.inner
        ]
        meta["loadedAddresses"] = {
            "writable": list(self.loaded_writable),
            "readonly": list(self.loaded_readonly),
        }
        return self._envelope({"signatures": [SIGNATURE], "message": message}, meta)

    def json_parsed(self) -> dict[str, Any]:
        index = {k: i for i, k in enumerate(self.all_keys)}

        def parsed(ix: Ix, depth: int | None) -> dict[str, Any]:
            if ix.program == SYSTEM and ix.data[:4] == struct.pack("<I", 2):
                (lamports,) = struct.unpack("<Q", ix.data[4:12])
                info = {"source": ix.accounts[0], "destination": ix.accounts[1], "lamports": lamports}
                return {
                    "parsed": {"info": info, "type": "transfer"},
                    "program": "system",
                    "programId": SYSTEM,
                    "stackHeight": depth,
                }
            return {
                "accounts": list(ix.accounts),
                "data": b58encode(ix.data),
                "programId": ix.program,
                "stackHeight": depth,
            }

        loaded = set(self.loaded_writable) | set(self.loaded_readonly)
        keys = [
            {
                "pubkey": k,
                "signer": i == 0,
                "source": "lookupTable" if k in loaded else "transaction",
                "writable": k not in self.loaded_readonly,
            }
            for i, k in enumerate(self.all_keys)
        ]
        message = {
            "accountKeys": keys,
            "recentBlockhash": str(Hash.default()),
            "instructions": [parsed(ix, None) for ix in self.instructions],
        }
        meta = self._meta(index)
        meta["innerInstructions"] = [
            {"index": i, "instructions": [parsed(c, d) for c, d in self._flat_inner(ix)]}
            for i, ix in enumerate(self.instructions)
            if ix.inner
        ]
        return self._envelope({"signatures": [SIGNATURE], "message": message}, meta)

    def base64(self) -> dict[str, Any]:
        index = {k: i for i, k in enumerate(self.all_keys)}
        instructions = [
            CompiledInstruction(index[ix.program], ix.data, bytes(index[a] for a in ix.accounts))
            for ix in self.instructions
        ]
        keys = [Pubkey.from_string(k) for k in self.static_keys]
        if self.v0:
            n = len(self.loaded_writable)
            lookup = MessageAddressTableLookup(
                Pubkey.from_string(LOOKUP_TABLE),
                bytes(range(n)),
                bytes(range(n, n + len(self.loaded_readonly))),
            )
            message: Any = MessageV0(MessageHeader(1, 0, 0), keys, Hash.default(), instructions, [lookup])
        else:
            message = Message.new_with_compiled_instructions(1, 0, 0, keys, Hash.default(), instructions)
        signed = VersionedTransaction.populate(message, [Signature.from_string(SIGNATURE)])
        rendered = self.json()  # meta is the same in every encoding
        rendered["transaction"] = [base64.b64encode(bytes(signed)).decode(), "base64"]
        return rendered

    def base58(self) -> dict[str, Any]:
        """The deprecated binary encoding some nodes still answer with."""
        rendered = self.base64()
        rendered["transaction"] = [b58encode(base64.b64decode(rendered["transaction"][0])), "base58"]
        return rendered


SIGNATURE = str(Signature(bytes(range(1, 65))))
ENCODINGS = ["json", "json_parsed", "base64", "base58"]


def b58encode(data: bytes) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = alphabet[digit] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def extract_all(tx: Tx, wallet: str = WALLET) -> list[Swap]:
    """The swaps of ``wallet``, after checking that every encoding of ``tx`` gives the same."""
    results = {encoding: extract_swaps(getattr(tx, encoding)(), wallet) for encoding in ENCODINGS}
    assert results["json"] == results["json_parsed"] == results["base64"] == results["base58"], results
    return results["json"]


# Cases


def token_2022_buy() -> Tx:
    """Buy of a Token-2022 coin through a program kolray does not know, opening the token account,
    with a Jito tip at the top level."""
    bought, paid, tip = 4_000_000_000, 500_000_000, 100_000
    return Tx(
        keys=[
            WALLET,
            ATA,
            VAULT,
            JITO,
            POOL,
            MINT,
            SYSTEM,
            TOKEN_2022,
            programs.ASSOCIATED_TOKEN_PROGRAM,
            UNKNOWN_DEX,
        ],
        lamports={
            WALLET: (10_000_000_000, 10_000_000_000 - FEE - RENT_2022 - paid - tip),
            ATA: (0, RENT_2022),
            POOL: (50_000_000_000, 50_000_000_000 + paid),
        },
        pre=[Bal(VAULT, MINT, POOL, 900_000_000_000, program=TOKEN_2022)],
        post=[
            Bal(VAULT, MINT, POOL, 900_000_000_000 - bought, program=TOKEN_2022),
            Bal(ATA, MINT, WALLET, bought, program=TOKEN_2022),
        ],
        instructions=[
            Ix(
                programs.ASSOCIATED_TOKEN_PROGRAM,
                [WALLET, ATA, MINT],
                b"",
                [create_account(WALLET, ATA, RENT_2022)],
            ),
            Ix(
                UNKNOWN_DEX,
                [WALLET, ATA, VAULT, POOL, MINT],
                inner=[transfer(WALLET, POOL, paid), token_ix(VAULT, ATA, POOL, program=TOKEN_2022)],
            ),
            transfer(WALLET, JITO, tip),
        ],
    )


def test_token_2022_buy_through_an_unknown_venue() -> None:
    (swap,) = extract_all(token_2022_buy())
    assert (swap.side, swap.mint, swap.token_amount, swap.token_decimals) == ("buy", MINT, 4_000_000_000, 6)
    assert (swap.sol_amount, swap.fee, swap.rent, swap.tips) == (500_000_000, FEE, RENT_2022, 100_000)
    assert (swap.dex, swap.program_id) == ("unknown", UNKNOWN_DEX)
    assert swap.price_sol == pytest.approx(0.5 / 4_000)  # SOL per whole token, from the trade
    assert swap.market_cap_sol is None  # supply unknown
    assert (swap.signature, swap.slot, swap.block_time) == (SIGNATURE, 300_000_000, 1_750_000_000)


def wsol_round_trip_buy(bot_fee: int = 1_000_000) -> Tx:
    """Raydium buy paid from a wSOL account opened and closed in the same transaction, plus a bot
    fee sent at the top level."""
    paid, bought = 1_000_000_000, 123_456_789
    return Tx(
        keys=[WALLET, TEMP_WSOL, ATA, VAULT, VAULT_WSOL, BOT_FEE, POOL, SYSTEM, TOKEN, RAYDIUM],
        lamports={
            WALLET: (5_000_000_000, 5_000_000_000 - FEE - paid - bot_fee),
            TEMP_WSOL: (0, 0),  # created, funded, emptied and closed here: temporary
            VAULT_WSOL: (RENT + 7_000_000_000, RENT + 7_000_000_000 + paid),
            BOT_FEE: (10_000_000, 10_000_000 + bot_fee),
        },
        pre=[
            Bal(ATA, MINT, WALLET, 5),
            Bal(VAULT, MINT, POOL, 10_000_000_000),
            Bal(VAULT_WSOL, WSOL_MINT, POOL, 7_000_000_000, decimals=9),
        ],
        post=[
            Bal(ATA, MINT, WALLET, 5 + bought),
            Bal(VAULT, MINT, POOL, 10_000_000_000 - bought),
            Bal(VAULT_WSOL, WSOL_MINT, POOL, 7_000_000_000 + paid, decimals=9),
        ],
        instructions=[
            create_account(WALLET, TEMP_WSOL, RENT),
            transfer(WALLET, TEMP_WSOL, paid),
            token_ix(TEMP_WSOL),  # SyncNative
            Ix(
                RAYDIUM,
                [POOL, TEMP_WSOL, ATA, VAULT, VAULT_WSOL],
                inner=[token_ix(TEMP_WSOL, VAULT_WSOL, WALLET)],
            ),
            token_ix(TEMP_WSOL, WALLET, WALLET),  # CloseAccount: the rent comes back
            transfer(WALLET, BOT_FEE, bot_fee),
        ],
    )


def test_wsol_wrapped_and_unwrapped_in_the_transaction_is_plain_sol() -> None:
    (swap,) = extract_all(wsol_round_trip_buy())
    # Funding the temporary wSOL account is not a tip; its rent came back, so no rent either.
    assert (swap.side, swap.token_amount, swap.sol_amount) == ("buy", 123_456_789, 1_000_000_000)
    assert (swap.rent, swap.tips, swap.fee) == (0, 1_000_000, FEE)
    assert (swap.dex, swap.program_id) == ("raydium_amm_v4", RAYDIUM)


def sell_closing_the_token_account() -> Tx:
    """Sell of the whole bag: the token account is closed (its rent comes back) and the proceeds
    land in a wSOL account the wallet keeps."""
    sold, got = 777_000_000, 2_000_000_000
    return Tx(
        keys=[WALLET, ATA, ATA_WSOL, VAULT, VAULT_WSOL, POOL, TOKEN, RAYDIUM],
        lamports={
            WALLET: (1_000_000_000, 1_000_000_000 - FEE + RENT),
            ATA: (RENT, 0),
            ATA_WSOL: (RENT + 500_000_000, RENT + 500_000_000 + got),
            VAULT_WSOL: (RENT + 9_000_000_000, RENT + 9_000_000_000 - got),
        },
        pre=[
            Bal(ATA, MINT, WALLET, sold),
            Bal(ATA_WSOL, WSOL_MINT, WALLET, 500_000_000, decimals=9),
            Bal(VAULT, MINT, POOL, 1_000_000_000),
            Bal(VAULT_WSOL, WSOL_MINT, POOL, 9_000_000_000, decimals=9),
        ],
        post=[  # ATA is gone: no post entry
            Bal(ATA_WSOL, WSOL_MINT, WALLET, 500_000_000 + got, decimals=9),
            Bal(VAULT, MINT, POOL, 1_000_000_000 + sold),
            Bal(VAULT_WSOL, WSOL_MINT, POOL, 9_000_000_000 - got, decimals=9),
        ],
        instructions=[
            Ix(
                RAYDIUM,
                [POOL, ATA, ATA_WSOL, VAULT, VAULT_WSOL],
                inner=[token_ix(ATA, VAULT), token_ix(VAULT_WSOL, ATA_WSOL)],
            ),
            token_ix(ATA, WALLET, WALLET),  # CloseAccount
        ],
    )


def test_a_sell_that_closes_the_token_account_has_negative_rent() -> None:
    (swap,) = extract_all(sell_closing_the_token_account())
    assert (swap.side, swap.mint, swap.token_amount) == ("sell", MINT, 777_000_000)
    assert (swap.sol_amount, swap.rent, swap.fee) == (2_000_000_000, -RENT, FEE)
    # The README's identity: sol_delta (fee added back) == sol_amount - rent - tips.
    sol_delta = (-FEE + RENT) + 2_000_000_000 + FEE
    assert sol_delta == swap.sol_amount - swap.rent - swap.tips


def usdc_for_token(*, with_sol: int = 0) -> Tx:
    paid, bought = 100_000_000, 42_000_000_000
    return Tx(
        keys=[WALLET, ATA_USDC, ATA, VAULT_USDC, VAULT, POOL, TOKEN, JUPITER],
        lamports={WALLET: (1_000_000_000, 1_000_000_000 - FEE - with_sol), POOL: (10**9, 10**9 + with_sol)},
        pre=[
            Bal(ATA_USDC, USDC, WALLET, 250_000_000),
            Bal(ATA, MINT, WALLET, 0),
            Bal(VAULT_USDC, USDC, POOL, 10**12),
            Bal(VAULT, MINT, POOL, 10**15),
        ],
        post=[
            Bal(ATA_USDC, USDC, WALLET, 250_000_000 - paid),
            Bal(ATA, MINT, WALLET, bought),
            Bal(VAULT_USDC, USDC, POOL, 10**12 + paid),
            Bal(VAULT, MINT, POOL, 10**15 - bought),
        ],
        instructions=[
            Ix(
                JUPITER,
                [WALLET, ATA_USDC, ATA, POOL],
                inner=[token_ix(ATA_USDC, VAULT_USDC), token_ix(VAULT, ATA)]
                + ([transfer(WALLET, POOL, with_sol)] if with_sol else []),
            )
        ],
    )


def test_usdc_for_a_token_is_a_buy_quoted_in_usdc() -> None:
    (swap,) = extract_all(usdc_for_token())
    assert (swap.side, swap.mint, swap.token_amount) == ("buy", MINT, 42_000_000_000)
    assert (swap.quote_mint, swap.quote_amount, swap.quote_decimals) == (USDC, 100_000_000, 6)
    assert swap.sol_amount == 0 and swap.price_sol is None
    assert swap.dex == "jupiter_v6"


def test_a_buy_paid_in_usdc_and_sol_keeps_both_legs() -> None:
    (swap,) = extract_all(usdc_for_token(with_sol=30_000_000))
    assert (swap.side, swap.quote_mint, swap.quote_amount, swap.sol_amount) == (
        "buy",
        USDC,
        100_000_000,
        30_000_000,
    )


def token_for_token() -> Tx:
    """A → B, neither a stablecoin; B's token account is opened here."""
    sold, bought = 5_000_000, 9_000_000_000
    return Tx(
        keys=[WALLET, ATA, ATA_B, VAULT, VAULT_B, POOL, TOKEN, JUPITER],
        lamports={WALLET: (10**9, 10**9 - FEE - RENT), ATA_B: (0, RENT)},
        pre=[
            Bal(ATA, MINT, WALLET, sold, decimals=9),
            Bal(VAULT, MINT, POOL, 10**12, decimals=9),
            Bal(VAULT_B, MINT_B, POOL, 10**15),
        ],
        post=[
            Bal(ATA, MINT, WALLET, 0, decimals=9),
            Bal(ATA_B, MINT_B, WALLET, bought),
            Bal(VAULT, MINT, POOL, 10**12 + sold, decimals=9),
            Bal(VAULT_B, MINT_B, POOL, 10**15 - bought),
        ],
        instructions=[
            create_account(WALLET, ATA_B, RENT),
            Ix(JUPITER, [WALLET, ATA, ATA_B, POOL], inner=[token_ix(ATA, VAULT), token_ix(VAULT_B, ATA_B)]),
        ],
    )


def test_token_for_token_is_a_sell_of_one_and_a_buy_of_the_other() -> None:
    sell, buy = extract_all(token_for_token())
    assert (sell.side, sell.mint, sell.token_amount, sell.token_decimals) == ("sell", MINT, 5_000_000, 9)
    assert (sell.quote_mint, sell.quote_amount, sell.quote_decimals) == (MINT_B, 9_000_000_000, 6)
    assert (buy.side, buy.mint, buy.token_amount) == ("buy", MINT_B, 9_000_000_000)
    assert (buy.quote_mint, buy.quote_amount, buy.quote_decimals) == (MINT, 5_000_000, 9)
    assert sell.sol_amount == buy.sol_amount == 0
    # The network fee is shared, not doubled; the new account's rent is the bought token's.
    assert sell.fee + buy.fee == FEE
    assert (sell.rent, buy.rent) == (0, RENT)


def v0_buy_with_loaded_addresses() -> Tx:
    """v0: the wallet's token account, the pool vaults and the venue come from a lookup table, so
    every index that points at them runs past ``accountKeys`` into ``loadedAddresses``."""
    paid, bought = 250_000_000, 1_000_000
    pumpswap = programs.PUMPSWAP
    return Tx(
        keys=[WALLET, POOL, SYSTEM, TOKEN, pumpswap],  # programs must be static keys
        loaded_writable=[VAULT, ATA, VAULT_WSOL],
        loaded_readonly=[MINT],
        lamports={
            WALLET: (3 * 10**9, 3 * 10**9 - FEE - paid - RENT),
            ATA: (0, RENT),
            VAULT_WSOL: (RENT + 10**10, RENT + 10**10 + paid),
        },
        pre=[Bal(VAULT, MINT, POOL, 10**12), Bal(VAULT_WSOL, WSOL_MINT, POOL, 10**10, decimals=9)],
        post=[
            Bal(VAULT, MINT, POOL, 10**12 - bought),
            Bal(ATA, MINT, WALLET, bought),
            Bal(VAULT_WSOL, WSOL_MINT, POOL, 10**10 + paid, decimals=9),
        ],
        instructions=[
            create_account(WALLET, ATA, RENT),
            Ix(
                pumpswap,
                [POOL, WALLET, ATA, VAULT, VAULT_WSOL, MINT],
                inner=[transfer(WALLET, VAULT_WSOL, paid), token_ix(VAULT, ATA)],
            ),
        ],
    )


def test_v0_indexes_run_into_the_loaded_addresses() -> None:
    tx = v0_buy_with_loaded_addresses()
    assert tx.json()["meta"]["postTokenBalances"][1]["accountIndex"] >= len(
        tx.static_keys
    )  # the point of the case
    (swap,) = extract_all(tx)
    assert (swap.side, swap.mint, swap.token_amount, swap.sol_amount, swap.rent) == (
        "buy",
        MINT,
        1_000_000,
        250_000_000,
        RENT,
    )
    assert (swap.dex, swap.program_id) == ("pumpswap", programs.PUMPSWAP)
    # No PumpSwap event in this hand-written case: the price is the trade's own.
    assert swap.price_sol == pytest.approx(0.25 / 1.0) and swap.market_cap_sol is None


def test_v0_json_without_loaded_addresses_is_malformed() -> None:
    rendered = v0_buy_with_loaded_addresses().json()
    del rendered["meta"]["loadedAddresses"]
    with pytest.raises(MalformedTransaction, match="loadedAddresses"):
        extract_swaps(rendered, WALLET)


def sol_for_usdc() -> Tx:
    return Tx(
        keys=[WALLET, ATA_USDC, VAULT_USDC, POOL, TOKEN, RAYDIUM],
        lamports={WALLET: (10**10, 10**10 - FEE - 2 * 10**9), POOL: (10**11, 10**11 + 2 * 10**9)},
        pre=[Bal(VAULT_USDC, USDC, POOL, 10**12)],
        post=[Bal(VAULT_USDC, USDC, POOL, 10**12 - 300_000_000), Bal(ATA_USDC, USDC, WALLET, 300_000_000)],
        instructions=[
            Ix(
                RAYDIUM,
                [POOL, ATA_USDC],
                inner=[transfer(WALLET, POOL, 2 * 10**9), token_ix(VAULT_USDC, ATA_USDC)],
            )
        ],
    )


def test_sol_for_a_stablecoin_is_a_buy_of_the_stablecoin() -> None:
    (swap,) = extract_all(sol_for_usdc())
    assert (swap.side, swap.mint, swap.token_amount, swap.sol_amount, swap.quote_mint) == (
        "buy",
        USDC,
        300_000_000,
        2 * 10**9,
        None,
    )


def two_buys_with_sol(total: int = 3_000_000_001) -> Tx:
    return Tx(
        keys=[WALLET, ATA, ATA_B, VAULT, VAULT_B, POOL, TOKEN, RAYDIUM],
        lamports={WALLET: (10**10, 10**10 - FEE - total), POOL: (10**11, 10**11 + total)},
        pre=[Bal(VAULT, MINT, POOL, 10**12), Bal(VAULT_B, MINT_B, POOL, 10**12)],
        post=[
            Bal(VAULT, MINT, POOL, 10**12 - 7),
            Bal(ATA, MINT, WALLET, 7),
            Bal(VAULT_B, MINT_B, POOL, 10**12 - 9),
            Bal(ATA_B, MINT_B, WALLET, 9),
        ],
        instructions=[Ix(RAYDIUM, [POOL, ATA, ATA_B], inner=[transfer(WALLET, POOL, total)])],
    )


def test_two_tokens_bought_with_one_sol_payment_share_it_to_the_lamport() -> None:
    first, second = extract_all(two_buys_with_sol())
    assert (first.mint, second.mint) == (MINT, MINT_B) and first.side == second.side == "buy"
    # Without per-token events the payment is split evenly; the parts add up exactly.
    assert (first.sol_amount, second.sol_amount) == (1_500_000_001, 1_500_000_000)
    assert first.fee + second.fee == FEE


def tokens_sent_away() -> Tx:
    """A plain SPL transfer to someone else, paying for their new token account: no trade."""
    return Tx(
        keys=[WALLET, ATA, OTHER_ATA, OTHER, MINT, SYSTEM, TOKEN, programs.ASSOCIATED_TOKEN_PROGRAM],
        lamports={WALLET: (10**9, 10**9 - FEE - RENT), OTHER_ATA: (0, RENT)},
        pre=[Bal(ATA, MINT, WALLET, 1_000)],
        post=[Bal(ATA, MINT, WALLET, 400), Bal(OTHER_ATA, MINT, OTHER, 600)],
        instructions=[
            Ix(
                programs.ASSOCIATED_TOKEN_PROGRAM,
                [WALLET, OTHER_ATA, OTHER, MINT],
                inner=[create_account(WALLET, OTHER_ATA, RENT)],
            ),
            token_ix(ATA, OTHER_ATA, WALLET),
        ],
    )


def test_sending_tokens_away_is_not_a_trade() -> None:
    assert extract_all(tokens_sent_away()) == []
    # ...nor for the receiver, who paid nothing for them.
    assert extract_all(tokens_sent_away(), OTHER) == []


def lp_deposit() -> Tx:
    """Both sides of a pool go in and LP tokens are minted to the wallet: liquidity, not a trade."""
    return Tx(
        keys=[WALLET, ATA, ATA_LP, VAULT, VAULT_WSOL, POOL, LP_MINT, TOKEN, RAYDIUM],
        lamports={
            WALLET: (10**10, 10**10 - FEE - RENT - 10**9),
            ATA_LP: (0, RENT),
            VAULT_WSOL: (RENT + 10**10, RENT + 10**10 + 10**9),
        },
        pre=[
            Bal(ATA, MINT, WALLET, 10**9),
            Bal(VAULT, MINT, POOL, 10**12),
            Bal(VAULT_WSOL, WSOL_MINT, POOL, 10**10, decimals=9),
        ],
        post=[
            Bal(ATA, MINT, WALLET, 0),
            Bal(ATA_LP, LP_MINT, WALLET, 31_622_776),
            Bal(VAULT, MINT, POOL, 10**12 + 10**9),
            Bal(VAULT_WSOL, WSOL_MINT, POOL, 10**10 + 10**9, decimals=9),
        ],
        instructions=[
            create_account(WALLET, ATA_LP, RENT),
            Ix(
                RAYDIUM,
                [POOL, ATA, ATA_LP, LP_MINT],
                inner=[token_ix(ATA, VAULT), transfer(WALLET, VAULT_WSOL, 10**9), token_ix(LP_MINT, ATA_LP)],
            ),
        ],
    )


def test_an_lp_deposit_is_not_a_trade() -> None:
    assert extract_all(lp_deposit()) == []


def test_a_wallet_that_is_not_the_fee_payer_pays_no_fee() -> None:
    tx = token_2022_buy()
    # A relayer signs first and pays the network fee; the wallet is account 1.
    tx.keys = [RELAYER, *tx.keys]
    tx.lamports[RELAYER] = (10**9, 10**9 - FEE)
    pre, post = tx.lamports[WALLET]
    tx.lamports[WALLET] = (pre, post + FEE)
    (swap,) = extract_all(tx)
    assert (swap.fee, swap.sol_amount, swap.rent, swap.tips) == (0, 500_000_000, RENT_2022, 100_000)
    assert extract_all(tx, RELAYER) == []


def test_a_failed_transaction_gives_nothing() -> None:
    tx = token_2022_buy()
    tx.err = {"InstructionError": [1, {"Custom": 6001}]}
    assert extract_all(tx) == []


def test_a_top_level_transfer_counts_as_a_tip_only_next_to_a_program() -> None:
    """OTC: SOL to a friend for their tokens, with only System and Token instructions. The SOL
    sent is the price (no program ran, so it is not a bot fee); the same transfer beside a DEX
    instruction would be a tip (see the wSOL case above)."""
    tx = Tx(
        keys=[WALLET, OTHER, ATA, OTHER_ATA, SYSTEM, TOKEN],
        lamports={WALLET: (10**10, 10**10 - FEE - 10**9), OTHER: (10**9, 2 * 10**9)},
        pre=[Bal(OTHER_ATA, MINT, OTHER, 10**6), Bal(ATA, MINT, WALLET, 0)],
        post=[Bal(OTHER_ATA, MINT, OTHER, 0), Bal(ATA, MINT, WALLET, 10**6)],
        instructions=[transfer(WALLET, OTHER, 10**9), token_ix(OTHER_ATA, ATA, OTHER)],
    )
    (swap,) = extract_all(tx)
    assert (swap.side, swap.sol_amount, swap.tips, swap.dex, swap.program_id) == (
        "buy",
        10**9,
        0,
        "unknown",
        None,
    )
    # The friend sold.
    (sale,) = extract_all(tx, OTHER)
    assert (sale.side, sale.sol_amount, sale.fee) == ("sell", 10**9, 0)


def test_jito_tips_count_at_any_depth() -> None:
    tx = wsol_round_trip_buy(bot_fee=0)
    tx.instructions = tx.instructions[:-1]  # no top-level bot fee this time
    router = tx.instructions[3]
    router.inner.append(transfer(WALLET, JITO, 77_000))  # a router that tips Jito from inside
    tx.keys.append(JITO)
    pre, post = tx.lamports[WALLET]
    tx.lamports[WALLET] = (pre, post - 77_000)
    (swap,) = extract_all(tx)
    assert (swap.tips, swap.sol_amount) == (77_000, 1_000_000_000)


# Malformed input: named, never a crash of another kind


def _broken(change: Any) -> dict[str, Any]:
    rendered = copy.deepcopy(token_2022_buy().json())
    change(rendered)
    return rendered


@pytest.mark.parametrize("absent", ["missing", "null"])
@pytest.mark.parametrize(
    "lists", [("preTokenBalances", "postTokenBalances"), ("preTokenBalances",), ("postTokenBalances",)]
)
def test_a_meta_without_its_token_balance_lists_is_malformed_not_an_empty_answer(
    lists: tuple[str, ...], absent: str
) -> None:
    """Without both lists the token legs cannot be read (RPC output from before token balances were
    recorded, or a client that dropped them): ``[]`` would say "no trade" when nothing is known, and
    one list alone would read every balance as bought or sold in full."""
    rendered = copy.deepcopy(token_2022_buy().json())
    for name in lists:
        if absent == "missing":
            del rendered["meta"][name]
        else:
            rendered["meta"][name] = None
    with pytest.raises(MalformedTransaction, match="|".join(lists)):
        extract_swaps(rendered, WALLET)
    # Empty lists are a real answer: the transaction moved no token.
    rendered["meta"]["preTokenBalances"] = rendered["meta"]["postTokenBalances"] = []
    assert extract_swaps(rendered, WALLET) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("meta"), "meta is missing"),
        (lambda t: t.pop("transaction"), "transaction is missing"),
        (lambda t: t["transaction"]["message"].pop("accountKeys"), "accountKeys"),
        (lambda t: t["transaction"]["message"]["accountKeys"].pop(), "account keys but meta has"),
        (lambda t: t["transaction"]["message"]["accountKeys"].__setitem__(2, 17), "not a base58 address"),
        (lambda t: t["meta"]["postTokenBalances"][1].__setitem__("accountIndex", 99), "account index 99"),
        (
            lambda t: t["meta"]["postTokenBalances"][1]["uiTokenAmount"].__setitem__("amount", "1.5"),
            "incomplete",
        ),
        (lambda t: t["meta"]["postTokenBalances"][1].pop("uiTokenAmount"), "incomplete"),
        (lambda t: t["meta"].__setitem__("preBalances", None), "preBalances"),
        (lambda t: t["meta"].__setitem__("fee", -1), "meta.fee"),
        (
            lambda t: t["transaction"]["message"]["instructions"][1].__setitem__("programIdIndex", 40),
            "beyond",
        ),
        (lambda t: t["transaction"]["message"]["instructions"][2].__setitem__("data", "0OIl"), "not base58"),
        (lambda t: t["transaction"].__setitem__("signatures", []), "signature"),
        (lambda t: t.__setitem__("transaction", ["AAAA", "base32"]), "unsupported transaction encoding"),
        (lambda t: t.__setitem__("transaction", ["not base64!", "base64"]), "do not decode"),
        (
            lambda t: t.__setitem__("transaction", [base64.b64encode(b"\x01\x02").decode(), "base64"]),
            "do not decode",
        ),
    ],
)
def test_malformed_results_raise_naming_what_is_wrong(change: Any, message: str) -> None:
    with pytest.raises(MalformedTransaction, match=message):
        extract_swaps(_broken(change), WALLET)


def test_not_a_result_at_all_is_malformed() -> None:
    with pytest.raises(MalformedTransaction, match="got list"):
        extract_swaps([token_2022_buy().json()], WALLET)  # type: ignore[arg-type]


@pytest.mark.parametrize("wallet", [None, "", "not-an-address", addr(1) + "xx"])
def test_a_bad_wallet_is_a_value_error(wallet: Any) -> None:
    with pytest.raises(ValueError, match="wallet must be a base58 address"):
        extract_swaps(token_2022_buy().json(), wallet)


# Route leftovers: dust of an intermediate asset is no trade

VAULT_USDC_2, VAULT_WSOL_2 = addr(35), addr(36)  # a second pool's vaults: the route's next hop


def usdc_for_token_through_sol(*, left: int = 37) -> Tx:
    """USDC → SOL → token in one route (pool 1: USDC for SOL, pool 2: SOL for the token). The wallet
    ends with ``left`` lamports of the intermediate SOL: a few lamports of rounding dust, or (large
    ``left``) SOL it really kept."""
    paid, through, bought = 100_000_000, 700_000_000, 42_000_000_000
    return Tx(
        keys=[
            WALLET,
            ATA_USDC,
            ATA,
            TEMP_WSOL,
            VAULT_USDC,
            VAULT_WSOL,
            VAULT_WSOL_2,
            VAULT,
            POOL,
            TOKEN,
            JUPITER,
        ],
        lamports={
            WALLET: (1_000_000_000, 1_000_000_000 - FEE + left),
            TEMP_WSOL: (0, 0),  # the route's wSOL account, opened and closed here
            VAULT_WSOL: (RENT + 9 * 10**9, RENT + 9 * 10**9 - through),
            VAULT_WSOL_2: (RENT + 5 * 10**9, RENT + 5 * 10**9 + through - left),
        },
        pre=[
            Bal(ATA_USDC, USDC, WALLET, 250_000_000),
            Bal(VAULT_USDC, USDC, POOL, 10**12),
            Bal(VAULT_WSOL, WSOL_MINT, POOL, 9 * 10**9, decimals=9),
            Bal(VAULT_WSOL_2, WSOL_MINT, OTHER, 5 * 10**9, decimals=9),
            Bal(VAULT, MINT, OTHER, 10**15),
        ],
        post=[
            Bal(ATA_USDC, USDC, WALLET, 250_000_000 - paid),
            Bal(ATA, MINT, WALLET, bought),
            Bal(VAULT_USDC, USDC, POOL, 10**12 + paid),
            Bal(VAULT_WSOL, WSOL_MINT, POOL, 9 * 10**9 - through, decimals=9),
            Bal(VAULT_WSOL_2, WSOL_MINT, OTHER, 5 * 10**9 + through - left, decimals=9),
            Bal(VAULT, MINT, OTHER, 10**15 - bought),
        ],
        instructions=[
            Ix(
                JUPITER,
                [WALLET, ATA_USDC, TEMP_WSOL, ATA, POOL, OTHER],
                inner=[
                    token_ix(ATA_USDC, VAULT_USDC),
                    token_ix(VAULT_WSOL, TEMP_WSOL),
                    token_ix(TEMP_WSOL, VAULT_WSOL_2),
                    token_ix(VAULT, ATA),
                ],
            ),
            token_ix(TEMP_WSOL, WALLET, WALLET),  # CloseAccount: the leftover wSOL comes back as SOL
        ],
    )


def test_sol_dust_left_by_a_usdc_route_is_not_a_sale_of_usdc() -> None:
    (swap,) = extract_all(usdc_for_token_through_sol(left=37))
    assert (swap.side, swap.mint, swap.token_amount) == ("buy", MINT, 42_000_000_000)
    assert (swap.quote_mint, swap.quote_amount, swap.sol_amount) == (USDC, 100_000_000, 0)
    assert swap.price_sol is None  # not 37 lamports' worth


def test_sol_kept_from_a_usdc_route_is_still_a_sale_of_usdc_for_it() -> None:
    # Half the SOL the first hop bought stays with the wallet: USDC was really sold for SOL too.
    sale, buy = extract_all(usdc_for_token_through_sol(left=350_000_000))
    assert (sale.side, sale.mint, sale.sol_amount) == ("sell", USDC, 350_000_000)
    assert (buy.side, buy.mint, buy.quote_mint) == ("buy", MINT, USDC)


def token_for_usdc_through_sol(*, left: int = 11) -> Tx:
    """The other way round: token → SOL → USDC, leaving ``left`` lamports of SOL with the wallet."""
    sold, through, got = 42_000_000_000, 700_000_000, 99_000_000
    return Tx(
        keys=[
            WALLET,
            ATA,
            ATA_USDC,
            TEMP_WSOL,
            VAULT,
            VAULT_WSOL,
            VAULT_WSOL_2,
            VAULT_USDC,
            POOL,
            TOKEN,
            JUPITER,
        ],
        lamports={
            WALLET: (1_000_000_000, 1_000_000_000 - FEE + left),
            TEMP_WSOL: (0, 0),
            VAULT_WSOL: (RENT + 9 * 10**9, RENT + 9 * 10**9 - through),
            VAULT_WSOL_2: (RENT + 5 * 10**9, RENT + 5 * 10**9 + through - left),
        },
        pre=[
            Bal(ATA, MINT, WALLET, sold),
            Bal(ATA_USDC, USDC, WALLET, 1_000_000),
            Bal(VAULT, MINT, POOL, 10**15),
            Bal(VAULT_WSOL, WSOL_MINT, POOL, 9 * 10**9, decimals=9),
            Bal(VAULT_WSOL_2, WSOL_MINT, OTHER, 5 * 10**9, decimals=9),
            Bal(VAULT_USDC, USDC, OTHER, 10**12),
        ],
        post=[
            Bal(ATA, MINT, WALLET, 0),
            Bal(ATA_USDC, USDC, WALLET, 1_000_000 + got),
            Bal(VAULT, MINT, POOL, 10**15 + sold),
            Bal(VAULT_WSOL, WSOL_MINT, POOL, 9 * 10**9 - through, decimals=9),
            Bal(VAULT_WSOL_2, WSOL_MINT, OTHER, 5 * 10**9 + through - left, decimals=9),
            Bal(VAULT_USDC, USDC, OTHER, 10**12 - got),
        ],
        instructions=[
            Ix(
                JUPITER,
                [WALLET, ATA, TEMP_WSOL, ATA_USDC, POOL, OTHER],
                inner=[
                    token_ix(ATA, VAULT),
                    token_ix(VAULT_WSOL, TEMP_WSOL),
                    token_ix(TEMP_WSOL, VAULT_WSOL_2),
                    token_ix(VAULT_USDC, ATA_USDC),
                ],
            ),
            token_ix(TEMP_WSOL, WALLET, WALLET),
        ],
    )


def test_sol_dust_left_by_a_sale_for_usdc_is_not_part_of_its_price() -> None:
    (swap,) = extract_all(token_for_usdc_through_sol())
    assert (swap.side, swap.mint, swap.token_amount) == ("sell", MINT, 42_000_000_000)
    assert (swap.quote_mint, swap.quote_amount, swap.sol_amount, swap.price_sol) == (
        USDC,
        99_000_000,
        0,
        None,
    )


def token_for_token_through_usdc(*, left: int = 3) -> Tx:
    """A → USDC → B (neither A nor B a stablecoin), leaving ``left`` units of USDC with the wallet."""
    sold, through, bought = 5_000_000, 80_000_000, 9_000_000_000
    return Tx(
        keys=[WALLET, ATA, ATA_B, ATA_USDC, VAULT, VAULT_USDC, VAULT_USDC_2, VAULT_B, POOL, TOKEN, JUPITER],
        lamports={WALLET: (10**9, 10**9 - FEE - 2 * RENT), ATA_B: (0, RENT), ATA_USDC: (0, RENT)},
        pre=[
            Bal(ATA, MINT, WALLET, sold, decimals=9),
            Bal(VAULT, MINT, POOL, 10**12, decimals=9),
            Bal(VAULT_USDC, USDC, POOL, 10**12),
            Bal(VAULT_USDC_2, USDC, OTHER, 10**12),
            Bal(VAULT_B, MINT_B, OTHER, 10**15),
        ],
        post=[
            Bal(ATA, MINT, WALLET, 0, decimals=9),
            Bal(ATA_B, MINT_B, WALLET, bought),
            Bal(ATA_USDC, USDC, WALLET, left),
            Bal(VAULT, MINT, POOL, 10**12 + sold, decimals=9),
            Bal(VAULT_USDC, USDC, POOL, 10**12 - through),
            Bal(VAULT_USDC_2, USDC, OTHER, 10**12 + through - left),
            Bal(VAULT_B, MINT_B, OTHER, 10**15 - bought),
        ],
        instructions=[
            create_account(WALLET, ATA_B, RENT),
            create_account(WALLET, ATA_USDC, RENT),
            Ix(
                JUPITER,
                [WALLET, ATA, ATA_USDC, ATA_B, POOL, OTHER],
                inner=[
                    token_ix(ATA, VAULT),
                    token_ix(VAULT_USDC, ATA_USDC),
                    token_ix(ATA_USDC, VAULT_USDC_2),
                    token_ix(VAULT_B, ATA_B),
                ],
            ),
        ],
    )


def test_usdc_dust_left_by_a_token_to_token_route_is_neither_a_swap_nor_a_quote() -> None:
    sell, buy = extract_all(token_for_token_through_usdc())
    assert (sell.side, sell.mint, sell.quote_mint, sell.quote_amount) == ("sell", MINT, MINT_B, 9_000_000_000)
    assert (buy.side, buy.mint, buy.quote_mint, buy.quote_amount) == ("buy", MINT_B, MINT, 5_000_000)
    # The dust's token account is rent the wallet paid in this trade: it stays on the swaps.
    assert sell.rent + buy.rent == 2 * RENT and sell.fee + buy.fee == FEE


# Properties over generated transactions


@st.composite
def wallet_transactions(draw: st.DrawFn) -> Tx:
    """A transaction in which the wallet's token balances, SOL and a tip change at random, next to
    a DEX instruction (which is all the extractor may rely on)."""
    mints = [MINT, MINT_B, USDC]
    accounts = [ATA, ATA_B, ATA_USDC]
    vaults = [VAULT, VAULT_B, VAULT_USDC]
    pre, post = [], []
    for mint, account, vault in zip(mints, accounts, vaults, strict=True):
        before = draw(st.none() | st.integers(0, 10**12))
        after = draw(st.none() | st.integers(0, 10**12))
        if before is not None:
            pre.append(Bal(account, mint, WALLET, before))
        if after is not None:
            post.append(Bal(account, mint, WALLET, after))
        # The pool is the other side: what the wallet gains, it loses (tokens are conserved).
        pre.append(Bal(vault, mint, POOL, 10**13))
        post.append(Bal(vault, mint, POOL, 10**13 - (after or 0) + (before or 0)))
    lamports = {
        account: (
            RENT if any(b.account == account for b in pre) else 0,
            RENT if any(b.account == account for b in post) else 0,
        )
        for account in accounts
    }
    start = 10**12
    change = draw(st.integers(-(10**11), 10**11))
    tip = draw(st.sampled_from([0, 1_000, 55_000]))
    fee = draw(st.integers(5_000, 2_000_000))
    lamports[WALLET] = (start, start + change - tip - fee)
    lamports[POOL] = (start, start - change)
    instructions = [Ix(RAYDIUM, [POOL, *accounts], inner=[token_ix(accounts[0], VAULT)])]
    if tip:
        instructions.append(transfer(WALLET, JITO, tip))
    return Tx(
        keys=[WALLET, *accounts, *vaults, POOL, JITO, SYSTEM, TOKEN, RAYDIUM],
        lamports=lamports,
        pre=pre,
        post=post,
        instructions=instructions,
        fee=fee,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wallet_transactions())
def test_swaps_always_reconcile_with_the_balances(tx: Tx) -> None:
    swaps = extract_all(tx)
    event(f"{len(swaps)} swaps")
    held = {b.mint: 0 for b in tx.pre + tx.post if b.owner == WALLET}
    for b in tx.pre:
        if b.owner == WALLET:
            held[b.mint] -= b.amount
    for b in tx.post:
        if b.owner == WALLET:
            held[b.mint] += b.amount
    pre, post = tx.lamports[WALLET]
    sol_delta = post - pre + tx.fee
    # The README's rent and tips, computed here from the case itself.
    rent = sum(RENT * ((tx.lamports[a][1] > 0) - (tx.lamports[a][0] > 0)) for a in (ATA, ATA_B, ATA_USDC))
    tips = sum(struct.unpack("<Q", ix.data[4:12])[0] for ix in tx.instructions if ix.program == SYSTEM)
    trade_sol = sol_delta + rent + tips
    for s in swaps:
        assert s.token_amount == abs(held[s.mint]) > 0
        assert (s.side == "buy") == (held[s.mint] > 0)
        assert s.sol_amount >= 0 and (s.quote_amount is None) == (s.quote_mint is None)
    # A quote leg shared by several swaps is split among them without loss.
    for quote in {s.quote_mint for s in swaps} - {None}:
        parts = [s.quote_amount for s in swaps if s.quote_mint == quote]
        assert all(p >= 0 for p in parts) and sum(parts) == abs(held[quote])
    if swaps:
        assert sum(s.sol_amount if s.side == "sell" else -s.sol_amount for s in swaps) == trade_sol
        assert (sum(s.rent for s in swaps), sum(s.tips for s in swaps), sum(s.fee for s in swaps)) == (
            rent,
            tips,
            tx.fee,
        )
    moved = [d for d in held.values() if d]
    something_in = trade_sol > 0 or any(d > 0 for d in moved)
    something_out = trade_sol < 0 or any(d < 0 for d in moved)
    # A swap exactly when tokens moved and something went each way.
    assert bool(swaps) == bool(moved and something_in and something_out)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a rendered result (object keys and list positions), depth first."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for position, value in enumerate(node):
            found += _paths(value, (*prefix, position))
    return found


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_FUZZ_CASES = {
    "json": token_2022_buy().json(),
    "json_parsed": wsol_round_trip_buy().json_parsed(),
    "base64": v0_buy_with_loaded_addresses().base64(),
}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(_FUZZ_CASES)), st.data())
def test_damaged_results_raise_malformed_and_nothing_else(case: str, data: st.DataObject) -> None:
    """Whatever part of a result is replaced or removed, the answer is swaps or
    MalformedTransaction: never another exception (the tracker counts and skips those)."""
    damaged = copy.deepcopy(_FUZZ_CASES[case])
    path = data.draw(st.sampled_from(_paths(damaged)))
    parent = damaged
    for step in path[:-1]:
        parent = parent[step]
    if data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(_JSON_VALUES)
    try:
        swaps = extract_swaps(damaged, WALLET)
    except MalformedTransaction as error:
        assert str(error)  # names what is wrong
    else:
        assert isinstance(swaps, list) and all(isinstance(s, Swap) for s in swaps)
