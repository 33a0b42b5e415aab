"""Off-policy estimates: what a target policy (the challenger) would have earned on the
traffic a logging policy (the champion, with exploration) served.

**Unit and value.** The log holds one row per served *slot*: the request it belongs to
(its *slate*), the position, the logging propensity ``p`` and the outcome ``r`` (e.g. 1 when
the impression was engaged). The value of a policy is the expected total reward of one
slate, ``V = E[sum_k r_k]`` (engagements per request).

**Examination.** Slots are handled one position at a time (the *independent-slot*
estimator): the target's propensity ``q`` of a slot is the probability that the target
policy puts the logged item in that position, given the same context, and the weight is
``w = q / p``. Serving logs ``p`` conditional on the items above the slot
(:func:`flywheel.serving.exploration.epsilon_greedy`), so ``q`` must be conditional on the
same logged prefix. Under a position-based examination model (a user examines position
``k`` with a probability that depends on ``k`` only and then engages with the item's own
attractiveness) the examination probability is the same factor in both policies' reward
at ``k``: it cancels in ``w`` and needs no estimate. What is *not* captured is a target
whose choice above ``k`` would change what sits at ``k`` (the prefix is the logged one),
and any examination that depends on the items above (a cascade); for those, the estimate
is of the target's per-slot choices given the logged prefixes. Positions whose target
mass falls on items never logged there get no support: ``q > 0`` needs ``p > 0``, which
epsilon-greedy logging with ``epsilon > 0`` gives every candidate.

**Estimators** (``n`` slates, sums over slots ``i``; ``k(i)`` its position):

- IPS: ``(1/n) sum_i w_i r_i``; unbiased, high variance when weights are large.
- SNIPS, per position: ``sum_k (n_k/n) * sum_{k(i)=k} w_i r_i / sum_{k(i)=k} w_i``, where
  ``n_k`` slates have a slot ``k`` (a position the target never backs adds 0); biased but
  consistent, and bounded by the rewards.
- DR (doubly robust): ``(1/n) sum_i [d_i + w_i (r_i - g_i)]`` with a direct model ``g_i``
  (its estimate of the logged slot's reward) and ``d_i`` (its expected reward of the
  target's choice at that slot). The default direct model, :func:`position_baseline`, is
  the mean logged reward at each position: ``g_i = d_i = mean r at k(i)`` (the target
  fills every position too). It uses no item information, so it acts as a per-position
  control variate: DR stays unbiased whatever the model, and is as good as IPS at worst
  when ``w`` and ``r`` are unrelated to it. A model of item rewards (e.g. the
  challenger's calibrated scores) can be passed instead. The model is fitted on the same
  log and kept fixed in the bootstrap (no cross-fitting).

**Intervals.** A percentile bootstrap over slates (a request's slots stay together),
``n_boot`` resamples from a seeded generator. **Effective sample size**:
``(sum w)^2 / sum w^2`` over slots; far below the slot count means the estimate rests on a
few heavily weighted slots.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

ESTIMATORS: Final[tuple[str, ...]] = ("ips", "snips", "dr")


class OffPolicyError(ValueError):
    """The logged slots cannot give an estimate; the message names the field."""


@dataclass(frozen=True)
class LoggedSlots:
    """One entry per served slot: slate code (0..n-1), position, ``p``, ``r`` and ``q``."""

    slate: np.ndarray
    position: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    target: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.slate)
        for name in ("position", "propensity", "reward", "target"):
            if len(getattr(self, name)) != n:
                raise OffPolicyError(f"{name} has {len(getattr(self, name))} entries; slate {n}")
        if n == 0:
            raise OffPolicyError("no logged slots: nothing to estimate from")
        p, q = self.propensity, self.target
        if not np.all((p > 0) & (p <= 1)):
            raise OffPolicyError(f"propensity must lie in (0, 1]; got min {p.min()}, max {p.max()}")
        if not np.all((q >= 0) & (q <= 1)):
            raise OffPolicyError(f"target propensity must lie in [0, 1]; got {q.min()}..{q.max()}")
        if not np.all(np.isfinite(self.reward)):
            raise OffPolicyError("reward holds a missing or infinite value")

    @property
    def slates(self) -> int:
        return int(self.slate.max()) + 1

    @property
    def weights(self) -> np.ndarray:
        """Importance weights ``q / p`` per slot."""
        return self.target / self.propensity


def slots_from_frame(
    frame: pd.DataFrame, reward: str, target: np.ndarray, slate: str = "request_id"
) -> LoggedSlots:
    """Slots of a served-impressions frame (``position``, ``propensity``, ``reward``).

    Args:
        frame: one row per served slot (prediction log columns plus the reward column).
        reward: the outcome column (bool or number).
        target: the target policy's propensity of each row's (item, position).
        slate: the column naming each row's slate (the request).
    """
    import pandas as pd

    codes, _ = pd.factorize(frame[slate], sort=False)
    return LoggedSlots(
        slate=np.asarray(codes, dtype=np.int64),
        position=frame["position"].to_numpy(dtype=np.int64),
        propensity=frame["propensity"].to_numpy(dtype=np.float64),
        reward=frame[reward].to_numpy(dtype=np.float64),
        target=np.asarray(target, dtype=np.float64),
    )


def position_baseline(slots: LoggedSlots) -> tuple[np.ndarray, np.ndarray]:
    """The default direct model: the mean logged reward at each slot's position.

    Returns ``(logged_direct, target_direct)``, equal arrays with one value per slot.
    """
    _, inverse = np.unique(slots.position, return_inverse=True)
    sums = np.bincount(inverse, weights=slots.reward)
    means = sums / np.bincount(inverse)
    g = means[inverse]
    return g, g.copy()


# Each estimator takes per-slate multiplicities m (ones for the point estimate, bootstrap
# counts for a resample), so a resample needs no copying of the slots.
Estimator = Callable[[LoggedSlots, np.ndarray], float]


def _ips(slots: LoggedSlots, m: np.ndarray) -> float:
    mm = m[slots.slate]
    return float(np.sum(mm * slots.weights * slots.reward) / m.sum())


def _snips(slots: LoggedSlots, m: np.ndarray) -> float:
    mm, w = m[slots.slate], slots.weights
    _, k = np.unique(slots.position, return_inverse=True)
    num = np.bincount(k, weights=mm * w * slots.reward)
    den = np.bincount(k, weights=mm * w)
    share = np.bincount(k, weights=mm) / m.sum()
    per_position = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(np.sum(share * per_position))


def _dr(logged_direct: np.ndarray, target_direct: np.ndarray) -> Estimator:
    def estimate(slots: LoggedSlots, m: np.ndarray) -> float:
        mm = m[slots.slate]
        terms = target_direct + slots.weights * (slots.reward - logged_direct)
        return float(np.sum(mm * terms) / m.sum())

    return estimate


def effective_sample_size(weights: np.ndarray) -> float:
    """``(sum w)^2 / sum w^2``: how many equally weighted slots the estimate is worth."""
    w = np.asarray(weights, dtype=np.float64)
    total_sq = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / total_sq if total_sq > 0 else 0.0


@dataclass(frozen=True)
class OffPolicyEstimate:
    """One estimator's value per slate with its bootstrap interval."""

    estimator: str
    value: float
    low: float
    high: float
    level: float
    effective_sample_size: float
    slates: int
    slots: int


