"""The Feast feature store: registration, materialization, training sets and online lookups.

Training (point-in-time-correct historical retrieval) and serving (online lookups) both read
through the same versioned feature service (``ranking_v<N>``), so what a model was trained on
is what it is served: new models train on ``feature_service_name(settings)``; a model is
served through the service its lineage names (:func:`service_lookups` lists what a service
reads and by which keys). The store is configured from ``Settings`` alone; the ``feast``
CLI and ``feature_store.yaml`` are never needed on this path (a CLI call costs 6-7 s).

Feast is imported inside the functions that need it: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from flywheel.packed_history import expand, packed_view_of
from flywheel.schemas import FEATURE_TABLES, USER_ACTIVITY_SCHEMA, column_names

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, RepoConfig

    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: Column of an entity DataFrame holding the moment each row asks about.
EVENT_TIMESTAMP = "event_timestamp"
#: Join keys of a ranking request's entity rows, one row per candidate: the user, the item
#: and the item's category (read from ``item_catalog`` first). Every view of every
#: ``ranking_v<N>`` service is keyed by some of them.
REQUEST_KEYS = ("user_id", "item_id", "category")
#: Push source the serving layer writes real-time user activity to.
USER_ACTIVITY_PUSH = "user_activity_push"
#: Start of the first materialization of a view that never expires.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Registry schemes that need Feast's SQL registry rather than its file registry.
_SQL_REGISTRY_SCHEMES = ("postgresql", "mysql", "sqlite")
#: Feast offline store type of each ``feast.offline_store`` setting. Feast imports a custom
#: store by class path, so naming it here does not import Feast.
OFFLINE_STORE_TYPES = {
    "duckdb-asof": "flywheel.feast_asof.DuckDBAsofOfflineStore",
    "duckdb": "duckdb",
    "dask": "dask",
}
#: Feast online store type of the ``sqlite`` setting (``flywheel.online_store``; Feast
#: imports it by class path, so naming it here does not import Feast).
SQLITE_STORE_TYPE = "flywheel.online_store.BatchedSqliteOnlineStore"


class FeatureStoreError(ValueError):
    """Base class of the feature store's errors; messages name the file, column or value."""


class FeatureTablesMissingError(FeatureStoreError):
    """Raised when a feature table file the store reads does not exist."""


class EntityDataFrameError(FeatureStoreError):
    """Raised when an entity DataFrame lacks a column or has naive timestamps."""


class FeatureServiceNotFoundError(FeatureStoreError):
    """Raised when the configured feature service version is not defined in feature_repo."""


class OnlineStoreUnavailableError(ConnectionError):
    """Raised when the online store (Redis) cannot be reached."""


@dataclass(frozen=True)
class ApplySummary:
    """What ``apply`` registered, where, and how long it took."""

    project: str
    registry: str
    entities: int
    feature_views: int
    feature_services: int
    seconds: float


@dataclass(frozen=True)
class MaterializedView:
    """One feature view's materialization window (``start`` exclusive of earlier runs)."""

    name: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class ViewLookup:
    """One feature view a service reads, as an online lookup needs it."""

    #: The feature view's name.
    view: str
    #: Its join keys, in the order of its entity key (a subset of :data:`REQUEST_KEYS`):
    #: ``("user_id", "item_id")`` for ``user_item``, so its rows for the candidates of
    #: one request are one read of ``len(candidates)`` keys.
    join_keys: tuple[str, ...]
    #: The features the service takes from it.
    features: tuple[str, ...]
    #: Seconds a row stays valid (None: never expires); older values read as missing.
    ttl_s: float | None


@dataclass(frozen=True)
class MaterializeSummary:
    """The windows ``materialize`` loaded into the online store, and how long it took."""

    online_store: str
    views: tuple[MaterializedView, ...]
    seconds: float


# ---- configuration ---------------------------------------------------------------------


def feature_service_name(settings: Settings) -> str:
    """The feature service new models train on, e.g. ``ranking_v2`` (serving reads each
    model through the service its lineage names)."""
    return f"ranking_v{settings.feast.feature_service_version}"


def _registry(settings: Settings) -> dict[str, Any]:
    """Feast registry config: a file in the workspace unless ``feast.registry`` says otherwise."""
    path = settings.feast.registry or str(settings.feast_dir.absolute() / "registry.db")
    scheme = path.split("://", 1)[0] if "://" in path else ""
    kind = "sql" if scheme.split("+")[0] in _SQL_REGISTRY_SCHEMES else "file"
    return {"registry_type": kind, "path": path}


