"""Training/serving skew: the raw values serving logged against the offline store's.

For served rows (a seeded sample of at most ``monitor.skew_max_rows``), the entity
``(user_id, item_id, category, event_timestamp = the request's ts)`` is looked up through
the same feature service, point in time (:func:`flywheel.feature_store.historical_features`),
and each raw feature compared: equal when both are missing or
``|logged - offline| <= skew_atol + skew_rtol * |offline|``. A feature whose equal share is
below ``monitor.skew_min_equal_share`` is ``skewed``.

What a disagreement means: the online path gave the model something other than what
training would have computed for the same moment. A broken online path (a view not
materialized, a wrong key, a unit change) shows as a share far below 1 on the features
involved. Some disagreement is expected where the online store lagged the offline one
(rows written to the offline store after the request was served, e.g. a later cycle's
feature build over the same hours); that staleness is skew too, and this counts it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from flywheel.config import MonitorSettings, Settings

SkewStatus = Literal["ok", "skewed"]


@dataclass(frozen=True)
class FeatureSkew:
    """How often one feature's logged value matched the offline store's."""

    feature: str
    compared: int
    equal: int
    equal_share: float
    both_missing: int
    logged_missing: int
    offline_missing: int
    max_abs_diff: float
    status: SkewStatus


def compare_feature(
    name: str, logged: np.ndarray, offline: np.ndarray, thresholds: MonitorSettings
) -> FeatureSkew:
    """Compare one feature's logged and offline values, row by row."""
    a = np.asarray(logged, dtype=np.float64)
    b = np.asarray(offline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"feature {name!r}: {a.shape} logged values against {b.shape} offline")
    na, nb = np.isnan(a), np.isnan(b)
    both = na & nb
    present = ~na & ~nb
    diff = np.abs(a - b)
    close = present & (diff <= thresholds.skew_atol + thresholds.skew_rtol * np.abs(b))
    equal = int(close.sum() + both.sum())
    n = int(a.size)
    share = equal / n if n else math.nan
    skewed = n > 0 and share < thresholds.skew_min_equal_share
    return FeatureSkew(
        feature=name,
        compared=n,
        equal=equal,
        equal_share=share,
        both_missing=int(both.sum()),
        logged_missing=int((na & ~nb).sum()),
        offline_missing=int((nb & ~na).sum()),
        max_abs_diff=float(diff[present].max()) if present.any() else math.nan,
        status="skewed" if skewed else "ok",
    )


def compare_frames(
    logged: pd.DataFrame,
    offline: pd.DataFrame,
    features: Sequence[str],
    thresholds: MonitorSettings,
) -> list[FeatureSkew]:
    """Per feature, compare two frames whose rows are the same served items (same index)."""
    from flywheel.ranking import feature_column

    offline = offline.loc[logged.index]
    return [
        compare_feature(
            f, _column(logged, f, feature_column), _column(offline, f, feature_column), thresholds
        )
        for f in features
    ]


def _column(frame: pd.DataFrame, name: str, read: object) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return read(frame, name)  # type: ignore[operator, no-any-return]


@dataclass(frozen=True)
class SkewReport:
    """The skew check of one window: which service, how many rows, per-feature results."""

    feature_service: str
    rows: int
    features: list[FeatureSkew]


def skew_check(settings: Settings, served: pd.DataFrame, service: str, seed: int = 0) -> SkewReport:
    """Compare the logged raw values of served rows with the offline store's, point in time.

    Args:
        settings: whose feature store to read (``monitor`` thresholds too).
        served: prediction-log rows of models scored through ``service``.
        service: the feature service (``ranking_v<N>``) whose raw features are compared.

    Raises:
        FeatureTablesMissingError / FeatureServiceNotFoundError: from the feature store.
    """
    from flywheel.feature_store import historical_features
    from flywheel.monitor.drift import logged_features
    from flywheel.ranking import feature_set

    thresholds = settings.monitor
    spec = feature_set(service)
    sample = served
    if len(served) > thresholds.skew_max_rows:
        sample = served.sample(thresholds.skew_max_rows, random_state=seed)
    logged = logged_features(sample)
    if "category" not in logged.columns:
        logged["category"] = "unknown"
    import pandas as pd

    entity = pd.DataFrame(
        {
            "user_id": sample["user_id"].astype(str).to_numpy(),
            "item_id": sample["item_id"].astype(str).to_numpy(),
            "category": logged["category"].fillna("unknown").astype(str).to_numpy(),
            "event_timestamp": pd.to_datetime(sample["ts"], utc=True).to_numpy(),
            "_row": np.arange(len(sample)),
        }
    )
    entity["event_timestamp"] = pd.to_datetime(entity["event_timestamp"], utc=True)
    offline = historical_features(settings, entity, feature_service=service)
    offline = offline.set_index("_row").sort_index()
    logged = logged.reset_index(drop=True)
    results = compare_frames(logged, offline, spec.raw, thresholds)
    return SkewReport(feature_service=service, rows=len(sample), features=results)
