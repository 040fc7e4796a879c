"""From storage to simulation inputs: the test period's signals, the price tapes, and the data's end.

Signals are the rows of a token dataset's split (``test`` by default): one per KOL opening buy
whose outcome was known by the dataset's cutoff, with its point-in-time features, label and (on
the twin) ``oracle_p3x``. The KOL's sells of each position and the tapes come from the database
the dataset was built from: the ``positions`` table (which sell closed the position), the
``swaps`` of the signals' tokens (the **trades** tape: every tracked wallet's trades reveal
prices) and the ``market_tape`` the market stage recorded (the **market** tape: each token's own
curve or pool, gaps included). Reads use the feature pipeline's read-only engine, so a backtest
never blocks the tracker.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine, Row

from kolray.analyzer.positions import SWAP_FIELDS, swap_price_sol
from kolray.backtest.engine import KolSell, PriceTape, Signal
from kolray.datasets import LoadedDataset
from kolray.db.tables import PositionRow, SwapRow
from kolray.market.store import read_tape

CHUNK = 500  # mints per IN (...) query
TapeName = Literal["market", "trades"]
TAPE_NAMES: tuple[TapeName, ...] = ("market", "trades")


class BacktestError(ValueError):
    """A backtest cannot run on these inputs; the message says why and what to do."""


@dataclass
class SignalSet:
    """A split's signals with their dataset rows (features, labels, oracle) aligned by index."""

    dataset_version: str
    signals: list[Signal]
    rows: pd.DataFrame  # the dataset rows, in the order of ``signals``
    tape: PriceTape  # the trades tape
    start: int  # the first signal
    end: int  # the end of the data: nothing at or after it is used
    dropped: dict[str, int] = field(default_factory=dict)  # why rows were left out, with counts
    past_oracle: np.ndarray = field(default_factory=lambda: np.zeros(0))  # oracle_p3x of earlier splits


def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[list[str]]:
    for index in range(0, len(items), size):
        yield list(items[index : index + size])


def data_end(dataset: LoadedDataset, engine: Engine) -> int:
    """The dataset's cutoff (what it was built as of); for a dataset without one, one second after
    the newest swap in the database."""
    cutoff = dataset.manifest.source.get("cutoff")
    if isinstance(cutoff, int | float) and cutoff > 0:
        return int(cutoff)
    from sqlalchemy import func

    with engine.connect() as conn:
        newest = conn.scalar(select(func.max(SwapRow.block_time)))
    if newest is None:
        raise BacktestError("the swaps table is empty: nothing to replay")
    return int(newest) + 1


def load_signals(
    engine: Engine, dataset: LoadedDataset, split: str = "test", end: int | None = None
) -> SignalSet:
    """The signals of ``split`` with the KOL's sells and the tokens' observed prices up to ``end``
    (default :func:`data_end`)."""
    frame = dataset.split(split)
    if not len(frame):
        raise BacktestError(f"dataset token/{dataset.version} has no {split} rows to replay")
    missing = [c for c in ("wallet", "mint", "entry_time", "entry_signature") if c not in frame.columns]
    if missing:
        raise BacktestError(
            f"dataset {dataset.name}/{dataset.version} lacks columns {missing}: not a token dataset"
        )
    end = data_end(dataset, engine) if end is None else int(end)
    frame = frame[frame["entry_time"] < end].sort_values(["entry_time", "entry_signature"], kind="stable")
    frame = frame.reset_index(drop=True)
    start = int(frame["entry_time"].min())
    mints = sorted(frame["mint"].unique().tolist())

    # The stored positions behind the rows: which sell closed each one.
    position_columns = (
        PositionRow.wallet,
        PositionRow.mint,
        PositionRow.entry_signature,
        PositionRow.status,
        PositionRow.exit_time,
        PositionRow.exit_signature,
    )
    positions: dict[tuple[str, str, str], tuple] = {}
    swaps: list[Row[Any]] = []
    swap_columns = [getattr(SwapRow, name) for name in SWAP_FIELDS]
    with engine.connect() as conn:
        for chunk in _chunks(mints):
            for row in conn.execute(
                select(*position_columns).where(PositionRow.mint.in_(bindparam("m", expanding=True))),
                {"m": chunk},
            ):
                positions[(row.wallet, row.mint, row.entry_signature)] = tuple(row)
            swaps.extend(
                conn.execute(
                    select(*swap_columns).where(
                        SwapRow.mint.in_(bindparam("m", expanding=True)),
                        SwapRow.block_time.is_not(None),
                        SwapRow.block_time >= start,
                        SwapRow.block_time < end,
                    ),
                    {"m": chunk},
                ).all()
            )
    if not positions:
        raise BacktestError(
            f"none of the {len(frame)} {split} rows of dataset token/{dataset.version} has a stored position: "
            "was the dataset built from another database? (check KOLRAY_DATABASE_URL, run `kolray analyze`)"
        )

    # Prices: every swap that reveals one (the analyzer's definition), in chain order per mint.
    observations = []
    legs: dict[tuple[str, str], list[tuple[tuple[int, int, str], str, int, int]]] = {}
    for swap in swaps:
        key = (int(swap.block_time), -1 if swap.slot is None else int(swap.slot), swap.signature)
        price = swap_price_sol(swap)
        if price is not None and price > 0 and np.isfinite(price):
            observations.append((swap.mint, key, price))
        legs.setdefault((swap.wallet, swap.mint), []).append(
            (key, swap.side, int(swap.token_amount), int(swap.sol_amount))
        )
    tape = PriceTape.from_observations(observations)
    for pair_legs in legs.values():
        pair_legs.sort(key=lambda leg: leg[0])

    signals: list[Signal] = []
    keep: list[int] = []
    dropped = {"no_position": 0, "no_entry_swap": 0}
    for index, row in enumerate(frame.itertuples(index=False)):
        position = positions.get((row.wallet, row.mint, row.entry_signature))
        if position is None:
            dropped["no_position"] += 1
            continue
        _, _, _, status, exit_time, exit_signature = position
        pair = legs.get((row.wallet, row.mint), [])
        first = next((i for i, leg in enumerate(pair) if leg[0][2] == row.entry_signature), None)
        if first is None:
            dropped["no_entry_swap"] += 1
            continue
        closes_here = status == "closed" and exit_time is not None and exit_time < end
        sells, closed = _kol_sells(pair[first:], exit_signature if closes_here else None)
        label = getattr(row, "label_3x", None)
        multiple = getattr(row, "multiple", None)
        signals.append(
            Signal(
                wallet=row.wallet,
                mint=row.mint,
                time=int(row.entry_time),
                signature=row.entry_signature,
                sells=sells,
                closed=closed,
                amount_sol=pair[first][3] / 1e9 if pair[first][3] else None,
                label_3x=None if label is None or pd.isna(label) else int(label),
                kol_multiple=None if multiple is None or pd.isna(multiple) else float(multiple),
            )
        )
        keep.append(index)
    if not signals:
        raise BacktestError(
            f"no {split} row of dataset token/{dataset.version} matches a stored position and its opening swap"
        )
    earlier = [dataset.split(s) for s in ("train", "val") if s != split]
    past_oracle = np.concatenate(
        [f["oracle_p3x"].to_numpy(dtype=np.float64) for f in earlier if "oracle_p3x" in f.columns]
        or [np.zeros(0)]
    )
    return SignalSet(
        dataset_version=dataset.version,
        past_oracle=past_oracle,
        signals=signals,
        rows=frame.iloc[keep].reset_index(drop=True),
        tape=tape,
        start=start,
        end=end,
        dropped={k: v for k, v in dropped.items() if v},
    )


