"""The swaps one wallet made in one transaction, read from a raw ``getTransaction`` result.

One general rule, not a parser per DEX: what a wallet traded is what its balances say it traded.

1. **Token legs.** ``meta.preTokenBalances``/``postTokenBalances`` joined on ``accountIndex``,
   kept where ``owner == wallet``, summed per mint (a missing entry is 0). wSOL is not a token leg:
   it is SOL (step 2). Legs that net to 0 vanish, so a buy and sell of the same amount in one
   transaction is no trade.
2. **SOL.** The wallet's native lamport change, plus its wSOL token change, plus ``meta.fee`` when
   the wallet is account 0 (the fee payer): ``sol_delta`` (the fee added back).
3. **Costs kept apart from the trade** (the same definitions as the recorded mainnet fixtures):
   ``fee`` (network fee, fee payer only); ``rent``: lamports locked in token accounts the wallet
   owns that this transaction created, minus lamports returned by the wallet's token accounts it
   closed (wSOL balances are not rent); ``tips``: System transfers from the wallet to Jito's tip
   accounts at any depth, plus top-level plain System transfers from the wallet to accounts that are
   not token accounts, not the wallet and not temporary (0 lamports before and after), counted only
   when a non-infrastructure program ran (otherwise a transfer is just a transfer). The trade's
   SOL leg is then ``t = sol_delta + rent + tips``: for a buy ``sol_amount = -t``, for a sell
   ``sol_amount = t``, so ``-sol_delta == sol_amount + rent + tips`` (buy) and
   ``sol_delta == sol_amount - rent - tips`` (sell), to the lamport.
4. **Not trades → ``[]``.** A failed transaction (``meta.err``). LP tokens: a leg whose mint's
   supply inside the transaction (all owners' token balances, after − before) changed by exactly
   the wallet's own delta was minted to or burned from the wallet (LP add/remove, pool creation,
   token creation that mints to the creator); such legs are dropped. What remains must flow **both
   ways**: something in (a token, or SOL with ``t > 0``) and something out. One-way movements are
   transfers, Jupiter DCA opens (tokens out, DCA rent out) and closes (tokens and rent back), LP
   deposits (both sides out) and withdrawals (both sides in), airdrops.
   **Route leftovers** are no legs either: a route through SOL or a stablecoin (USDC → SOL → token,
   A → USDC → B) can leave the wallet a few lamports or units of the intermediate. A quote leg (the
   SOL leg ``t``, or a stablecoin) that is at most 1% (``ROUTE_DUST_SHARE``) of the largest change
   of that asset on any one account not the wallet's is dropped, when the other legs still flow
   both ways without it; a dropped SOL leg belongs to no swap (the identities below then leave out
   those few lamports).
5. **Pairing the legs into swaps.** Each *subject* token leg becomes one ``Swap``: ``side='buy'``
   when it came in, ``'sell'`` when it went out. Stablecoins (USDC, USDT, PYUSD, USD1) are quotes,
   not subjects, when a non-stable token moved too; if only stables moved (SOL → USDC), they are the
   subjects. The SOL leg ``t`` is shared among the subjects on the opposite side of it (if none
   there, stables on that side become subjects: they were swapped for SOL). A subject's
   ``quote_mint`` is the token on the opposite side (a stable preferred when there are several);
   so:

   - SOL → token: one buy, ``sol_amount`` the SOL leg, no quote.
   - USDC → token: one buy of the token with ``quote_mint`` USDC, ``quote_amount`` the USDC paid,
     ``sol_amount`` 0 (token → USDC: one sell, the same way round).
   - token A → token B (neither stable): **two swaps**, a sell of A quoted in B and a buy of B
     quoted in A, so both positions see the trade; ``sol_amount`` 0 on both.
   - a subject with a quote token *and* a SOL share (A + SOL → B) keeps both: ``quote_*`` and
     ``sol_amount`` are set together.

   When one counter leg (the SOL leg or a quote token) is shared by several subjects (one
   transaction buying two tokens with SOL), it is split in proportion to the wallet's pump.fun /
   PumpSwap event amounts when every subject has one, else equally; the parts always add up to the
   whole to the lamport. ``fee``, ``tips`` and rent that belongs to no subject's own token account
   are split across the swaps the same way; a subject's own token-account rent stays on its swap.
6. **Venue.** ``dex`` is the program that emitted the wallet's pump.fun ``TradeEvent`` or PumpSwap
   ``BuyEvent``/``SellEvent`` for that mint when there is one; otherwise the first named venue
   (:data:`kolray.chain.programs.VENUES`) invoked at depth 1 (routers like Jupiter, OKX, Photon sit
   there), else the first at any depth; else ``"unknown"`` with ``program_id`` the first
   non-infrastructure program.
7. **Price and market cap.** From the wallet's pump event for that mint: pump.fun virtual reserves
   after the trade, PumpSwap pool reserves after the trade (the event carries them before it);
   market cap = price × supply for pump.fun coins (fixed 1e9 supply; on PumpSwap, canonical pools
   migrated from pump.fun, recognised by a non-zero ``coin_creator``). Otherwise ``price_sol`` is
   the trade's own ``sol_amount / token_amount`` (whole units) and ``market_cap_sol`` is None.
   Events come from ``Program data:`` log lines, attributed to the program on top of the invoke
   stack; when the logs are truncated (``Log truncated``) or absent, from ``emit_cpi`` inner
   instructions instead.

Encodings ``json``, ``jsonParsed`` and ``base64`` (and ``base58``) of legacy and v0 transactions are
read; in ``json``/binary encodings a v0 transaction's account indexes run over ``accountKeys``, then
``meta.loadedAddresses.writable``, then ``.readonly``. Token and Token-2022 balances are alike.

Anything else that does not fit (a balance that is not a number, an index out of range, a list
where an object belongs) raises :class:`MalformedTransaction` with what was found; the fixture
README's malformed case (account keys cut short) is caught by the key/balance count check. So does
a ``meta`` without ``preTokenBalances`` or ``postTokenBalances`` (absent or ``null``: what nodes
answer for transactions from before token balances were recorded, late 2020, and what some clients
leave out): the token legs are unknown, and ``[]`` would claim "no trade". Every mainnet fixture
carries both lists; a transaction that moved no token has both, empty.

Known limits: token balances without ``owner`` (RPC output before 2022) cannot be attributed and
count as not the wallet's; a stake-pool deposit (SOL → LST minted to the wallet) counts as an LP
mint, not a trade; a Jupiter DCA or limit-order fill executed by a keeper delivers tokens with no
counter-flow in that transaction (the input left at the open), so it is not a swap here either.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from typing import Any, NamedTuple

from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from kolray.chain import programs as _programs
from kolray.chain.types import LAMPORTS_PER_SOL, WSOL_MINT, Swap

__all__ = ["MalformedTransaction", "Swap", "extract_swaps"]


class MalformedTransaction(ValueError):
    """The input is not a usable ``getTransaction`` result; the message names what is wrong."""


_SYSTEM = _programs.SYSTEM_PROGRAM
_INFRA = _programs.INFRASTRUCTURE
_VENUES = _programs.VENUES
_JITO = _programs.JITO_TIP_ACCOUNTS
_STABLES = _programs.STABLECOIN_MINTS
_PUMPFUN = _programs.PUMPFUN
_PUMPSWAP = _programs.PUMPSWAP
_PUMP_PROGRAMS = frozenset({_PUMPFUN, _PUMPSWAP})


def _anchor_event(name: str) -> bytes:
    return hashlib.sha256(f"event:{name}".encode()).digest()[:8]


_EMIT_CPI_TAG = bytes.fromhex("e445a52e51cb9a1d")  # Anchor's event-via-self-CPI instruction tag
_TRADE_EVENT = _anchor_event("TradeEvent")  # pump.fun
_BUY_EVENT = _anchor_event("BuyEvent")  # PumpSwap
_SELL_EVENT = _anchor_event("SellEvent")  # PumpSwap
_PUMP_EVENTS = frozenset({_TRADE_EVENT, _BUY_EVENT, _SELL_EVENT})
_ZERO_KEY = bytes(32)

# System program Transfer: u32 LE instruction 2, then u64 LE lamports; 12 bytes are at most 17
# base58 characters, so longer data is never a transfer and is not decoded.
_TRANSFER_TAG = b"\x02\x00\x00\x00"
_TRANSFER_HEAD = int.from_bytes(_TRANSFER_TAG, "big")  # the data as a big-endian number, >> 64
_MAX_TRANSFER_B58 = 17
_U64 = 2**64 - 1


# Base58 (Bitcoin alphabet) for instruction data in json encoding. Eight digits at a time keep most
# of the arithmetic on small integers (58**8 < 2**47).
_B58_ALPHABET = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# Characters outside the alphabet translate to 255, so one max() finds them.
_B58_VALUES = bytes(_B58_ALPHABET.index(c) if c in _B58_ALPHABET else 255 for c in range(256))
_B58_POW8 = 58**8


def _b58digits(text: str) -> bytes:
    digits = text.encode("ascii", "replace").translate(_B58_VALUES)
    if digits and max(digits) >= 58:
        raise MalformedTransaction(f"instruction data is not base58: {text[:24]!r}")
    return digits


def _b58number(digits: bytes) -> int:
    head = len(digits) % 8
    number = 0
    for digit in digits[:head]:
        number = number * 58 + digit
    for i in range(head, len(digits), 8):
        a, b, c, d, e, f, g, h = digits[i : i + 8]
        number = number * _B58_POW8 + (
            ((((((a * 58 + b) * 58 + c) * 58 + d) * 58 + e) * 58 + f) * 58 + g) * 58 + h
        )
    return number


def _b58decode(text: str) -> bytes:
    digits = _b58digits(text)
    number = _b58number(digits)
    zeros = len(digits) - len(digits.lstrip(b"\x00"))  # each leading "1" is a zero byte
    return bytes(zeros) + number.to_bytes((number.bit_length() + 7) // 8, "big")


def _transfer_lamports(text: str) -> int | None:
    """Lamports of a System Transfer from its base58 instruction data; None for other data.

    Reads the data as one number instead of bytes: this runs for every System instruction the
    wallet signs (tips, fees, wSOL funding)."""
    digits = _b58digits(text)
    if not digits or digits[0] == 0:  # a leading "1" is a zero byte: not the 12 bytes of a Transfer
        return None
    number = _b58number(digits)
    if number >> 64 != _TRANSFER_HEAD:
        return None
    return int.from_bytes((number & _U64).to_bytes(8, "big"), "little")


def _key(raw: bytes) -> str:
    return str(Pubkey.from_bytes(raw))


@functools.lru_cache(maxsize=65536)
def _address_bytes(address: str) -> bytes:
    """The 32 bytes of a base58 address (cached: the same wallets come again and again)."""
    try:
        return bytes(Pubkey.from_string(address))
    except ValueError:
        raise ValueError(f"wallet must be a base58 address, got {address!r}") from None


def _index(keys: list[str], key: str) -> int:
    try:
        return keys.index(key)
    except ValueError:
        return -1


# The transaction, whatever its encoding


class _Tx:
    """Account keys, signature and the instruction facts extraction needs, for every encoding."""

    __slots__ = ("_binary_message", "_inner_raw", "_message", "encoding", "keys", "signature")

    def __init__(self, tx: dict[str, Any], meta: dict[str, Any]) -> None:
        transaction = tx.get("transaction")
        self._binary_message: Any = None
        self._message: dict[str, Any] = {}
        inner = meta.get("innerInstructions")
        self._inner_raw: list[Any] = inner if isinstance(inner, list) else []
        if isinstance(transaction, dict):
            message = transaction.get("message")
            if not isinstance(message, dict):
                raise MalformedTransaction("transaction.message is missing or not an object")
            self._message = message
            keys = message.get("accountKeys")
            if not isinstance(keys, list) or not keys:
                raise MalformedTransaction("transaction.message.accountKeys is missing or empty")
            if isinstance(keys[0], dict):  # jsonParsed: loaded addresses are already in the list
                self.encoding = "jsonParsed"
                try:
                    keys = [entry["pubkey"] for entry in keys]
                except (KeyError, TypeError) as error:
                    raise MalformedTransaction(f"an accountKeys entry has no pubkey ({error})") from None
            else:
                self.encoding = "json"
                keys = keys + _loaded_addresses(meta, bool(message.get("addressTableLookups")))
            signatures = transaction.get("signatures")
            signature = signatures[0] if isinstance(signatures, list) and signatures else None
        elif isinstance(transaction, list) and len(transaction) == 2 and isinstance(transaction[0], str):
            data, encoding = transaction
            if encoding not in ("base64", "base58"):
                raise MalformedTransaction(f"unsupported transaction encoding {encoding!r}")
            try:
                raw = base64.b64decode(data, validate=True) if encoding == "base64" else _b58decode(data)
                decoded = VersionedTransaction.from_bytes(raw)
            except MalformedTransaction:
                raise
            except (binascii.Error, ValueError) as error:
                raise MalformedTransaction(f"transaction bytes do not decode ({error})") from None
            self.encoding = "binary"
            self._binary_message = decoded.message
            lookups = getattr(decoded.message, "address_table_lookups", None)
            keys = list(map(str, decoded.message.account_keys))
            keys += _loaded_addresses(meta, bool(lookups))
            signature = str(decoded.signatures[0]) if decoded.signatures else None
        else:
            raise MalformedTransaction("transaction is missing or neither an object nor [data, encoding]")
        # Cheap shape checks done in C (join, map) rather than a Python loop: this runs on every
        # transaction. join() refuses anything that is not a string.
        try:
            "".join(keys)
            bad_length = min(map(len, keys)) < 32 or max(map(len, keys)) > 44
        except TypeError:
            bad_length = True
        if bad_length:
            bad = next(k for k in keys if type(k) is not str or not 32 <= len(k) <= 44)
            raise MalformedTransaction(f"account key {bad!r} is not a base58 address")
        if not isinstance(signature, str) or not 64 <= len(signature) <= 88:
            raise MalformedTransaction("transaction has no valid first signature")
        self.keys: list[str] = keys
        self.signature: str = signature

    def _key_at(self, index: Any) -> str:
        try:
            return self.keys[index]
        except (IndexError, TypeError):
            raise MalformedTransaction(
                f"an instruction refers to account index {index!r}, beyond the {len(self.keys)} account keys"
            ) from None

    def scan(self, wallet: str) -> tuple[list[str], list[str], list[tuple[bool, str, int]]]:
        """Programs invoked at depth 1 and below it (in order), and the plain System transfers
        from ``wallet`` as ``(at depth 1, destination, lamports)``."""
        keys = self.keys
        transfers: list[tuple[bool, str, int]] = []
        try:
            if self.encoding == "jsonParsed":
                instructions = self._message.get("instructions")
                if not isinstance(instructions, list):
                    raise MalformedTransaction("transaction.message.instructions is missing")
                top = _scan_parsed(instructions, wallet, True, transfers)
                inner: list[str] = []
                for group in self._inner_raw:
                    inner += _scan_parsed(group["instructions"], wallet, False, transfers)
                return top, inner, transfers
            wallet_index = _index(keys, wallet)
            system_index = _index(keys, _SYSTEM)
            # Compiled instructions name the recipient by its index into ``keys``.
            indexed: list[tuple[bool, int, int]] = []
            if self.encoding == "binary":
                top_indexes = _scan_binary(
                    self._binary_message.instructions, wallet_index, system_index, indexed
                )
            else:
                instructions = self._message.get("instructions")
                if not isinstance(instructions, list):
                    raise MalformedTransaction("transaction.message.instructions is missing")
                top_indexes = _scan_compiled(instructions, keys, wallet_index, system_index, True, indexed)
            inner_indexes: list[int] = []
            for group in self._inner_raw:
                inner_indexes += _scan_compiled(
                    group["instructions"], keys, wallet_index, system_index, False, indexed
                )
        except (KeyError, TypeError) as error:
            raise MalformedTransaction(f"an instruction lacks {error}") from None
        try:
            top = [keys[i] for i in top_indexes]
            inner = [keys[i] for i in inner_indexes]
            transfers = [(depth_one, keys[to], lamports) for depth_one, to, lamports in indexed]
        except (IndexError, TypeError):
            raise MalformedTransaction(
                f"an instruction refers to a program or account beyond the {len(keys)} account keys"
            ) from None
        return top, inner, transfers

    def emitted_events(self) -> list[tuple[str, bytes]]:
        """``(program, event bytes)`` of pump programs' ``emit_cpi`` inner instructions (an Anchor
        event as a self-CPI with one account, the event authority, and the event as data)."""
        found = []
        parsed = self.encoding == "jsonParsed"
        for group in self._inner_raw:
            for ix in group["instructions"]:
                program = ix["programId"] if parsed else self._key_at(ix["programIdIndex"])
                if program not in _PUMP_PROGRAMS or len(ix.get("accounts") or ()) != 1:
                    continue
                data = _b58decode(ix.get("data") or "")
                if data[:8] == _EMIT_CPI_TAG:
                    found.append((program, data[8:]))
        return found


def _scan_compiled(
    instructions: list[dict[str, Any]],
    keys: list[str],
    wallet_index: int,
    system_index: int,
    depth_one: bool,
    transfers: list[tuple[bool, int, int]],
) -> list[int]:
    programs = [ix["programIdIndex"] for ix in instructions]
    if system_index in programs and wallet_index >= 0:
        for ix in instructions:
            if ix["programIdIndex"] == system_index:
                accounts = ix["accounts"]
                data = ix["data"]
                if len(accounts) >= 2 and accounts[0] == wallet_index and len(data) <= _MAX_TRANSFER_B58:
                    # Below depth 1 only tips to Jito count: the DEX's own transfers from the
                    # wallet (the pump.fun price, a router's commission) are the trade.
                    if not depth_one and keys[accounts[1]] not in _JITO:
                        continue
                    lamports = _transfer_lamports(data)
                    if lamports is not None:
                        transfers.append((depth_one, accounts[1], lamports))
    return programs


def _scan_binary(
    instructions: list[Any], wallet_index: int, system_index: int, transfers: list[tuple[bool, int, int]]
) -> list[int]:
    programs = [ix.program_id_index for ix in instructions]
    if system_index in programs and wallet_index >= 0:
        for ix in instructions:
            if ix.program_id_index == system_index:
                accounts, data = ix.accounts, ix.data
                if (
                    len(accounts) >= 2
                    and accounts[0] == wallet_index
                    and len(data) == 12
                    and data[:4] == _TRANSFER_TAG
                ):
                    transfers.append((True, accounts[1], int.from_bytes(data[4:], "little")))
    return programs


def _scan_parsed(
    instructions: list[dict[str, Any]], wallet: str, depth_one: bool, transfers: list[tuple[bool, str, int]]
) -> list[str]:
    programs = [ix["programId"] for ix in instructions]
    if _SYSTEM in programs:
        for ix in instructions:
            parsed = ix.get("parsed")
            if ix["programId"] == _SYSTEM and isinstance(parsed, dict) and parsed.get("type") == "transfer":
                info = parsed.get("info") or {}
                if info.get("source") == wallet:
                    try:
                        transfers.append((depth_one, info["destination"], int(info["lamports"])))
                    except (KeyError, TypeError, ValueError):
                        raise MalformedTransaction(
                            "a parsed System transfer lacks destination/lamports"
                        ) from None
    return programs


def _loaded_addresses(meta: dict[str, Any], uses_lookups: bool) -> list[str]:
    loaded = meta.get("loadedAddresses")
    if loaded is None:
        if uses_lookups:
            raise MalformedTransaction(
                "v0 transaction uses address lookup tables but meta.loadedAddresses is missing"
            )
        return []
    try:
        writable, readonly = loaded["writable"], loaded["readonly"]
    except (KeyError, TypeError):
        writable = readonly = None
    if type(writable) is not list or type(readonly) is not list:
        raise MalformedTransaction("meta.loadedAddresses lacks writable/readonly lists")
    return writable + readonly


# Pump events


class _PumpTrade(NamedTuple):
    venue: str
    program_id: str
    mint: str
    sol_amount: int  # the trade's SOL (pool side), used to share a counter leg among mints
    sol_reserve: int  # after the trade
    token_reserve: int  # after the trade
    supply_raw: int | None  # the token's total supply in raw units, when known


def _u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")


def _decode_pump_event(
    program: str, data: bytes, user: bytes, mint_of_account: dict[str, str], pool_mints: dict[str, set[str]]
) -> _PumpTrade | None:
    """The pump.fun TradeEvent or PumpSwap Buy/SellEvent in ``data`` (from the discriminator on)
    if it is a trade by ``user`` (32 bytes); None otherwise."""
    tag = data[:8]
    body = data[8:]
    if program == _PUMPFUN and tag == _TRADE_EVENT and len(body) >= 105 and body[49:81] == user:
        # mint, sol_amount, token_amount, is_buy, user, timestamp, virtual sol, virtual token, ...
        return _PumpTrade(
            "pumpfun",
            _PUMPFUN,
            _key(body[0:32]),
            _u64(body, 32),
            _u64(body, 89),
            _u64(body, 97),
            _programs.PUMPFUN_TOTAL_SUPPLY_RAW,
        )
    if (
        program == _PUMPSWAP
        and tag in (_BUY_EVENT, _SELL_EVENT)
        and len(body) >= 304
        and body[144:176] == user
    ):
        # timestamp, base amount, limit, user reserves ×2, pool base/quote reserves (before the
        # trade), quote amount, LP/protocol fees, quote to the pool, user quote, then pubkeys.
        base_amount = _u64(body, 8)
        pool_base, pool_quote = _u64(body, 40), _u64(body, 48)
        quote_amount = _u64(body, 56)
        # What the pool's quote vault gains (buy: input with the LP fee) or pays out (sell: output
        # less the LP fee, which stays in the pool); protocol and creator fees never reach it.
        quote_to_pool = _u64(body, 96)
        if tag == _BUY_EVENT:
            base_after, quote_after = pool_base - base_amount, pool_quote + quote_to_pool
        else:
            base_after, quote_after = pool_base + base_amount, pool_quote - quote_to_pool
        pool = _key(body[112:144])
        base_mint = mint_of_account.get(_key(body[176:208]))
        quote_mint = mint_of_account.get(_key(body[208:240]))
        # A temporary wSOL account closed in the same transaction has no balance entry: the pool's
        # own vaults (token accounts owned by the pool) name the missing side.
        if base_mint is None or quote_mint is None:
            others = pool_mints.get(pool, set()) - {base_mint, quote_mint}
            if len(others) == 1:
                (other,) = others
                base_mint, quote_mint = (other, quote_mint) if base_mint is None else (base_mint, other)
        # Canonical pools (migrated from pump.fun) name the coin's creator; the coin is then a
        # pump.fun coin of known supply.
        creator = body[304:336]
        supply = _programs.PUMPFUN_TOTAL_SUPPLY_RAW if len(creator) == 32 and creator != _ZERO_KEY else None
        if quote_mint == WSOL_MINT and base_mint is not None:
            return _PumpTrade("pumpswap", _PUMPSWAP, base_mint, quote_amount, quote_after, base_after, supply)
        if base_mint == WSOL_MINT and quote_mint is not None:  # reversed pool: SOL is the base
            return _PumpTrade("pumpswap", _PUMPSWAP, quote_mint, base_amount, base_after, quote_after, None)
    return None


def _events_from_logs(logs: list[Any]) -> list[tuple[str, bytes]] | None:
    """``(program, event bytes)`` of pump events in ``Program data:`` lines; None when the logs
    were truncated (events after the cut are missing: the caller reads emit_cpi instead)."""
    if logs[-1] == "Log truncated":
        return None
    # Searching one joined string is done in C; most transactions have one or two data lines.
    text = "\n" + "\n".join(logs)
    found = []
    position = -1
    start = text.find("\nProgram data: ")
    while start != -1:
        end = text.find("\n", start + 1)
        line = text[start + 1 : end if end != -1 else None]
        start = end if end == -1 else text.find("\nProgram data: ", end)
        try:
            data = base64.b64decode(line[14:])
        except (binascii.Error, ValueError):
            continue
        if data[:8] not in _PUMP_EVENTS:
            continue
        try:
            # The line's place in the list (a newline inside some log message would make
            # counting newlines wrong; the list itself cannot be).
            position = logs.index(line, position + 1)
        except ValueError:
            continue
        program = _emitter(logs, position)
        if program in _PUMP_PROGRAMS:
            found.append((program, data))
    return found


def _emitter(logs: list[Any], position: int) -> str | None:
    """The program that wrote ``logs[position]``: walk back to the innermost invocation that has
    not returned (every ``success`` line met on the way closes one ``invoke`` further back)."""
    # Most lines are "Program log: ..." or "Program <id> consumed N of M compute units": the last
    # character rules them out before any substring search. ("failed" lines only appear in failed
    # transactions, which never get here.)
    closed = 0
    for line in reversed(logs[:position]):
        last = line[-1:]
        if last == "s":
            if (
                line.endswith(" success")
                and line.startswith("Program ")
                and not line.startswith("Program log:")
            ):
                closed += 1
        elif (
            last == "]"
            and " invoke [" in line
            and line.startswith("Program ")
            and not line.startswith("Program log:")
        ):
            if closed == 0:
                return line[8 : line.index(" ", 8)]
            closed -= 1
    return None


def _pump_trades(
    view: _Tx, meta: dict[str, Any], balances: list[dict[str, Any]], wallet: str
) -> list[_PumpTrade]:
    """The wallet's pump.fun and PumpSwap trades, in order."""
    logs = meta.get("logMessages")
    raw = _events_from_logs(logs) if isinstance(logs, list) and logs else None
    if raw is None:
        raw = view.emitted_events()
    raw = [(program, data) for program, data in raw if data[:8] in _PUMP_EVENTS]
    if not raw:
        return []
    keys = view.keys
    mint_of_account: dict[str, str] = {}
    pool_mints: dict[str, set[str]] = {}
    if any(program == _PUMPSWAP for program, _ in raw):  # PumpSwap events name token accounts
        for entry in balances:
            mint_of_account[keys[entry["accountIndex"]]] = entry["mint"]
            owner = entry.get("owner")
            if owner:
                pool_mints.setdefault(owner, set()).add(entry["mint"])
    user = _address_bytes(wallet)
    trades = []
    for program, data in raw:
        trade = _decode_pump_event(program, data, user, mint_of_account, pool_mints)
        if trade is not None:
            trades.append(trade)
    return trades


