"""The retraining policy's rules, one by one, and its guards (``flywheel.policy``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flywheel.config import RetrainPolicy
from flywheel.policy import Signals, decide

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
QUIET = Signals(
    champion_age_h=10.0,
    drifted_inputs=("views_7d",),
    score_psi=0.05,
    impressions=5000,
    served_ctr=0.10,
    delayed_auc=0.70,
    baseline_impressions=5000,
    baseline_ctr=0.10,
    baseline_auc=0.70,
)


#: The defaults with the input-drift rule on (off by default; see RetrainPolicy).
POLICY = RetrainPolicy(drift_min_inputs=3)


def _with(**kw):
    return Signals(**{**QUIET.__dict__, **kw})


def test_quiet_signals_fire_nothing():
    d = decide(POLICY, QUIET, [], NOW)
    assert not d.fire and d.reasons == () and d.held == ()


@pytest.mark.parametrize(
    ("signals", "fragment"),
    [
        (_with(champion_age_h=7 * 24 + 1), "schedule: champion is 169.0 h old"),
        (_with(champion_age_h=None), "schedule: no champion yet"),
        (_with(drifted_inputs=("a", "b", "c")), "drift: 3 inputs over their PSI threshold"),
        (_with(score_psi=0.3), "drift: score PSI 0.300 > 0.25"),
        (_with(served_ctr=0.079), "performance: served CTR 0.0790 < 0.0800"),
        (_with(delayed_auc=0.669), "performance: delayed AUC 0.6690 < 0.6700"),
    ],
)
def test_each_rule_fires_alone(signals, fragment):
    d = decide(POLICY, signals, [], NOW)
    assert d.fire
    assert len(d.reasons) == 1 and d.reasons[0].startswith(fragment), d.reasons


@pytest.mark.parametrize(
    "signals",
    [
        _with(champion_age_h=7 * 24 - 1),
        _with(drifted_inputs=("a", "b")),
        _with(score_psi=0.25),
        _with(served_ctr=0.081),
        _with(delayed_auc=0.671),
    ],
)
def test_just_inside_each_threshold_does_not_fire(signals):
    assert not decide(POLICY, signals, [], NOW).fire


def test_performance_rules_need_the_minimum_sample_on_both_sides():
    low = _with(served_ctr=0.01, delayed_auc=0.5)
    assert decide(POLICY, low, [], NOW).fire
    assert not decide(POLICY, _with(served_ctr=0.01, impressions=999), [], NOW).fire
    assert not decide(
        RetrainPolicy(), _with(served_ctr=0.01, baseline_impressions=10), [], NOW
    ).fire


def test_a_rule_set_to_none_is_off():
    policy = RetrainPolicy(max_champion_age_h=None, score_psi=None, ctr_drop=None)
    signals = _with(champion_age_h=10_000, score_psi=9.0, served_ctr=0.0)
    assert not decide(policy, signals, [], NOW).fire


def test_guards_hold_a_fired_rule():
    drifted = _with(score_psi=1.0)
    recent = [NOW - timedelta(hours=2)]
    d = decide(POLICY, drifted, recent, NOW)
    assert not d.fire and d.reasons and d.held[0].startswith("min_interval_h 6")
    assert decide(POLICY, drifted, [NOW - timedelta(hours=6, seconds=1)], NOW).fire
    four = [NOW - timedelta(hours=h) for h in (1, 2, 3, 4)]
    d = decide(RetrainPolicy(min_interval_h=0), drifted, four, NOW)
    assert not d.fire and d.held == ("max_runs_per_day 4: 4 runs in 24 h",)
    older = [NOW - timedelta(hours=h) for h in (1, 2, 3, 25)]
    assert decide(RetrainPolicy(min_interval_h=0), drifted, older, NOW).fire


def test_the_decision_is_json_with_its_signals():
    d = decide(POLICY, _with(score_psi=1.0), [], NOW).as_json()
    assert d["fire"] is True and d["signals"]["score_psi"] == 1.0
    assert d["signals"]["drifted_inputs"] == ["views_7d"] and d["at"] == NOW.isoformat()


def test_input_drift_is_off_by_default():
    many = _with(drifted_inputs=tuple(f"x{i}" for i in range(40)))
    assert not decide(RetrainPolicy(), many, [], NOW).fire
    assert decide(POLICY, many, [], NOW).fire
