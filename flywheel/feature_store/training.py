"""Point-in-time-correct training sets through a feature service."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

    from flywheel.config import Settings

from flywheel.feature_store.base import (
    EVENT_TIMESTAMP,
    _require_columns,
    _utc_column,
    check_feature_tables,
    feature_service_name,
    get_store,
)

log = logging.getLogger(__name__)


def entity_columns(store: FeatureStore, service: FeatureService) -> list[str]:
    """Join keys an entity DataFrame needs for ``service``, then ``event_timestamp``."""
    keys: list[str] = []
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        keys += [c.name for c in view.entity_columns if c.name not in keys]
    return [*keys, EVENT_TIMESTAMP]


def historical_features(
    settings: Settings,
    entity_df: pd.DataFrame,
    feature_service: str | None = None,
) -> pd.DataFrame:
    """A point-in-time-correct training set through the feature service.

    For each entity row, every view contributes its latest row with ``event_timestamp`` at
    or before the row's ``event_timestamp`` and within the view's ttl (ties broken by
    ``created_timestamp``); null where there is none.

    Args:
        settings: which store and offline engine (``feast.offline_store``) to use.
        entity_df: ``user_id``, ``item_id``, ``category`` and tz-aware ``event_timestamp``
            (any time zones; converted to UTC), plus any other columns (labels), kept.
        feature_service: service name (default: ``feature_service_name(settings)``).

    Returns:
        The entity rows (timestamps in UTC) with one column per feature; row order is not
        guaranteed.

    Raises:
        FeatureTablesMissingError: a feature table the service reads does not exist.
        EntityDataFrameError: a required column is missing or timestamps are naive.
    """
    from feast.errors import FeatureServiceNotFoundException

    store = get_store(settings)
    try:
        service = store.get_feature_service(feature_service or feature_service_name(settings))
    except FeatureServiceNotFoundException:
        check_feature_tables(settings)  # nothing registered: most likely nothing built yet
        raise
    check_feature_tables(settings, [p.name for p in service.feature_view_projections])
    _require_columns(entity_df, entity_columns(store, service), "entity_df")
    frame = entity_df.copy()
    frame[EVENT_TIMESTAMP] = _utc_column(frame[EVENT_TIMESTAMP], EVENT_TIMESTAMP)
    log.info("retrieving %d entity rows through %s", len(frame), service.name)
    if settings.feast.offline_store == "dask":
        return _historical_per_view(store, service, frame)
    return store.get_historical_features(entity_df=frame, features=service).to_df()


def _historical_per_view(
    store: FeatureStore, service: FeatureService, entity_df: pd.DataFrame
) -> pd.DataFrame:
    """Point-in-time join one view at a time, on that view's unique keys, merged back.

    Feast 0.67's dask store deduplicates on the join keys of the views joined *so far* plus
    the timestamp, so entity rows that share a user and a time but differ in item collapse
    into one; and it drops an entity row whose feature rows all fall outside the ttl. Asking
    each view only for its own unique (keys, timestamp) rows avoids the first; merging the
    answer back with a left join turns the second into the null it should be.
    """
    out = entity_df
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        keys = [c.name for c in view.entity_columns] + [EVENT_TIMESTAMP]
        names = [f.name for f in projection.features]
        rows = entity_df[keys].drop_duplicates(ignore_index=True)
        refs = [f"{projection.name}:{n}" for n in names]
        part = store.get_historical_features(entity_df=rows, features=refs).to_df()
        part[EVENT_TIMESTAMP] = pd.to_datetime(part[EVENT_TIMESTAMP], utc=True)
        out = out.merge(part[keys + names], on=keys, how="left")
    return out