# Arithmetic


def _split(total: int, weights: list[int]) -> list[int]:
    """Integer parts of ``total`` in proportion to ``weights`` (equal if none is positive) that add
    up to ``total`` exactly (largest remainder)."""
    count = len(weights)
    if count == 1:
        return [total]
    if sum(weights) <= 0 or any(w < 0 for w in weights):
        weights = [1] * count
    whole = sum(weights)
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    parts = [magnitude * w // whole for w in weights]
    order = sorted(range(count), key=lambda i: (-(magnitude * weights[i] % whole), i))
    for i in order[: magnitude - sum(parts)]:
        parts[i] += 1
    return [sign * p for p in parts]


# The extractor


def _token_entries(meta: dict[str, Any], name: str) -> list[dict[str, Any]]:
    entries = meta.get(name)
    if entries is None:
        # Not "no token moved" (that is an empty list): the node kept no token balances for this
        # transaction (before they were recorded, late 2020) or a client dropped them. The legs
        # cannot be read, and one list without the other would read every balance as a full buy or
        # sell; saying [] would claim "no trade" when nothing is known.
        raise MalformedTransaction(
            f"meta.{name} is {'null' if name in meta else 'missing'}: the wallet's token legs cannot "
            "be read without meta.preTokenBalances and meta.postTokenBalances"
        )
    if not isinstance(entries, list):
        raise MalformedTransaction(f"meta.{name} is not a list")
    return entries


def _parse_entry(entry: Any, name: str, n_keys: int) -> tuple[int, str, int, int]:
    """``(account index, mint, raw amount, decimals)`` of one token balance entry."""
    try:
        index = entry["accountIndex"]
        ui = entry["uiTokenAmount"]
        parsed = index, entry["mint"], int(ui["amount"]), ui["decimals"]
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedTransaction(f"a {name} entry is incomplete ({error!r})") from None
    if type(index) is not int or not 0 <= index < n_keys:
        raise MalformedTransaction(f"{name} refers to account index {index!r} of {n_keys} account keys")
    decimals = parsed[3]
    if type(decimals) is not int or not 0 <= decimals <= 255:  # a mint's decimals are a u8
        raise MalformedTransaction(f"a {name} entry has decimals {decimals!r}, not a u8")
    return parsed


def extract_swaps(tx: dict[str, Any], wallet: str) -> list[Swap]:
    """Every swap ``wallet`` made in ``tx`` (one ``getTransaction`` result); ``[]`` if none.

    Raises :class:`MalformedTransaction` when ``tx`` is not a usable result, naming what is wrong,
    and ``ValueError`` when ``wallet`` is not an address.
    """
    if not isinstance(wallet, str):
        raise ValueError(f"wallet must be a base58 address, got {wallet!r}")
    _address_bytes(wallet)
    if not isinstance(tx, dict):
        raise MalformedTransaction(f"expected a getTransaction result object, got {type(tx).__name__}")
    meta = tx.get("meta")
    if not isinstance(meta, dict):
        raise MalformedTransaction("meta is missing: the node returned no status for this transaction")
    if meta.get("err") is not None:
        return []
    try:
        return _extract(tx, meta, wallet)
    except MalformedTransaction:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, OverflowError) as error:
        # A shape the checks above did not foresee (a balance that is a string, a list where an
        # object belongs...): still the caller's "malformed", with what Python tripped on.
        raise MalformedTransaction(f"unexpected shape: {type(error).__name__}: {error}") from error


