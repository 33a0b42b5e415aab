"""The one place raw feature values become model inputs, per feature service version.

Training (via preprocess), offline evaluation and the serving layer all call
:func:`model_inputs` on the columns the Feast feature service returns, so a change to the
transformation reaches every consumer at once and training/serving skew cannot creep in.

Each ``ranking_v<N>`` service has its :class:`FeatureSet`: the raw values it returns and
the model's input columns. A model is trained on one service (its lineage records which)
and scored with that service's inputs for as long as it serves, so a ``ranking_v1``
champion keeps its 21 columns while ``ranking_v2`` challengers train on 49. Every later
service returns ranking_v1's raw features too, and its model columns start with v1's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: Feature values that come straight from ``ranking_v1`` (returned by every service).
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

#: Columns of ``ranking_v1``'s model input matrix, in order. Derived columns last.
MODEL_FEATURES: Final[tuple[str, ...]] = (
    *(f for f in RAW_FEATURES if f != "last_event_unix"),
    "recency_hours",
    "price_ratio",
)

#: What ``ranking_v2`` adds to ranking_v1's raw features, view by view.
RAW_FEATURES_ADDED_V2: Final[tuple[str, ...]] = (
    # user_item
    *(f"ui_{k}_{w}" for k in ("views", "carts", "purchases") for w in ("24h", "7d", "30d")),
    "ui_last_view_unix",
    "ui_last_cart_unix",
    "ui_last_purchase_unix",
    # user_category_history
    "cat_carts_7d",
    "cat_purchases_7d",
    "cat_views_30d",
    "cat_carts_30d",
    "cat_purchases_30d",
    # user_activity_30d
    "views_30d",
    "carts_30d",
    "purchases_30d",
    "clicks_30d",
    # item_activity_30d
    "item_views_30d",
    "item_carts_30d",
    "item_purchases_30d",
    "item_trend_24h_7d",
    # category_price
    "cat_median_price",
)

#: The latest-event times of the user x item history; the model sees hours since each.
_LAST_EVENTS: Final = {
    "ui_hours_since_view": "ui_last_view_unix",
    "ui_hours_since_cart": "ui_last_cart_unix",
    "ui_hours_since_purchase": "ui_last_purchase_unix",
}

#: ``ranking_v2``'s model columns: v1's, then v2's raw values, then v2's derived columns.
MODEL_FEATURES_V2: Final[tuple[str, ...]] = (
    *MODEL_FEATURES,
    *(f for f in RAW_FEATURES_ADDED_V2 if f not in _LAST_EVENTS.values()),
    *_LAST_EVENTS,
    "price_to_cat_median",
    "cat_share_30d",
)

#: A user never seen (or whose features expired) looks like one inactive for 30 days.
COLD_RECENCY_HOURS: Final = 30 * 24.0
#: Hours since a user's last view/cart/purchase of an item: capped here, and this when the
#: pair has no such event (or its history expired): "not in the last 30 days".
HISTORY_CAP_HOURS: Final = 30 * 24.0


@dataclass(frozen=True)
class FeatureSet:
    """What one feature service gives the model: its raw values and the input columns."""

    service: str
    raw: tuple[str, ...]
    model: tuple[str, ...]


#: Every feature service a model may be trained on, by name.
FEATURE_SETS: Final[dict[str, FeatureSet]] = {
    "ranking_v1": FeatureSet("ranking_v1", RAW_FEATURES, MODEL_FEATURES),
    "ranking_v2": FeatureSet(
        "ranking_v2", (*RAW_FEATURES, *RAW_FEATURES_ADDED_V2), MODEL_FEATURES_V2
    ),
}


def feature_set(service: str) -> FeatureSet:
    """The :class:`FeatureSet` of ``service`` (e.g. ``ranking_v2``).

    Raises:
        KeyError: naming the service and the known ones.
    """
    try:
        return FEATURE_SETS[service]
    except KeyError:
        raise KeyError(
            f"feature service {service!r} has no model inputs defined in flywheel.ranking "
            f"(known: {', '.join(FEATURE_SETS)})"
        ) from None


def model_features(service: str) -> tuple[str, ...]:
    """The model input columns of ``service``, in order."""
    return feature_set(service).model


def service_with_columns(columns: list[str] | tuple[str, ...]) -> str:
    """The feature service whose model columns are ``columns`` (a booster's own).

    Raises:
        KeyError: no service has exactly these columns.
    """
    for spec in FEATURE_SETS.values():
        if list(spec.model) == list(columns):
            return spec.service
    raise KeyError(f"no feature service has these {len(columns)} model columns")


def service_of(features: pd.DataFrame | Mapping[str, Any]) -> str:
    """The newest service whose raw features are all columns of ``features``.

    A frame read through a feature service has exactly that service's columns, so this
    names it; ``ranking_v1`` when no set is complete (:func:`model_inputs` then names the
    missing columns).
    """
    columns = _names(features)
    complete = [s for s in FEATURE_SETS.values() if set(s.raw) <= columns]
    return complete[-1].service if complete else "ranking_v1"


def model_inputs(
    features: pd.DataFrame | Mapping[str, Any],
    at_unix: np.ndarray | float,
    service: str | None = None,
) -> np.ndarray:
    """Turn feature-service columns into the model's float32 input matrix.

    Args:
        features: one row per (user, item) candidate with the service's raw feature
            columns (a DataFrame, or a mapping of column name to equal-length arrays, as
            serving holds them); missing values (cold-start users, new items, expired
            rows) are allowed.
        at_unix: the scoring time in epoch seconds, per row or one value for all rows
            (the entity timestamp offline, the request time online).
        service: the feature service the model was trained on (its lineage's
            ``feature_service``). ``None``: the one whose features the frame carries
            (:func:`service_of`), right for a frame read through the model's own service.

    Returns:
        ``float32`` array of shape ``(len(features), len(model_features(service)))``.

    Raises:
        KeyError: naming the raw feature columns that are absent, or an unknown service.
    """
    spec = feature_set(service or service_of(features))
    columns = _names(features)
    missing = [c for c in spec.raw if c not in columns]
    if missing:
        raise KeyError(f"feature columns missing from the feature service result: {missing}")
    at = np.asarray(at_unix, dtype=np.float64)
    derived = _derived(features, at, columns)
    n = len(feature_column(features, spec.raw[0]))
    out = np.zeros((n, len(spec.model)), dtype=np.float32)
    for j, name in enumerate(spec.model):
        out[:, j] = derived[name] if name in derived else _column(features, name, 0.0)
    return out


def _derived(
    features: pd.DataFrame | Mapping[str, Any], at: np.ndarray, columns: set[str]
) -> dict[str, np.ndarray]:
    """The derived columns whose inputs the frame has (each service uses its own)."""
    out: dict[str, np.ndarray] = {}
    if "last_event_unix" in columns:
        recency = (at - _column(features, "last_event_unix", np.nan)) / 3600.0
        out["recency_hours"] = np.where(
            np.isnan(recency), COLD_RECENCY_HOURS, np.clip(recency, 0.0, None)
        )
    price = _column(features, "price", np.nan) if "price" in columns else None
    if price is not None and "avg_price_7d" in columns:
        out["price_ratio"] = _ratio(np.nan_to_num(price), _column(features, "avg_price_7d", 0.0))
    for name, last in _LAST_EVENTS.items():
        if last in columns:
            hours = (at - _column(features, last, np.nan)) / 3600.0
            out[name] = np.where(
                np.isnan(hours), HISTORY_CAP_HOURS, np.clip(hours, 0.0, HISTORY_CAP_HOURS)
            )
    if price is not None and "cat_median_price" in columns:
        median = _column(features, "cat_median_price", 0.0)
        out["price_to_cat_median"] = np.where(np.isnan(price), 1.0, _ratio(price, median))
    if {"cat_views_30d", "views_30d"} <= columns:
        views = _column(features, "views_30d", 0.0)
        share = _ratio(_column(features, "cat_views_30d", 0.0), views)
        out["cat_share_30d"] = np.where(views > 0, share, 0.0)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` where ``den > 0``, 1.0 (neutral) elsewhere."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)


def _names(features: pd.DataFrame | Mapping[str, Any]) -> set[str]:
    return set(features.columns if hasattr(features, "columns") else features.keys())


def feature_column(features: pd.DataFrame | Mapping[str, Any], name: str) -> np.ndarray:
    """Column ``name`` as float64, missing values (null, NA, NaN) as NaN."""
    values = features[name]
    if hasattr(values, "to_numpy"):
        return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.asarray(values, dtype=np.float64)


def _column(features: pd.DataFrame | Mapping[str, Any], name: str, fill: float) -> np.ndarray:
    values = feature_column(features, name)
    return np.where(np.isnan(values), fill, values)