def _online_store(settings: Settings) -> dict[str, Any]:
    if settings.feast.online_store == "redis":
        return {"type": "redis", "connection_string": settings.feast.redis_connection_string}
    # Feast's SQLite store with a batched write path: same tables and rows, a third less
    # time to materialize (flywheel/online_store.py).
    return {"type": SQLITE_STORE_TYPE, "path": str(settings.feast_dir.absolute() / "online.db")}


def _offline_store(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {"type": OFFLINE_STORE_TYPES[settings.feast.offline_store]}
    if settings.feast.offline_store == "duckdb-asof" and settings.feast.offline_memory_limit:
        config["memory_limit"] = settings.feast.offline_memory_limit
        config["temp_directory"] = str(settings.workspace.absolute() / "tmp" / "duckdb")
    return config


def repo_config(settings: Settings) -> RepoConfig:
    """Build Feast's ``RepoConfig`` from Settings (no YAML file involved).

    Args:
        settings: project, offline store (``duckdb-asof``, ``duckdb`` or ``dask``), online
            store (SQLite in ``settings.feast_dir`` or Redis) and registry location are read
            from ``feast``.

    Returns:
        A RepoConfig whose ``repo_path`` is ``settings.feature_data_dir``.
    """
    from feast import RepoConfig

    return RepoConfig(
        project=settings.feast.project,
        provider="local",
        registry=_registry(settings),
        offline_store=_offline_store(settings),
        online_store=_online_store(settings),
        entity_key_serialization_version=3,
        repo_path=settings.feature_data_dir.absolute(),
        # Feast's defaults pull every row of the range into pandas to deduplicate it, then
        # convert the whole table to protos in one batch: user_category of a 10M-event lake
        # peaks at 4.1 GB (59 s). The offline store's "latest per key" query and 200k-row
        # writes give the same online values at 1.7 GB (62 s; 100k: 1.3 GB, 68 s; 10k:
        # 0.8 GB, 109 s: Feast pays a fixed cost per batch).
        materialization_config={"pull_latest_features": True, "online_write_batch_size": 200_000},
    )


def get_store(settings: Settings) -> FeatureStore:
    """A ``FeatureStore`` configured from Settings (creates the workspace's Feast folder)."""
    from feast import FeatureStore

    config = repo_config(settings)
    if settings.feast.registry is None:
        settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(config.repo_path), config=config)


@contextlib.contextmanager
def _online_store_errors(config: RepoConfig) -> Iterator[None]:
    """Turn a Redis connection failure into an error that names the connection string."""
    import redis

    try:
        yield
    except redis.exceptions.ConnectionError as exc:
        where = getattr(config.online_store, "connection_string", "?")
        raise OnlineStoreUnavailableError(
            f"online store Redis at {where!r} is unreachable ({exc}); start Redis or set "
            "feast.redis_connection_string (FLYWHEEL_FEAST__REDIS_CONNECTION_STRING)"
        ) from exc


# ---- registration ----------------------------------------------------------------------


def _definitions(data_dir: Path) -> list[Any]:
    """The objects of ``feature_repo.definitions``, file paths anchored to ``data_dir``.

    The DuckDB offline store reads a FileSource path as given (relative to the process's
    working directory), unlike the dask store which resolves it against ``repo_path``; an
    absolute path in the registry makes both read the same file.
    """
    from feast import Entity, FeatureService, FeatureView, FileSource
    from feast.data_source import DataSource

    import feature_repo.definitions as definitions

    kinds = (Entity, DataSource, FeatureView, FeatureService)
    objects = copy.deepcopy([v for v in vars(definitions).values() if isinstance(v, kinds)])
    for obj in objects:
        sources: list[DataSource | None] = [obj] if isinstance(obj, DataSource) else []
        if isinstance(obj, FeatureView):
            sources += [obj.batch_source, obj.stream_source]
        for source in sources:
            if isinstance(source, FileSource) and not Path(source.path).is_absolute():
                source.file_options.uri = str(data_dir.absolute() / source.path)
    return objects


def apply(settings: Settings) -> ApplySummary:
    """Register the ``feature_repo`` definitions in the registry and create online tables.

    Args:
        settings: where the registry, online store and feature tables live.

    Returns:
        Counts of what was registered and the seconds it took.

    Raises:
        FeatureServiceNotFoundError: ``feast.feature_service_version`` names a service that
            ``feature_repo/definitions.py`` does not define.
    """
    from feast import Entity, FeatureService, FeatureView

    start = time.perf_counter()
    objects = _definitions(settings.feature_data_dir)
    services = [o.name for o in objects if isinstance(o, FeatureService)]
    wanted = feature_service_name(settings)
    if wanted not in services:
        raise FeatureServiceNotFoundError(
            f"feast.feature_service_version={settings.feast.feature_service_version}: feature "
            f"service {wanted!r} is not defined in feature_repo/definitions.py "
            f"(defined: {', '.join(sorted(services))})"
        )
    store = get_store(settings)
    log.info("registering %d Feast objects in %s", len(objects), store.config.registry.path)
    with _online_store_errors(store.config):
        store.apply(objects)
    return ApplySummary(
        project=settings.feast.project,
        registry=str(store.config.registry.path),
        entities=sum(isinstance(o, Entity) and o.name != "__dummy" for o in objects),
        feature_views=sum(isinstance(o, FeatureView) for o in objects),
        feature_services=len(services),
        seconds=time.perf_counter() - start,
    )


