"""The store's configuration from Settings, its errors, summaries and input checks."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from flywheel.schemas import FEATURE_TABLES

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

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
    """One feature view's materialization: its window and, for a delta, what it wrote."""

    name: str
    start: datetime
    end: datetime
    #: Rows per online write batch (sized from ``feast.online_write_batch_mib``).
    batch_rows: int = 0
    #: ``delta`` (changed keys only), ``full`` (every latest row) or ``range`` (Feast's
    #: materialization of the time window, :func:`materialize_range`).
    mode: str = "range"
    #: Keys with a latest row in the window; None for ``range``, which does not count.
    keys_scanned: int | None = None
    #: Keys whose latest row is new or differs from the digest of the last write.
    keys_changed: int | None = None
    #: Keys written to the online store.
    keys_written: int | None = None
    seconds: float = 0.0
    #: Table files read to find latest rows, of the table's files (a delta on a day folder
    #: reads the days from the first changed one on); None for ``range``.
    files_scanned: int | None = None
    files_total: int | None = None


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
        # peaks at 4.1 GB (59 s). The offline store's "latest per key" query and bounded
        # writes give the same online values at 1.7 GB (200k rows, 62 s; 100k: 1.3 GB, 68 s;
        # 10k: 0.8 GB, 109 s: Feast pays a fixed cost per batch). ``materialize`` sizes the
        # batch per view from a memory budget (write_batches.py); this is the ceiling.
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


def _version(name: str) -> int:
    suffix = name.removeprefix("ranking_v")
    return int(suffix) if suffix.isdigit() else -1


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
