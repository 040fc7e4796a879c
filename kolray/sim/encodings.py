"""The ``jsonParsed`` and ``base64`` encodings of a stored ``json``-encoding result.

The twin stores each transaction once, in ``json`` encoding. ``jsonParsed`` is derived the way the
RPC node derives it: account keys become objects (``pubkey``, ``signer``, ``writable``, ``source``:
``transaction`` or ``lookupTable``, lookup-table keys included), instructions of the System, SPL
Token, Associated Token Account and Memo programs are decoded into ``parsed`` objects (others keep
``accounts`` as addresses and ``data``), and ``meta.loadedAddresses`` is left out, as in the mainnet
``jsonParsed`` fixtures. ``base64`` replaces the transaction by ``[<serialized transaction>,
"base64"]`` and keeps the ``json`` meta.
"""

from __future__ import annotations

import struct
from typing import Any

import base58
from solders.pubkey import Pubkey

from kolray.sim.params import ATA_PROGRAM, MEMO_PROGRAM, SYSTEM_PROGRAM, TOKEN_PROGRAM
from kolray.sim.txbuild import ui_amount

_EXTENSIONS = {7: "immutableOwner"}


def _key(data: bytes) -> str:
    return str(Pubkey.from_bytes(data))


def _system(data: bytes, accounts: list[str]) -> dict[str, Any] | None:
    if len(data) < 4:
        return None
    (kind,) = struct.unpack_from("<I", data)
    if kind == 2 and len(data) >= 12 and len(accounts) >= 2:
        (lamports,) = struct.unpack_from("<Q", data, 4)
        return {
            "info": {"destination": accounts[1], "lamports": lamports, "source": accounts[0]},
            "type": "transfer",
        }
    if kind == 0 and len(data) >= 52 and len(accounts) >= 2:
        lamports, space = struct.unpack_from("<QQ", data, 4)
        return {
            "info": {
                "lamports": lamports,
                "newAccount": accounts[1],
                "owner": _key(data[20:52]),
                "source": accounts[0],
                "space": space,
            },
            "type": "createAccount",
        }
    return None


