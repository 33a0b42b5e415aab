"""Exploration: which candidates a slate serves, and each slot's logged propensity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Slate:
    """A served list: candidate indices in served order, with how each was chosen."""

    indices: np.ndarray
    propensities: np.ndarray
    explored: np.ndarray


def epsilon_greedy(scores: np.ndarray, k: int, epsilon: float, rng: np.random.Generator) -> Slate:
    """Fill ``min(k, n)`` slots: each slot takes the best remaining candidate with
    probability ``1 - epsilon``, else one of the ``m`` remaining uniformly at random.

    The propensity logged for slot ``s`` is the probability that the policy puts that item
    in that slot given the items in slots before it: ``1 - epsilon + epsilon / m`` for the
    best remaining item, ``epsilon / m`` for any other. It lies in ``(0, 1]`` for
    ``epsilon < 1``, and is 1 for every slot when ``epsilon = 0``. ``explored`` marks slots
    whose item is not the greedy choice. Ties keep candidate order.

    Args:
        scores: one score per candidate (higher is better).
        k: slots to fill.
        epsilon: exploration probability per slot, in ``[0, 1]``.
        rng: the source of the draws (seed it for reproducible slates).
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon={epsilon}; expected a probability in [0, 1]")
    remaining = [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")]
    n = min(int(k), len(remaining))
    chosen = np.empty(n, dtype=np.int64)
    propensity = np.empty(n, dtype=np.float64)
    explored = np.zeros(n, dtype=bool)
    for slot in range(n):
        m = len(remaining)
        pick = 0
        if epsilon > 0 and rng.random() < epsilon:
            pick = int(rng.integers(m))
        chosen[slot] = remaining.pop(pick)
        propensity[slot] = epsilon / m + (1.0 - epsilon if pick == 0 else 0.0)
        explored[slot] = pick != 0
    return Slate(chosen, propensity, explored)
