"""The retraining decision: which rules of a :class:`~flywheel.config.RetrainPolicy` fire.

Pure functions over figures the monitor computes (:class:`Signals`) and the times of earlier
runs, so each rule can be tested alone and the same decision is made by ``flywheel monitor
--decide``, the local ``flywheel watch`` controller and the cluster's CronJob.

Rules (each off when its setting is ``None``):

* **schedule**: the champion is older than ``max_champion_age_h`` (or there is none);
* **drift**: at least ``drift_min_inputs`` model inputs over their PSI threshold, or the
  served score distribution's PSI over ``score_psi``;
* **performance**: with at least ``min_impressions`` in the window and in the champion's
  baseline, served CTR below ``baseline * (1 - ctr_drop)``, or delayed-label AUC below
  ``baseline - auc_drop``.

A fired rule becomes a run only when the guards allow it: ``min_interval_h`` since the last
run and fewer than ``max_runs_per_day`` runs in the 24 h before ``now``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flywheel.config import RetrainPolicy


@dataclass(frozen=True)
class Signals:
    """What the monitor saw in its window (``None``: not measured or not enough data)."""

    #: Hours since the champion was deployed; ``None``: no champion.
    champion_age_h: float | None = None
    #: Model inputs whose PSI is over their threshold.
    drifted_inputs: tuple[str, ...] = ()
    score_psi: float | None = None
    impressions: int = 0
    served_ctr: float | None = None
    delayed_auc: float | None = None
    baseline_impressions: int = 0
    baseline_ctr: float | None = None
    baseline_auc: float | None = None


@dataclass(frozen=True)
class Decision:
    """``fire``: start a run now. ``reasons``: the rules that fired; ``held``: why a fired
    rule does not run yet (interval, daily cap)."""

    fire: bool
    reasons: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    at: str = ""
    signals: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "fire": self.fire,
            "reasons": list(self.reasons),
            "held": list(self.held),
            "at": self.at,
            "signals": self.signals,
        }


def schedule_reasons(policy: RetrainPolicy, s: Signals) -> list[str]:
    if policy.max_champion_age_h is None:
        return []
    if s.champion_age_h is None:
        return ["schedule: no champion yet"]
    if s.champion_age_h > policy.max_champion_age_h:
        return [
            f"schedule: champion is {s.champion_age_h:.1f} h old "
            f"(max_champion_age_h {policy.max_champion_age_h:g})"
        ]
    return []


def drift_reasons(policy: RetrainPolicy, s: Signals) -> list[str]:
    out = []
    n = len(s.drifted_inputs)
    if policy.drift_min_inputs is not None and n >= policy.drift_min_inputs:
        names = ", ".join(s.drifted_inputs[:5]) + (", ..." if n > 5 else "")
        out.append(
            f"drift: {n} inputs over their PSI threshold ({names}; "
            f"drift_min_inputs {policy.drift_min_inputs})"
        )
    if policy.score_psi is not None and s.score_psi is not None and s.score_psi > policy.score_psi:
        out.append(f"drift: score PSI {s.score_psi:.3f} > {policy.score_psi:g}")
    return out


def performance_reasons(policy: RetrainPolicy, s: Signals) -> list[str]:
    enough = min(s.impressions, s.baseline_impressions) >= policy.min_impressions
    if not enough:
        return []
    out = []
    if policy.ctr_drop is not None and s.served_ctr is not None and s.baseline_ctr is not None:
        floor = s.baseline_ctr * (1 - policy.ctr_drop)
        if s.served_ctr < floor:
            out.append(
                f"performance: served CTR {s.served_ctr:.4f} < {floor:.4f} (baseline "
                f"{s.baseline_ctr:.4f} - {policy.ctr_drop:.0%})"
            )
    if policy.auc_drop is not None and s.delayed_auc is not None and s.baseline_auc is not None:
        floor = s.baseline_auc - policy.auc_drop
        if s.delayed_auc < floor:
            out.append(
                f"performance: delayed AUC {s.delayed_auc:.4f} < {floor:.4f} (baseline "
                f"{s.baseline_auc:.4f} - {policy.auc_drop:g})"
            )
    return out


def guard_reasons(policy: RetrainPolicy, runs: Sequence[datetime], now: datetime) -> list[str]:
    """Why a run may not start now, given the start times of earlier runs."""
    out = []
    if runs:
        last = max(runs)
        wait = timedelta(hours=policy.min_interval_h) - (now - last)
        if wait > timedelta(0):
            out.append(
                f"min_interval_h {policy.min_interval_h:g}: last run {last.isoformat()}, "
                f"next allowed in {wait.total_seconds() / 3600:.1f} h"
            )
    today = [t for t in runs if now - timedelta(hours=24) < t <= now]
    if len(today) >= policy.max_runs_per_day:
        out.append(f"max_runs_per_day {policy.max_runs_per_day}: {len(today)} runs in 24 h")
    return out


def decide(
    policy: RetrainPolicy, signals: Signals, runs: Sequence[datetime], now: datetime
) -> Decision:
    """The decision at ``now``: the rules that fired, and whether the guards let it run."""
    reasons = (
        schedule_reasons(policy, signals)
        + drift_reasons(policy, signals)
        + performance_reasons(policy, signals)
    )
    held = guard_reasons(policy, runs, now) if reasons else []
    return Decision(
        fire=bool(reasons) and not held,
        reasons=tuple(reasons),
        held=tuple(held),
        at=now.isoformat(),
        signals=asdict(signals) | {"drifted_inputs": list(signals.drifted_inputs)},
    )
