"""The shared feature -> model-input transformation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flywheel.ranking import (
    COLD_RECENCY_HOURS,
    FEATURE_SETS,
    HISTORY_CAP_HOURS,
    MODEL_FEATURES,
    RAW_FEATURES,
    model_inputs,
    service_of,
)


def _frame(n: int, value: float | None) -> pd.DataFrame:
    return pd.DataFrame({c: [value] * n for c in RAW_FEATURES}, dtype="float64")


def test_raw_features_pass_through_in_order() -> None:
    df = _frame(1, 0.0)
    for i, col in enumerate(RAW_FEATURES):
        df[col] = float(i + 1)
    x = model_inputs(df, at_unix=0.0)
    assert x.dtype == np.float32 and x.shape == (1, len(MODEL_FEATURES))
    for j, name in enumerate(MODEL_FEATURES[:-2]):
        assert x[0, j] == RAW_FEATURES.index(name) + 1


def test_derived_recency_and_price_ratio() -> None:
    df = _frame(2, 1.0)
    df["last_event_unix"] = [1000.0, 1000.0]
    df["avg_price_7d"] = [10.0, 0.0]
    df["price"] = [25.0, 25.0]
    x = model_inputs(df, at_unix=np.array([1000.0 + 7200.0, 500.0]))
    recency = x[:, MODEL_FEATURES.index("recency_hours")]
    ratio = x[:, MODEL_FEATURES.index("price_ratio")]
    assert recency[0] == pytest.approx(2.0)
    assert recency[1] == 0.0  # clock skew never gives negative recency
    assert ratio[0] == pytest.approx(2.5)
    assert ratio[1] == 1.0  # no price history: neutral ratio


def test_cold_start_rows_get_neutral_values() -> None:
    x = model_inputs(_frame(3, None), at_unix=1e9)
    assert np.isfinite(x).all()
    assert (x[:, MODEL_FEATURES.index("recency_hours")] == COLD_RECENCY_HOURS).all()
    assert (x[:, MODEL_FEATURES.index("views_7d")] == 0).all()


def test_missing_columns_are_named() -> None:
    with pytest.raises(KeyError, match="cat_affinity_7d"):
        model_inputs(_frame(1, 0.0).drop(columns=["cat_affinity_7d"]), at_unix=0.0)


def test_columns_as_arrays_give_the_dataframes_inputs() -> None:
    """Serving hands model_inputs a mapping of float64 arrays; training a DataFrame (with
    nullable columns): the same values give the same matrix."""
    rng = np.random.default_rng(3)
    columns = {n: rng.random(6) * 50 for n in RAW_FEATURES}
    columns["views_7d"][2] = np.nan
    columns["last_event_unix"][4] = np.nan
    frame = pd.DataFrame(columns).astype({"views_1h": "Float64"})  # a nullable column too
    frame.loc[1, "views_1h"] = pd.NA
    columns["views_1h"] = columns["views_1h"].copy()
    columns["views_1h"][1] = np.nan
    np.testing.assert_array_equal(model_inputs(columns, 1e9), model_inputs(frame, 1e9))
    with pytest.raises(KeyError, match="price"):
        model_inputs({n: v for n, v in columns.items() if n != "price"}, 1e9)


# ---- ranking_v2 ----------------------------------------------------------------------------

V2 = FEATURE_SETS["ranking_v2"]


def _v2_frame(n: int, value: float | None) -> pd.DataFrame:
    return pd.DataFrame({c: [value] * n for c in V2.raw}, dtype="float64")


def test_the_service_picks_the_columns() -> None:
    frame = _v2_frame(2, 3.0)
    assert model_inputs(frame, 0.0, "ranking_v2").shape == (2, len(V2.model))
    # a v1 champion scores v2 rows on its own columns, the same values as v1 rows give
    v1 = model_inputs(frame, 0.0, "ranking_v1")
    assert v1.shape == (2, len(MODEL_FEATURES))
    assert (v1 == model_inputs(frame[list(RAW_FEATURES)], 0.0)).all()
    assert (model_inputs(frame, 0.0, "ranking_v2")[:, : len(MODEL_FEATURES)] == v1).all()
    # without a service, the frame's own columns say which (what serving reads)
    assert model_inputs(frame, 0.0).shape == (2, len(V2.model))
    assert service_of(frame[list(RAW_FEATURES)]) == "ranking_v1"
    with pytest.raises(KeyError, match="ranking_v9"):
        model_inputs(frame, 0.0, "ranking_v9")
    with pytest.raises(KeyError, match="ui_last_cart_unix"):
        model_inputs(frame.drop(columns=["ui_last_cart_unix"]), 0.0, "ranking_v2")


def test_v2_raw_values_pass_through_by_name() -> None:
    frame = _v2_frame(1, 0.0)
    for i, col in enumerate(V2.raw):
        frame[col] = float(i + 1)
    x = model_inputs(frame, 0.0, "ranking_v2")
    for j, name in enumerate(V2.model):
        if name in V2.raw:
            assert x[0, j] == V2.raw.index(name) + 1, name


def test_v2_derived_columns() -> None:
    frame = _v2_frame(4, 1.0)
    at = 1_000_000.0
    frame["ui_last_view_unix"] = [at - 5400.0, np.nan, at + 60.0, at - 90 * 86_400.0]
    frame["price"] = [30.0, 30.0, np.nan, 10.0]
    frame["cat_median_price"] = [20.0, np.nan, 20.0, 0.0]
    frame["cat_views_30d"] = [3.0, 2.0, np.nan, 1.0]
    frame["views_30d"] = [12.0, 0.0, 5.0, np.nan]
    x = model_inputs(frame, at, "ranking_v2")
    col = {name: x[:, V2.model.index(name)] for name in V2.model}
    # hours since the last view: capped at 30 days, missing = the cap, never negative
    assert col["ui_hours_since_view"].tolist() == [1.5, HISTORY_CAP_HOURS, 0.0, HISTORY_CAP_HOURS]
    # the item's price over its category's median; neutral 1.0 when either is unknown
    assert col["price_to_cat_median"].tolist() == [1.5, 1.0, 1.0, 1.0]
    # the category's share of the user's 30-day views; 0 without views
    assert col["cat_share_30d"].tolist() == [0.25, 0.0, 0.0, 0.0]
    assert np.isfinite(x).all()


def test_v2_cold_rows_are_neutral() -> None:
    x = model_inputs(_v2_frame(2, None), 1e9, "ranking_v2")
    assert np.isfinite(x).all()
    assert (x[:, V2.model.index("ui_hours_since_cart")] == HISTORY_CAP_HOURS).all()
    assert (x[:, V2.model.index("ui_views_30d")] == 0).all()
