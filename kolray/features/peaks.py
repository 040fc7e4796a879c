"""``peak_3x``: the follower's label, from chain data only.

A follower who copies a KOL's buy can sell whenever the price allows, so what matters to them is
whether the token *traded* at three times the entry price within the horizon, not whether the KOL
happened to sell there (``label_3x``). The prices kolray has are those of every stored swap (any
tracked wallet, buy or sell) of the mint and, where the market stage watched it, the token's market
tape (:mod:`kolray.market`, read from its curve or pool between the swaps):

    peak_3x = max(price_sol of the mint's swaps and tape points with entry_time < time <= entry_time + H)
              >= 3 * price_sol of the opening buy

``price_sol`` is the pool's price after the trade (pump.fun and PumpSwap events), else the trade's
own SOL per token. Only SOL-quoted swaps count. A peak that no tracked wallet traded at is missed:
the label is a lower bound of the true one (the twin's ``peak_3x`` measures how often it misses).
Point in time: a row exists only once its horizon has elapsed (:func:`kolray.features.rows.usable_token_mask`),
so the whole window is in the data when the label is made; it resolves at ``entry_time + H``.
A buy whose own price is unknown cannot be labelled and gets 0, counted in :func:`peak_summary`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import text

from kolray.analyzer.outcomes import PRICED_SWAP_SQL, TAPE_PRICE_SQL, PricePaths
from kolray.features import oracle as oracle_module
from kolray.features.context import THREE_X
from kolray.features.source import WalletShard, read_engine

PEAK_LABEL = "peak_3x"


@dataclass(frozen=True)
class MintPrices:
    """The mints' price paths (:class:`kolray.analyzer.outcomes.PricePaths`, the analyzer's own)
    and the price of each swap by signature (an entry's price)."""

    paths: PricePaths
    by_swap: dict[tuple[str, str, str], float]  # (signature, wallet, mint) → price

    @classmethod
    def build(
        cls,
        mints: Sequence[str],
        times: Sequence[int],
        prices: Sequence[float],
        signatures: Sequence[str],
        wallets: Sequence[str],
        slots: Sequence[int | None] | None = None,
    ) -> MintPrices:
        price_values = np.asarray(prices, dtype=np.float64)
        paths, kept = PricePaths.from_columns(mints, times, price_values, slots)
        by_swap = {
            (signatures[i], wallets[i], mints[i]): float(price_values[i])
            for i in kept.tolist()
            if signatures[i]  # tape points have no signature: they price the window, never an entry
        }
        return cls(paths, by_swap)


# Both sources of the price path (kolray.analyzer.outcomes): priced swaps and the market tape.
_TAPE_PRICES = f"SELECT t.mint, t.time, t.price_sol, '', '', t.slot FROM market_tape t WHERE {TAPE_PRICE_SQL}"
_SWAP_PRICES = "SELECT s.mint, s.block_time, s.price_sol, s.signature, s.wallet, s.slot FROM swaps s"


def _prices_from(rows: Sequence[Sequence[object]]) -> MintPrices:
    return MintPrices.build(
        [str(r[0]) for r in rows],
        [int(r[1]) for r in rows],  # type: ignore[call-overload]  # block_time: an integer column
        [float(r[2]) for r in rows],  # type: ignore[arg-type]  # price_sol: a float column
        [str(r[3]) for r in rows],
        [str(r[4]) for r in rows],
        [None if r[5] is None else int(r[5]) for r in rows],  # type: ignore[call-overload]  # slot
    )


def shard_prices(url: str, shard: WalletShard, watermark: int) -> MintPrices:
    """Prices of every stored swap (any wallet) in the mints the shard's wallets hold positions in."""
    touched = "SELECT p.mint FROM positions p WHERE p.wallet >= :lo AND p.wallet <= :hi"
    sql = (
        f"{_SWAP_PRICES} WHERE s.mint IN ({touched}) AND s.id <= :w AND {PRICED_SWAP_SQL} "
        f"UNION ALL {_TAPE_PRICES} AND t.mint IN ({touched})"
    )
    with read_engine(url).connect() as conn:
        rows = conn.execute(
            text(sql), {"lo": shard.first_wallet, "hi": shard.last_wallet, "w": watermark}
        ).all()
    return _prices_from(rows)


def read_all_prices(url: str, watermark: int) -> MintPrices:
    """Prices of every stored swap (small databases, tests)."""
    sql = f"{_SWAP_PRICES} WHERE s.id <= :w AND {PRICED_SWAP_SQL} UNION ALL {_TAPE_PRICES}"
    with read_engine(url).connect() as conn:
        rows = conn.execute(text(sql), {"w": watermark}).all()
    return _prices_from(rows)


def entry_prices(rows: pd.DataFrame, prices: MintPrices) -> np.ndarray:
    """The opening buy's own price per row (NaN when kolray has none)."""
    return np.array(
        [
            prices.by_swap.get((str(s), str(w), str(m)), np.nan)
            for s, w, m in zip(rows["entry_signature"], rows["wallet"], rows["mint"], strict=True)
        ],
        dtype=np.float64,
    )


def peak_multiples(rows: pd.DataFrame, prices: MintPrices, horizon_s: int) -> np.ndarray:
    """Highest stored price of the mint in ``(entry_time, entry_time + H]`` over the entry price
    (NaN when the entry price is unknown; 0 when no swap followed within the window)."""
    entry = entry_prices(rows, prices)
    times = rows["entry_time"].to_numpy(dtype=np.int64)
    out = np.full(len(rows), np.nan)
    for i, (mint, t, p0) in enumerate(
        zip(rows["mint"].tolist(), times.tolist(), entry.tolist(), strict=True)
    ):
        if not np.isfinite(p0):
            continue
        peak = prices.paths.window_peak(str(mint), t, t + horizon_s)
        out[i] = 0.0 if peak is None else peak[0] / p0
    return out


def peak_labels(rows: pd.DataFrame, prices: MintPrices, horizon_s: int) -> np.ndarray:
    """``peak_3x`` per row (int8): the module docstring's rule; 0 where the entry price is unknown."""
    multiple = peak_multiples(rows, prices, horizon_s)
    with np.errstate(invalid="ignore"):
        return (multiple >= THREE_X).astype(np.int8)


def peak_summary(labels: np.ndarray, truth: np.ndarray, unpriced: int = 0) -> dict[str, float | int]:
    """How the chain-data label agrees with the twin's ``peak_3x`` (rows where the twin knows it)."""
    labels = np.asarray(labels, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    known = np.isfinite(truth)
    ours, theirs = labels[known] > 0, truth[known] > 0
    return {
        "rows": int(known.sum()),
        "agreement": float((ours == theirs).mean()) if known.any() else float("nan"),
        "positives_chain": int(ours.sum()),
        "positives_twin": int(theirs.sum()),
        "missed": int((theirs & ~ours).sum()),  # a peak no stored swap traded at
        "extra": int((ours & ~theirs).sum()),  # a stored price above the twin's reference path
        "unpriced_entries": int(unpriced),
    }


def with_peak_columns(
    rows: pd.DataFrame, prices: MintPrices, horizon_s: int, oracle_world: str | None = None
) -> pd.DataFrame:
    """Token rows (:func:`kolray.features.rows.token_rows`) with ``peak_3x`` and, from a twin world,
    its ``oracle_p_peak3x`` and ``twin_peak_3x`` (evaluation only; NaN without a world).

    The rows keep ``label_3x``'s resolution time, so the splits stay those of the KOL's own label:
    ``peak_3x`` is known only at ``entry_time + H``, and a learner that trains on it purges the rows
    whose window runs into the next split (:func:`kolray.learn.train.token_arrays`); purging here
    would leave a 30-day world without a validation split for either label."""
    out = rows.copy()
    out[PEAK_LABEL] = peak_labels(out, prices, horizon_s)
    signatures = out["entry_signature"].to_numpy(dtype=object)
    for column, source in (("oracle_p_peak3x", "oracle_p_peak3x"), ("twin_peak_3x", PEAK_LABEL)):
        out[column] = (
            oracle_module.lookup(oracle_world, signatures, source)
            if oracle_world
            else np.full(len(out), np.nan)
        )
    return out
