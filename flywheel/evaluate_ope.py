"""Off-policy evaluation in the blessing gate: what the challenger would have earned on the
slates the champion served, against what the champion earned there.

**Data.** The prediction log (one record per served slot: request, position, logged
propensity ``p``, the raw feature values the champion saw) and the feedback log over the
``Settings.ope.window_hours`` before the evaluation (:func:`flywheel.monitor.report.read_window`:
normal traffic only, no degraded rankings). Only the champion's own slates count (its
``model_version``), and only *closed* ones (served at least ``monitor.attribution_minutes``
before the window's end), each slot labelled as the dataset stage labels served impressions
(:func:`flywheel.dataset.label_served_impressions`): reward 1 when engaged (a click, cart or
purchase; ``ope.reward: purchase``: a purchase) within the attribution window.

**The target policy.** The challenger as it would serve: epsilon-greedy over its own scores
with serving's exploration rate ``ope.epsilon``. Given the logged prefix of a slot (the
independent-slot estimator of :mod:`flywheel.monitor.ope`), it puts the logged item there
with probability ``q = (1 - epsilon) [the item is its best remaining candidate] + epsilon / m``,
``m`` the candidates left for that slot. The log holds the *served* items only, not every
candidate, so two things are read back or approximated:

- ``m`` from the logged propensity (:func:`remaining_candidates`): a greedy slot logged
  ``1 - epsilon + epsilon / m``, an explored one ``epsilon / m``; exact.
- "best remaining" is judged among the *served* items at this position or below
  (:func:`served_best`), scored by the challenger from their logged raw features. An item the
  challenger prefers but the champion never served is invisible: the estimate is then of a
  challenger restricted to the champion's slates. ``benchmarks/ope_coverage.py`` measures
  what this costs against a log that holds every candidate.

With the candidate log (``serving.log_candidates``) both are exact instead for every slate
it holds (:mod:`flywheel.ope_candidates`): the challenger scores all the request's
candidates and "best remaining" is judged among all of them. The block's ``candidates``
(``full``, ``mixed``, ``served_only``) and ``full_candidate_share`` say which ran.

**Estimates.** SNIPS and DR (:func:`flywheel.monitor.ope.off_policy_estimates`, per-position
baseline as DR's direct model) of the challenger's engagements per slate, each with a
percentile bootstrap 95% interval over whole slates (``ope.bootstrap`` resamples, seeded),
and the champion's logged value (mean engagements per slate, same bootstrap). ``slates``,
``slots`` and the effective sample size ``(sum w)^2 / sum w^2`` say how much the estimate
rests on.

**The rule** (:func:`gate`, after the offline rule of :func:`flywheel.evaluate.decide`): with
``ope.require_ope`` a challenger the offline rule blessed stays blessed only if the estimate
was computed on at least ``min_slates`` slates with an ESS of at least ``min_ess`` and its
SNIPS lower 95% bound is above the champion's logged value; otherwise it is refused with
why. Without ``require_ope`` the estimate is reported and the offline decision stands (the
reason says so).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from flywheel.monitor.ope import (
    LoggedSlots,
    OffPolicyError,
    bootstrap_interval,
    logged_value,
    off_policy_estimates,
    slots_from_frame,
)

if TYPE_CHECKING:
    import pandas as pd
    import xgboost as xgb

    from flywheel.config import OpeSettings, Settings
    from flywheel.evaluate import Decision
    from flywheel.ope_candidates import FullTargets

log = logging.getLogger(__name__)

#: The estimators the gate reports (IPS is left out: SNIPS is its bounded form).
REPORTED: Final[tuple[str, ...]] = ("snips", "dr")
LEVEL: Final = 0.95


class OpeUnavailable(Exception):
    """No estimate can be made from the window's logs; the message says why."""


