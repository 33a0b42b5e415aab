"""epsilon_greedy (flywheel.serving): cases mutation testing found unpinned.

Ties keep candidate order even past numpy's small-array insertion sort (which is stable by
accident below 17 elements), ``epsilon = 1`` is a valid (fully random) policy, and
``explored`` is a boolean mask.
"""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.serving import epsilon_greedy


def test_ties_keep_candidate_order_for_many_candidates() -> None:
    scores = np.array([0.5] * 40 + [0.9] + [0.5] * 40)
    slate = epsilon_greedy(scores, 81, 0.0, np.random.default_rng(0))
    assert slate.indices.tolist() == [40, *range(40), *range(41, 81)]
    assert slate.propensities.tolist() == [1.0] * 81


def test_epsilon_one_is_uniform_exploration() -> None:
    slate = epsilon_greedy(np.arange(5.0), 3, 1.0, np.random.default_rng(1))
    # Every slot is a uniform draw over what remains: 1/5, 1/4, 1/3 (the best item too).
    assert slate.propensities == pytest.approx([1 / 5, 1 / 4, 1 / 3])
    assert len(set(slate.indices.tolist())) == 3


def test_explored_is_a_boolean_mask() -> None:
    slate = epsilon_greedy(np.arange(30.0), 10, 0.5, np.random.default_rng(2))
    assert slate.explored.dtype == np.bool_ and slate.propensities.dtype == np.float64
    assert 0 < slate.explored.sum() < 10
    assert slate.indices[~slate.explored].tolist() == sorted(
        slate.indices[~slate.explored].tolist(), reverse=True
    )
