"""Point-in-time context of a buy or a KOL: what was known before a time ``t``.

Pure functions over columnar position data, shared by the Ray Data build (one shard of wallets at
a time), the in-memory build and the online path (one request at a time). Whatever a row gets from
here depends only on

- positions **closed before t** (their outcome: KOL statistics, through the analyzer's
  :class:`~kolray.analyzer.KolStatsIndex`, so the numbers are the leaderboard's),
- position **entries before t** (the opening buys: sizes, times, which KOLs bought the token),
- the first swap of the token seen by kolray (at or before ``t``: the buy itself is a swap),
- the buy itself (amount, venue, market cap at entry),

never on anything at or after ``t`` — the leak property in tests/unit/test_features_leak.py checks
exactly this by rewriting the future and comparing.

The input is a *position frame* (:data:`POSITION_COLUMNS`): one row per position as the analyzer
stores it, plus the opening buy's SOL amount from ``swaps``. Positions do not record that amount
(``cost_lamports`` sums every buy of the position, later additions included, which would leak),
so it is joined from the entry swap.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from kolray.analyzer import FLAG_NON_SOL_LEG, FLAG_UNTRACKED_SELL, KolStatsIndex, Position
from kolray.analyzer.stats import segment_keys
from kolray.chain.types import LAMPORTS_PER_SOL, WSOL_MINT
from kolray.features.definitions import CONSENSUS_WINDOWS, DAY, KOL_TARGET_WINDOWS

THREE_X = 3.0

# The position frame: what every builder reads per position.
POSITION_COLUMNS: dict[str, str] = {
    "wallet": "object",
    "mint": "object",
    "seq": "int64",
    "closed": "bool",
    "entry_time": "int64",
    "exit_time": "float64",  # NaN while open
    "entry_signature": "object",
    "entry_dex": "object",
    "entry_mcap_sol": "float64",
    "cost_lamports": "int64",
    "proceeds_lamports": "int64",
    "fees_lamports": "int64",
    "hold_weighted_s": "float64",
    "non_sol_leg": "bool",
    "untracked_sell": "bool",
    "copy_multiple": "float64",  # a follower's result (kolray.analyzer.outcomes; NaN: none)
    "entry_lamports": "float64",  # the opening buy's SOL (NaN: entry swap not found)
    "entry_sol": "bool",  # the opening buy was paid in SOL (a SOL leg with lamports > 0)
    "oracle_p3x": "float64",  # the twin's probability (evaluation only; NaN elsewhere)
}


def empty_position_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in POSITION_COLUMNS.items()})


def is_sol_entry(lamports: Any, quote_mint: Any) -> bool:
    """Whether an opening buy counts as a SOL buy (wSOL as the quote is SOL)."""
    if lamports is None or (isinstance(lamports, float) and math.isnan(lamports)):
        return False
    return int(lamports) > 0 and (quote_mint is None or quote_mint == WSOL_MINT)


def _attribute(item: object, name: str) -> Any:
    return getattr(item, name, None)


def position_frame(positions: Iterable[Position], swaps: Iterable[Any]) -> pd.DataFrame:
    """A position frame from analyzer positions and the swaps they were built from (tests, tools).

    ``swaps`` need ``signature, wallet, mint, sol_amount`` and optionally ``quote_mint``
    (:class:`~kolray.chain.types.Swap` objects or mappings)."""
    by_key: dict[tuple[str, str, str], tuple[int, str | None]] = {}
    for swap in swaps:
        get: Callable[[str], Any] = swap.get if isinstance(swap, Mapping) else partial(_attribute, swap)
        by_key[(get("signature"), get("wallet"), get("mint"))] = (get("sol_amount"), get("quote_mint"))
    rows = []
    for p in positions:
        lamports, quote = by_key.get((p.entry_signature, p.wallet, p.mint), (None, None))
        rows.append(
            {
                "wallet": p.wallet,
                "mint": p.mint,
                "seq": p.seq,
                "closed": p.closed,
                "entry_time": p.entry_time,
                "exit_time": np.nan if p.exit_time is None else float(p.exit_time),
                "entry_signature": p.entry_signature,
                "entry_dex": p.entry_dex,
                "entry_mcap_sol": np.nan if p.entry_market_cap_sol is None else p.entry_market_cap_sol,
                "cost_lamports": p.cost_lamports,
                "proceeds_lamports": p.proceeds_lamports,
                "fees_lamports": p.fees_lamports,
                "hold_weighted_s": np.nan if p.hold_weighted_s is None else p.hold_weighted_s,
                "non_sol_leg": FLAG_NON_SOL_LEG in p.flags,
                "untracked_sell": FLAG_UNTRACKED_SELL in p.flags,
                "copy_multiple": np.nan if p.copy_multiple is None else p.copy_multiple,
                "entry_lamports": np.nan if lamports is None else float(lamports),
                "entry_sol": is_sol_entry(lamports, quote),
                "oracle_p3x": np.nan,
            }
        )
    return normalise_position_frame(pd.DataFrame(rows, columns=list(POSITION_COLUMNS)))


def normalise_position_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every position column in its dtype (a missing ``oracle_p3x`` is NaN)."""
    frame = frame.copy()
    if "oracle_p3x" not in frame.columns:
        frame["oracle_p3x"] = np.nan
    missing = [c for c in POSITION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"position frame lacks columns {missing}")
    for column, dtype in POSITION_COLUMNS.items():
        if dtype == "object":
            continue
        frame[column] = frame[column].astype(dtype)
    return frame[list(POSITION_COLUMNS)]