@dataclass(frozen=True)
class OpeContext:
    """What the gate needs besides the models: the workspace, the champion's tag (the
    ``model_version`` its slates carry) and the end of the window (default: now)."""

    settings: Settings
    champion: str | None
    until: datetime | None = None


# ---- the target policy's propensities ------------------------------------------------


def remaining_candidates(propensity: np.ndarray, epsilon: float) -> np.ndarray:
    """Candidates each slot chose from, read back from its epsilon-greedy propensity.

    Raises:
        OpeUnavailable: a propensity fits no whole number of candidates at ``epsilon``
            (the logs were served with another exploration rate).
    """
    p = np.asarray(propensity, dtype=np.float64)
    if epsilon == 0:
        return np.ones(len(p))
    greedy = p >= 1.0 - epsilon - 1e-9
    share = np.where(greedy, p - (1.0 - epsilon), p)
    m = epsilon / np.maximum(share, 1e-300)
    whole = np.rint(m)
    bad = (whole < 1) | (np.abs(m - whole) > 1e-6 * np.maximum(m, 1.0))
    if bad.any():
        raise OpeUnavailable(
            f"{int(bad.sum())} logged propensities (e.g. {float(p[bad][0]):.6g}) fit no "
            f"epsilon-greedy slot at ope.epsilon={epsilon}: set it to serving's epsilon"
        )
    return whole


def epsilon_greedy_target(is_best: np.ndarray, remaining: np.ndarray, epsilon: float) -> np.ndarray:
    """The target's probability of the logged item at its slot: ``(1 - eps) best + eps / m``."""
    best = np.asarray(is_best, dtype=np.float64)
    return (1.0 - epsilon) * best + epsilon / np.asarray(remaining, dtype=np.float64)


