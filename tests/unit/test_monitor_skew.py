"""The skew comparison: equal within tolerance, missing on either side, and a deliberately
broken online value caught (the offline store's values read by Feast are covered by
tests/integration/test_monitor.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from flywheel.config import MonitorSettings
from flywheel.monitor.skew import compare_feature, compare_frames, pushed_rows

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


def _ts(*hours: float) -> pd.Series:
    base = pd.Timestamp("2026-12-01", tz="UTC")
    return pd.Series([base + pd.Timedelta(hours=h) for h in hours])


def test_pushed_rows_are_users_with_feedback_in_the_week_before_the_request() -> None:
    served = pd.DataFrame({"user_id": ["a", "a", "b", "c", "d"], "ts": _ts(1, 3, 3, 300, 2)})
    feedback = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "ts": _ts(2, 3, 100, 2)})
    # a: the 01:00 request came before the 02:00 click, the 03:00 one after it; b's feedback
    # is at the same instant (not before); c's is 200 h (> 7 days) before; d's at 02:00
    # is not strictly before its 02:00 request
    assert pushed_rows(served, feedback).tolist() == [False, True, False, False, False]
    assert not pushed_rows(served, feedback.iloc[:0]).any()


def test_pushed_values_skip_pushed_rows_and_other_features_still_compare() -> None:
    offline = pd.DataFrame({"clicks_7d": [1.0, 2.0, 3.0, 4.0], "price": [5.0, 6.0, 7.0, 8.0]})
    logged = offline.copy()
    logged.loc[1, "clicks_7d"] = 3.0  # the user clicked: the push counted it online
    logged.loc[1, "price"] = 60.0  # a broken item value on the same row
    pushed = np.array([False, True, False, False])
    clicks, price = compare_frames(logged, offline, ["clicks_7d", "price"], T, pushed)
    assert (clicks.compared, clicks.equal, clicks.pushed, clicks.status) == (3, 3, 1, "ok")
    assert (price.compared, price.equal, price.pushed, price.status) == (4, 3, 0, "skewed")
    # without the flags the push shows as skew
    unflagged = compare_frames(logged, offline, ["clicks_7d"], T)[0]
    assert (unflagged.equal, unflagged.status) == (3, "skewed")
