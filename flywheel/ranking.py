"""The one place raw feature values become model inputs.

Training (via preprocess), offline evaluation and the serving layer all call
:func:`model_inputs` on the columns the Feast feature service returns, so a change to the
transformation reaches every consumer at once and training/serving skew cannot creep in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: Feature values that come straight from the feature service.
RAW_FEATURES: Final[tuple[str, ...]] = (
    # user_activity
    "views_1h",
    "views_24h",
    "views_7d",
    "carts_24h",
    "carts_7d",
    "purchases_7d",
    "clicks_7d",
    "cart_rate_7d",
    "conversion_rate_7d",
    "avg_price_7d",
    "last_event_unix",
    # user_category
    "cat_views_7d",
    "cat_affinity_7d",
    # item_activity
    "item_views_24h",
    "item_views_7d",
    "item_carts_7d",
    "item_purchases_7d",
    "item_clicks_7d",
    "item_conversion_rate_7d",
    # item_catalog
    "price",
)

#: Columns of the model's input matrix, in order. Derived columns last.
MODEL_FEATURES: Final[tuple[str, ...]] = (
    *(f for f in RAW_FEATURES if f != "last_event_unix"),
    "recency_hours",
    "price_ratio",
)

#: A user never seen (or whose features expired) looks like one inactive for 30 days.
COLD_RECENCY_HOURS: Final = 30 * 24.0


def model_inputs(
    features: pd.DataFrame | Mapping[str, Any], at_unix: np.ndarray | float
) -> np.ndarray:
    """Turn feature-service columns into the model's float32 input matrix.

    Args:
        features: one row per (user, item) candidate with the :data:`RAW_FEATURES`
            columns (a DataFrame, or a mapping of column name to equal-length arrays, as
            serving holds them); missing values (cold-start users, new items, expired
            rows) are allowed.
        at_unix: the scoring time in epoch seconds, per row or one value for all rows
            (the entity timestamp offline, the request time online).

    Returns:
        ``float32`` array of shape ``(len(features), len(MODEL_FEATURES))``.

    Raises:
        KeyError: naming the raw feature columns that are absent.
    """
    names = features.columns if hasattr(features, "columns") else features.keys()
    missing = [c for c in RAW_FEATURES if c not in names]
    if missing:
        raise KeyError(f"feature columns missing from the feature service result: {missing}")
    n = len(feature_column(features, RAW_FEATURES[0]))
    out = np.zeros((n, len(MODEL_FEATURES)), dtype=np.float32)
    for j, name in enumerate(MODEL_FEATURES[: len(RAW_FEATURES) - 1]):
        out[:, j] = _column(features, name, 0.0)
    last = _column(features, "last_event_unix", np.nan)
    recency = (np.asarray(at_unix, dtype=np.float64) - last) / 3600.0
    out[:, -2] = np.where(np.isnan(recency), COLD_RECENCY_HOURS, np.clip(recency, 0.0, None))
    avg_price = _column(features, "avg_price_7d", 0.0)
    price = _column(features, "price", 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(avg_price > 0, price / avg_price, 1.0)
    out[:, -1] = ratio
    return out


def feature_column(features: pd.DataFrame | Mapping[str, Any], name: str) -> np.ndarray:
    """Column ``name`` as float64, missing values (null, NA, NaN) as NaN."""
    values = features[name]
    if hasattr(values, "to_numpy"):
        return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.asarray(values, dtype=np.float64)


def _column(features: pd.DataFrame | Mapping[str, Any], name: str, fill: float) -> np.ndarray:
    values = feature_column(features, name)
    return np.where(np.isnan(values), fill, values)
