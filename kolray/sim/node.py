"""The JSON-RPC methods of the simulated node, as mainnet (agave) answers them.

This module knows nothing of HTTP: :meth:`Node.call` takes one request object and returns the
response bytes. Semantics follow agave's ``rpc.rs`` and ``blockstore.rs``:

- ``getSignaturesForAddress``: newest first — by slot, then by signature bytes descending (the
  order of agave's address-signature index); ``limit`` 1..1000 (default 1000, else "Invalid limit;
  max 1000"); ``before``: start after that signature's position, or ``[]`` when it is unknown;
  ``until``: stop before it, ignored when unknown; entries carry ``err``, ``memo`` (``"[len] text"``),
  ``blockTime``, ``slot`` and ``confirmationStatus``.
- ``getTransaction``: ``json``/``jsonParsed``/``base64``/``base58``; a v0 transaction without
  ``maxSupportedTransactionVersion`` is error -32015; ``version`` is present only when the client
  passed ``maxSupportedTransactionVersion``; unknown signatures return ``null``.
- Errors: -32700 parse error, -32600 invalid request, -32601 method not found, -32602 invalid
  params (with agave's wording for bad keys and signatures).

Only what the clock has revealed is visible: transactions in slots up to the current slot.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

import base58
import numpy as np
import orjson
from solders.signature import Signature

from kolray.sim import keys
from kolray.sim.accounts import TwinAccounts
from kolray.sim.crowd_history import CrowdHistory, record_of
from kolray.sim.encodings import to_json_parsed
from kolray.sim.params import GENESIS_SLOT, SLOTS_PER_SECOND, slot_start
from kolray.sim.store import FLAG_LEGACY, ChainPart, addr_bytes, sig_bytes
from kolray.sim.txbuild import ui_amount
from kolray.sim.world import World

VERSION = {"feature-set": 3294202862, "solana-core": "2.2.7"}
API_VERSION = "2.2.7"
MAX_MULTIPLE_ACCOUNTS = 100  # agave's limit per getMultipleAccounts
GENESIS_HASH = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"  # mainnet-beta's
MAX_SIGNATURES_LIMIT = 1000
SLOTS_PER_EPOCH = 432_000
ENCODINGS = ("binary", "base64", "base58", "json", "jsonParsed")


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(message: str) -> RpcError:
    return RpcError(-32602, message)


def _parse_key_error(text: Any, what: str) -> str:
    """agave's ``Invalid param: {error:?}`` for a bad pubkey or signature string."""
    if not isinstance(text, str):
        return f"Invalid params: invalid type: {_json_type(text)}, expected a string."
    limit = 44 if what == "pubkey" else 88
    if len(text) > limit:
        return "Invalid param: WrongSize"
    try:
        raw = base58.b58decode(text)
    except ValueError:
        return "Invalid param: Invalid"
    return (
        "Invalid param: WrongSize"
        if len(raw) != (32 if what == "pubkey" else 64)
        else "Invalid param: Invalid"
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    return "map"


def _pubkey(value: Any) -> bytes:
    try:
        if not isinstance(value, str):
            raise ValueError
        return addr_bytes(value)
    except ValueError:
        raise invalid_params(_parse_key_error(value, "pubkey")) from None


def _signature(value: Any) -> bytes:
    try:
        if not isinstance(value, str):
            raise ValueError
        return sig_bytes(value)
    except ValueError:
        raise invalid_params(_parse_key_error(value, "signature")) from None


def _config(params: list[Any], index: int) -> dict[str, Any]:
    if len(params) <= index or params[index] is None:
        return {}
    value = params[index]
    if not isinstance(value, dict):
        raise invalid_params(f"Invalid params: invalid type: {_json_type(value)}, expected struct config.")
    return value


def _check_commitment(config: dict[str, Any]) -> None:
    commitment = config.get("commitment")
    if commitment is None:
        return
    if commitment not in (
        "processed",
        "confirmed",
        "finalized",
        "recent",
        "single",
        "singleGossip",
        "root",
        "max",
    ):
        raise invalid_params(
            f"Invalid params: unknown variant `{commitment}`, expected one of `processed`, `confirmed`, `finalized`."
        )
    if commitment in ("processed", "recent"):
        raise invalid_params("Method does not support commitment below `confirmed`")


class Node:
    """A read-only Solana node serving a twin world; ``current_slot`` is the clock."""

    def __init__(self, world: World, current_slot: Callable[[], int]) -> None:
        self.world = world
        self.parts: list[ChainPart] = world.chain_parts()
        self.current_slot = current_slot
        self.first_slot = int(world.meta["first_slot"])
        self.last_slot = int(world.meta["last_slot"])
        self.supplies: dict[str, tuple[int, int]] = {}
        for part in self.parts:
            for mint, (amount, decimals) in part.supplies.items():
                self.supplies[mint] = (int(amount), int(decimals))
        self.accounts = TwinAccounts(world)
        self.crowd = CrowdHistory(world, self.accounts)
        self.methods: dict[str, Callable[[list[Any], int], Any]] = {
            "getAccountInfo": self.get_account_info,
            "getMultipleAccounts": self.get_multiple_accounts,
            "getSignaturesForAddress": self.get_signatures_for_address,
            "getTransaction": self.get_transaction,
            "getSlot": self.get_slot,
            "getBlockHeight": self.get_block_height,
            "getHealth": lambda params, slot: "ok",
            "getVersion": lambda params, slot: VERSION,
            "getBalance": self.get_balance,
            "getTokenSupply": self.get_token_supply,
            "getLatestBlockhash": self.get_latest_blockhash,
            "getBlockTime": self.get_block_time,
            "getFirstAvailableBlock": lambda params, slot: self.first_slot,
            "minimumLedgerSlot": lambda params, slot: self.first_slot,
            "getGenesisHash": lambda params, slot: GENESIS_HASH,
            "getEpochInfo": self.get_epoch_info,
            "getMinimumBalanceForRentExemption": self.get_minimum_balance,
        }

    # Helpers

    def block_time(self, slot: int) -> int:
        return self.world.start + math.floor((slot - GENESIS_SLOT) / SLOTS_PER_SECOND)

    def locate(self, sig: bytes, slot: int) -> tuple[ChainPart, int] | None:
        """The part and row of a visible transaction."""
        for part in self.parts:
            row = part.find(sig)
            if row >= 0:
                return (part, row) if int(part.tx["slot"][row]) <= slot else None
        return None

    def position(self, sig: bytes, slot: int) -> tuple[int, bytes] | None:
        """``(slot, key)`` of a visible transaction, a KOL's or the crowd's (paging bounds)."""
        found = self.locate(sig, slot)
        if found is not None:
            part, row = found
            return int(part.tx["slot"][row]), sig
        crowd = self.crowd.locate(sig)
        if crowd is not None and crowd[2] <= slot:
            return crowd[2], sig
        return None

    def _context(self, slot: int) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "slot": slot}

    # Methods

    def get_slot(self, params: list[Any], slot: int) -> int:
        _check_commitment(_config(params, 0))
        return slot

    def get_block_height(self, params: list[Any], slot: int) -> int:
        _check_commitment(_config(params, 0))
        return slot - 20_000_000  # a few million skipped slots, as on mainnet

    def get_epoch_info(self, params: list[Any], slot: int) -> dict[str, Any]:
        return {
            "absoluteSlot": slot,
            "blockHeight": slot - 20_000_000,
            "epoch": slot // SLOTS_PER_EPOCH,
            "slotIndex": slot % SLOTS_PER_EPOCH,
            "slotsInEpoch": SLOTS_PER_EPOCH,
            "transactionCount": sum(int(np.count_nonzero(p.tx["slot"] <= slot)) for p in self.parts),
        }

    def get_latest_blockhash(self, params: list[Any], slot: int) -> dict[str, Any]:
        return {
            "context": self._context(slot),
            "value": {
                "blockhash": keys.blockhash(self.world.params.seed, slot),
                "lastValidBlockHeight": slot - 20_000_000 + 150,
            },
        }

    def get_block_time(self, params: list[Any], slot: int) -> int:
        if not params or not isinstance(params[0], int) or isinstance(params[0], bool) or params[0] < 0:
            raise invalid_params("Invalid params: invalid type, expected u64.")
        wanted = params[0]
        if wanted > slot:
            raise RpcError(-32004, f"Block not available for slot {wanted}")
        return self.block_time(wanted)

    def get_minimum_balance(self, params: list[Any], slot: int) -> int:
        if not params or not isinstance(params[0], int) or isinstance(params[0], bool) or params[0] < 0:
            raise invalid_params("Invalid params: invalid type, expected usize.")
        return (128 + params[0]) * 6960  # rent-exempt minimum: 2 years of 3480 lamports/byte-year

    def get_balance(self, params: list[Any], slot: int) -> dict[str, Any]:
        if not params:
            raise invalid_params("`params` should have at least 1 argument(s)")
        address = _pubkey(params[0])
        _check_commitment(_config(params, 1))
        lamports = 0
        for part in self.parts:
            value = part.balance_at(address, slot)
            if value is not None:
                lamports = value
                break
        return {"context": self._context(slot), "value": lamports}

    def get_token_supply(self, params: list[Any], slot: int) -> dict[str, Any]:
        if not params:
            raise invalid_params("`params` should have at least 1 argument(s)")
        _pubkey(params[0])
        _check_commitment(_config(params, 1))
        supply = self.supplies.get(params[0])
        if supply is None:
            raise invalid_params("Invalid param: not a Token mint")
        amount, decimals = supply
        return {"context": self._context(slot), "value": ui_amount(amount, decimals)}

    def _account_config(self, params: list[Any], index: int) -> None:
        config = _config(params, index)
        _check_commitment(config)
        encoding = config.get("encoding", "base64")  # agave's default is base58; readers here ask base64
        if encoding != "base64":
            raise invalid_params(
                f"Invalid params: the twin serves program accounts in base64 only, not {encoding!r}"
            )

    def get_account_info(self, params: list[Any], slot: int) -> dict[str, Any]:
        if not params:
            raise invalid_params("`params` should have at least 1 argument(s)")
        _pubkey(params[0])
        self._account_config(params, 1)
        return {
            "context": self._context(slot),
            "value": self.accounts.info(params[0], slot_start(self.world.start, slot)),
        }

    def get_multiple_accounts(self, params: list[Any], slot: int) -> dict[str, Any]:
        if not params or not isinstance(params[0], list):
            raise invalid_params("Invalid params: invalid type: expected a sequence of pubkeys.")
        if len(params[0]) > MAX_MULTIPLE_ACCOUNTS:
            raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        for address in params[0]:
            _pubkey(address)
        self._account_config(params, 1)
        t = slot_start(self.world.start, slot)
        return {"context": self._context(slot), "value": [self.accounts.info(a, t) for a in params[0]]}

    def get_signatures_for_address(self, params: list[Any], slot: int) -> list[dict[str, Any]]:
        if not params:
            raise invalid_params("`params` should have at least 1 argument(s)")
        address = _pubkey(params[0])
        config = _config(params, 1)
        _check_commitment(config)
        before = config.get("before")
        until = config.get("until")
        before_key = _signature(before) if before is not None else None
        until_key = _signature(until) if until is not None else None
        limit = config.get("limit", MAX_SIGNATURES_LIMIT)
        if limit is None:
            limit = MAX_SIGNATURES_LIMIT
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise invalid_params(f"Invalid params: invalid type: {_json_type(limit)}, expected usize.")
        if limit == 0 or limit > MAX_SIGNATURES_LIMIT:
            raise invalid_params(f"Invalid limit; max {MAX_SIGNATURES_LIMIT}")
        min_slot = config.get("minContextSlot")
        if isinstance(min_slot, int) and min_slot > slot:
            raise RpcError(-32016, "Minimum context slot has not been reached", {"contextSlot": slot})
        # Upper bound: the clock, or the `before` signature's (slot, signature) position.
        upper: tuple[int, bytes | None] = (slot, None)
        if before_key is not None:
            at = self.position(before_key, slot)
            if at is None:
                return []
            upper = at
        lower = self.position(until_key, slot) if until_key is not None else None
        rows: list[tuple[int, bytes, ChainPart | None, int]] = []
        for part in self.parts:
            lo, hi = part.address_range(address)
            if lo == hi:
                continue
            slots = part.addr["slot"][lo:hi]  # descending
            # Skip entries newer than the upper bound: slot > upper slot, or same slot and
            # signature ≥ before (agave drops the before's slot-mates that sort at or above it).
            start = lo + int(np.searchsorted(-slots.astype(np.int64), -upper[0], side="left"))
            if upper[1] is not None:
                while (
                    start < hi
                    and int(part.addr["slot"][start]) == upper[0]
                    and part.addr["sig"][start] >= upper[1]
                ):
                    start += 1
            # Then take up to ``limit`` entries, stopping at `until` (exclusive, same ordering).
            for i in range(start, min(start + limit, hi)):
                entry_slot = int(part.addr["slot"][i])
                entry_sig = bytes(part.addr["sig"][i])
                if lower is not None and (
                    entry_slot < lower[0] or (entry_slot == lower[0] and entry_sig <= lower[1])
                ):
                    break
                rows.append((entry_slot, entry_sig, part, int(part.addr["tx"][i])))
        # The crowd's trades on a bonding curve or PumpSwap pool, rendered from the tape.
        for entry_slot, entry_sig in self.crowd.page(params[0], upper, lower, limit):
            rows.append((entry_slot, entry_sig, None, -1))
        rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
        out = []
        for entry_slot, entry_sig, entry_part, row in rows[:limit]:
            if entry_part is None:
                out.append(
                    {
                        "blockTime": self.block_time(entry_slot),
                        "confirmationStatus": "finalized",
                        "err": None,
                        "memo": None,
                        "signature": str(Signature.from_bytes(entry_sig[:64])),
                        "slot": entry_slot,
                    }
                )
                continue
            signature = str(_sig_string(entry_part, row))
            out.append(
                {
                    "blockTime": int(entry_part.tx["block_time"][row]),
                    "confirmationStatus": "finalized",
                    "err": entry_part.errors.get(signature),
                    "memo": entry_part.memos.get(signature),
                    "signature": signature,
                    "slot": entry_slot,
                }
            )
        return out

    def get_transaction(
        self, params: list[Any], slot: int, null_hook: Callable[[str], bool] | None = None
    ) -> Any:
        """Returns raw JSON bytes (the result) or None."""
        if not params:
            raise invalid_params("`params` should have at least 1 argument(s)")
        sig = _signature(params[0])
        raw_config = params[1] if len(params) > 1 else None
        if isinstance(raw_config, str):
            config: dict[str, Any] = {"encoding": raw_config}
        else:
            config = _config(params, 1)
        _check_commitment(config)
        encoding = config.get("encoding") or "json"
        if encoding not in ENCODINGS:
            raise invalid_params(
                f"Invalid params: unknown variant `{encoding}`, expected one of `binary`, `base64`, `base58`, "
                "`json`, `jsonParsed`."
            )
        max_version = config.get("maxSupportedTransactionVersion")
        if max_version is not None and (
            not isinstance(max_version, int)
            or isinstance(max_version, bool)
            or max_version < 0
            or max_version > 255
        ):
            raise invalid_params(f"Invalid params: invalid type: {_json_type(max_version)}, expected u8.")
        found = self.locate(sig, slot)
        crowd = self.crowd.locate(sig) if found is None else None
        if found is not None:
            part, row = found
            legacy = bool(part.tx["flags"][row] & FLAG_LEGACY)
        elif crowd is not None and crowd[2] <= slot:
            legacy = False  # crowd trades are v0 transactions
        else:
            return None
        if not legacy and max_version is None:
            raise RpcError(
                -32015,
                "Transaction version (0) is not supported by the requesting client. Please try the request again "
                'with the following configuration parameter: "maxSupportedTransactionVersion": 0',
            )
        if null_hook is not None and null_hook(params[0]):
            return None
        if found is not None:
            record, tx_at = part.record(row)
        else:
            assert crowd is not None  # checked above
            result, crowd_wire = self.crowd.render(crowd[0], crowd[1])
            record, tx_at = record_of(result)
        version = b"" if max_version is None else (b',"version":"legacy"}' if legacy else b',"version":0}')
        if encoding == "json":
            return record[:-1] + version if version else record
        if encoding in ("base64", "base58", "binary"):
            wire = part.wire(row) if found is not None else crowd_wire
            if encoding == "base64":
                value = orjson.dumps([base64.b64encode(wire).decode(), "base64"])
            elif encoding == "base58":
                value = orjson.dumps([base58.b58encode(wire).decode(), "base58"])
            else:  # "binary" is the deprecated name of base58, returned as a bare string
                value = orjson.dumps(base58.b58encode(wire).decode())
            body = record[:tx_at] + value
            return body + (version if version else b"}")
        parsed = to_json_parsed(orjson.loads(record))
        if max_version is not None:
            parsed["version"] = "legacy" if legacy else 0
        return orjson.dumps(parsed)