def _token(data: bytes, accounts: list[str]) -> dict[str, Any] | None:
    if not data:
        return None
    kind = data[0]
    if kind == 3 and len(data) >= 9 and len(accounts) >= 3:
        (amount,) = struct.unpack_from("<Q", data, 1)
        return {
            "info": {
                "amount": str(amount),
                "authority": accounts[2],
                "destination": accounts[1],
                "source": accounts[0],
            },
            "type": "transfer",
        }
    if kind == 12 and len(data) >= 10 and len(accounts) >= 4:
        (amount,) = struct.unpack_from("<Q", data, 1)
        return {
            "info": {
                "authority": accounts[3],
                "destination": accounts[2],
                "mint": accounts[1],
                "source": accounts[0],
                "tokenAmount": ui_amount(amount, data[9]),
            },
            "type": "transferChecked",
        }
    if kind == 9 and len(accounts) >= 3:
        return {
            "info": {"account": accounts[0], "destination": accounts[1], "owner": accounts[2]},
            "type": "closeAccount",
        }
    if kind == 17 and accounts:
        return {"info": {"account": accounts[0]}, "type": "syncNative"}
    if kind == 18 and len(data) >= 33 and len(accounts) >= 2:
        return {
            "info": {"account": accounts[0], "mint": accounts[1], "owner": _key(data[1:33])},
            "type": "initializeAccount3",
        }
    if kind == 22 and accounts:
        return {"info": {"account": accounts[0]}, "type": "initializeImmutableOwner"}
    if kind == 21 and accounts:
        extensions = [
            _EXTENSIONS.get(v, str(v))
            for (v,) in struct.iter_unpack("<H", data[1 : 1 + (len(data) - 1) // 2 * 2])
        ]
        return {"info": {"extensionTypes": extensions, "mint": accounts[0]}, "type": "getAccountDataSize"}
    if kind == 20 and len(data) >= 34 and accounts:
        info = {"decimals": data[1], "mint": accounts[0], "mintAuthority": _key(data[2:34])}
        return {"info": info, "type": "initializeMint2"}
    if kind == 7 and len(data) >= 9 and len(accounts) >= 3:
        (amount,) = struct.unpack_from("<Q", data, 1)
        return {
            "info": {
                "account": accounts[1],
                "amount": str(amount),
                "mint": accounts[0],
                "mintAuthority": accounts[2],
            },
            "type": "mintTo",
        }
    return None


def _ata(data: bytes, accounts: list[str]) -> dict[str, Any] | None:
    if len(accounts) < 6 or data not in (b"", b"\x00", b"\x01"):
        return None
    info = {
        "account": accounts[1],
        "mint": accounts[3],
        "source": accounts[0],
        "systemProgram": accounts[4],
        "tokenProgram": accounts[5],
        "wallet": accounts[2],
    }
    return {"info": info, "type": "createIdempotent" if data == b"\x01" else "create"}


_PARSERS = {
    SYSTEM_PROGRAM: ("system", _system),
    TOKEN_PROGRAM: ("spl-token", _token),
    ATA_PROGRAM: ("spl-associated-token-account", _ata),
}


def _parse_instruction(ix: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    program = keys[ix["programIdIndex"]]
    accounts = [keys[i] for i in ix["accounts"]]
    data_b58 = ix["data"]
    if program == MEMO_PROGRAM:
        try:
            text = base58.b58decode(data_b58).decode()
        except (ValueError, UnicodeDecodeError):
            text = None
        if text is not None:
            return {
                "parsed": text,
                "program": "spl-memo",
                "programId": program,
                "stackHeight": ix["stackHeight"],
            }
    parser = _PARSERS.get(program)
    if parser is not None:
        parsed = parser[1](base58.b58decode(data_b58), accounts)
        if parsed is not None:
            return {
                "parsed": parsed,
                "program": parser[0],
                "programId": program,
                "stackHeight": ix["stackHeight"],
            }
    return {"accounts": accounts, "data": data_b58, "programId": program, "stackHeight": ix["stackHeight"]}


def to_json_parsed(result: dict[str, Any]) -> dict[str, Any]:
    """``jsonParsed`` from a ``json``-encoding result (the input is not modified)."""
    tx = result["transaction"]
    message = tx["message"]
    meta = result["meta"]
    static = message["accountKeys"]
    header = message["header"]
    loaded = meta.get("loadedAddresses") or {"writable": [], "readonly": []}
    keys = static + loaded["writable"] + loaded["readonly"]
    n_signed = header["numRequiredSignatures"]
    writable_signed = n_signed - header["numReadonlySignedAccounts"]
    writable_unsigned_end = len(static) - header["numReadonlyUnsignedAccounts"]
    account_keys = []
    for i, key in enumerate(static):
        signer = i < n_signed
        writable = i < writable_signed if signer else i < writable_unsigned_end
        account_keys.append({"pubkey": key, "signer": signer, "source": "transaction", "writable": writable})
    for key in loaded["writable"]:
        account_keys.append({"pubkey": key, "signer": False, "source": "lookupTable", "writable": True})
    for key in loaded["readonly"]:
        account_keys.append({"pubkey": key, "signer": False, "source": "lookupTable", "writable": False})
    parsed_message: dict[str, Any] = {"accountKeys": account_keys}
    if "addressTableLookups" in message:
        parsed_message["addressTableLookups"] = message["addressTableLookups"]
    parsed_message["instructions"] = [_parse_instruction(ix, keys) for ix in message["instructions"]]
    parsed_message["recentBlockhash"] = message["recentBlockhash"]
    parsed_meta = {k: v for k, v in meta.items() if k != "loadedAddresses"}
    parsed_meta["innerInstructions"] = [
        {
            "index": group["index"],
            "instructions": [_parse_instruction(ix, keys) for ix in group["instructions"]],
        }
        for group in meta["innerInstructions"]
    ]
    out = {k: v for k, v in result.items() if k != "transaction" and k != "meta"}
    out["meta"] = parsed_meta
    out["transaction"] = {"message": parsed_message, "signatures": tx["signatures"]}
    return dict(sorted(out.items()))