def _extract(tx: dict[str, Any], meta: dict[str, Any], wallet: str) -> list[Swap]:
    view = _Tx(tx, meta)
    keys = view.keys
    n_keys = len(keys)
    pre_lamports = meta.get("preBalances")
    post_lamports = meta.get("postBalances")
    if not isinstance(pre_lamports, list) or not isinstance(post_lamports, list):
        raise MalformedTransaction("meta.preBalances/postBalances are missing")
    if len(pre_lamports) != n_keys or len(post_lamports) != n_keys:
        raise MalformedTransaction(
            f"transaction lists {n_keys} account keys but meta has {len(pre_lamports)} pre and "
            f"{len(post_lamports)} post balances"
        )

    # The wallet's token accounts and legs
    pre_tokens = _token_entries(meta, "preTokenBalances")
    post_tokens = _token_entries(meta, "postTokenBalances")
    try:
        owned_pre = [
            _parse_entry(e, "preTokenBalances", n_keys) for e in pre_tokens if e.get("owner") == wallet
        ]
        owned_post = [
            _parse_entry(e, "postTokenBalances", n_keys) for e in post_tokens if e.get("owner") == wallet
        ]
    except AttributeError:
        raise MalformedTransaction("a token balance entry is not an object") from None
    if not owned_pre and not owned_post:
        return []
    deltas: dict[str, int] = {}
    decimals: dict[str, int] = {}
    for _, mint, amount, places in owned_pre:
        deltas[mint] = deltas.get(mint, 0) - amount
        decimals[mint] = places
    for _, mint, amount, places in owned_post:
        deltas[mint] = deltas.get(mint, 0) + amount
        decimals[mint] = places
    wsol_delta = deltas.pop(WSOL_MINT, 0)
    legs = {mint: delta for mint, delta in deltas.items() if delta}
    if not legs:
        return []

    # Minted to / burned from the wallet: a leg equal to its mint's supply change inside this
    # transaction (all owners) is an LP token (or self-minted supply), never a trade leg.
    supply = dict.fromkeys(legs, 0)
    try:
        for entry in pre_tokens:
            if entry["mint"] in supply:
                supply[entry["mint"]] -= int(entry["uiTokenAmount"]["amount"])
        for entry in post_tokens:
            if entry["mint"] in supply:
                supply[entry["mint"]] += int(entry["uiTokenAmount"]["amount"])
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedTransaction(f"a token balance entry is incomplete ({error!r})") from None
    legs = {mint: delta for mint, delta in legs.items() if supply[mint] != delta}
    if not legs:
        return []

    # SOL: native + wSOL, fee added back; rent of the wallet's token accounts opened/closed here
    wallet_index = _index(keys, wallet)
    native = post_lamports[wallet_index] - pre_lamports[wallet_index] if wallet_index >= 0 else 0
    fee = 0
    if wallet_index == 0:
        meta_fee = meta.get("fee")
        if type(meta_fee) is not int or meta_fee < 0:
            raise MalformedTransaction(f"meta.fee is {meta_fee!r}, not a lamport amount")
        fee = meta_fee
    sol_delta = native + wsol_delta + fee
    rent_by_mint: dict[str, int] = {}
    for index, mint, amount, _ in owned_post:
        if pre_lamports[index] == 0 and post_lamports[index] > 0:
            locked = post_lamports[index] - (amount if mint == WSOL_MINT else 0)
            rent_by_mint[mint] = rent_by_mint.get(mint, 0) + locked
    for index, mint, amount, _ in owned_pre:
        if pre_lamports[index] > 0 and post_lamports[index] == 0:
            returned = pre_lamports[index] - (amount if mint == WSOL_MINT else 0)
            rent_by_mint[mint] = rent_by_mint.get(mint, 0) - returned
    rent = sum(rent_by_mint.values())

    # Tips, and the trade's own SOL leg
    top, inner, transfers = view.scan(wallet)
    tips = _tips(top, inner, transfers, keys, wallet, pre_lamports, post_lamports, pre_tokens, post_tokens)
    trade_sol = sol_delta + rent + tips

    # Counter-flow: something must come in and something go out.
    if not _two_way(legs, trade_sol):
        return []
    legs, trade_sol = _without_route_dust(
        legs, trade_sol, wallet, wallet_index, owned_pre, owned_post, pre_tokens, post_tokens,
        pre_lamports, post_lamports,
    )  # fmt: skip

    subjects = [m for m in legs if m not in _STABLES] or list(legs)
    if trade_sol and not any(legs[m] * trade_sol < 0 for m in subjects):
        # Stables on the far side of the SOL leg were swapped for SOL (USDC → SOL next to a token).
        subjects += [m for m in legs if m in _STABLES and legs[m] * trade_sol < 0 and m not in subjects]

    wallet_events: dict[str, list[_PumpTrade]] = {}
    if _PUMPFUN in top or _PUMPSWAP in top or _PUMPFUN in inner or _PUMPSWAP in inner:
        for trade in _pump_trades(view, meta, pre_tokens + post_tokens, wallet):
            if trade.mint in legs:
                wallet_events.setdefault(trade.mint, []).append(trade)

    venue, venue_program = _venue(top, inner)
    return _build_swaps(
        tx, view.signature, wallet, legs, subjects, decimals, trade_sol, fee, rent, rent_by_mint, tips,
        wallet_events, venue, venue_program,
    )  # fmt: skip


