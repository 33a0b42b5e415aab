"""Registering the definitions, and loading feature rows into the online store."""

from __future__ import annotations

import copy
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flywheel.config import Settings

from flywheel.feature_store.base import (
    _EPOCH,
    ApplySummary,
    FeatureServiceNotFoundError,
    MaterializedView,
    MaterializeSummary,
    _as_utc,
    _online_store_errors,
    check_feature_tables,
    feature_service_name,
    get_store,
)
from flywheel.feature_store.write_batches import view_batch_rows

log = logging.getLogger(__name__)


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


def materialize(
    settings: Settings, end: datetime | None = None, full: bool = False
) -> MaterializeSummary:
    """Write the keys whose latest row changed since the last successful materialization.

    Per online view: each key's latest row within the view's ttl back from ``end`` (all
    rows for a view that never expires) is hashed; keys that are new or whose hash differs
    from the digest kept under ``<workspace>/state/online_digest`` (late events correcting
    an old key included) are written, then the digest is replaced
    (:mod:`flywheel.feature_store.delta`). Without a trusted digest (a first run, another
    online store or feature-service version) a view is written whole.

    Args:
        settings: the store to materialize.
        end: tz-aware upper bound of event timestamps to load (default: now).
        full: write every view's latest rows whatever the digest says: for an online store
            that lost its rows (a Redis restarted empty).

    Returns:
        Per view: mode, keys scanned, changed and written, seconds.

    Raises:
        FeatureTablesMissingError: a feature table file does not exist.
        OnlineStoreUnavailableError: the Redis online store cannot be reached (the digest of
            the view being written is kept, so the next run rewrites its changes).
    """
    from flywheel.feature_store.delta import connect, materialize_view
    from flywheel.feature_store.online_digest import DigestState

    began = time.perf_counter()
    end = _as_utc(end, "end") if end is not None else datetime.now(UTC)
    check_feature_tables(settings)
    store = get_store(settings)
    if settings.feast.online_store == "redis":
        # Write every row handed over: a corrected row keeps its event timestamp, which
        # Redis's timestamp check would skip (the delta hands over only current rows).
        store.config.online_store.skip_dedup = True
    state = DigestState.load(settings)
    done: list[MaterializedView] = []
    with _online_store_errors(store.config), connect(settings) as con:
        for view in store.list_feature_views():
            if not view.online:  # offline only (user_item: online as user_item_latest)
                continue
            start = end - view.ttl if view.ttl else _EPOCH
            d = materialize_view(settings, store, con, state, view, start, end, full)
            done.append(
                MaterializedView(
                    view.name,
                    start,
                    end,
                    d.batch_rows,
                    d.mode,
                    d.keys_scanned,
                    d.keys_changed,
                    d.keys_written,
                    d.seconds,
                    d.files_scanned,
                    d.files_total,
                )
            )
    return MaterializeSummary(
        online_store=settings.feast.online_store,
        views=tuple(done),
        seconds=time.perf_counter() - began,
    )


def materialize_range(
    settings: Settings, end: datetime | None = None, full: bool = False
) -> MaterializeSummary:
    """Load feature rows up to ``end`` into the online store by time window (Feast's own
    materialization): the path before delta writes, kept for comparison (``benchmarks/
    online_delta.py``) and for callers that want Feast's window semantics.

    A view continues from where its last materialization ended. The first run of a view
    covers its ttl back from ``end`` (7 days for activity), or everything for a view that
    never expires (the catalog). Unlike Feast's ``materialize_incremental``, whose first run
    starts at *now* - ttl, this also works for data stamped in the past (replays, tests).

    Args:
        settings: the store to materialize.
        end: tz-aware upper bound of event timestamps to load (default: now).
        full: load every view as its first run would, whatever was materialized before:
            for an online store that lost its rows (a Redis restarted empty), which an
            incremental run would not reload.

    Raises:
        FeatureTablesMissingError: a feature table file does not exist.
        OnlineStoreUnavailableError: the Redis online store cannot be reached.
    """
    began = time.perf_counter()
    end = _as_utc(end, "end") if end is not None else datetime.now(UTC)
    check_feature_tables(settings)
    store = get_store(settings)
    done: list[MaterializedView] = []
    budget = settings.feast.online_write_batch_mib * 2**20
    for view in store.list_feature_views():
        if not view.online:  # offline only (user_item: online as user_item_latest)
            continue
        if view.most_recent_end_time is not None and not full:
            start = _as_utc(view.most_recent_end_time.replace(tzinfo=UTC), "start")
        else:
            start = end - view.ttl if view.ttl else _EPOCH
        if start >= end:
            continue
        rows = view_batch_rows(view, budget)
        # Feast's local engine reads the batch size from the config at every view it writes.
        store.config.materialization_config.online_write_batch_size = rows
        log.info(
            "materializing %s from %s to %s (%d-row write batches)", view.name, start, end, rows
        )
        with _online_store_errors(store.config):
            store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        done.append(MaterializedView(view.name, start, end, rows, mode="range"))
    return MaterializeSummary(
        online_store=settings.feast.online_store,
        views=tuple(done),
        seconds=time.perf_counter() - began,
    )
