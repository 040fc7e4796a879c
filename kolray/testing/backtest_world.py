"""A small, fixed world whose backtest can be worked out by hand: for tests and UI screenshots.

Three KOLs with a history before the test period (A wins, B loses, C has too few positions to
rank) and four buys in it (times from ``T``; prices in SOL per whole token, 6 decimals):

- ``A`` buys ``M1`` at T (1 SOL at 1e-6); ``B`` buys ``M1`` at T+10 s (0.6 SOL at 1.2e-6); ``A``
  sells half at T+1 h (3e-6) and the rest at T+2 h (2e-6, closing); ``B`` sells at T+3 h (5e-7).
- ``C`` buys ``M2`` at T+5 h (2 SOL at 2e-6) and still holds at the end of the data (T+10 h).
- ``A`` buys ``M3`` at T+6 h (1 SOL at 1e-6); ``D`` (no position: an untracked sell) sells some
  at T+6 h+300 s (4.5e-7); ``A`` sells everything at T+6 h+600 s (4e-7).

:func:`populate` writes the swaps and runs the analyzer; :func:`write_token_dataset` writes a token
dataset whose test split is those four buys (``oracle_p3x`` 0.6, 0.1, 0.2, 0.05) and whose train
and validation splits are the history (``oracle_p3x`` 0.5 for A's buys, 0.05 for B's, 0.3 for C's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from kolray.analyzer import analyze
from kolray.datasets import write_dataset
from kolray.db.tables import Kol, PositionRow, SwapRow
from kolray.features import TOKEN_FEATURES

HOUR = 3_600
DAY = 86_400
SOL = 1_000_000_000
T = 1_717_000_000  # the first test buy
END = T + 10 * HOUR  # the dataset's cutoff: the end of the data
DECIMALS = 6


def key(*parts: object) -> str:
    """A valid, canonical base58 public key (deterministic)."""
    from solders.keypair import Keypair

    digest = hashlib.sha256(repr(("backtest-sample", *parts)).encode()).digest()
    return str(Keypair.from_seed(digest).pubkey())


@dataclass(frozen=True)
class HandWorld:
    kols: dict[str, str]  # A, B, C, D → wallet
    mints: dict[str, str]  # M1, M2, M3 → mint
    start: int
    end: int
    signatures: dict[str, str]  # s1..s4: the test buys' signatures


def _swap(
    name: str, wallet: str, mint: str, side: str, t: int, whole_tokens: float, price: float
) -> dict[str, Any]:
    raw = round(whole_tokens * 10**DECIMALS)
    lamports = round(whole_tokens * price * SOL)
    return {
        "signature": hashlib.sha256(name.encode()).hexdigest()[:64],
        "slot": t * 2,
        "block_time": t,
        "wallet": wallet,
        "mint": mint,
        "side": side,
        "token_amount": raw,
        "token_decimals": DECIMALS,
        "sol_amount": lamports,
        "dex": "pumpfun",
        "fee": 5_000,
        "tips": 0,
        "rent": 0,
        "price_sol": None,  # revealed by the SOL leg, as the analyzer defines it
    }


def hand_swaps() -> tuple[list[dict[str, Any]], HandWorld]:
    kols = {k: key("kol", k) for k in "ABCD"}
    mints = {m: key("mint", m) for m in ("M1", "M2", "M3")}
    rows: list[dict[str, Any]] = []
    # History: A's five wins, B's five losses, C's two wins (too few to rank with min_scored=5).
    for i in range(5):
        for kol, multiple in (("A", 2.0), ("B", 0.5)):
            mint = key("history", kol, i)
            t = T - 5 * DAY + i * 6 * HOUR + (0 if kol == "A" else 600)
            rows.append(_swap(f"h-{kol}-{i}-buy", kols[kol], mint, "buy", t, 1e6, 1e-6))
            rows.append(_swap(f"h-{kol}-{i}-sell", kols[kol], mint, "sell", t + HOUR, 1e6, multiple * 1e-6))
    for i in range(2):
        mint = key("history", "C", i)
        t = T - 2 * DAY + i * HOUR
        rows.append(_swap(f"h-C-{i}-buy", kols["C"], mint, "buy", t, 1e6, 1e-6))
        rows.append(_swap(f"h-C-{i}-sell", kols["C"], mint, "sell", t + 1_800, 1e6, 3e-6))
    # The test period.
    test = [
        ("s1", "A", "M1", "buy", T, 1e6, 1e-6),
        ("s2", "B", "M1", "buy", T + 10, 5e5, 1.2e-6),
        ("a1", "A", "M1", "sell", T + HOUR, 5e5, 3e-6),
        ("a2", "A", "M1", "sell", T + 2 * HOUR, 5e5, 2e-6),
        ("b1", "B", "M1", "sell", T + 3 * HOUR, 5e5, 5e-7),
        ("s3", "C", "M2", "buy", T + 5 * HOUR, 1e6, 2e-6),
        ("s4", "A", "M3", "buy", T + 6 * HOUR, 1e6, 1e-6),
        ("d1", "D", "M3", "sell", T + 6 * HOUR + 300, 1e5, 4.5e-7),
        ("a3", "A", "M3", "sell", T + 6 * HOUR + 600, 1e6, 4e-7),
    ]
    signatures = {}
    for name, kol, mint, side, t, tokens, price in test:
        row = _swap(name, kols[kol], mints[mint], side, t, tokens, price)
        rows.append(row)
        signatures[name] = row["signature"]
    world = HandWorld(
        kols=kols,
        mints=mints,
        start=T,
        end=END,
        signatures={k: v for k, v in signatures.items() if k.startswith("s")},
    )
    return rows, world


def populate(engine: Engine) -> HandWorld:
    """Insert the KOLs and swaps and run the analyzer (full)."""

    rows, world = hand_swaps()
    with engine.begin() as conn:
        conn.execute(
            insert(Kol),
            [{"wallet": w, "name": f"kol-{k}", "links": [], "active": True} for k, w in world.kols.items()],
        )
        conn.execute(insert(SwapRow), rows)
    analyze(engine, full=True)
    return world


ORACLE = {"s1": 0.6, "s2": 0.1, "s3": 0.2, "s4": 0.05}
HISTORY_ORACLE = {"A": 0.5, "B": 0.05, "C": 0.3}  # the history's buys (train and validation rows)


def write_token_dataset(engine: Engine, world: HandWorld, storage_uri: str) -> str:
    """A token dataset over the stored positions: history in train (before T − 2 days) and
    validation, the four test buys in test; returns its version."""
    import pandas as pd
    from sqlalchemy import select

    with engine.connect() as conn:
        positions = conn.execute(
            select(
                PositionRow.wallet,
                PositionRow.mint,
                PositionRow.entry_time,
                PositionRow.entry_signature,
                PositionRow.multiple,
            ).order_by(PositionRow.entry_time)
        ).all()
    oracle_of = {world.signatures[name]: value for name, value in ORACLE.items()}
    history_oracle = {world.kols[k]: value for k, value in HISTORY_ORACLE.items()}
    frame = pd.DataFrame(positions, columns=["wallet", "mint", "entry_time", "entry_signature", "multiple"])
    frame["entry_time"] = frame["entry_time"].astype(np.int64)
    rng = np.random.default_rng(0)
    for column in TOKEN_FEATURES:
        frame[column] = rng.normal(size=len(frame)).astype(np.float32)
    frame["multiple"] = frame["multiple"].astype(np.float64)
    frame["label_3x"] = (frame["multiple"].fillna(0) >= 3).astype(np.int8)
    frame["oracle_p3x"] = (
        frame["entry_signature"].map(oracle_of).fillna(frame["wallet"].map(history_oracle)).astype(np.float64)
    )
    frame = frame[
        [
            "wallet",
            "mint",
            "entry_time",
            "entry_signature",
            *TOKEN_FEATURES,
            "label_3x",
            "multiple",
            "oracle_p3x",
        ]
    ]
    val_start = T - 2 * DAY
    t = frame["entry_time"]
    splits = {
        "train": frame[t < val_start - HOUR].reset_index(drop=True),
        "val": frame[(t >= val_start) & (t < T - HOUR)].reset_index(drop=True),
        "test": frame[t >= T].reset_index(drop=True),
    }
    manifest = write_dataset(
        "token",
        splits,
        feature_columns=list(TOKEN_FEATURES),
        label_columns=["label_3x"],
        id_columns=["wallet", "mint", "entry_time", "entry_signature"],
        eval_only_columns=["multiple", "oracle_p3x"],
        time_column="entry_time",
        horizon_s=HOUR,
        embargo_s=HOUR,
        source={
            "sample": "backtest-hand",
            "cutoff": world.end,
            "split_plan": {"val_start": val_start, "test_start": T, "embargo_s": HOUR},
        },
        storage_uri=storage_uri,
    )
    return manifest.version
