"""The skew comparison: equal within tolerance, missing on either side, and a deliberately
broken online value caught (the offline store's values read by Feast are covered by
tests/integration/test_monitor.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from flywheel.config import MonitorSettings
from flywheel.monitor.skew import compare_feature, compare_frames

T = MonitorSettings(skew_rtol=1e-3, skew_atol=1e-6, skew_min_equal_share=0.99)


def test_equal_within_tolerance_and_missing_by_hand() -> None:
    logged = np.array([1.0, 100.05, 2.0, np.nan, np.nan, 5.0])
    offline = np.array([1.0, 100.0, 2.1, np.nan, 3.0, np.nan])
    got = compare_feature("views_7d", logged, offline, T)
    # 1 == 1; |100.05 - 100| = 0.05 <= 1e-6 + 1e-3 * 100; 2.0 vs 2.1 differs; both missing
    # is equal; a value on one side only is not.
    assert (got.compared, got.equal, got.both_missing) == (6, 3, 1)
    assert (got.logged_missing, got.offline_missing) == (1, 1)
    assert got.equal_share == pytest.approx(0.5)
    assert got.max_abs_diff == pytest.approx(0.1)
    assert got.status == "skewed"
    assert compare_feature("x", np.ones(3), np.ones(3), T).status == "ok"
    empty = compare_feature("x", np.zeros(0), np.zeros(0), T)
    assert math.isnan(empty.equal_share) and empty.status == "ok"


def test_a_broken_online_value_is_caught_on_its_feature_only() -> None:
    rng = np.random.default_rng(0)
    offline = pd.DataFrame(
        {"views_7d": rng.poisson(4.0, 500).astype(float), "price": rng.uniform(1, 90, 500)}
    )
    logged = offline.sample(frac=1.0, random_state=1)  # same rows, another order
    logged["views_7d"] = logged["views_7d"] * 7  # the online path multiplies by a week
    logged.loc[logged.index[:2], "price"] += 1e-9  # float noise well within tolerance
    got = {s.feature: s for s in compare_frames(logged, offline, ["views_7d", "price", "gone"], T)}
    assert got["price"].status == "ok" and got["price"].equal_share == 1.0
    assert got["views_7d"].status == "skewed"
    # Only rows whose true value is 0 stay equal after the multiplication.
    assert got["views_7d"].equal == int((offline["views_7d"] == 0).sum())
    # A feature absent from both frames: missing on both sides, which is equal.
    assert got["gone"].both_missing == 500 and got["gone"].status == "ok"


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="views_7d"):
        compare_feature("views_7d", np.ones(2), np.ones(3), T)
