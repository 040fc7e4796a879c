"""The on-disk layout of a twin world, and fast read access to its chain for the RPC server.

```
world.json                  parameters, summary, time and slot range, parts
kols.parquet                KOL wallets and their latent traits
tokens.parquet              tokens and their latent dynamics
trades.parquet              ground-truth swaps (the ``Swap`` fields) of the tracked wallets
positions.parquet           ground-truth positions (docs/analysis.md) with ``oracle_p3x``
kol_daily.parquet           per KOL and day: oracle 3x rate of the next 7 / 30 days' positions
chain/part-NNNNN/           one part per community of KOLs
    txs.bin                 zlib-compressed getTransaction results (json encoding, no "version")
    wire.bin                serialized transactions (for the base64 encoding)
    tx.npy                  per transaction, sorted by signature bytes: slot, time, offsets, flags
    addr.npy                per (address, transaction), sorted as getSignaturesForAddress returns
    balances.npy            KOL wallets' lamports after each of their transactions
    extra.json              errors and memos of the transactions that have them; token supplies
```

Index files are ``.npy`` so the server memory-maps them: a world of any size opens instantly and
costs memory only for the pages it reads.
"""

from __future__ import annotations

import json
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from solders.pubkey import Pubkey
from solders.signature import Signature

FORMAT_VERSION = 1

TX_DTYPE = np.dtype(
    [
        ("sig", "S65"),
        ("slot", "<u8"),
        ("block_time", "<i8"),
        ("offset", "<u8"),
        ("length", "<u4"),
        ("tx_at", "<u4"),  # where the "transaction" value starts inside the decompressed record
        ("wire_offset", "<u8"),
        ("wire_length", "<u4"),
        ("flags", "u1"),  # bit 0: legacy, bit 1: failed, bit 2: has memo
    ]
)
ADDR_DTYPE = np.dtype([("addr", "S33"), ("slot", "<u8"), ("sig", "S65"), ("tx", "<u4")])
BALANCE_DTYPE = np.dtype([("addr", "S33"), ("slot", "<u8"), ("lamports", "<u8")])
FLAG_LEGACY, FLAG_FAILED, FLAG_MEMO = 1, 2, 4


# Keys are the raw bytes plus a 0x01 sentinel: numpy's fixed-width bytes drop trailing zero bytes,
# and a sentinel keeps every key intact without changing the byte order of keys.


def sig_bytes(signature: str) -> bytes:
    """Index key of a signature (raises ``ValueError`` for a malformed one)."""
    return bytes(Signature.from_string(signature)) + b"\x01"


def addr_bytes(address: str) -> bytes:
    """Index key of an address (raises ``ValueError`` for a malformed one)."""
    return bytes(Pubkey.from_string(address)) + b"\x01"


