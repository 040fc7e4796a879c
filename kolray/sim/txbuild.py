"""Building one transaction as a ``getTransaction`` result in ``json`` encoding, plus its wire bytes.

:class:`TxBuilder` collects accounts, top-level and inner instructions, log lines, and lamport and
token balances as a program would leave them, then compiles the message the way the runtime does:
signers first, then writable and read-only accounts, then the accounts loaded from address lookup
tables (writable, then read-only), and signs it with the real keypair. The instruction data
encoders below follow the programs' actual layouts (System, SPL Token, Associated Token Account,
ComputeBudget, Memo, and the Anchor discriminators of pump.fun, PumpSwap and Jupiter).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from solders.hash import Hash
from solders.instruction import CompiledInstruction
from solders.keypair import Keypair
from solders.message import Message, MessageAddressTableLookup, MessageHeader, MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from kolray.sim.params import (
    ATA_PROGRAM,
    COMPUTE_BUDGET_PROGRAM,
    SYSTEM_PROGRAM,
    TOKEN_ACCOUNT_RENT,
    TOKEN_PROGRAM,
)

EMIT_CPI_TAG = bytes.fromhex("e445a52e51cb9a1d")


def anchor_discriminator(namespace: str, name: str) -> bytes:
    return hashlib.sha256(f"{namespace}:{name}".encode()).digest()[:8]


_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # two base58 digits per table entry
_POW58: dict[int, int] = {}


def _digits(n: int, width: int) -> str:
    """``n`` as exactly ``width`` base58 digits (leading '1's), splitting big numbers in halves so
    long inputs cost O(n log n) big-integer work instead of O(n²)."""
    if width <= 64:
        out = []
        for _ in range((width + 1) // 2):
            n, r = divmod(n, 3364)
            out.append(_PAIRS[r])
        return "".join(reversed(out))[-width:] if width % 2 else "".join(reversed(out))
    half = width // 2
    power = _POW58.get(half)
    if power is None:
        power = _POW58[half] = 58**half
    high, low = divmod(n, power)
    return _digits(high, width - half) + _digits(low, half)


@lru_cache(maxsize=4096)
def _b58_short(data: bytes) -> str:
    return _b58(data)


def b58(data: bytes) -> str:
    """Base58 (Bitcoin alphabet) of arbitrary bytes, e.g. instruction data."""
    return _b58_short(data) if len(data) <= 16 else _b58(data)


def _b58(data: bytes) -> str:
    if not data:
        return ""
    zeros = len(data) - len(data.lstrip(b"\0"))
    width = len(data) * 1366 // 1000 + 1  # log(256)/log(58) = 1.3657 digits per byte
    return "1" * zeros + _digits(int.from_bytes(data, "big"), width).lstrip("1")


def pk(address: str) -> bytes:
    return bytes(Pubkey.from_string(address))


# Instruction data of the native and SPL programs


def system_transfer_data(lamports: int) -> bytes:
    return struct.pack("<IQ", 2, lamports)


def system_create_account_data(lamports: int, space: int, owner: str) -> bytes:
    return struct.pack("<IQQ", 0, lamports, space) + pk(owner)


def token_transfer_data(amount: int) -> bytes:
    return struct.pack("<BQ", 3, amount)


def token_transfer_checked_data(amount: int, decimals: int) -> bytes:
    return struct.pack("<BQB", 12, amount, decimals)


CLOSE_ACCOUNT = bytes([9])
SYNC_NATIVE = bytes([17])
INITIALIZE_IMMUTABLE_OWNER = bytes([22])
GET_ACCOUNT_DATA_SIZE = bytes([21, 7, 0])  # with the ImmutableOwner extension, as the ATA program asks
ATA_CREATE_IDEMPOTENT = bytes([1])


def initialize_account3_data(owner: str) -> bytes:
    return bytes([18]) + pk(owner)


def compute_unit_limit_data(units: int) -> bytes:
    return struct.pack("<BI", 2, units)


def compute_unit_price_data(micro_lamports: int) -> bytes:
    return struct.pack("<BQ", 3, micro_lamports)


def ui_amount(amount: int, decimals: int) -> dict[str, Any]:
    """``uiTokenAmount`` as the RPC renders it (``uiAmount`` null for zero, trimmed string)."""
    whole, frac = divmod(amount, 10**decimals)
    text = str(whole) if not frac else f"{whole}.{frac:0{decimals}d}".rstrip("0")
    return {
        "amount": str(amount),
        "decimals": decimals,
        "uiAmount": float(text) if amount else None,
        "uiAmountString": text,
    }


@dataclass(slots=True)
class _Ix:
    program: str
    accounts: list[str]
    data: bytes
    stack_height: int | None = None


@dataclass(slots=True)
class TokenAccount:
    address: str
    mint: str
    owner: str
    decimals: int
    pre: int | None  # None: the account did not exist before (or is not a token account)
    post: int | None  # None: closed by the transaction


@dataclass
class TxBuilder:
    """One transaction under construction."""

    signer: str
    keypair: Keypair
    blockhash: str
    legacy: bool = False
    _order: list[str] = field(default_factory=list)
    _writable: set[str] = field(default_factory=set)
    _lookups: dict[str, tuple[str, int, bool]] = field(
        default_factory=dict
    )  # address → (table, index, writable)
    top: list[_Ix] = field(default_factory=list)
    inner: dict[int, list[_Ix]] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    lamports: dict[str, list[int]] = field(default_factory=dict)  # address → [pre, post]
    tokens: list[TokenAccount] = field(default_factory=list)
    units: int = 0
    unit_budget: int = 200_000
    extra_signers: list[Keypair] = field(default_factory=list)  # e.g. a new mint signing its creation

    def __post_init__(self) -> None:
        self.account(self.signer, writable=True)

    # Accounts and balances

    def account(self, address: str, writable: bool = False) -> str:
        if address not in self.lamports:
            self._order.append(address)
            self.lamports[address] = [0, 0]
        if writable:
            self._writable.add(address)
        return address

    def via_lookup(self, address: str, table: str, index: int, writable: bool) -> str:
        """Load ``address`` from an address lookup table instead of the static keys (v0 only)."""
        self.account(address, writable)
        if not self.legacy:
            self._lookups[address] = (table, index, writable)
        return address

    def balance(self, address: str, pre: int, post: int | None = None) -> None:
        self.lamports[address] = [pre, pre if post is None else post]

    def move(self, source: str, destination: str, lamports: int) -> None:
        self.lamports[source][1] -= lamports
        self.lamports[destination][1] += lamports

    def token_account(
        self, address: str, mint: str, owner: str, decimals: int, pre: int | None, post: int | None
    ) -> None:
        self.account(address, writable=True)
        self.tokens.append(TokenAccount(address, mint, owner, decimals, pre, post))

    # Instructions and logs

    def instruction(self, program: str, accounts: list[str], data: bytes) -> int:
        self.account(program)
        for address in accounts:
            self.account(address)
        self.top.append(_Ix(program, accounts, data))
        return len(self.top) - 1

    def cpi(self, top_index: int, program: str, accounts: list[str], data: bytes, depth: int) -> None:
        self.account(program)
        for address in accounts:
            self.account(address)
        self.inner.setdefault(top_index, []).append(_Ix(program, accounts, data, depth))

    def invoke(self, program: str, depth: int) -> None:
        self.logs.append(f"Program {program} invoke [{depth}]")

    def success(self, program: str, units: int | None = None) -> None:
        if units is not None:
            left = max(self.unit_budget - self.units, units + 1)
            self.logs.append(f"Program {program} consumed {units} of {left} compute units")
            self.units += units
        self.logs.append(f"Program {program} success")

    def log(self, text: str) -> None:
        self.logs.append(f"Program log: {text}")

    def data_log(self, payload: bytes) -> None:
        self.logs.append("Program data: " + base64.b64encode(payload).decode())

    # Compilation

    def _compiled_keys(self) -> tuple[list[str], list[str], list[str], tuple[int, int, int]]:
        static = [a for a in self._order if a not in self._lookups]
        signers = [self.signer, *(str(k.pubkey()) for k in self.extra_signers)]
        writable = [a for a in static if a not in signers and a in self._writable]
        readonly = [a for a in static if a not in signers and a not in self._writable]
        loaded_w = [a for a in self._order if a in self._lookups and self._lookups[a][2]]
        loaded_r = [a for a in self._order if a in self._lookups and not self._lookups[a][2]]
        keys = signers + writable + readonly
        return keys, loaded_w, loaded_r, (len(signers), 0, len(readonly))

    def build(
        self,
        fee: int,
        err: dict | None = None,
        slot: int = 0,
        block_time: int = 0,
        signature: bytes | None = None,
    ) -> tuple[dict[str, Any], bytes, str]:
        """The ``getTransaction`` result (json encoding, without ``version``), wire bytes, signature.

        ``signature`` (64 bytes) replaces the signer's own: the twin's crowd trades carry a signature
        that names the trade (:mod:`kolray.sim.crowd_history`), so the node can find a transaction it
        renders on demand from its signature alone.
        """
        keys, loaded_w, loaded_r, (nsig, nro_signed, nro_unsigned) = self._compiled_keys()
        all_keys = keys + loaded_w + loaded_r
        index = {a: i for i, a in enumerate(all_keys)}

        def compile_ix(ix: _Ix) -> dict[str, Any]:
            return {
                "accounts": [index[a] for a in ix.accounts],
                "data": b58(ix.data),
                "programIdIndex": index[ix.program],
                "stackHeight": ix.stack_height,
            }

        instructions = [compile_ix(ix) for ix in self.top]
        tables: dict[str, tuple[list[int], list[int]]] = {}
        for address in loaded_w + loaded_r:
            table, position, writable = self._lookups[address]
            tables.setdefault(table, ([], []))[0 if writable else 1].append(position)
        header = MessageHeader(nsig, nro_signed, nro_unsigned)
        compiled = [
            CompiledInstruction(index[ix.program], ix.data, bytes(index[a] for a in ix.accounts))
            for ix in self.top
        ]
        pubkeys = [Pubkey.from_string(a) for a in keys]
        blockhash = Hash.from_string(self.blockhash)
        message: Message | MessageV0
        if self.legacy:
            message = Message.new_with_compiled_instructions(
                nsig, nro_signed, nro_unsigned, pubkeys, blockhash, compiled
            )
        else:
            lookups = [
                MessageAddressTableLookup(Pubkey.from_string(t), bytes(w), bytes(r))
                for t, (w, r) in tables.items()
            ]
            message = MessageV0(header, pubkeys, blockhash, compiled, lookups)
        # Sign the message bytes directly: the same signature as VersionedTransaction(message,
        # [keypair]) at a fifth of the cost.
        payload = to_bytes_versioned(message)
        if signature is not None:
            signatures = [Signature.from_bytes(signature)]
            signatures += [k.sign_message(payload) for k in self.extra_signers]
        else:
            signatures = [k.sign_message(payload) for k in (self.keypair, *self.extra_signers)]
        tx = VersionedTransaction.populate(message, signatures)
        first = str(tx.signatures[0])
        message_json: dict[str, Any] = {
            "accountKeys": keys,
            "header": {
                "numReadonlySignedAccounts": nro_signed,
                "numReadonlyUnsignedAccounts": nro_unsigned,
                "numRequiredSignatures": nsig,
            },
            "instructions": instructions,
            "recentBlockhash": self.blockhash,
        }
        if not self.legacy:
            message_json["addressTableLookups"] = [
                {"accountKey": t, "readonlyIndexes": r, "writableIndexes": w} for t, (w, r) in tables.items()
            ]
        inner = [
            {"index": top_index, "instructions": [compile_ix(ix) for ix in self.inner[top_index]]}
            for top_index in sorted(self.inner)
        ]
        pre_tokens: list[dict[str, Any]] = []
        post_tokens: list[dict[str, Any]] = []
        for account in self.tokens:
            entry = {
                "accountIndex": index[account.address],
                "mint": account.mint,
                "owner": account.owner,
                "programId": TOKEN_PROGRAM,
            }
            if account.pre is not None:
                pre_tokens.append({**entry, "uiTokenAmount": ui_amount(account.pre, account.decimals)})
            post_amount = account.pre if err is not None else account.post
            if post_amount is not None:
                post_tokens.append({**entry, "uiTokenAmount": ui_amount(post_amount, account.decimals)})
        pre_tokens.sort(key=lambda e: e["accountIndex"])
        post_tokens.sort(key=lambda e: e["accountIndex"])
        pre = [self.lamports[a][0] for a in all_keys]
        # A failed transaction changes nothing but the fee payer's balance.
        post = [self.lamports[a][1] for a in all_keys] if err is None else list(pre)
        post[0] -= fee
        if min(post) < 0 or min(pre) < 0:
            raise AssertionError(
                f"negative lamports in a rendered transaction: {all_keys[post.index(min(post))]}"
            )
        meta: dict[str, Any] = {
            "computeUnitsConsumed": self.units,
            "err": err,
            "fee": fee,
            "innerInstructions": inner,
            "loadedAddresses": {"readonly": loaded_r, "writable": loaded_w},
            "logMessages": self.logs,
            "postBalances": post,
            "postTokenBalances": post_tokens,
            "preBalances": pre,
            "preTokenBalances": pre_tokens,
            "rewards": [],
            "status": {"Ok": None} if err is None else {"Err": err},
        }
        result = {
            "blockTime": block_time,
            "meta": meta,
            "slot": slot,
            "transaction": {"message": message_json, "signatures": [str(sig) for sig in tx.signatures]},
        }
        return result, bytes(tx), first


# Common instruction sequences (with their logs and inner instructions)


def compute_budget(tx: TxBuilder, units: int, micro_lamports: int) -> None:
    for data in (compute_unit_limit_data(units), compute_unit_price_data(micro_lamports)):
        tx.instruction(COMPUTE_BUDGET_PROGRAM, [], data)
        tx.invoke(COMPUTE_BUDGET_PROGRAM, 1)
        tx.success(COMPUTE_BUDGET_PROGRAM)
        tx.units += 150
    tx.unit_budget = units


def system_transfer(
    tx: TxBuilder, source: str, destination: str, lamports: int, top: int | None = None, depth: int = 1
) -> None:
    tx.account(source, writable=True)
    tx.account(destination, writable=True)
    tx.account(SYSTEM_PROGRAM)
    data = system_transfer_data(lamports)
    if top is None:
        tx.instruction(SYSTEM_PROGRAM, [source, destination], data)
    else:
        tx.cpi(top, SYSTEM_PROGRAM, [source, destination], data, depth)
    tx.invoke(SYSTEM_PROGRAM, depth)
    tx.success(SYSTEM_PROGRAM)
    tx.units += 150
    tx.move(source, destination, lamports)


def create_ata(
    tx: TxBuilder, payer: str, owner: str, account: str, mint: str, idempotent: bool = True
) -> int:
    """Associated Token Account ``Create``/``CreateIdempotent`` with the CPIs it makes; returns its index."""
    tx.account(payer, writable=True)
    tx.account(account, writable=True)
    tx.account(owner)
    tx.account(mint)
    tx.account(SYSTEM_PROGRAM)
    tx.account(TOKEN_PROGRAM)
    top = tx.instruction(
        ATA_PROGRAM,
        [payer, account, owner, mint, SYSTEM_PROGRAM, TOKEN_PROGRAM],
        ATA_CREATE_IDEMPOTENT if idempotent else b"",
    )
    tx.invoke(ATA_PROGRAM, 1)
    tx.log("CreateIdempotent" if idempotent else "Create")
    tx.cpi(top, TOKEN_PROGRAM, [mint], GET_ACCOUNT_DATA_SIZE, 2)
    tx.invoke(TOKEN_PROGRAM, 2)
    tx.log("Instruction: GetAccountDataSize")
    tx.logs.append(
        f"Program {TOKEN_PROGRAM} consumed 1569 of {max(tx.unit_budget - tx.units, 2000)} compute units"
    )
    tx.logs.append(f"Program return: {TOKEN_PROGRAM} pQAAAAAAAAA=")
    tx.success(TOKEN_PROGRAM)
    tx.cpi(
        top,
        SYSTEM_PROGRAM,
        [payer, account],
        system_create_account_data(TOKEN_ACCOUNT_RENT, 165, TOKEN_PROGRAM),
        2,
    )
    tx.invoke(SYSTEM_PROGRAM, 2)
    tx.success(SYSTEM_PROGRAM)
    tx.move(payer, account, TOKEN_ACCOUNT_RENT)
    tx.log("Initialize the associated token account")
    tx.cpi(top, TOKEN_PROGRAM, [account], INITIALIZE_IMMUTABLE_OWNER, 2)
    tx.invoke(TOKEN_PROGRAM, 2)
    tx.log("Instruction: InitializeImmutableOwner")
    tx.log("Please upgrade to SPL Token 2022 for immutable owner support")
    tx.success(TOKEN_PROGRAM, 1405)
    tx.cpi(top, TOKEN_PROGRAM, [account, mint], initialize_account3_data(owner), 2)
    tx.invoke(TOKEN_PROGRAM, 2)
    tx.log("Instruction: InitializeAccount3")
    tx.success(TOKEN_PROGRAM, 4188)
    tx.success(ATA_PROGRAM, 20345)
    return top


def token_transfer(
    tx: TxBuilder,
    top: int | None,
    source: str,
    destination: str,
    authority: str,
    amount: int,
    depth: int,
    mint: str | None = None,
    decimals: int | None = None,
) -> None:
    """SPL ``Transfer`` (or ``TransferChecked`` when ``mint`` is given), top-level or as a CPI."""
    tx.account(source, writable=True)
    tx.account(destination, writable=True)
    tx.account(authority)
    tx.account(TOKEN_PROGRAM)
    if mint is None:
        accounts, data, name, units = (
            [source, destination, authority],
            token_transfer_data(amount),
            "Transfer",
            4645,
        )
    else:
        tx.account(mint)
        accounts = [source, mint, destination, authority]
        data, name, units = token_transfer_checked_data(amount, decimals or 0), "TransferChecked", 6147
    if top is None:
        tx.instruction(TOKEN_PROGRAM, accounts, data)
    else:
        tx.cpi(top, TOKEN_PROGRAM, accounts, data, depth)
    tx.invoke(TOKEN_PROGRAM, depth)
    tx.log(f"Instruction: {name}")
    tx.success(TOKEN_PROGRAM, units)


def close_account(tx: TxBuilder, account: str, destination: str, owner: str, refund: int) -> None:
    tx.account(account, writable=True)
    tx.account(destination, writable=True)
    tx.instruction(TOKEN_PROGRAM, [account, destination, owner], CLOSE_ACCOUNT)
    tx.invoke(TOKEN_PROGRAM, 1)
    tx.log("Instruction: CloseAccount")
    tx.success(TOKEN_PROGRAM, 2915)
    tx.move(account, destination, refund)


def sync_native(tx: TxBuilder, account: str) -> None:
    tx.instruction(TOKEN_PROGRAM, [account], SYNC_NATIVE)
    tx.invoke(TOKEN_PROGRAM, 1)
    tx.log("Instruction: SyncNative")
    tx.success(TOKEN_PROGRAM, 3045)


def emit_cpi(tx: TxBuilder, top: int, program: str, event_authority: str, event: bytes, depth: int) -> None:
    """Anchor's ``emit_cpi!``: the program invokes itself with the event as instruction data."""
    tx.cpi(top, program, [event_authority], EMIT_CPI_TAG + event, depth)
    tx.invoke(program, depth)
    tx.success(program, 2003)