# Outcomes


Columns: TypeAlias = pd.DataFrame | Mapping[str, np.ndarray]


def _col(frame: Columns, name: str, dtype: Any) -> np.ndarray:
    return np.asarray(frame[name], dtype=dtype)


def multiples(frame: Columns) -> np.ndarray:
    """``proceeds / cost`` of closed SOL-valued positions (the analyzer's ``multiple``), NaN otherwise."""
    cost = _col(frame, "cost_lamports", np.int64)
    valued = _col(frame, "closed", bool) & ~_col(frame, "non_sol_leg", bool) & (cost > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = _col(frame, "proceeds_lamports", np.int64) / np.where(cost > 0, cost, 1)
    return np.where(valued, ratio, np.nan)


def labels_3x(frame: Columns, horizon_s: int) -> np.ndarray:
    """docs/features.md: ``closed and exit_time <= entry_time + H and multiple >= 3`` (int8)."""
    multiple = multiples(frame)
    entry = _col(frame, "entry_time", np.int64)
    exit_ = _col(frame, "exit_time", np.float64)
    with np.errstate(invalid="ignore"):
        hit = (exit_ <= entry + horizon_s) & (multiple >= THREE_X)
    return hit.astype(np.int8)


def resolve_times(frame: Columns, horizon_s: int) -> np.ndarray:
    """When each label became known: the close if it came within H, else ``entry + H``."""
    entry = _col(frame, "entry_time", np.int64)
    exit_ = _col(frame, "exit_time", np.float64)
    limit = (entry + horizon_s).astype(np.float64)
    return np.where(np.isnan(exit_), limit, np.minimum(exit_, limit)).astype(np.int64)


# Medians of every prefix


def prefix_medians(values: np.ndarray) -> np.ndarray:
    """``out[k]`` = median of ``values[:k]`` (NaN for k = 0); the even case is the mean of the two
    middle values, as :func:`statistics.median` and :func:`numpy.median` define it. Two heaps,
    O(n log n)."""
    out = np.full(len(values) + 1, np.nan)
    low: list[float] = []  # max-heap (negated): the smaller half
    high: list[float] = []  # min-heap: the larger half
    for k, value in enumerate(values.tolist(), start=1):
        if low and value > -low[0]:
            heapq.heappush(high, value)
        else:
            heapq.heappush(low, -value)
        if len(low) > len(high) + 1:
            heapq.heappush(high, -heapq.heappop(low))
        elif len(high) > len(low):
            heapq.heappush(low, -heapq.heappop(high))
        out[k] = -low[0] if k % 2 else (-low[0] + high[0]) / 2
    return out


def _prefix(values: np.ndarray) -> np.ndarray:
    return np.concatenate(([0.0], np.cumsum(values, dtype=np.float64)))


# One KOL


def positions_of(frame: Columns) -> list[Position]:
    """Analyzer positions from position-frame rows: the fields its statistics read."""
    flag_names = (FLAG_NON_SOL_LEG, FLAG_UNTRACKED_SELL)
    out = []
    for row in zip(
        np.asarray(frame["wallet"], dtype=object).tolist(),
        np.asarray(frame["mint"], dtype=object).tolist(),
        _col(frame, "seq", np.int64).tolist(),
        _col(frame, "closed", bool).tolist(),
        _col(frame, "entry_time", np.int64).tolist(),
        np.asarray(frame["entry_signature"], dtype=object).tolist(),
        np.asarray(frame["entry_dex"], dtype=object).tolist(),
        _col(frame, "exit_time", np.float64).tolist(),
        _col(frame, "cost_lamports", np.int64).tolist(),
        _col(frame, "proceeds_lamports", np.int64).tolist(),
        _col(frame, "fees_lamports", np.int64).tolist(),
        _col(frame, "hold_weighted_s", np.float64).tolist(),
        _col(frame, "non_sol_leg", bool).tolist(),
        _col(frame, "untracked_sell", bool).tolist(),
        _col(frame, "copy_multiple", np.float64).tolist(),
        strict=True,
    ):
        (
            wallet,
            mint,
            seq,
            closed,
            entry,
            signature,
            dex,
            exit_,
            cost,
            proceeds,
            fees,
            hold,
            non_sol,
            untracked,
            copy,
        ) = row
        out.append(
            Position(
                wallet=wallet,
                mint=mint,
                seq=seq,
                status="closed" if closed else "open",
                entry_time=entry,
                entry_signature=signature,
                entry_dex=dex,
                token_decimals=0,
                exit_time=None if math.isnan(exit_) else int(exit_),
                cost_lamports=cost,
                proceeds_lamports=proceeds,
                fees_lamports=fees,
                hold_weighted_s=None if math.isnan(hold) else hold,
                flags=[name for name, on in zip(flag_names, (non_sol, untracked), strict=True) if on],
                copy_multiple=None if math.isnan(copy) else copy,
            )
        )
    return out


_STAT_KEYS = (
    "trades",
    "closed",
    "scored",
    "win_rate",
    "rate_3x",
    "mean_hold_s",
    "median_multiple",
    "total_cost_sol",
    "roi",
    "consistency",
    "dh_score",
    "recent_win_rate",
    "recent_rate_3x",
    "recent_mean_multiple",
    "last_entry_time",
    "last_exit_time",
    "copy_roi",
    "farming",
)


class WalletHistory:
    """Everything about one KOL that features as of any time need, built once from all of the
    KOL's positions (later ones included: every query looks only at what precedes its time)."""

    def __init__(self, wallet: str, frame: Columns, horizon_s: int) -> None:
        wallets = np.asarray(frame["wallet"], dtype=object)
        if len(wallets) and (wallets != wallet).any():
            raise ValueError(f"WalletHistory({wallet!r}) got positions of other wallets")
        self.wallet = wallet
        self.horizon_s = horizon_s
        self.index = KolStatsIndex(positions_of(frame), wallet=wallet)
        entries = _col(frame, "entry_time", np.int64)
        self.first_entry = float(entries.min()) if len(entries) else np.nan
        # First entry per token: "held this token before" (re-entry).
        self.first_by_mint: dict[str, int] = {}
        for mint, entry in zip(
            np.asarray(frame["mint"], dtype=object).tolist(), entries.tolist(), strict=True
        ):
            if entry < self.first_by_mint.get(mint, entry + 1):
                self.first_by_mint[mint] = entry
        # Opening buys paid in SOL, in time order: sizes, times of day, labels. (Within one second
        # the order is arbitrary and harmless: queries count whole seconds, never part of one.)
        sol = np.flatnonzero(_col(frame, "entry_sol", bool))
        sol = sol[np.argsort(entries[sol], kind="stable")]
        subset = {
            name: np.asarray(frame[name])[sol]
            for name in (
                "entry_time",
                "exit_time",
                "closed",
                "non_sol_leg",
                "cost_lamports",
                "proceeds_lamports",
            )
        }
        self.sol_times = entries[sol]
        amounts = _col(frame, "entry_lamports", np.float64)[sol] / LAMPORTS_PER_SOL
        self.sol_amounts = amounts
        self.median_prefix = prefix_medians(amounts)
        self.log_amount_prefix = _prefix(np.log(amounts)) if len(amounts) else np.zeros(1)
        angle = 2 * math.pi * (self.sol_times % DAY) / DAY
        self.hour_sin_prefix = _prefix(np.sin(angle))
        self.hour_cos_prefix = _prefix(np.cos(angle))
        self.label_prefix = _prefix(labels_3x(subset, horizon_s).astype(np.float64))
        oracle = _col(frame, "oracle_p3x", np.float64)[sol]
        self.oracle_prefix = _prefix(np.nan_to_num(oracle, nan=0.0))
        self.oracle_known_prefix = _prefix((~np.isnan(oracle)).astype(np.float64))

    # Statistics as of many times

    def stats(self, times: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """The analyzer's statistics as of each time, windows ``all``, ``7d``, ``30d``."""
        return _stats(self.index, np.asarray(times, dtype=np.int64), None)

    def _count_before(self, times: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.sol_times, times, side="left")

    def token_context(self, times: np.ndarray, mints: Sequence[str | None]) -> dict[str, Any]:
        """KOL-side context of buys at ``times`` in ``mints`` (None: unknown token)."""
        times = np.asarray(times, dtype=np.int64)
        return HistoryStack([self]).token_context(np.zeros(len(times), dtype=np.int64), times, mints)

    def kol_context(self, times: np.ndarray) -> dict[str, Any]:
        """Context of the KOL as of ``times`` (the KOL dataset's days, or now online)."""
        times = np.asarray(times, dtype=np.int64)
        stats = self.stats(times)
        all_ = stats["stats_all"]
        hi = self._count_before(times)
        lo = self._count_before(times - KOL_TARGET_WINDOWS["30d"])
        n = (hi - lo).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_log_amount = (self.log_amount_prefix[hi] - self.log_amount_prefix[lo]) / n
            sin = (self.hour_sin_prefix[hi] - self.hour_sin_prefix[lo]) / n
            cos = (self.hour_cos_prefix[hi] - self.hour_cos_prefix[lo]) / n
            norm = np.hypot(sin, cos)
            # The circular mean: the direction of the mean vector; none when the hours cancel out.
            ok = (n > 0) & (norm > 1e-9)
            hour_sin = np.where(ok, sin / np.where(ok, norm, 1.0), np.nan)
            hour_cos = np.where(ok, cos / np.where(ok, norm, 1.0), np.nan)
        past = {}
        for name, span in KOL_TARGET_WINDOWS.items():
            # Entries in [t - W - H, t - H): their labels were all resolved strictly before t.
            b = self._count_before(times - self.horizon_s)
            a = self._count_before(times - self.horizon_s - span)
            count = (b - a).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                past[f"label_rate_past_{name}"] = np.where(
                    count > 0, (self.label_prefix[b] - self.label_prefix[a]) / np.maximum(count, 1), np.nan
                )
        return {
            **stats,
            "as_of": times,
            "mean_log_amount_30d": np.where(n > 0, mean_log_amount, np.nan),
            "hour_sin_30d": hour_sin,
            "hour_cos_30d": hour_cos,
            "last_event": np.fmax(all_["last_entry_time"], all_["last_exit_time"]),
            "first_entry": np.where(
                np.isnan(self.first_entry) | (self.first_entry >= times), np.nan, self.first_entry
            ),
            **past,
        }

    def targets(self, days: np.ndarray) -> dict[str, np.ndarray]:
        """The KOL dataset's targets for rows at ``days``: the label_3x share of the SOL buys opened
        in ``[day, day + W)``, with how many there were and the twin's mean ``oracle_p3x``."""
        days = np.asarray(days, dtype=np.int64)
        lo = self._count_before(days)
        out: dict[str, np.ndarray] = {}
        for name, span in KOL_TARGET_WINDOWS.items():
            hi = self._count_before(days + span)
            count = hi - lo
            known = self.oracle_known_prefix[hi] - self.oracle_known_prefix[lo]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"rate_3x_next_{name}"] = np.where(
                    count > 0, (self.label_prefix[hi] - self.label_prefix[lo]) / np.maximum(count, 1), np.nan
                )
                # Only when the twin knows every buy of the window: a partial mean is not the rate.
                out[f"oracle_rate_{name}"] = np.where(
                    (count > 0) & (known == count),
                    (self.oracle_prefix[hi] - self.oracle_prefix[lo]) / np.maximum(count, 1),
                    np.nan,
                )
            out[f"n_next_{name}"] = count.astype(np.int64)
        return out


def _stats(index: KolStatsIndex, times: np.ndarray, segments: np.ndarray | None) -> dict[str, Any]:
    tables = index.tables(times, ("all", "7d", "30d"), segments)
    return {
        f"stats_{window}": {k: np.asarray(table[k], dtype=np.float64) for k in _STAT_KEYS}
        for window, table in tables.items()
    }


class HistoryStack(Mapping[str, WalletHistory]):
    """Several KOLs' histories side by side (a mapping wallet → :class:`WalletHistory`) whose
    :meth:`token_context` answers buys of all of them in one vectorised pass, with the values
    each history gives alone (its arrays are concatenated, never recomputed: the online row still
    equals the dataset's bit for bit). One pass instead of one per KOL is most of what a
    thousand-buy request of thirty KOLs costs. Building one costs O(n log n) in their positions
    (:meth:`KolStatsIndex.stack`); a serving cache keeps it while its histories stay current."""

    def __init__(self, histories: Sequence[WalletHistory]) -> None:
        if not histories:
            raise ValueError("a HistoryStack needs at least one history")
        self.histories = tuple(histories)
        self.segment_of = {h.wallet: i for i, h in enumerate(self.histories)}
        if len(self.segment_of) != len(self.histories):
            raise ValueError("a HistoryStack holds each wallet once")
        self.index = KolStatsIndex.stack([h.index for h in self.histories])
        if len(self.histories) == 1:  # a history's own token_context: no copies
            self._sol_keys = segment_keys(self.histories[0].sol_times, 0)
            self._median_prefix = self.histories[0].median_prefix
        else:
            self._sol_keys = np.concatenate(
                [segment_keys(h.sol_times, i) for i, h in enumerate(self.histories)]
            )
            self._median_prefix = np.concatenate([h.median_prefix for h in self.histories])

    @classmethod
    def of(
        cls, wallets: Iterable[str], histories: Mapping[str, WalletHistory], horizon_s: int
    ) -> HistoryStack:
        """The stack of ``wallets`` (each once, in first-seen order); a wallet ``histories`` lacks
        gets an empty history (a KOL without positions)."""
        return cls(
            [
                histories.get(w) or WalletHistory(w, empty_position_frame(), horizon_s)
                for w in dict.fromkeys(wallets)
            ]
        )

    def __getitem__(self, wallet: str) -> WalletHistory:
        return self.histories[self.segment_of[wallet]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.segment_of)

    def __len__(self) -> int:
        return len(self.histories)

    def segments(self, wallets: Sequence[str]) -> np.ndarray | None:
        """The position of each wallet in the stack, or None if the stack lacks one of them."""
        try:
            return np.fromiter((self.segment_of[w] for w in wallets), dtype=np.int64, count=len(wallets))
        except KeyError:
            return None

    def token_context(
        self, segments: np.ndarray, times: np.ndarray, mints: Sequence[str | None]
    ) -> dict[str, Any]:
        """KOL-side context of buys at ``times`` in ``mints`` (None: unknown token), each by the
        KOL at ``segments`` (its position in the stack)."""
        times = np.asarray(times, dtype=np.int64)
        segments = np.asarray(segments, dtype=np.int64)
        stats = _stats(self.index, times, segments)
        all_ = stats["stats_all"]
        # A run of prefix medians has one slot more than the run of times before it.
        before = np.searchsorted(self._sol_keys, segment_keys(times, segments), side="left") + segments
        firsts = [h.first_by_mint for h in self.histories]
        reentry = np.array(
            [
                np.nan if mint is None else float(firsts[k].get(mint, t) < t)
                for mint, t, k in zip(mints, times.tolist(), segments.tolist(), strict=True)
            ],
            dtype=np.float64,
        )
        return {
            **stats,
            "past_median_amount": self._median_prefix[before],
            "reentry": reentry,
            "last_event": np.fmax(all_["last_entry_time"], all_["last_exit_time"]),
        }


def wallet_histories(frame: pd.DataFrame, horizon_s: int) -> dict[str, WalletHistory]:
    """A :class:`WalletHistory` per wallet in a position frame."""
    if not len(frame):
        return {}
    columns = {name: frame[name].to_numpy() for name in POSITION_COLUMNS}
    wallets = np.asarray(columns["wallet"], dtype=object)
    order = np.argsort(wallets, kind="stable")
    sorted_wallets = wallets[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_wallets[1:] != sorted_wallets[:-1])))
    ends = np.append(starts[1:], len(order))
    out = {}
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        rows = order[start:end]
        out[sorted_wallets[start]] = WalletHistory(
            sorted_wallets[start], {name: values[rows] for name, values in columns.items()}, horizon_s
        )
    return out


