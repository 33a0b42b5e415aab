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

What is *not* skew: ``/feedback`` pushes the user's new ``user_activity`` row to the online
store at once (:mod:`flywheel.serving.feedback`), so a user who clicked and then asked again
is served counts that no hourly snapshot of the offline store holds yet. On rows whose user
posted feedback in the 7 days before the request (``pushed``), the values a push changes
(:data:`~flywheel.serving.feedback.PUSHED_FEATURES`) are left out of the comparison and
counted in ``pushed``; every other feature of those rows is still compared. On a correctly
working service with feedback, pushed users otherwise showed as 2-3% skew on
``clicks_7d`` and the rates (tests/integration/test_watch_served.py).
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
    #: Rows left out because a feedback push moved this value online (see the module doc).
    pushed: int = 0


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
    pushed: np.ndarray | None = None,
) -> list[FeatureSkew]:
    """Per feature, compare two frames whose rows are the same served items (same index).

    ``pushed`` (one flag per row): rows whose user's feedback push may have moved the
    :data:`~flywheel.serving.feedback.PUSHED_FEATURES`; those features skip those rows.
    """
    import dataclasses

    from flywheel.ranking import feature_column
    from flywheel.serving.feedback import PUSHED_FEATURES

    offline = offline.loc[logged.index]
    flags = np.zeros(len(logged), dtype=bool) if pushed is None else np.asarray(pushed, bool)
    out = []
    for f in features:
        a, b = _column(logged, f, feature_column), _column(offline, f, feature_column)
        if f in PUSHED_FEATURES and flags.any():
            result = compare_feature(f, a[~flags], b[~flags], thresholds)
            out.append(dataclasses.replace(result, pushed=int(flags.sum())))
        else:
            out.append(compare_feature(f, a, b, thresholds))
    return out


#: How far back a user's feedback can still be in a pushed 7-day count.
PUSH_LOOKBACK = np.timedelta64(7, "D")


def pushed_rows(served: pd.DataFrame, feedback_users: pd.DataFrame) -> np.ndarray:
    """True for served rows whose user posted feedback in the 7 days before the request.

    Args:
        served: rows with ``user_id`` and ``ts``.
        feedback_users: one row per feedback event, with ``user_id`` and ``ts``.
    """
    import pandas as pd

    if feedback_users.empty or served.empty:
        return np.zeros(len(served), dtype=bool)
    events = feedback_users[["user_id", "ts"]].copy()
    events["user_id"] = events["user_id"].astype(str)
    events["ts"] = pd.to_datetime(events["ts"], utc=True).astype("datetime64[us, UTC]")
    events = events.sort_values("ts")
    rows = pd.DataFrame(
        {
            "user_id": served["user_id"].astype(str).to_numpy(),
            "ts": pd.to_datetime(served["ts"], utc=True).to_numpy(),
            "_row": np.arange(len(served)),
        }
    )
    rows["ts"] = pd.to_datetime(rows["ts"], utc=True).astype("datetime64[us, UTC]")
    # the user's latest feedback strictly before the request
    joined = pd.merge_asof(
        rows.sort_values("ts"),
        events.rename(columns={"ts": "fb_ts"}),
        left_on="ts",
        right_on="fb_ts",
        by="user_id",
        allow_exact_matches=False,
    ).sort_values("_row")
    age = joined["ts"] - joined["fb_ts"]
    return (joined["fb_ts"].notna() & (age <= pd.Timedelta(PUSH_LOOKBACK))).to_numpy()


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


def skew_check(
    settings: Settings,
    served: pd.DataFrame,
    service: str,
    seed: int = 0,
    feedback_users: pd.DataFrame | None = None,
) -> SkewReport:
    """Compare the logged raw values of served rows with the offline store's, point in time.

    Args:
        settings: whose feature store to read (``monitor`` thresholds too).
        served: prediction-log rows of models scored through ``service``.
        service: the feature service (``ranking_v<N>``) whose raw features are compared.
        feedback_users: feedback events (``user_id``, ``ts``) from at least 7 days before
            the first served row: their users' pushed values are not compared (module doc).

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
    pushed = None
    if feedback_users is not None:
        pushed = pushed_rows(sample.reset_index(drop=True), feedback_users)
    results = compare_frames(logged, offline, spec.raw, thresholds, pushed)
    return SkewReport(feature_service=service, rows=len(sample), features=results)