def served_best(slate: np.ndarray, position: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Whether each slot's item has the highest challenger score among its slate's items
    served at that position or below (ties count as best)."""
    import pandas as pd

    frame = pd.DataFrame({"slate": slate, "position": position, "score": scores})
    ordered = frame.sort_values(["slate", "position"], ascending=[True, False], kind="stable")
    running = ordered.groupby("slate", sort=False)["score"].cummax()
    return (frame["score"] >= running.reindex(frame.index)).to_numpy()


# ---- the window's slates -------------------------------------------------------------


def closed_slates(
    settings: Settings, champion: str | None, until: datetime
) -> tuple[pd.DataFrame, datetime]:
    """The champion's closed served slots of the window with a 0/1 ``reward``, sorted by
    request and position; and the window's start.

    Raises:
        OpeUnavailable: no champion, no served slot of it, or none closed in the window.
    """
    from flywheel.dataset import label_served_impressions
    from flywheel.monitor.report import read_window

    if champion is None:
        raise OpeUnavailable("no champion yet: no logged policy to compare against")
    since = until - timedelta(hours=settings.ope.window_hours)
    predictions, feedback = read_window(settings, since, until)
    if len(predictions):
        predictions = predictions.loc[predictions["model_version"] == champion]
    if predictions.empty:
        raise OpeUnavailable(
            f"no slates served by {champion} in [{since.isoformat()}, {until.isoformat()})"
        )
    if settings.ope.reward == "purchase":
        feedback = feedback.loc[feedback["event_type"] == "purchase"]
    attribution = timedelta(minutes=settings.monitor.attribution_minutes)
    labels = label_served_impressions(predictions, feedback, attribution, closed_before=until)
    if labels.empty:
        raise OpeUnavailable(
            f"no closed slates of {champion} in the window (feedback window "
            f"{settings.monitor.attribution_minutes} min not over before {until.isoformat()})"
        )
    labels = labels.rename(columns={"group_id": "request_id", "label": "reward"})
    slots = predictions.drop_duplicates(["request_id", "item_id"], keep="first").merge(
        labels[["request_id", "item_id", "reward"]], on=["request_id", "item_id"], how="inner"
    )
    slots["reward"] = slots["reward"].astype(np.float64)
    return slots.sort_values(["request_id", "position"], kind="stable").reset_index(
        drop=True
    ), since


def challenger_scores(booster: xgb.Booster, slots: pd.DataFrame, service: str) -> np.ndarray:
    """The challenger's scores of the served items from their logged raw feature values.

    Raises:
        OpeUnavailable: the logs lack a raw feature of the challenger's service.
    """
    from flywheel.monitor.drift import served_model_inputs
    from flywheel.train import booster_features, predict

    columns = served_model_inputs(slots, service)
    names = booster_features(booster)
    if any(len(columns.get(c, ())) != len(slots) for c in names):
        raise OpeUnavailable(
            f"the served logs lack raw features of the challenger's service {service!r} "
            "(served by a model of another feature service)"
        )
    return predict(booster, np.column_stack([columns[c] for c in names]))


# ---- estimates and the rule ----------------------------------------------------------


def _logged_value(slots: LoggedSlots, m: np.ndarray) -> float:
    return float(np.sum(m[slots.slate] * slots.reward) / m.sum())


def estimate_block(slots: LoggedSlots, settings: OpeSettings) -> dict[str, Any]:
    """SNIPS and DR of the target with intervals, the logged value, slates, ESS, sufficiency."""
    estimates = off_policy_estimates(
        slots, n_boot=settings.bootstrap, seed=settings.seed, level=LEVEL
    )
    low, high = bootstrap_interval(slots, _logged_value, settings.bootstrap, settings.seed, LEVEL)
    ess = estimates["snips"].effective_sample_size
    short = []
    if slots.slates < settings.min_slates:
        short.append(f"{slots.slates} slates < min_slates {settings.min_slates}")
    if ess < settings.min_ess:
        short.append(f"effective sample size {ess:.0f} < min_ess {settings.min_ess:.0f}")
    return {
        "computed": True,
        "sufficient": not short,
        "reason": "; ".join(short) or None,
        "slates": slots.slates,
        "slots": len(slots.slate),
        "effective_sample_size": ess,
        "level": LEVEL,
        "challenger": {
            name: {k: asdict(estimates[name])[k] for k in ("value", "low", "high")}
            for name in REPORTED
        },
        "champion_logged": {"value": logged_value(slots), "low": low, "high": high},
    }


def ope_block(ctx: OpeContext, booster: xgb.Booster, service: str) -> dict[str, Any]:
    """The ``ope`` block of ``metrics.json``; ``computed: false`` with a ``reason`` when the
    window's logs give no estimate."""
    settings = ctx.settings.ope
    until = ctx.until or datetime.now(UTC)
    base: dict[str, Any] = {
        "required": settings.require_ope,
        "reward": settings.reward,
        "epsilon": settings.epsilon,
        "min_slates": settings.min_slates,
        "min_ess": settings.min_ess,
        "window": {"until": until.isoformat(), "hours": settings.window_hours},
        "log": "served slots only (candidates that were not served are not logged)",
        "candidates": "served_only",
        "full_candidate_share": 0.0,
    }
    try:
        frame, since = closed_slates(ctx.settings, ctx.champion, until)
        scores = challenger_scores(booster, frame, service)
        slots = slots_from_frame(frame, "reward", np.zeros(len(frame)))
        remaining = remaining_candidates(slots.propensity, settings.epsilon)
        best = served_best(slots.slate, slots.position, scores)
        q = epsilon_greedy_target(best, remaining, settings.epsilon)
        full = _full_targets(ctx, frame, since, until, remaining, booster, service)
        q = np.where(full.full, full.target, q)
        slots = LoggedSlots(slots.slate, slots.position, slots.propensity, slots.reward, q)
        block = {**base, **estimate_block(slots, settings), **_mode(full, slots.slates)}
    except (OpeUnavailable, OffPolicyError) as exc:
        log.info("off-policy check not computed: %s", exc)
        return {**base, "computed": False, "sufficient": False, "reason": str(exc)}
    block["window"]["since"] = since.isoformat()
    return block


def _full_targets(
    ctx: OpeContext,
    frame: pd.DataFrame,
    since: datetime,
    until: datetime,
    remaining: np.ndarray,
    booster: xgb.Booster,
    service: str,
) -> FullTargets:
    """Exact target propensities of the slates the candidate log covers."""
    from flywheel.ope_candidates import booster_scorer, candidate_records, full_targets

    assert ctx.champion is not None  # closed_slates refused otherwise
    records = candidate_records(ctx.settings, ctx.champion, since, until)
    scorer = booster_scorer(booster, service)
    return full_targets(frame, records, remaining, ctx.settings.ope.epsilon, scorer)


def _mode(full: FullTargets, slates: int) -> dict[str, Any]:
    """Which target propensities ran: ``candidates`` ``full`` (every slate re-ranked over
    its logged candidates), ``served_only`` (none) or ``mixed``, and the full share."""
    share = full.slates / slates if slates else 0.0
    mode = "full" if full.slates == slates else "served_only" if not full.slates else "mixed"
    text = {
        "full": "every candidate (the candidate log): exact target propensities",
        "mixed": f"every candidate for {share:.0%} of slates, served slots only for the rest",
        "served_only": "served slots only (candidates that were not served are not logged)",
    }[mode]
    if full.mismatched:
        text += f"; {full.mismatched} candidate record(s) disagreed with the served log"
    return {"candidates": mode, "full_candidate_share": share, "log": text,
            "candidate_records_mismatched": full.mismatched}  # fmt: skip


def gate(settings: OpeSettings, offline: Decision, block: dict[str, Any]) -> Decision:
    """The offline decision with the off-policy rule applied (see the module docstring)."""
    from flywheel.evaluate import Decision

    if not block.get("computed"):
        summary = f"off-policy check not computed: {block.get('reason')}"
    elif not block["sufficient"]:
        summary = f"off-policy check has too little data: {block['reason']}"
    else:
        snips = block["challenger"]["snips"]
        summary = (
            f"off-policy SNIPS {snips['value']:.4f} [95% {snips['low']:.4f}, {snips['high']:.4f}]"
            f" vs the champion's logged {block['champion_logged']['value']:.4f} on "
            f"{block['slates']} slates (ESS {block['effective_sample_size']:.0f})"
        )
    if not offline.blessed or not settings.require_ope:
        only = "" if settings.require_ope else " (report only)"
        return Decision(offline.blessed, f"{offline.reason}; {summary}{only}")
    if not block.get("computed") or not block["sufficient"]:
        return Decision(False, f"{offline.reason}; but {summary} (ope.require_ope refuses)")
    if not block["challenger"]["snips"]["low"] > block["champion_logged"]["value"]:
        return Decision(
            False,
            f"{offline.reason}; but {summary}: its lower bound does not exceed the champion's "
            "logged value (ope.require_ope)",
        )
    return Decision(True, f"{offline.reason}; {summary}: lower bound above it")


def kfp_numbers(block: dict[str, Any] | None) -> dict[str, float]:
    """The block's figures flattened for KFP ``Metrics`` (flags as 0/1; the component
    prefixes ``ope_``): ``challenger_snips_low``, ``champion_logged``, ``slates``, ..."""
    if block is None:
        return {}
    out = {k: float(block.get(k, False)) for k in ("required", "computed", "sufficient")}
    if not block.get("computed"):
        return out
    out["slates"] = float(block["slates"])
    out["effective_sample_size"] = float(block["effective_sample_size"])
    named = {f"challenger_{n}": v for n, v in block["challenger"].items()}
    for name, est in {**named, "champion_logged": block["champion_logged"]}.items():
        out[name] = est["value"]
        out[f"{name}_low"], out[f"{name}_high"] = est["low"], est["high"]
    return out