def _two_way(legs: dict[str, int], trade_sol: int) -> bool:
    """Something came in and something went out (tokens, or the SOL leg)."""
    has_in = trade_sol > 0 or any(d > 0 for d in legs.values())
    has_out = trade_sol < 0 or any(d < 0 for d in legs.values())
    return has_in and has_out


# A quote leg at most this share of the largest amount of its asset that one other account moved
# in the same transaction is a route's leftover (rounding, slippage), not a trade of its own. Real
# counter-legs are the same size as the pool's side of them (100%); leftovers are orders of
# magnitude below the hop that carried them.
ROUTE_DUST_SHARE = 0.01


def _without_route_dust(
    legs: dict[str, int],
    trade_sol: int,
    wallet: str,
    wallet_index: int,
    owned_pre: list[tuple[int, str, int, int]],
    owned_post: list[tuple[int, str, int, int]],
    pre_tokens: list[dict[str, Any]],
    post_tokens: list[dict[str, Any]],
    pre_lamports: list[int],
    post_lamports: list[int],
) -> tuple[dict[str, int], int]:
    """``legs`` and the SOL leg without the dust a route left of an intermediate quote asset.

    A route through SOL or a stablecoin (USDC → SOL → token; A → USDC → B) can leave the wallet a
    few lamports or units of that intermediate. Read as a leg it becomes a trade that never
    happened (a "sale" of the USDC for 37 lamports) or a wrong quote (A sold for 3 units of USDC).
    A quote leg (the SOL leg, or a stablecoin) is dropped when it is dust next to what passed
    through the transaction (:data:`ROUTE_DUST_SHARE` of the largest change of that asset on any
    account not the wallet's) and the other legs still trade both ways without it. Only then: a
    leg that alone pays for a token is the trade, however small."""
    candidates: list[str | None] = [m for m in legs if m in _STABLES]  # None: the SOL leg
    if trade_sol:
        candidates.append(None)
    if not candidates or all(m in _STABLES for m in legs):
        return legs, trade_sol  # nothing but quote legs: they are the trade (SOL → USDC)
    wallet_accounts = {wallet_index} | {i for i, *_ in owned_pre} | {i for i, *_ in owned_post}
    for quote in candidates:
        rest = {m: d for m, d in legs.items() if m != quote}
        rest_sol = 0 if quote is None else trade_sol
        if not _two_way(rest, rest_sol) or not any(m not in _STABLES for m in rest):
            continue
        if quote is None:
            moved = max(
                (abs(b - a) for i, (a, b) in enumerate(zip(pre_lamports, post_lamports, strict=True))
                 if i not in wallet_accounts),
                default=0,
            )  # fmt: skip
            size = abs(trade_sol)
        else:
            moved = _largest_other_change(quote, wallet, pre_tokens, post_tokens)
            size = abs(legs[quote])
        if size <= ROUTE_DUST_SHARE * moved:
            legs, trade_sol = rest, rest_sol
    return legs, trade_sol