class PartWriter:
    """Writes one part of the chain (one community): records streamed, indexes at :meth:`close`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._txs = open(directory / "txs.bin", "wb")  # noqa: SIM115 - closed in close()
        self._wire = open(directory / "wire.bin", "wb")  # noqa: SIM115
        self._offset = 0
        self._wire_offset = 0
        self._rows: list[tuple] = []
        # (address id, transaction number) per appearance, as compact arrays: a community has
        # millions of them and tuples of bytes would cost ~200 bytes each.
        self._address_ids: dict[str, int] = {}
        self._addr_id = array("I")
        self._addr_tx = array("I")
        self._balances: list[tuple[bytes, int, int]] = []
        self.errors: dict[str, Any] = {}
        self.memos: dict[str, str] = {}

    def add(
        self,
        signature: str,
        slot: int,
        block_time: int,
        result: dict[str, Any],
        wire: bytes,
        legacy: bool,
        err: Any,
        memo: str | None,
        addresses: list[str],
    ) -> None:
        transaction = result.pop("transaction")
        head = orjson.dumps(result)  # blockTime, meta, slot
        body = head[:-1] + b',"transaction":'
        record = body + orjson.dumps(transaction) + b"}"
        result["transaction"] = transaction
        packed = zlib.compress(record, 6)
        self._txs.write(packed)
        self._wire.write(wire)
        flags = (
            (FLAG_LEGACY if legacy else 0)
            | (FLAG_FAILED if err is not None else 0)
            | (FLAG_MEMO if memo else 0)
        )
        sig = sig_bytes(signature)
        self._rows.append(
            (sig, slot, block_time, self._offset, len(packed), len(body), self._wire_offset, len(wire), flags)
        )
        self._offset += len(packed)
        self._wire_offset += len(wire)
        if err is not None:
            self.errors[signature] = err
        if memo:
            self.memos[signature] = memo
        number = len(self._rows) - 1
        for address in dict.fromkeys(addresses):
            self._addr_id.append(self._address_ids.setdefault(address, len(self._address_ids)))
            self._addr_tx.append(number)

    def balance(self, address: str, slot: int, lamports: int) -> None:
        self._balances.append((addr_bytes(address), slot, lamports))

    def close(self, supplies: dict[str, tuple[int, int]]) -> int:
        self._txs.close()
        self._wire.close()
        tx = np.array(self._rows, dtype=TX_DTYPE)
        self._rows = []
        order = np.argsort(tx["sig"], kind="stable")
        row_of = np.empty(len(order), dtype=np.int64)
        row_of[order] = np.arange(len(order))  # insertion number → row in the sorted table
        numbers = np.frombuffer(self._addr_tx, dtype=np.uint32).astype(np.int64)
        keys = np.array([addr_bytes(a) for a in self._address_ids], dtype="S33")
        addr = np.empty(len(numbers), dtype=ADDR_DTYPE)
        addr["addr"] = keys[np.frombuffer(self._addr_id, dtype=np.uint32)] if len(keys) else b""
        addr["slot"] = tx["slot"][numbers]
        addr["sig"] = tx["sig"][numbers]
        addr["tx"] = row_of[numbers]
        tx = tx[order]
        np.save(self.directory / "tx.npy", tx)
        # getSignaturesForAddress order: newest slot first, then signature bytes descending
        # (agave sorts a slot's signatures in reverse byte order).
        order = np.lexsort((addr["sig"], addr["slot"]))[::-1]
        addr = addr[order]
        addr = addr[np.argsort(addr["addr"], kind="stable")]
        np.save(self.directory / "addr.npy", addr)
        bal = np.array(self._balances, dtype=BALANCE_DTYPE)
        bal = bal[np.lexsort((np.arange(len(bal)), bal["slot"], bal["addr"]))]
        np.save(self.directory / "balances.npy", bal)
        extra = {
            "errors": self.errors,
            "memos": self.memos,
            "supplies": {mint: list(v) for mint, v in supplies.items()},
        }
        (self.directory / "extra.json").write_bytes(orjson.dumps(extra, option=orjson.OPT_SORT_KEYS))
        return len(tx)


def _map_bytes(path: Path) -> npt.NDArray[np.uint8]:
    """The file's bytes, memory-mapped (an empty file cannot be mapped: an empty array then)."""
    if not path.stat().st_size:
        return np.zeros(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")


@dataclass
class ChainPart:
    """Read access to one part of a world's chain (memory-mapped)."""

    directory: Path

    def __post_init__(self) -> None:
        d = self.directory
        self.tx = np.load(d / "tx.npy", mmap_mode="r")
        self.addr = np.load(d / "addr.npy", mmap_mode="r")
        self.balances = np.load(d / "balances.npy", mmap_mode="r")
        self._blob = _map_bytes(d / "txs.bin")
        self._wire = _map_bytes(d / "wire.bin")
        extra = orjson.loads((d / "extra.json").read_bytes())
        self.errors: dict[str, Any] = extra["errors"]
        self.memos: dict[str, str] = extra["memos"]
        self.supplies: dict[str, list[int]] = extra["supplies"]
        self._sigs = self.tx["sig"]
        self._addrs = self.addr["addr"]
        self._bal_addrs = self.balances["addr"]

    def find(self, sig: bytes) -> int:
        """Row of a signature in ``tx``, or -1."""
        i = int(np.searchsorted(self._sigs, sig))
        if i < len(self._sigs) and self._sigs[i] == sig:
            return i
        return -1

    def record(self, row: int) -> tuple[bytes, int]:
        """The decompressed json-encoding result (without "version") and where its tx value starts."""
        entry = self.tx[row]
        start = int(entry["offset"])
        data = zlib.decompress(self._blob[start : start + int(entry["length"])].tobytes())
        return data, int(entry["tx_at"])

    def wire(self, row: int) -> bytes:
        entry = self.tx[row]
        start = int(entry["wire_offset"])
        return self._wire[start : start + int(entry["wire_length"])].tobytes()

    def address_range(self, address: bytes) -> tuple[int, int]:
        lo = int(np.searchsorted(self._addrs, address, side="left"))
        hi = int(np.searchsorted(self._addrs, address, side="right"))
        return lo, hi

    def balance_at(self, address: bytes, slot: int) -> int | None:
        lo = int(np.searchsorted(self._bal_addrs, address, side="left"))
        hi = int(np.searchsorted(self._bal_addrs, address, side="right"))
        if lo == hi:
            return None
        slots = self.balances["slot"][lo:hi]
        i = int(np.searchsorted(slots, slot, side="right")) - 1
        return (
            int(self.balances["lamports"][lo + max(i, 0)]) if i >= 0 else int(self.balances["lamports"][lo])
        )


def read_world_json(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "world.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a twin world (no world.json); create one with `kolray sim generate`"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{directory}: world format {meta.get('format')} is not supported (expected {FORMAT_VERSION})"
        )
    return meta
