"""Time splits: purging, the embargo, and the planner that balances what survives them."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from kolray.features.splits import (
    DROPPED,
    TEST,
    TRAIN,
    VAL,
    SplitFractions,
    SplitPlan,
    Unsplittable,
    assign_splits,
    plan_splits,
)

DAY = 86_400
HOUR = 3_600
PLAN = SplitPlan(val_start=100 * DAY, test_start=200 * DAY, embargo_s=DAY)


def codes(rows: list[tuple[int, int]]) -> list[int]:
    t, r = zip(*rows, strict=True)
    return assign_splits(np.array(t), np.array(r), PLAN).tolist()


def test_rows_before_the_validation_start_are_train_only_if_embargoed_and_resolved_before_it():
    v = PLAN.val_start
    assert codes(
        [
            (v - DAY - 1, v - DAY - 1),  # before the embargo, resolved at once: train
            (v - DAY - 1, v - 1),  # resolved one second before validation starts: train
            (v - DAY - 1, v),  # resolved as validation starts: purged
            (v - DAY, v - DAY),  # inside the embargo: dropped
            (v - 10, v - 5),  # inside the embargo: dropped
        ]
    ) == [TRAIN, TRAIN, DROPPED, DROPPED, DROPPED]


def test_validation_rows_are_embargoed_and_purged_against_the_test_start():
    v, s = PLAN.val_start, PLAN.test_start
    assert codes(
        [
            (v, v),  # the first second of validation
            (s - DAY - 1, s - 1),
            (s - DAY - 1, s),  # its label resolved when test began: purged
            (s - DAY, s - DAY),  # embargo
        ]
    ) == [VAL, VAL, DROPPED, DROPPED]


def test_every_row_from_the_test_start_on_is_test():
    s = PLAN.test_start
    assert codes([(s, s), (s + 50 * DAY, s + 60 * DAY)]) == [TEST, TEST]


def test_the_splits_never_come_closer_than_the_embargo_and_no_train_label_reaches_validation():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 300 * DAY, 20_000)
    r = t + rng.integers(0, 10 * DAY, len(t))
    split = assign_splits(t, r, PLAN)
    assert t[split == VAL].min() - t[split == TRAIN].max() >= PLAN.embargo_s
    assert t[split == TEST].min() - t[split == VAL].max() >= PLAN.embargo_s
    assert r[split == TRAIN].max() < PLAN.val_start
    assert r[split == VAL].max() < PLAN.test_start


def test_a_row_cannot_resolve_before_it_happens():
    with pytest.raises(ValueError, match="resolves before"):
        assign_splits(np.array([10]), np.array([5]), PLAN)


def test_planner_hits_the_fractions_when_labels_resolve_quickly():
    t = np.arange(0, 100 * DAY, HOUR)
    plan = plan_splits(t, t + HOUR, fractions=SplitFractions(train=0.7, val=0.15, test=0.15), embargo_s=DAY)
    split = assign_splits(t, t + HOUR, plan)
    shares = np.array([(split == c).mean() for c in (TRAIN, VAL, TEST)])
    assert shares == pytest.approx([0.7, 0.15, 0.15], abs=0.02)
    assert plan.planned_rows == {
        n: int((split == c).sum()) for n, c in zip(("train", "val", "test"), (TRAIN, VAL, TEST), strict=True)
    }


def test_planner_leaves_room_for_long_labels_where_quantile_cuts_would_purge_validation_away():
    days = np.arange(0, 150) * DAY
    resolve = days + 37 * DAY  # a 30-day window plus a 7-day horizon
    plan = plan_splits(days, resolve, embargo_s=DAY, bucket_s=DAY)
    split = assign_splits(days, resolve, plan)
    counts = {c: int((split == c).sum()) for c in (TRAIN, VAL, TEST)}
    assert min(counts.values()) > 0
    # Quantile cuts at 70% / 85% leave validation empty: its 22 days all resolve after test starts.
    quantile = SplitPlan(val_start=105 * DAY, test_start=128 * DAY, embargo_s=DAY)
    assert (assign_splits(days, resolve, quantile) == VAL).sum() == 0


def test_planner_reads_a_histogram_as_the_rows_it_counts():
    rng = np.random.default_rng(2)
    t = rng.integers(0, 60 * DAY, 5_000) // HOUR * HOUR
    r = t + rng.integers(0, 3, len(t)) * HOUR
    pairs, counts = np.unique(np.stack([t, r]), axis=1, return_counts=True)
    assert plan_splits(pairs[0], pairs[1], counts, embargo_s=DAY) == plan_splits(t, r, embargo_s=DAY)


def test_planner_says_so_when_the_period_is_too_short():
    days = np.arange(0, 40) * DAY
    with pytest.raises(Unsplittable, match="all three splits"):
        plan_splits(days, days + 37 * DAY, embargo_s=DAY, bucket_s=DAY)
    with pytest.raises(ValueError, match="no rows"):
        plan_splits(np.array([], dtype=np.int64), np.array([], dtype=np.int64), embargo_s=DAY)


def test_fractions_must_be_three_positive_numbers_adding_up_to_one():
    assert SplitFractions.parse("0.6, 0.2,0.2").as_tuple() == (0.6, 0.2, 0.2)
    for bad in ("0.5,0.5", "0.6,0.3,0.3", "a,b,c", "0.8,0.2,0"):
        with pytest.raises((ValueError, ValidationError)):
            SplitFractions.parse(bad)
    with pytest.raises(ValidationError, match="after val_start"):
        SplitPlan(val_start=10, test_start=10, embargo_s=0)