def _largest_other_change(
    mint: str, wallet: str, pre: list[dict[str, Any]], post: list[dict[str, Any]]
) -> int:
    """The largest balance change of ``mint`` on one token account the wallet does not own."""
    change: dict[Any, int] = {}
    for sign, entries in ((-1, pre), (1, post)):
        for entry in entries:
            if entry["mint"] == mint and entry.get("owner") != wallet:
                index = entry["accountIndex"]
                change[index] = change.get(index, 0) + sign * int(entry["uiTokenAmount"]["amount"])
    return max(map(abs, change.values()), default=0)


def _tips(
    top: list[str],
    inner: list[str],
    transfers: list[tuple[bool, str, int]],
    keys: list[str],
    wallet: str,
    pre_lamports: list[int],
    post_lamports: list[int],
    pre_tokens: list[dict[str, Any]],
    post_tokens: list[dict[str, Any]],
) -> int:
    """Jito tips at any depth, plus top-level plain transfers to ordinary accounts when a
    non-infrastructure program ran (bot fees, relay tips); see the module docstring."""
    if not transfers:
        return 0
    jito = 0
    plain = []
    for depth_one, to, lamports in transfers:
        if to in _JITO:
            jito += lamports
        elif depth_one:
            plain.append((to, lamports))
    if not plain or (_INFRA.issuperset(top) and _INFRA.issuperset(inner)):
        return jito
    other = 0
    for to, lamports in plain:
        if to == wallet:
            continue
        index = keys.index(to)
        if pre_lamports[index] == 0 and post_lamports[index] == 0:  # temporary (wSOL funding)
            continue
        if any(e["accountIndex"] == index for e in pre_tokens) or any(
            e["accountIndex"] == index for e in post_tokens
        ):
            continue  # a token account: wrapping SOL, not paying anyone
        other += lamports
    return jito + other