# One token: which other KOLs bought it, and when

_TIME_BITS = 34  # unix seconds < 2**34 (year 2514); mint codes get the high bits of an int64
_WALLET_BITS = 31


@dataclass(frozen=True)
class MintEntries:
    """Every position entry (any KOL, any seq) in a set of tokens, arranged for "who bought before t"
    queries in O(log n) each, vectorised over many queries.

    ``first_seen`` maps a mint to the time of its first swap kolray saw (any wallet, any side)."""

    mint_codes: dict[str, int]
    wallet_codes: dict[str, int]
    first_key: np.ndarray  # (mint << bits) | first entry time of each (mint, wallet), sorted
    first_wallet: np.ndarray  # wallet code of each of those
    entry_key: np.ndarray  # (mint << bits) | entry time of every entry, sorted
    entry_wallet: np.ndarray
    prev_other: np.ndarray  # index of the latest earlier entry of the same mint by another wallet, or -1
    pair_key: np.ndarray  # (mint << wallet bits) | wallet of each (mint, wallet), sorted
    pair_first: np.ndarray  # its first entry time
    first_seen: Mapping[str, float]

    @classmethod
    def build(
        cls,
        mint: Sequence[str] | np.ndarray,
        wallet: Sequence[str] | np.ndarray,
        entry_time: Sequence[int] | np.ndarray,
        first_seen: Mapping[str, float] | None = None,
    ) -> MintEntries:
        mint_index, mint_names = pd.factorize(pd.Series(mint, dtype=object), sort=True)
        wallet_index, wallet_names = pd.factorize(pd.Series(wallet, dtype=object), sort=True)
        times = np.asarray(entry_time, dtype=np.int64)
        if len(times) and (times.min() < 0 or times.max() >= 1 << _TIME_BITS):
            raise ValueError("entry times must be unix seconds in [0, 2**34)")
        if len(mint_names) >= 1 << (62 - _TIME_BITS) or len(wallet_names) >= 1 << _WALLET_BITS:
            raise ValueError("too many mints or wallets for one MintEntries")
        key = (mint_index.astype(np.int64) << _TIME_BITS) | times
        order = np.lexsort((wallet_index, key))
        key, wallets = key[order], wallet_index[order].astype(np.int64)
        # Runs of consecutive entries by the same wallet in the same mint: the entry before a run is
        # the latest one by someone else.
        mints_sorted = key >> _TIME_BITS
        new_run = np.ones(len(key), dtype=bool)
        new_run[1:] = (mints_sorted[1:] != mints_sorted[:-1]) | (wallets[1:] != wallets[:-1])
        run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(key)), 0)) if len(key) else key
        before = run_start - 1
        same_mint = (before >= 0) & (mints_sorted[np.maximum(before, 0)] == mints_sorted)
        prev_other = np.where(same_mint, before, -1)
        # First entry of each (mint, wallet).
        pair = pd.DataFrame({"m": mint_index, "w": wallet_index, "t": times})
        firsts = pair.groupby(["m", "w"], sort=False)["t"].min().reset_index()
        first_key = (firsts["m"].to_numpy(np.int64) << _TIME_BITS) | firsts["t"].to_numpy(np.int64)
        first_order = np.argsort(first_key, kind="stable")
        pair_key = (firsts["m"].to_numpy(np.int64) << _WALLET_BITS) | firsts["w"].to_numpy(np.int64)
        pair_order = np.argsort(pair_key)
        return cls(
            mint_codes={m: i for i, m in enumerate(mint_names)},
            wallet_codes={w: i for i, w in enumerate(wallet_names)},
            first_key=first_key[first_order],
            first_wallet=firsts["w"].to_numpy(np.int64)[first_order],
            entry_key=key,
            entry_wallet=wallets,
            prev_other=prev_other,
            pair_key=pair_key[pair_order],
            pair_first=firsts["t"].to_numpy(np.float64)[pair_order],
            first_seen=dict(first_seen or {}),
        )

    def _own_first(self, qm: np.ndarray, qw: np.ndarray) -> np.ndarray:
        """Each querying wallet's own first entry in the token (NaN if none)."""
        out = np.full(len(qm), np.nan)
        if not len(self.pair_key):
            return out
        key = (np.maximum(qm, 0) << _WALLET_BITS) | np.maximum(qw, 0)
        idx = np.minimum(np.searchsorted(self.pair_key, key), len(self.pair_key) - 1)
        hit = (qm >= 0) & (qw >= 0) & (self.pair_key[idx] == key)
        out[hit] = self.pair_first[idx[hit]]
        return out

    def context(
        self, mints: Sequence[str | None], wallets: Sequence[str], times: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Token-side context of buys (``mints[i]`` bought by ``wallets[i]`` at ``times[i]``)."""
        times = np.asarray(times, dtype=np.int64)
        n = len(times)
        known_mint = np.array([m is not None for m in mints], dtype=bool)
        qm = np.array([self.mint_codes.get(m, -1) if m is not None else -1 for m in mints], dtype=np.int64)
        qw = np.array([self.wallet_codes.get(w, -1) for w in wallets], dtype=np.int64)
        in_table = qm >= 0
        base = np.where(in_table, qm, 0) << _TIME_BITS

        def firsts_in(lo_time: np.ndarray) -> np.ndarray:
            """Other KOLs whose first entry in the token is in [lo_time, t)."""
            a = np.searchsorted(self.first_key, base | np.maximum(lo_time, 0), side="left")
            b = np.searchsorted(self.first_key, base | times, side="left")
            return np.where(in_table, b - a, 0).astype(np.float64)

        own = self._own_first(qm, qw)
        with np.errstate(invalid="ignore"):
            own_before = own < times
        out: dict[str, np.ndarray] = {}
        out["n_kols_before"] = firsts_in(np.zeros(n, dtype=np.int64)) - own_before
        for name, span in CONSENSUS_WINDOWS.items():
            with np.errstate(invalid="ignore"):
                own_in = own_before & (own >= times - span)
            out[f"n_kols_{name}"] = firsts_in(times - span) - own_in
        # The latest entry before t by another KOL.
        idx = np.searchsorted(self.entry_key, base | times, side="left") - 1
        valid = in_table & (idx >= 0)
        safe = np.maximum(idx, 0)
        valid &= (self.entry_key[safe] >> _TIME_BITS) == qm if len(self.entry_key) else False
        mine = valid & (self.entry_wallet[safe] == qw) if len(self.entry_key) else valid
        chosen = np.where(mine, self.prev_other[safe] if len(self.prev_other) else -1, idx)
        ok = valid & (chosen >= 0)
        prev = np.full(n, np.nan)
        if ok.any():
            prev[ok] = (self.entry_key[chosen[ok]] & ((1 << _TIME_BITS) - 1)).astype(np.float64)
        out["prev_kol_entry"] = prev
        # First swap seen: the buy itself is one, so never later than t.
        seen = np.array(
            [self.first_seen.get(m, np.nan) if m is not None else np.nan for m in mints], dtype=np.float64
        )
        out["first_seen"] = np.where(known_mint, np.fmin(seen, times.astype(np.float64)), np.nan)
        for name in ("n_kols_before", *(f"n_kols_{w}" for w in CONSENSUS_WINDOWS)):
            out[name] = np.where(known_mint, out[name], np.nan)
        return out


# Rows


def token_context(
    *,
    wallets: Sequence[str],
    mints: Sequence[str | None],
    times: np.ndarray,
    amounts_sol: np.ndarray,
    dex: Sequence[str | None],
    mcap_sol: np.ndarray,
    histories: Mapping[str, WalletHistory],
    tokens: MintEntries,
    horizon_s: int,
) -> dict[str, Any]:
    """The full context of buys, in query order: KOL side from ``histories`` (a wallet without one
    has no history: an empty record; a :class:`HistoryStack` holding every wallet is used as it
    is), token side from ``tokens``."""
    times = np.asarray(times, dtype=np.int64)
    wallets = list(wallets)
    stack = histories if isinstance(histories, HistoryStack) else None
    segments = stack.segments(wallets) if stack is not None else None
    if stack is None or segments is None:
        # No wallets: the keys and dtypes still come from the one definition.
        stack = HistoryStack.of(wallets or [""], histories, horizon_s)
        segments = stack.segments(wallets)
        assert segments is not None
    return {
        **stack.token_context(segments, times, mints),
        **tokens.context(mints, wallets, times),
        "entry_time": times,
        "amount_sol": np.asarray(amounts_sol, dtype=np.float64),
        "dex": list(dex),
        "mcap_sol": np.asarray(mcap_sol, dtype=np.float64),
    }