def bootstrap_interval(
    slots: LoggedSlots, estimator: Estimator, n_boot: int, seed: int, level: float
) -> tuple[float, float]:
    """Percentile interval of ``estimator`` over ``n_boot`` resamples of whole slates."""
    if n_boot < 2:
        raise OffPolicyError(f"n_boot={n_boot}; expected at least 2 resamples")
    if not 0 < level < 1:
        raise OffPolicyError(f"level={level}; expected a probability in (0, 1)")
    rng = np.random.default_rng(seed)
    n = slots.slates
    draws = np.empty(n_boot)
    for b in range(n_boot):
        m = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
        draws[b] = estimator(slots, m)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(low), float(high)


def off_policy_estimates(
    slots: LoggedSlots,
    *,
    direct: tuple[np.ndarray, np.ndarray] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, OffPolicyEstimate]:
    """IPS, SNIPS and DR estimates of the target's value per slate, with intervals.

    Args:
        slots: the logged slots with the target's propensities.
        direct: ``(logged_direct, target_direct)`` per slot for DR (default
            :func:`position_baseline`).
        n_boot: bootstrap resamples; seed: their generator's seed; level: interval level.

    Returns:
        ``{"ips": ..., "snips": ..., "dr": ...}``.
    """
    g, d = direct if direct is not None else position_baseline(slots)
    if len(g) != len(slots.slate) or len(d) != len(slots.slate):
        raise OffPolicyError(f"direct model has {len(g)}/{len(d)} values; slots {len(slots.slate)}")
    estimators: dict[str, Estimator] = {"ips": _ips, "snips": _snips, "dr": _dr(g, d)}
    ess = effective_sample_size(slots.weights)
    ones = np.ones(slots.slates)
    out = {}
    for name, fn in estimators.items():
        low, high = bootstrap_interval(slots, fn, n_boot, seed, level)
        out[name] = OffPolicyEstimate(
            name, fn(slots, ones), low, high, level, ess, slots.slates, len(slots.slate)
        )
    return out


def logged_value(slots: LoggedSlots) -> float:
    """The logging policy's own value per slate (mean total reward; no weighting)."""
    return float(slots.reward.sum() / slots.slates) if slots.slates else math.nan
