"""Online lookups through a feature service, and pushes of fresh user activity."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from flywheel.packed_history import expand, packed_view_of
from flywheel.schemas import USER_ACTIVITY_SCHEMA, column_names

if TYPE_CHECKING:
    from feast import FeatureStore

    from flywheel.config import Settings

from flywheel.feature_store.base import (
    USER_ACTIVITY_PUSH,
    FeatureServiceNotFoundError,
    ViewLookup,
    _as_utc,
    _online_store_errors,
    _require_columns,
    _resolve_store,
    _utc_column,
)

log = logging.getLogger(__name__)


def service_lookups(store: FeatureStore, service: str) -> tuple[ViewLookup, ...]:
    """The views ``service`` reads, each with its join keys, features and ttl.

    ``ranking_v1``: ``user_activity`` (user_id), ``user_category`` (user_id, category),
    ``item_activity`` and ``item_catalog`` (item_id). ``ranking_v2`` adds ``user_item``
    (user_id, item_id), ``user_category_history`` (user_id, category),
    ``user_activity_30d`` (user_id), ``item_activity_30d`` (item_id) and
    ``category_price`` (category).

    Raises:
        FeatureServiceNotFoundError: ``service`` is not registered.
    """
    from feast.errors import FeatureServiceNotFoundException

    try:
        spec = store.get_feature_service(service)
    except FeatureServiceNotFoundException as exc:
        raise FeatureServiceNotFoundError(f"feature service {service!r} is not registered") from exc
    out = []
    for projection in spec.feature_view_projections:
        view = store.get_feature_view(projection.name)
        ttl = view.ttl.total_seconds() if view.ttl else 0.0
        out.append(
            ViewLookup(
                view=view.name,
                join_keys=tuple(c.name for c in view.entity_columns),
                features=tuple(f.name for f in projection.features),
                ttl_s=ttl if ttl > 0 else None,
            )
        )
    return tuple(out)


def online_features(
    settings_or_store: Settings | FeatureStore,
    user_id: str,
    item_ids: Sequence[str],
    feature_service: str | None = None,
    as_of: datetime | None = None,
) -> pd.DataFrame:
    """Online features of one user against many candidate items, as serving needs them.

    The item's category (from ``item_catalog``) keys the per-category views, so this
    makes two online reads: categories of the items, then the feature service (every view
    keyed by its own subset of :data:`REQUEST_KEYS`, e.g. ``user_item`` by user and item). Values
    older than their view's ttl at ``as_of`` come back null, as in a training set: the
    online store keeps a value until it is overwritten, however old.

    Args:
        settings_or_store: Settings, or a store from ``get_store`` (reuse it when serving).
        user_id: the user being ranked for.
        item_ids: candidate items, in the order the rows are returned.
        feature_service: service name (default: the newest ``ranking_v<N>`` / Settings').
        as_of: tz-aware time of the request (default: now); a simulator passes its clock.

    Returns:
        One row per item: ``user_id``, ``item_id``, ``category`` then the service's features
        (null where the online store has no fresh value, e.g. an unknown item).
    """
    as_of = _as_utc(as_of, "as_of") if as_of is not None else datetime.now(UTC)
    store, default_service = _resolve_store(settings_or_store)
    service = store.get_feature_service(feature_service or default_service)
    items = [str(i) for i in item_ids]
    with _online_store_errors(store.config):
        catalog = store.get_online_features(
            features=["item_catalog:category"], entity_rows=[{"item_id": i} for i in items]
        ).to_dict()
        # An item missing from the catalog gets an empty category: no user_category match.
        rows = [
            {"user_id": str(user_id), "item_id": i, "category": c if c is not None else ""}
            for i, c in zip(items, catalog["category"], strict=True)
        ]
        refs = [
            f"{p.name}:{f.name}"
            for p in service.feature_view_projections
            if packed_view_of(p.name) is None
            for f in p.features
        ]
        response = store.get_online_features(features=refs, entity_rows=rows)
        values = response.to_dict(include_event_timestamps=True)
        packed = {
            p.name: _packed_online(store, p.name, str(user_id), items, as_of)
            for p in service.feature_view_projections
            if packed_view_of(p.name) is not None
        }
    columns: dict[str, list[Any]] = {
        "user_id": [str(user_id)] * len(items),
        "item_id": items,
        "category": catalog["category"],
    }
    for projection in service.feature_view_projections:
        if projection.name in packed:
            for feature in projection.features:
                column = packed[projection.name][feature.name]
                columns[feature.name] = [None if np.isnan(v) else v for v in column.tolist()]
            continue
        ttl = store.get_feature_view(projection.name).ttl
        oldest = (as_of - ttl).timestamp() if ttl else float("-inf")
        for feature in projection.features:
            stamps = values[f"{feature.name}__ts"]
            columns[feature.name] = [
                v if ts >= oldest else None
                for v, ts in zip(values[feature.name], stamps, strict=True)
            ]
    return pd.DataFrame(columns)


def _packed_online(
    store: FeatureStore, view: str, user_id: str, items: list[str], as_of: datetime
) -> dict[str, np.ndarray]:
    """``view``'s features for ``items`` from the user's row of its packed online view,
    through Feast's own online read (``flywheel.packed_history``)."""
    packed = packed_view_of(view)
    assert packed is not None
    found = store.get_online_features(
        features=[f"{packed}:ui_items", f"{packed}:ui_values"], entity_rows=[{"user_id": user_id}]
    ).to_dict(include_event_timestamps=True)
    ttl = store.get_feature_view(packed).ttl
    stamp = found["ui_items__ts"][0]
    fresh = stamp is not None and (not ttl or stamp >= (as_of - ttl).timestamp())
    offline = store.get_feature_view(view)
    ttl_s = offline.ttl.total_seconds() if offline.ttl else None
    return expand(
        found["ui_items"][0] if fresh else None,
        found["ui_values"][0] if fresh else None,
        items,
        as_of.timestamp(),
        ttl_s or None,
    )


def push_user_activity(store: FeatureStore, rows_df: pd.DataFrame) -> None:
    """Push fresh ``user_activity`` rows (contract columns) to the online store.

    Args:
        store: a store from ``get_store``.
        rows_df: rows in the ``USER_ACTIVITY_SCHEMA`` shape, tz-aware timestamps.

    Raises:
        EntityDataFrameError: a contract column is missing or a timestamp is naive.
        OnlineStoreUnavailableError: the Redis online store cannot be reached.
    """
    from feast.data_source import PushMode

    required = column_names(USER_ACTIVITY_SCHEMA)
    _require_columns(rows_df, required, "user_activity push rows")
    frame = rows_df[required].copy()
    for column in ("event_timestamp", "created_timestamp"):
        frame[column] = _utc_column(frame[column], column)
    with _online_store_errors(store.config):
        store.push(USER_ACTIVITY_PUSH, frame, to=PushMode.ONLINE)
