"""The tracked wallets: validation, adding, importing (CSV/JSON), listing."""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select
from sqlalchemy.engine import Engine

from kolray.db.engine import session_scope
from kolray.db.tables import Kol


class InvalidWallet(ValueError):
    pass


class KolFileError(ValueError):
    """A KOL file that cannot be imported; nothing from it was written."""


def validate_wallet(wallet: str) -> str:
    """Return ``wallet`` if it is a canonical base58 32-byte public key, else raise :class:`InvalidWallet`."""
    text = wallet.strip() if isinstance(wallet, str) else ""
    if not text:
        raise InvalidWallet("wallet address is empty")
    return _canonical_wallet(text)


# A request names the same few KOLs again and again (a 1000-item batch, thirty wallets): each is
# decoded once. Only valid keys are remembered (a refusal raises, and lru_cache keeps no result).
@functools.lru_cache(maxsize=65_536)
def _canonical_wallet(text: str) -> str:
    from solders.pubkey import Pubkey

    try:
        key = Pubkey.from_string(text)
    except ValueError as error:
        reason = "not base58" if "Base58" in str(error) else "not 32 bytes"
        raise InvalidWallet(f"invalid wallet address {text!r}: {reason}") from None
    if str(key) != text:
        raise InvalidWallet(f"invalid wallet address {text!r}: not canonical base58")
    return text


class KolIn(BaseModel):
    """A KOL as given by a user (CLI or import file)."""

    wallet: str
    name: str | None = Field(default=None, max_length=120)
    links: list[str] = Field(default_factory=list)

    @field_validator("wallet")
    @classmethod
    def _wallet(cls, value: str) -> str:
        return validate_wallet(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        return value or None

    @field_validator("links", mode="before")
    @classmethod
    def _links(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        return value or []


class KolOut(BaseModel):
    wallet: str
    name: str | None
    links: list[str]
    added_at: int
    active: bool


def upsert_kols(engine: Engine | str | None, kols: Iterable[KolIn]) -> tuple[int, int]:
    """Add new KOLs and update the names/links of known ones, in one transaction. Returns (added, updated)."""
    items = list(kols)
    added = updated = 0
    with session_scope(engine) as session:
        existing = {
            k.wallet: k for k in session.scalars(select(Kol).where(Kol.wallet.in_([i.wallet for i in items])))
        }
        for item in items:
            row = existing.get(item.wallet)
            if row is None:
                row = Kol(wallet=item.wallet, name=item.name, links=item.links, active=True)
                session.add(row)
                existing[item.wallet] = row
                added += 1
            else:
                changed = False
                if item.name and item.name != row.name:
                    row.name, changed = item.name, True
                if item.links and item.links != row.links:
                    row.links, changed = item.links, True
                if not row.active:
                    row.active, changed = True, True
                updated += changed
    return added, updated


def set_active(engine: Engine | str | None, wallet: str, active: bool) -> bool:
    """Pause or resume tracking of a wallet; False if it is not known."""
    wallet = validate_wallet(wallet)
    with session_scope(engine) as session:
        row = session.scalar(select(Kol).where(Kol.wallet == wallet))
        if row is None:
            return False
        row.active = active
        return True


def list_kols(engine: Engine | str | None, active_only: bool = False) -> list[KolOut]:
    with session_scope(engine) as session:
        query = select(Kol).order_by(Kol.added_at, Kol.id)
        if active_only:
            query = query.where(Kol.active.is_(True))
        return [
            KolOut(
                wallet=k.wallet, name=k.name, links=list(k.links or []), added_at=k.added_at, active=k.active
            )
            for k in session.scalars(query)
        ]


def parse_kol_file(path: Path) -> list[KolIn]:
    """Read KOLs from CSV (header with ``wallet``, optional ``name``, ``links``) or JSON (a list of
    objects or of wallet strings, or ``{"kols": [...]}``). Every row is validated before anything
    is written; the error names the row."""
    if not path.is_file():
        raise KolFileError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    rows: list[object]
    if suffix == ".json" or (suffix not in (".csv", ".tsv") and text.lstrip().startswith(("[", "{"))):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise KolFileError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
        if isinstance(data, dict):
            data = data.get("kols", data.get("wallets"))
        if not isinstance(data, list):
            raise KolFileError(f'{path}: expected a JSON list of KOLs or {{"kols": [...]}}')
        rows = data
        where = "item"
    else:
        dialect = "excel-tab" if suffix == ".tsv" else "excel"
        reader = csv.DictReader(io.StringIO(text), dialect=dialect)
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "wallet" not in fields:
            raise KolFileError(f"{path}: CSV needs a header row with a 'wallet' column")
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
        where = "row"
    out: list[KolIn] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        if isinstance(row, str):
            row = {"wallet": row}
        if not isinstance(row, dict) or "wallet" not in row:
            raise KolFileError(f"{path}: {where} {number}: needs a 'wallet'")
        try:
            item = KolIn.model_validate({k: row[k] for k in ("wallet", "name", "links") if k in row})
        except ValueError as error:
            message = error.errors()[0]["msg"] if hasattr(error, "errors") else str(error)
            message = message.removeprefix("Value error, ")
            raise KolFileError(f"{path}: {where} {number}: {message}") from None
        if item.wallet not in seen:
            seen.add(item.wallet)
            out.append(item)
    if not out:
        raise KolFileError(f"{path}: no KOLs in file")
    return out
