"""The loop's paired statistics: the interval the drift test relies on, checked against
scipy's paired t-test and a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from flywheel.loop import GainInterval, LoopError, LoopRow, _drift_gain, paired_gain


def test_paired_gain_matches_a_hand_computed_t_interval() -> None:
    d = np.array([0.01, 0.03, -0.01, 0.02, 0.05])
    mean, sd = 0.02, np.sqrt(np.sum((d - 0.02) ** 2) / 4)
    t_975_df4 = 2.7764451051977987  # Student t table, 4 degrees of freedom
    got = paired_gain(d)
    assert got.mean == pytest.approx(mean)
    assert got.low == pytest.approx(mean - t_975_df4 * sd / np.sqrt(5))
    assert got.high == pytest.approx(mean + t_975_df4 * sd / np.sqrt(5))
    assert got.users == 5


def test_paired_gain_agrees_with_scipys_paired_t_test() -> None:
    rng = np.random.default_rng(3)
    frozen = rng.uniform(0.05, 0.3, 200)
    flywheel = frozen + rng.normal(0.004, 0.02, 200)
    ci = stats.ttest_rel(flywheel, frozen).confidence_interval(0.95)
    got = paired_gain(flywheel - frozen)
    assert (got.low, got.high) == pytest.approx((ci.low, ci.high))


def test_no_real_difference_gives_an_interval_around_zero() -> None:
    # Two arms that rank identically (the frozen model served by both) differ by nothing,
    # and pure noise around zero must not produce a positive lower bound.
    assert paired_gain(np.zeros(50)) == GainInterval(0.0, 0.0, 0.0, 50)
    noise = np.random.default_rng(0).normal(0.0, 0.02, 300)
    got = paired_gain(noise)
    assert got.low < 0.0 < got.high


def test_paired_gain_needs_two_users() -> None:
    with pytest.raises(LoopError, match="at least 2 users"):
        paired_gain(np.array([0.1]))


def _row(day: int) -> LoopRow:
    g = GainInterval(0.0, 0.0, 0.0, 2)
    return LoopRow(0, day, True, 0.1, 0.1, 0.2, g, "m", None, None, None, 0, None, 0.0)


def test_drift_gain_pools_only_days_after_the_drift_day() -> None:
    measured = [
        (_row(6), np.array([-1.0, -1.0])),  # the drift day itself: no retrain on it yet
        (_row(7), np.array([0.01, 0.03])),
        (_row(8), np.array([0.02, 0.04])),
    ]
    got = _drift_gain(measured, 6.0)
    assert got is not None
    assert got == paired_gain(np.array([0.01, 0.03, 0.02, 0.04]))
    assert _drift_gain(measured, None) is None
    assert _drift_gain(measured, 9.0) is None