def _venue(top: list[str], inner: list[str]) -> tuple[str, str | None]:
    for programs in (top, inner):
        for program in programs:
            name = _VENUES.get(program)
            if name is not None:
                return name, program
    for programs in (top, inner):
        for program in programs:
            if program not in _INFRA:
                return _programs.UNKNOWN_VENUE, program
    return _programs.UNKNOWN_VENUE, None


def _price(
    amount: int, places: int, sol_amount: int, events: list[_PumpTrade] | None
) -> tuple[float | None, float | None]:
    """``(price_sol, market_cap_sol)``: SOL per whole token, from the pump event when there is one
    (reserves after the wallet's last trade of ``mint``), else from the trade itself."""
    scale = 10**places
    if events:
        last = events[-1]
        if last.token_reserve > 0:
            price = (last.sol_reserve / LAMPORTS_PER_SOL) / (last.token_reserve / scale)
            market_cap = price * last.supply_raw / scale if last.supply_raw is not None else None
            return price, market_cap
    if sol_amount > 0 and amount > 0:
        return (sol_amount / LAMPORTS_PER_SOL) / (amount / scale), None
    return None, None


def _build_swaps(
    tx: dict[str, Any],
    signature: str,
    wallet: str,
    legs: dict[str, int],
    subjects: list[str],
    decimals: dict[str, int],
    trade_sol: int,
    fee: int,
    rent: int,
    rent_by_mint: dict[str, int],
    tips: int,
    wallet_events: dict[str, list[_PumpTrade]],
    venue: str,
    venue_program: str | None,
) -> list[Swap]:
    slot = tx.get("slot")
    block_time = tx.get("blockTime")
    count = len(subjects)
    if count == 1 and len(legs) == 1:
        # The common case, one token against SOL: nothing to share out.
        (mint,) = subjects
        amount = abs(legs[mint])
        places = decimals[mint]
        events = wallet_events.get(mint)
        dex, program_id = (events[-1].venue, events[-1].program_id) if events else (venue, venue_program)
        price, market_cap = _price(amount, places, abs(trade_sol), events)
        return [
            Swap(signature, slot, block_time, wallet, mint, "buy" if legs[mint] > 0 else "sell", amount, places,
                 abs(trade_sol), dex, program_id, None, None, None, fee, rent, tips, price, market_cap)
        ]  # fmt: skip
    # Sells first, then buys; by mint within each, so the output order is stable.
    if count > 1:
        subjects = sorted(subjects, key=lambda m: (legs[m] > 0, m))
    weights = [sum(e.sol_amount for e in wallet_events.get(m, ())) for m in subjects]
    if not all(weights):
        weights = [1] * count
    weight_of = dict(zip(subjects, weights, strict=True))

    # The SOL leg, shared among the subjects on its far side.
    sol_share: dict[str, int] = {}
    if trade_sol:
        takers = [m for m in subjects if legs[m] * trade_sol < 0]
        for mint, part in zip(takers, _split(abs(trade_sol), [weight_of[m] for m in takers]), strict=True):
            sol_share[mint] = part

    # Quote tokens: for each subject, a token that moved the other way (a stable first).
    quote_of: dict[str, str] = {}
    for mint in subjects:
        candidates = [q for q in legs if q != mint and legs[q] * legs[mint] < 0]
        if not candidates:
            continue
        stables = [q for q in candidates if q in _STABLES]
        if stables:
            quote_of[mint] = min(stables)
        elif len(candidates) == 1:
            quote_of[mint] = candidates[0]
    quote_amount: dict[str, int] = {}
    for quote in set(quote_of.values()):
        users = [m for m in subjects if quote_of.get(m) == quote]
        for mint, part in zip(users, _split(abs(legs[quote]), [weight_of[m] for m in users]), strict=True):
            quote_amount[mint] = part

    # Costs: a subject's own token-account rent stays with it; the rest is shared.
    own_rent = [rent_by_mint.get(m, 0) for m in subjects]
    fee_parts = _split(fee, weights)
    tip_parts = _split(tips, weights)
    rent_parts = _split(rent - sum(own_rent), weights)

    swaps = []
    for i, mint in enumerate(subjects):
        amount = abs(legs[mint])
        places = decimals[mint]
        sol_amount = sol_share.get(mint, 0)
        events = wallet_events.get(mint)
        dex, program_id = (events[-1].venue, events[-1].program_id) if events else (venue, venue_program)
        price, market_cap = _price(amount, places, sol_amount, events)
        quote_mint = quote_of.get(mint)
        swaps.append(
            Swap(
                signature=signature,
                slot=slot,
                block_time=block_time,
                wallet=wallet,
                mint=mint,
                side="buy" if legs[mint] > 0 else "sell",
                token_amount=amount,
                token_decimals=places,
                sol_amount=sol_amount,
                dex=dex,
                program_id=program_id,
                quote_mint=quote_mint,
                quote_amount=quote_amount[mint] if quote_mint else None,
                quote_decimals=decimals[quote_mint] if quote_mint else None,
                fee=fee_parts[i],
                rent=own_rent[i] + rent_parts[i],
                tips=tip_parts[i],
                price_sol=price,
                market_cap_sol=market_cap,
            )
        )
    return swaps
