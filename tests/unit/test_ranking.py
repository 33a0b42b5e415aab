"""The shared feature -> model-input transformation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flywheel.ranking import COLD_RECENCY_HOURS, MODEL_FEATURES, RAW_FEATURES, model_inputs


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
