"""Time splits with purging and an embargo (docs/features.md).

A row has a time ``t`` (token: entry; KOL: the day) and a *resolution time* ``r >= t``: when its
label became known (token: the close if within the horizon, else ``entry + H``; KOL: the end of
its longest target window plus H). With split starts ``val_start < test_start``:

- train: ``t < val_start - embargo`` and ``r < val_start``
- val:   ``val_start <= t < test_start - embargo`` and ``r < test_start``
- test:  ``t >= test_start``

The first condition of each is the **embargo** (a gap of ``embargo_s`` between the last row of one
split and the first of the next, so slowly changing features do not carry the later split's
information back); the second is **purging** (a row whose label was still unknown when the next
split began would teach the model about that split's period). Rows in neither are dropped.

:func:`plan_splits` chooses the starts from a histogram of ``(t, r)`` so that the rows *kept*
after purging come in the requested proportions as closely as possible: with a 30-day KOL target a
quantile cut would purge the validation split away.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TRAIN, VAL, TEST, DROPPED = 0, 1, 2, -1
SPLIT_NAMES = ("train", "val", "test")
MAX_GRID = 1_000  # candidate cut times: the plan is O(grid²)


class Unsplittable(ValueError):
    """The rows cannot be cut into three non-empty splits (too short a period for the windows)."""


class SplitFractions(BaseModel):
    """Target shares of the kept rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: float = Field(default=0.7, gt=0)
    val: float = Field(default=0.15, gt=0)
    test: float = Field(default=0.15, gt=0)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"split fractions must add up to 1, got {total:g}")
        return self

    @classmethod
    def parse(cls, text: str) -> SplitFractions:
        """``"0.7,0.15,0.15"`` (train, val, test)."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3:
            raise ValueError(f"expected three comma-separated fractions (train,val,test), got {text!r}")
        try:
            train, val, test = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"split fractions must be numbers, got {text!r}") from None
        return cls(train=train, val=val, test=test)

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.train, self.val, self.test)


class SplitPlan(BaseModel):
    """Where the validation and test splits start (unix s) and the embargo between splits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    val_start: int
    test_start: int
    embargo_s: int = Field(ge=0)
    planned_rows: dict[str, int] = Field(
        default_factory=dict, description="Rows per split the histogram predicted (after purging)."
    )

    @field_validator("test_start")
    @classmethod
    def _ordered(cls, value: int, info) -> int:
        if "val_start" in info.data and value <= info.data["val_start"]:
            raise ValueError("test_start must be after val_start")
        return value


def assign_splits(times: np.ndarray, resolve: np.ndarray, plan: SplitPlan) -> np.ndarray:
    """Split code per row: :data:`TRAIN`, :data:`VAL`, :data:`TEST` or :data:`DROPPED`."""
    t = np.asarray(times, dtype=np.int64)
    r = np.asarray(resolve, dtype=np.int64)
    if t.shape != r.shape:
        raise ValueError("times and resolve times differ in shape")
    if (r < t).any():
        raise ValueError("a row resolves before its own time")
    e = plan.embargo_s
    out = np.full(t.shape, DROPPED, dtype=np.int8)
    out[(t < plan.val_start - e) & (r < plan.val_start)] = TRAIN
    out[(t >= plan.val_start) & (t < plan.test_start - e) & (r < plan.test_start)] = VAL
    out[t >= plan.test_start] = TEST
    return out


def plan_splits(
    times: np.ndarray,
    resolve: np.ndarray,
    counts: np.ndarray | None = None,
    *,
    fractions: SplitFractions | None = None,
    embargo_s: int,
    bucket_s: int = 3_600,
) -> SplitPlan:
    """Choose ``val_start`` and ``test_start`` on a grid of ``bucket_s`` (widened to keep the grid
    at most :data:`MAX_GRID` long) maximising ``min(kept_split / fraction)``: the rows kept after
    purging and the embargo, as close to the fractions as the data allows.

    ``times``/``resolve`` may be histogram bins with ``counts`` (a SQL ``GROUP BY`` of bucketed
    times), so planning never needs every row in memory. Exact for times on the grid when the
    embargo is a multiple of the bucket; otherwise approximately balanced (rows are still assigned
    exactly by :func:`assign_splits`). Raises :class:`Unsplittable` when no cut leaves rows in
    all three splits (``ValueError`` when there are no rows at all).
    """
    fractions = fractions or SplitFractions()
    t = np.asarray(times, dtype=np.int64)
    r = np.asarray(resolve, dtype=np.int64)
    w = np.ones(len(t), dtype=np.float64) if counts is None else np.asarray(counts, dtype=np.float64)
    if not len(t) or w.sum() <= 0:
        raise ValueError("no rows to split")
    span = int(max(r.max(), t.max()) - t.min()) + 1
    bucket = max(int(bucket_s), 1)
    if span / bucket > MAX_GRID:
        bucket = math.ceil(span / MAX_GRID / bucket_s) * bucket_s
    origin = (int(t.min()) // bucket) * bucket
    tb = (t - origin) // bucket
    rb = (r - origin) // bucket
    n = int(max(tb.max(), rb.max())) + 2  # cut k means time origin + k * bucket
    grid = np.zeros((n, n), dtype=np.float64)
    np.add.at(grid, (tb, rb), w)
    # below[i, j] = weight with tb < i and rb < j.
    below = np.zeros((n + 1, n + 1), dtype=np.float64)
    below[1:, 1:] = grid.cumsum(axis=0).cumsum(axis=1)
    by_t = np.concatenate(([0.0], grid.sum(axis=1).cumsum()))  # weight with tb < i
    total = by_t[-1]
    e = math.ceil(embargo_s / bucket)
    k = np.arange(n + 1)
    k_e = np.clip(k - e, 0, n)
    train = below[k_e, k]  # tb < k - e and rb < k
    test = total - by_t  # tb >= k
    # val(k1, k2) = weight with k1 <= tb < k2 - e and rb < k2 = below[k2 - e, k2] - below[k1, k2]
    val = below[k_e, k][None, :] - below[:, k]
    val = np.where(k[:, None] < k_e[None, :], val, 0.0)
    f_train, f_val, f_test = fractions.as_tuple()
    score = np.minimum(np.minimum(train[:, None] / f_train, val / f_val), test[None, :] / f_test)
    score = np.where(k[:, None] < k[None, :], score, -1.0)
    k1, k2 = np.unravel_index(int(np.argmax(score)), score.shape)
    if score[k1, k2] <= 0:
        raise Unsplittable(
            "no cut leaves rows in all three splits after purging and the embargo "
            f"(the rows span {(t.max() - t.min()) / 86_400:.1f} days)"
        )
    return SplitPlan(
        val_start=origin + int(k1) * bucket,
        test_start=origin + int(k2) * bucket,
        embargo_s=int(embargo_s),
        planned_rows={
            "train": round(float(train[k1])),
            "val": round(float(val[k1, k2])),
            "test": round(float(test[k2])),
        },
    )
