"""The Feast feature store: registration, materialization, training sets and online lookups.

One module per concern: ``base`` (configuration from Settings, errors, summaries, input
checks), ``registration`` (apply, materialize), ``delta`` and ``online_digest`` (online
writes of the changed keys only, and the digest they compare against), ``training``
(point-in-time training sets) and ``online`` (lookups and pushes); their public names are
importable from here.

Training (point-in-time-correct historical retrieval) and serving (online lookups) both read
through the same versioned feature service (``ranking_v<N>``), so what a model was trained on
is what it is served: new models train on ``feature_service_name(settings)``; a model is
served through the service its lineage names (:func:`service_lookups` lists what a service
reads and by which keys). The store is configured from ``Settings`` alone; the ``feast``
CLI and ``feature_store.yaml`` are never needed on this path (a CLI call costs 6-7 s).

Feast is imported inside the functions that need it: importing this module costs nothing.
"""

from flywheel.feature_store.base import (
    EVENT_TIMESTAMP,
    OFFLINE_STORE_TYPES,
    REQUEST_KEYS,
    SQLITE_STORE_TYPE,
    USER_ACTIVITY_PUSH,
    ApplySummary,
    EntityDataFrameError,
    FeatureServiceNotFoundError,
    FeatureStoreError,
    FeatureTablesMissingError,
    MaterializedView,
    MaterializeSummary,
    OnlineStoreUnavailableError,
    ViewLookup,
    _require_columns,
    _utc_column,
    check_feature_tables,
    feature_service_name,
    get_store,
    repo_config,
)
from flywheel.feature_store.online import online_features, push_user_activity, service_lookups
from flywheel.feature_store.registration import (
    _definitions,
    apply,
    materialize,
    materialize_range,
)
from flywheel.feature_store.training import entity_columns, historical_features

__all__ = [
    "EVENT_TIMESTAMP",
    "OFFLINE_STORE_TYPES",
    "REQUEST_KEYS",
    "SQLITE_STORE_TYPE",
    "USER_ACTIVITY_PUSH",
    "ApplySummary",
    "EntityDataFrameError",
    "FeatureServiceNotFoundError",
    "FeatureStoreError",
    "FeatureTablesMissingError",
    "MaterializeSummary",
    "MaterializedView",
    "OnlineStoreUnavailableError",
    "ViewLookup",
    "_definitions",
    "_require_columns",
    "_utc_column",
    "apply",
    "check_feature_tables",
    "entity_columns",
    "feature_service_name",
    "get_store",
    "historical_features",
    "materialize",
    "materialize_range",
    "online_features",
    "push_user_activity",
    "repo_config",
    "service_lookups",
]