def _sig_string(part: ChainPart, row: int) -> str:
    return str(Signature.from_bytes(bytes(part.tx["sig"][row])[:64]))


def response(
    request_id: Any, result: Any = None, error: RpcError | None = None, raw: bytes | None = None
) -> bytes:
    """One JSON-RPC response object; ``raw`` is an already-serialised result."""
    rid = orjson.dumps(request_id)
    if error is not None:
        return b'{"jsonrpc":"2.0","error":' + orjson.dumps(error.body()) + b',"id":' + rid + b"}"
    body = raw if raw is not None else orjson.dumps(result)
    return b'{"jsonrpc":"2.0","result":' + body + b',"id":' + rid + b"}"


def call(node: Node, request: Any, slot: int, null_hook: Callable[[str], bool] | None = None) -> bytes:
    """Answer one request object (already parsed)."""
    if (
        not isinstance(request, dict)
        or request.get("jsonrpc") != "2.0"
        or not isinstance(request.get("method"), str)
    ):
        request_id = request.get("id") if isinstance(request, dict) else None
        return response(request_id, error=RpcError(-32600, "Invalid request"))
    request_id = request.get("id")
    method = node.methods.get(request["method"])
    if method is None and request["method"] != "getTransaction":
        return response(request_id, error=RpcError(-32601, "Method not found"))
    params = request.get("params", [])
    if params is None:
        params = []
    if not isinstance(params, list):
        return response(
            request_id, error=invalid_params("Invalid params: invalid type: map, expected a sequence.")
        )
    try:
        if request["method"] == "getTransaction":
            raw = node.get_transaction(params, slot, null_hook)
            return response(request_id, raw=raw if raw is not None else b"null")
        assert method is not None  # checked above: only getTransaction has none
        return response(request_id, method(params, slot))
    except RpcError as error:
        return response(request_id, error=error)
