"""Copy strategies: which signals to copy, decided from what was known at each signal's time.

- ``copy_all``: every signal.
- ``top_kols[:K]``: the KOL ranks in the top ``K`` (default 10) by total realised PnL over
  positions closed before the buy (window ``all``; only KOLs with at least ``min_scored`` such
  positions rank). Computed with the analyzer's point-in-time statistics
  (:class:`kolray.analyzer.KolStatsIndex`), so later closes cannot leak in.
- ``model[:THRESHOLD]``: the token model's P(3x) of the buy (its point-in-time dataset row) is at
  least the threshold (default: the model's own, chosen on validation).
- ``oracle[:THRESHOLD]``: the twin's ``oracle_p3x`` (P(3x) given the latent traits at entry; not
  observable) is at least the threshold (default: the model strategy's; without one, the top 5% of
  the oracle's values on the earlier splits): the ceiling a model could reach with perfect
  knowledge of the traits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kolray.analyzer import KolStatsIndex, Position

StrategyKind = Literal["copy_all", "top_kols", "model", "oracle"]
KINDS: tuple[str, ...] = ("copy_all", "top_kols", "model", "oracle")
DEFAULT_STRATEGIES: tuple[str, ...] = ("copy_all", "top_kols", "model", "oracle")
DEFAULT_TOP_K = 10
DEFAULT_MIN_SCORED = 5


class StrategySpec(BaseModel):
    """A strategy as the command line names it: ``copy_all``, ``top_kols:10``, ``model:0.3``,
    ``oracle:0.3``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: StrategyKind
    threshold: float | None = Field(default=None, ge=0, le=1, description="model / oracle: minimum P(3x).")
    top_k: int | None = Field(default=None, ge=1, description="top_kols: how many KOLs to follow.")

    @classmethod
    def parse(cls, text: str) -> StrategySpec:
        name, _, argument = text.strip().partition(":")
        name = name.strip().lower().replace("-", "_")
        if name not in KINDS:
            raise ValueError(
                f"unknown strategy {text!r}: one of {', '.join(KINDS)} (e.g. model:0.3, top_kols:10)"
            )
        argument = argument.strip()
        if not argument:
            return cls(kind=name)  # type: ignore[arg-type]
        if name == "copy_all":
            raise ValueError("copy_all takes no argument")
        if name == "top_kols":
            try:
                k = int(argument)
            except ValueError:
                raise ValueError(f"top_kols:{argument}: K must be a whole number") from None
            if k < 1:
                raise ValueError(f"top_kols:{argument}: K must be at least 1")
            return cls(kind="top_kols", top_k=k)
        try:
            threshold = float(argument)
        except ValueError:
            raise ValueError(f"{name}:{argument}: the threshold must be a number in [0, 1]") from None
        if not (0 <= threshold <= 1) or math.isnan(threshold):
            raise ValueError(f"{name}:{argument}: the threshold must be in [0, 1]")
        return cls(kind=name, threshold=threshold)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        if self.kind == "top_kols":
            return f"top_kols:{self.top_k or DEFAULT_TOP_K}"
        if self.kind in ("model", "oracle") and self.threshold is not None:
            return f"{self.kind}:{self.threshold:g}"
        return self.kind


def copy_all(n: int) -> np.ndarray:
    return np.ones(n, dtype=bool)


def kol_pnl_table(
    positions: Iterable[tuple[str, list[Position]]], times: np.ndarray, window: str = "all"
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per wallet (rows) and time (columns): total realised PnL (SOL) and scored positions over
    positions closed before each time."""
    wallets: list[str] = []
    pnl_rows: list[np.ndarray] = []
    scored_rows: list[np.ndarray] = []
    for wallet, wallet_positions in positions:
        table = KolStatsIndex(wallet_positions, wallet=wallet).table(times, window)
        wallets.append(wallet)
        pnl_rows.append(np.asarray(table["total_pnl_sol"], dtype=np.float64))
        scored_rows.append(np.asarray(table["scored"], dtype=np.int64))
    if not wallets:
        return [], np.zeros((0, len(times))), np.zeros((0, len(times)), dtype=np.int64)
    return wallets, np.vstack(pnl_rows), np.vstack(scored_rows)


def top_kols(
    signal_wallets: Sequence[str],
    wallets: Sequence[str],
    pnl: np.ndarray,
    scored: np.ndarray,
    top_k: int = DEFAULT_TOP_K,
    min_scored: int = DEFAULT_MIN_SCORED,
) -> tuple[np.ndarray, np.ndarray]:
    """Decisions and each signal's KOL rank (1 = best; NaN when unranked) from
    :func:`kol_pnl_table` evaluated at the signals' times (column ``i`` is signal ``i``)."""
    n = len(signal_wallets)
    decisions = np.zeros(n, dtype=bool)
    ranks = np.full(n, np.nan)
    if not len(wallets):
        return decisions, ranks
    row_of = {wallet: i for i, wallet in enumerate(wallets)}
    eligible = scored >= min_scored
    masked = np.where(eligible, pnl, -np.inf)
    for i, wallet in enumerate(signal_wallets):
        row = row_of.get(wallet)
        if row is None or not eligible[row, i]:
            continue
        mine = masked[row, i]
        # Rank = 1 + KOLs strictly ahead; ties share the better rank.
        rank = 1 + int(np.sum(masked[:, i] > mine))
        ranks[i] = rank
        decisions[i] = rank <= top_k
    return decisions, ranks


def at_least(values: np.ndarray, threshold: float) -> np.ndarray:
    """``values >= threshold``, with missing values (NaN) never chosen."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(values), False, values >= threshold)