def _kol_sells(
    legs: Sequence[tuple[tuple[int, int, str], str, int, int]], exit_signature: str | None
) -> tuple[tuple[KolSell, ...], bool]:
    """The KOL's sells of a position from its opening buy on: each as the share of what the KOL
    held that it sold. Ends at the closing sell (``exit_signature``) when the position closed
    before the end of the data, else at the data's end."""
    held = 0
    sells: list[KolSell] = []
    for (time, _, signature), side, tokens, _lamports in legs:
        if side == "buy":
            held += tokens
        elif held > 0:
            sold = min(tokens, held)
            sells.append(KolSell(time=time, fraction=sold / held, signature=signature))
            held -= sold
        if exit_signature is not None and signature == exit_signature:
            return tuple(sells), True
    # Still open at the end of the data (legs stop there; no later position of the pair can start
    # while this one is open).
    return tuple(sells), False


@dataclass(frozen=True)
class TapeCoverage:
    """How much of the signals' tokens a tape prices before the end of the data."""

    tape: TapeName
    tokens: int  # the signals' tokens
    tokens_priced: int  # ... with at least one price on the tape
    signals_unpriced: int  # signals whose token has no price on the tape: never copied on it
    points: int  # prices of the signals' tokens
    gaps: int  # gap rows (the market could not be read)

    def to_dict(self) -> dict[str, int | str]:
        return {
            "tape": self.tape,
            "tokens": self.tokens,
            "tokens_priced": self.tokens_priced,
            "signals_unpriced": self.signals_unpriced,
            "points": self.points,
            "gaps": self.gaps,
        }


def coverage(name: TapeName, tape: PriceTape, signals: Sequence[Signal]) -> TapeCoverage:
    mints = {s.mint for s in signals}
    priced = mints & tape.mints
    return TapeCoverage(
        tape=name,
        tokens=len(mints),
        tokens_priced=len(priced),
        signals_unpriced=sum(1 for s in signals if s.mint not in priced),
        points=len(tape),
        gaps=tape.gaps,
    )


def load_market_tape(engine: Engine, mints: Sequence[str], end: int) -> PriceTape:
    """The market tape of ``mints``: every row the market stage stored before ``end``, in chain
    order (time, then slot); a row without a price is a gap, never a price."""
    frame = read_tape(engine, sorted(set(mints)))
    frame = frame[frame["time"] < end]
    observations: list[tuple[str, tuple[int, int, str], float | None]] = []
    for mint, time, slot, price in zip(
        frame["mint"], frame["time"], frame["slot"], frame["price_sol"], strict=True
    ):
        value = None if pd.isna(price) else float(price)
        if value is not None and not (np.isfinite(value) and value > 0):
            # A stored price the market stage would never write: refuse it rather than fill at it.
            raise BacktestError(
                f"market_tape holds price {value} for mint {mint} at slot {slot}: not a price; "
                "fix or delete that row"
            )
        observations.append((str(mint), (int(time), int(slot), ""), value))
    return PriceTape.from_observations(observations)
