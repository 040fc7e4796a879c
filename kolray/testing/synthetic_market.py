"""A synthetic market of KOL swaps shaped like the chain twin's, for tests and benchmarks.

The chain twin (:mod:`kolray.sim`) is the real test bed; this is a fast stand-in that writes
straight into the ``swaps`` table, at any size, in bounded memory. Its shape follows the twin:
tokens launch on a pump.fun bonding curve and good ones migrate to an AMM; KOLs have a latent
skill that makes them pick better tokens (so skilled KOLs end up in the same tokens: consensus is
informative) and exit better; P(3x) of a buy depends on the KOL's skill, the token's quality and
the venue, and is kept per opening buy as ``oracle_p3x`` (written as Parquet like a twin world's
ground truth, so ``--oracle-world`` works on it). Positions have one or two buys and one to three
sells; some stay open at the end.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from kolray.db.tables import SwapRow

DAY = 86_400
SOL = 1_000_000_000
T0 = 1_700_000_000
PUMP_SUPPLY_WHOLE = 1_000_000_000  # pump.fun coins: 1e9 tokens at 6 decimals


@dataclass(frozen=True)
class MarketParams:
    kols: int = 40
    days: float = 60.0
    positions_per_kol_day: float = 4.0
    tokens_per_kol_day: float = 1.2
    seed: int = 0
    start: int = T0
    kols_per_chunk: int = 50  # generation (and insertion) unit: memory follows it

    @property
    def end(self) -> int:
        return self.start + int(self.days * DAY)


def wallet_name(k: int) -> str:
    return f"Kol{k:07d}".ljust(44, "x")


def mint_name(i: int) -> str:
    return f"Tok{i:08d}".ljust(44, "p")


@overload
def _sigmoid(x: float) -> float: ...
@overload
def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...
def _sigmoid(x: float | npt.NDArray[np.float64]) -> float | npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-x))


def market_chunks(params: MarketParams) -> Iterator[tuple[list[dict[str, Any]], dict[str, list[Any]]]]:
    """``(swaps, oracle)`` per chunk of KOLs: swap rows for the ``swaps`` table (signatures unique
    across chunks) and ``{"entry_signature": [...], "oracle_p3x": [...]}`` for their opening buys."""
    rng = np.random.default_rng(params.seed)
    n_tokens = max(int(params.kols * params.days * params.tokens_per_kol_day), 10)
    launch = np.sort(rng.uniform(params.start - 2 * DAY, params.end, n_tokens)).astype(np.int64)
    quality = rng.normal(size=n_tokens)
    # Good tokens migrate from the curve to an AMM after a while; the rest die on the curve.
    migrates = rng.random(n_tokens) < _sigmoid(quality - 0.5)
    migration = launch + np.where(migrates, rng.exponential(4 * 3600, n_tokens), np.inf).astype(np.float64)
    amm = np.where(rng.random(n_tokens) < 0.75, "pumpswap", "raydium_amm_v4")
    signature = 0
    for first in range(0, params.kols, params.kols_per_chunk):
        kols = np.arange(first, min(first + params.kols_per_chunk, params.kols))
        swaps: list[dict[str, Any]] = []
        oracle: dict[str, list[Any]] = {"entry_signature": [], "oracle_p3x": []}
        for k in kols:
            krng = np.random.default_rng([params.seed, int(k)])
            skill = krng.normal()
            rate = params.positions_per_kol_day * math.exp(krng.normal(0, 0.5))
            size_median = math.exp(krng.normal(0, 0.8))
            hold_scale = math.exp(krng.normal(8.5, 1.0))  # seconds; a day is e^11.4
            n = krng.poisson(rate * params.days)
            times = np.sort(krng.integers(params.start, params.end, n))
            # Pick among tokens launched in the last 36 hours: the skilled weigh quality more.
            lo = np.searchsorted(launch, times - 36 * 3600)
            hi = np.searchsorted(launch, times, side="right")
            has = hi > lo
            times, lo, hi = times[has], lo[has], hi[has]
            candidates = lo[:, None] + (krng.random((len(times), 6)) * (hi - lo)[:, None]).astype(np.int64)
            utility = (0.6 + 0.9 * _sigmoid(skill)) * quality[candidates] + krng.gumbel(size=candidates.shape)
            token = candidates[np.arange(len(times)), np.argmax(utility, axis=1)]
            on_curve = times < migration[token]
            age_h = (times - launch[token]) / 3600
            mcap = np.where(
                on_curve,
                28 * np.exp(0.35 * quality[token] + 0.1 * age_h**0.5 + krng.normal(0, 0.4, len(times))),
                400 * np.exp(0.5 * quality[token] + krng.normal(0, 0.5, len(times))),
            )
            p3x = _sigmoid(-3.3 + 0.7 * skill + 0.9 * quality[token] + 0.6 * on_curve)
            hit = krng.random(len(times)) < p3x
            multiple = np.where(
                hit, 3 * np.exp(krng.exponential(0.7, len(times))), np.exp(krng.normal(-0.6, 0.7, len(times)))
            )
            multiple = np.where(hit, multiple, np.minimum(multiple, 2.95))
            hold = np.maximum(hold_scale * np.exp(krng.normal(0, 1.0, len(times))), 20).astype(np.int64)
            amount = np.maximum(
                (size_median * np.exp(krng.normal(0, 0.6, len(times))) * SOL).astype(np.int64), 10_000
            )
            for i in range(len(times)):
                t = int(times[i])
                dex = "pumpfun" if on_curve[i] else str(amm[token[i]])
                price = mcap[i] / PUMP_SUPPLY_WHOLE
                m = mint_name(int(token[i]))
                wallet = wallet_name(int(k))
                # (time, side, lamports, tokens): one or two buys, then one to three sells.
                buys = [(t, int(amount[i]))]
                if krng.random() < 0.25:  # an add a little later
                    buys.append((t + int(krng.integers(30, 3600)), int(amount[i] * krng.uniform(0.2, 1.0))))
                legs = [
                    (when, "buy", lamports, int(lamports / price * 1e6 / SOL) + 1) for when, lamports in buys
                ]
                cost = sum(leg[2] for leg in legs)
                total_tokens = sum(leg[3] for leg in legs)
                exit_time = t + int(hold[i]) + 3600 * (len(legs) - 1)
                proceeds = int(cost * multiple[i])
                n_sells = int(krng.integers(1, 4))
                cuts = np.sort(krng.random(n_sells - 1))
                shares = np.diff(np.concatenate(([0.0], cuts, [1.0])))
                sold = 0
                for j, (fraction, share) in enumerate(
                    zip(np.concatenate((cuts, [1.0])), shares, strict=True)
                ):
                    tokens = total_tokens - sold if j == n_sells - 1 else int(total_tokens * share)
                    sold += tokens
                    when = max(int(t + (exit_time - t) * fraction), legs[-1][0] + 1)
                    legs.append((when, "sell", int(proceeds * share), tokens))
                for j, (when, side, lamports, tokens) in enumerate(legs):
                    if when >= params.end:
                        break  # beyond the data: the position stays open
                    if tokens <= 0:
                        continue
                    signature += 1
                    sig = f"sig{params.seed:03d}{signature:011d}"
                    if j == 0:
                        oracle["entry_signature"].append(sig)
                        oracle["oracle_p3x"].append(float(p3x[i]))
                    swaps.append(
                        {
                            "signature": sig,
                            "slot": when * 2,
                            "block_time": when,
                            "wallet": wallet,
                            "mint": m,
                            "side": side,
                            "token_amount": tokens,
                            "token_decimals": 6,
                            "sol_amount": max(lamports, 1),
                            "dex": dex,
                            "fee": 5_000,
                            "tips": 0,
                            "price_sol": price if side == "buy" else None,
                            "market_cap_sol": float(mcap[i]) if side == "buy" else None,
                        }
                    )
        yield swaps, oracle


def populate(
    engine: Any, params: MarketParams, oracle_dir: str | Path | None = None, batch: int = 20_000
) -> dict[str, int]:
    """Insert the market's swaps (chunk by chunk) and, with ``oracle_dir``, write its oracle table
    as ``<oracle_dir>/truth/entries.parquet``. Returns counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sqlalchemy import insert

    writer = None
    counts = {"swaps": 0, "entries": 0}
    if oracle_dir is not None:
        path = Path(oracle_dir) / "truth" / "entries.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        schema = pa.schema([("entry_signature", pa.string()), ("oracle_p3x", pa.float64())])
        writer = pq.ParquetWriter(path, schema)
    try:
        for swaps, oracle in market_chunks(params):
            for i in range(0, len(swaps), batch):
                with engine.begin() as conn:
                    conn.execute(insert(SwapRow), swaps[i : i + batch])
            counts["swaps"] += len(swaps)
            counts["entries"] += len(oracle["entry_signature"])
            if writer is not None and oracle["entry_signature"]:
                writer.write_table(pa.table(oracle, schema=writer.schema))
    finally:
        if writer is not None:
            writer.close()
    return counts
