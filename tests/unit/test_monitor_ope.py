"""IPS, SNIPS and DR on tiny logs computed by hand, and on a simulated log with a known
answer."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.monitor.ope import (
    LoggedSlots,
    OffPolicyError,
    effective_sample_size,
    logged_value,
    off_policy_estimates,
    position_baseline,
)


def _tiny() -> LoggedSlots:
    # Two slates of two slots. Weights q/p: 1/0.5 = 2, 0, 0.5/0.25 = 2, 0.5/1 = 0.5.
    return LoggedSlots(
        slate=np.array([0, 0, 1, 1]),
        position=np.array([0, 1, 0, 1]),
        propensity=np.array([0.5, 0.5, 0.25, 1.0]),
        reward=np.array([1.0, 0.0, 0.0, 1.0]),
        target=np.array([1.0, 0.0, 0.5, 0.5]),
    )


def test_estimators_on_a_tiny_log_by_hand() -> None:
    got = off_policy_estimates(_tiny(), n_boot=50, seed=0)
    # IPS: (2*1 + 0*0 + 2*0 + 0.5*1) / 2 slates
    assert got["ips"].value == pytest.approx(1.25)
    # SNIPS per position: pos 0 (2*1 + 2*0)/(2 + 2) = 0.5; pos 1 (0.5*1)/(0 + 0.5) = 1
    assert got["snips"].value == pytest.approx(1.5)
    # DR, position baseline g = 0.5 at both positions:
    # (0.5 + 2*0.5) + (0.5 + 0) + (0.5 + 2*(-0.5)) + (0.5 + 0.5*0.5) = 2.25, / 2 slates
    assert got["dr"].value == pytest.approx(1.125)
    # ESS = (2 + 0 + 2 + 0.5)^2 / (4 + 0 + 4 + 0.25)
    assert got["ips"].effective_sample_size == pytest.approx(4.5**2 / 8.25)
    assert (got["ips"].slates, got["ips"].slots) == (2, 4)
    for estimate in got.values():
        assert estimate.low <= estimate.high


def test_position_baseline_is_the_mean_reward_per_position() -> None:
    g, d = position_baseline(_tiny())
    assert g.tolist() == d.tolist() == [0.5, 0.5, 0.5, 0.5]


def test_on_policy_weights_give_the_logged_value() -> None:
    slots = _tiny()
    p = slots.propensity
    same = LoggedSlots(slots.slate, slots.position, p, slots.reward, target=p)
    got = off_policy_estimates(same, n_boot=20)
    assert got["ips"].value == pytest.approx(logged_value(same)) == pytest.approx(1.0)
    assert got["snips"].value == pytest.approx(1.0)
    assert got["dr"].value == pytest.approx(1.0)
    assert effective_sample_size(np.ones(4)) == pytest.approx(4.0)


def test_estimates_recover_a_known_target_value_with_intervals() -> None:
    """One slot, two items drawn uniformly by the logger; the target always shows item 0.
    Engagement probabilities 0.3 and 0.1: the target's value is 0.3, the logger's 0.2."""
    rng = np.random.default_rng(7)
    n = 20_000
    item = rng.integers(0, 2, size=n)
    reward = (rng.random(n) < np.where(item == 0, 0.3, 0.1)).astype(float)
    slots = LoggedSlots(
        slate=np.arange(n),
        position=np.zeros(n, dtype=int),
        propensity=np.full(n, 0.5),
        reward=reward,
        target=(item == 0).astype(float),
    )
    got = off_policy_estimates(slots, n_boot=200, seed=1)
    for name in ("ips", "snips", "dr"):
        assert got[name].low < 0.3 < got[name].high, got[name]
        assert got[name].high - got[name].low < 0.03
    assert not got["ips"].low < 0.2 < got["ips"].high  # the logger's value is excluded
    assert got["ips"].effective_sample_size == pytest.approx(float((item == 0).sum()))
    again = off_policy_estimates(slots, n_boot=200, seed=1)
    assert (again["dr"].low, again["dr"].high) == (got["dr"].low, got["dr"].high)


def test_bad_logs_are_refused_naming_the_field() -> None:
    t = _tiny()
    with pytest.raises(OffPolicyError, match="propensity must lie"):
        LoggedSlots(t.slate, t.position, np.zeros(4), t.reward, t.target)
    with pytest.raises(OffPolicyError, match="target propensity"):
        LoggedSlots(t.slate, t.position, t.propensity, t.reward, np.full(4, 2.0))
    with pytest.raises(OffPolicyError, match="reward has 3"):
        LoggedSlots(t.slate, t.position, t.propensity, t.reward[:3], t.target)
    with pytest.raises(OffPolicyError, match="n_boot"):
        off_policy_estimates(t, n_boot=1)