def check_feature_tables(settings: Settings, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Return the path of each feature table (``names``, default all), or raise naming the
    ones that are missing."""
    paths = {
        name: settings.feature_data_dir / f"{name}.parquet"
        for name in (FEATURE_TABLES if names is None else names)
    }
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FeatureTablesMissingError(
            f"feature table(s) missing: {', '.join(missing)}; run `flywheel features` to "
            "build them from the event lake"
        )
    return paths


# ---- online store ----------------------------------------------------------------------


def _as_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise FeatureStoreError(f"{name}={value.isoformat()} is naive; pass a tz-aware time")
    return value.astimezone(UTC)


def materialize(settings: Settings, end: datetime | None = None) -> MaterializeSummary:
    """Load feature rows up to ``end`` into the online store, incrementally.

    A view continues from where its last materialization ended. The first run of a view
    covers its ttl back from ``end`` (7 days for activity), or everything for a view that
    never expires (the catalog). Unlike Feast's ``materialize_incremental``, whose first run
    starts at *now* - ttl, this also works for data stamped in the past (replays, tests).

    Args:
        settings: the store to materialize.
        end: tz-aware upper bound of event timestamps to load (default: now).

    Raises:
        FeatureTablesMissingError: a feature table file does not exist.
        OnlineStoreUnavailableError: the Redis online store cannot be reached.
    """
    began = time.perf_counter()
    end = _as_utc(end, "end") if end is not None else datetime.now(UTC)
    check_feature_tables(settings)
    store = get_store(settings)
    done: list[MaterializedView] = []
    for view in store.list_feature_views():
        if not view.online:  # offline only (user_item: online as user_item_latest)
            continue
        if view.most_recent_end_time is not None:
            start = _as_utc(view.most_recent_end_time.replace(tzinfo=UTC), "start")
        else:
            start = end - view.ttl if view.ttl else _EPOCH
        if start >= end:
            continue
        log.info("materializing %s from %s to %s", view.name, start, end)
        with _online_store_errors(store.config):
            store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        done.append(MaterializedView(view.name, start, end))
    return MaterializeSummary(
        online_store=settings.feast.online_store,
        views=tuple(done),
        seconds=time.perf_counter() - began,
    )


def _resolve_store(settings_or_store: Settings | FeatureStore) -> tuple[FeatureStore, str]:
    from feast import FeatureStore

    if isinstance(settings_or_store, FeatureStore):
        # A store built by get_store(); the service version comes from the one service
        # whose name starts with ranking_v and has the highest version.
        names = [s.name for s in settings_or_store.list_feature_services()]
        ranking = sorted((n for n in names if n.startswith("ranking_v")), key=_version)
        if not ranking:
            raise FeatureServiceNotFoundError("no ranking_v<N> feature service is registered")
        return settings_or_store, ranking[-1]
    return get_store(settings_or_store), feature_service_name(settings_or_store)


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


def _version(name: str) -> int:
    suffix = name.removeprefix("ranking_v")
    return int(suffix) if suffix.isdigit() else -1


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


# ---- training sets ---------------------------------------------------------------------


def _require_columns(frame: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise EntityDataFrameError(
            f"{what} is missing column(s) {', '.join(map(repr, missing))}; expected "
            f"{', '.join(required)} (got {', '.join(map(str, frame.columns))})"
        )


def _utc_column(values: pd.Series, name: str) -> pd.Series:
    """Timestamps as ``datetime64[ns, UTC]``; mixed time zones allowed, naive ones refused."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values):
        raise EntityDataFrameError(
            f"column {name!r} holds naive timestamps (dtype {values.dtype}); expected "
            "tz-aware timestamps, e.g. Series.dt.tz_localize('UTC')"
        )
    naive = [v for v in values if not isinstance(v, datetime) or v.tzinfo is None]
    if naive:
        raise EntityDataFrameError(
            f"column {name!r} holds {len(naive)} value(s) that are not tz-aware timestamps, "
            f"e.g. {naive[0]!r}; expected tz-aware datetimes"
        )
    return pd.to_datetime(values, utc=True)


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
