"""The incremental feature build: recompute only what changed since the last published build.

1. Each lake partition's version (:mod:`~flywheel.features.partial_store`) against the build
   state (:mod:`~flywheel.features.build_state`): a partition whose files are unchanged, or
   whose content is (a compaction), keeps its stored partials; a new or changed one has its
   hourly partials computed from its events and stored; a removed one drops out.
2. The cut: the first hour a changed (old or new) partition holds, or the previous horizon
   if earlier (rows after it appear as the lake grows). Published rows at or before the cut
   are kept; the rows after it are computed from the stored partials of every partition
   (:mod:`~flywheel.features.refinalise`), only for the entities that have such rows
   (:func:`touched`: active after the cut, or with an hour leaving a window after it), a
   range of users (or items) at a time.
3. Publish: per table, the day files before the cut kept as they are and the new rows
   merged into the cut's day and written as later days (:mod:`~flywheel.features.publish`,
   :mod:`~flywheel.features.day_parts`); ``user_item_latest`` is the previous one with the
   pairs that have rows in the rewritten days updated from them
   (:mod:`~flywheel.features.latest_incr`; recomputed from the days of ``user_item`` within
   its ttl when rows were removed, or in a full build), and the catalog's tables. The build
   state is removed before the first table is replaced and written after the last, so a
   crash in between leaves no state and the next build is a full one.

A full build (no state, a catalog or definition change, a table missing) takes the same path
with no cut: every partition's partials recomputed, every row computed.
``flywheel features --full-rebuild`` instead runs the Ray Data build of :mod:`build` and then
records the state, so the next build is incremental again.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.features import build_state as bs
from flywheel.features import partial_store as store
from flywheel.features.aggregate import DRIVER_TABLES, KIND_ITEM, driver_tables
from flywheel.features.build import FeatureBuildSummary, lake_files, read_catalog
from flywheel.features.day_parts import DAY_PARTED, SORT_KEYS, drop_leftovers
from flywheel.features.keys import KeySpace
from flywheel.features.latest_incr import publish_latest
from flywheel.features.partials import CatalogIndex, Columns, combine_partials
from flywheel.features.publish import publish_days, write_atomic
from flywheel.features.refinalise import iter_incremental_features
from flywheel.features.windows import WINDOW_HOURS
from flywheel.progress import PhaseClock
from flywheel.schemas import FEATURE_TABLES

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: Partial rows per entity range computed at once (bounds the driver's memory).
PARTIALS_PER_CHUNK = 2_000_000


@dataclass(frozen=True)
class LakeDiff:
    """The lake's partitions against the last build's state."""

    versions: dict[str, bs.PartitionVersion]
    recomputed: list[str]
    #: Hours (epoch) of changed partitions' old and new partials.
    changed_hours: list[int]
    events_read: int


def _version(part: store.Partition, content: str, table: pa.Table) -> bs.PartitionVersion:
    hours = table["hour"].to_numpy() if table.num_rows else np.zeros(0, np.int64)
    first = int(hours.min()) if len(hours) else -1
    last = int(hours.max()) if len(hours) else -1
    return bs.PartitionVersion(part.stat_id, content, f"{part.name}/{content}.parquet", first, last)


def diff_lake(settings: Settings, previous: bs.BuildState | None) -> LakeDiff:
    """Versions of every partition now, recomputing (and storing) the partials of each new
    or changed one; ``previous=None`` recomputes them all."""
    parts = store.lake_partitions(settings.events_dir)
    old = previous.partitions if previous else {}
    versions, recomputed, hours, events = {}, [], [], 0
    for name, part in parts.items():
        prev = old.get(name)
        prev_ok = prev is not None and (store.store_dir(settings) / prev.partials).is_file()
        if prev is not None and prev_ok and prev.stat == part.stat_id:
            versions[name] = prev
            continue
        content = store.content_id(part)
        if prev is not None and prev_ok and prev.content == content:  # rewritten, same events
            versions[name] = bs.PartitionVersion(
                part.stat_id, content, prev.partials, prev.first_hour, prev.last_hour
            )
            continue
        table = store.compute_partials(part)
        store.write_partials(settings, name, content, table)
        versions[name] = version = _version(part, content, table)
        recomputed.append(name)
        events += sum(pq.read_metadata(p).num_rows for p in part.files)
        hours += [h for h in (version.first_hour,) if h >= 0]
        if prev is not None and prev.first_hour >= 0:
            hours.append(prev.first_hour)
    for name, prev in old.items():
        if name not in parts and prev.first_hour >= 0:  # a removed partition
            hours.append(prev.first_hour)
    return LakeDiff(versions, recomputed, hours, events)


def touched(combined: Columns, since: int, horizon: int) -> Columns:
    """The partials of the entities (users, items) that have a row stamped after ``since``.

    A snapshot row follows an hour with events (``h + 1``); a window row also follows it by
    each window (``h + 1 + W``, dropped after the horizon: :func:`~flywheel.features.windows.
    change_points`). So an entity has a row in ``(since, horizon]`` only if one of its hours
    ``h`` has ``h >= since`` or ``since < h + 1 + W <= horizon`` for some window; the others'
    rows are all kept as published, and computing them again would only cost time. A user's
    partials are its own and its pairs' (``entity`` = the user), an item's its own."""
    hour = combined["hour"].astype(np.int64)
    hit = hour >= since
    for w in sorted(set(WINDOW_HOURS.values())):
        end = hour + 1 + w
        hit |= (end > since) & (end <= horizon)
    is_item = combined["kind"] == KIND_ITEM
    entity = combined["entity"].astype(np.int64)
    size = int(entity.max()) + 1 if len(entity) else 0
    users, items = np.zeros(size, bool), np.zeros(size, bool)
    users[entity[hit & ~is_item]] = True
    items[entity[hit & is_item]] = True
    keep = np.where(is_item, items[entity], users[entity])
    if keep.all():
        return combined
    return {c: v[keep] for c, v in combined.items()}


def _entity_chunks(combined: Columns) -> list[Columns]:
    """Combined partials split into ranges of users, then ranges of items, each holding
    every partial of its entities and about ``PARTIALS_PER_CHUNK`` rows."""
    chunks = []
    for items in (False, True):
        mine = (combined["kind"] == KIND_ITEM) == items
        entity = combined["entity"][mine]
        if len(entity) == 0:
            continue
        per_key = np.bincount(entity)
        bounds = np.searchsorted(
            np.cumsum(per_key), np.arange(PARTIALS_PER_CHUNK, len(entity), PARTIALS_PER_CHUNK)
        )
        edges = np.unique(np.r_[0, bounds + 1, len(per_key)])
        chunk_of = np.searchsorted(edges, entity, side="right") - 1
        rows = np.flatnonzero(mine)
        for c in range(len(edges) - 1):
            take = rows[chunk_of == c]
            if len(take):
                chunks.append({k: v[take] for k, v in combined.items()})
    return chunks


def _compute(
    chunks: list[Columns],
    catalog: CatalogIndex,
    created_us: int,
    keys: KeySpace,
    horizon: int,
    since: int | None,
    staging: Path,
) -> None:
    """Each chunk's new rows, written as ``staging/<table>/part-<chunk>.parquet``."""
    for i, chunk in enumerate(chunks):
        tables = iter_incremental_features(chunk, catalog, created_us, keys, horizon, since)
        for name, table in tables:
            if table.num_rows:
                part = staging / name / f"part-{i:05d}.parquet"
                part.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, part, compression="none")


def _publish(
    settings: Settings,
    staging: Path,
    since: int | None,
    keys: KeySpace,
    catalog: CatalogIndex,
    driver: dict[str, pa.Table],
    horizon: int,
    previous_horizon: int | None,
    created_us: int,
) -> dict[str, int]:
    """Every per-entity table: its days before the cut kept, the staged new rows merged in
    (:func:`~flywheel.features.publish.publish_days`); then ``user_item_latest`` (the
    previous one updated where it can be: :mod:`~flywheel.features.latest_incr`) and the
    catalog's tables."""
    out_dir, rows = settings.feature_data_dir, {}
    drop_leftovers(out_dir)
    for name in SORT_KEYS:
        schema = FEATURE_TABLES[name]
        parts = sorted((staging / name).glob("part-*.parquet"))
        new = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None
        new = schema.empty_table() if new is None else new.cast(schema)
        dest = out_dir / f"{name}.parquet"
        rows[name] = publish_days(dest, schema, new, since, name, keys, catalog.categories)
        del new
    schema = FEATURE_TABLES["user_item_latest"]
    dest = out_dir / "user_item_latest.parquet"
    folder = out_dir / "user_item.parquet"
    latest = publish_latest(folder, dest, keys, since, horizon, previous_horizon, created_us)
    write_atomic(latest or [schema.empty_table()], schema, dest)
    rows["user_item_latest"] = sum(t.num_rows for t in latest)
    for name in DRIVER_TABLES:
        write_atomic([driver[name]], FEATURE_TABLES[name], out_dir / f"{name}.parquet")
        rows[name] = driver[name].num_rows
    return rows


def _published(settings: Settings) -> bool:
    """Every table there, in this version's layout (day folders for the per-entity ones)."""
    folder = settings.feature_data_dir
    return all(
        (folder / f"{n}.parquet").is_dir()
        if n in DAY_PARTED
        else (folder / f"{n}.parquet").is_file()
        for n in FEATURE_TABLES
    )


def prune_store(settings: Settings, state: bs.BuildState) -> None:
    """Delete partial files no state refers to (removed partitions, older versions)."""
    root = store.store_dir(settings)
    keep = {root / v.partials for v in state.partitions.values()}
    for path in root.glob("date=*/*.parquet"):
        if path not in keep:
            path.unlink(missing_ok=True)
    for folder in root.glob("date=*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def build_incremental(settings: Settings) -> FeatureBuildSummary:
    """Bring every feature table up to date with the lake, recomputing only what changed
    (see the module docstring). Raises ``FeatureBuildError`` on an empty lake or a missing
    catalog."""
    clock = PhaseClock()
    seconds, lap = clock.seconds, clock.lap

    catalog_table = read_catalog(settings.items_path)
    lake_files(settings.events_dir)  # raises on an empty lake
    definition, catalog_id = bs.definition_digest(), bs.catalog_digest(settings.items_path)
    previous = bs.read_build_state(settings)
    full = (
        previous is None
        or previous.definition != definition
        or previous.catalog != catalog_id
        or not _published(settings)
    )
    if full and previous is not None:
        log.info("features: catalog, definitions or tables changed: full build")
    # partials depend on the events alone: a catalog change still reuses them
    same_layout = previous is not None and previous.definition == definition
    diff = diff_lake(settings, previous if same_layout else None)
    lap("partials")
    n_parts = len(diff.versions)
    if (
        not full
        and previous is not None
        and not diff.recomputed
        and set(diff.versions) == set(previous.partitions)
    ):
        bs.write_build_state(
            settings, bs.BuildState(definition, catalog_id, previous.horizon, diff.versions)
        )
        seconds["total"] = clock.total()
        return FeatureBuildSummary(0, 0, 0, {}, seconds, "incremental", n_parts, 0)
    paths = [store.store_dir(settings) / v.partials for v in diff.versions.values()]
    partials = store.read_partials(paths)
    if partials.num_rows == 0:
        from flywheel.features.aggregate import FeatureBuildError

        raise FeatureBuildError(f"event lake files under {str(settings.events_dir)!r} are empty")
    keys = store.id_space(partials, catalog_table["item_id"])
    cols = store.to_keys(partials, keys)
    del partials
    horizon = int(cols["hour"].max()) + 1
    since = None
    if not full and previous is not None:
        since = min([previous.horizon, horizon, *diff.changed_hours])
    catalog = CatalogIndex.from_table(catalog_table, keys)
    combined = combine_partials(cols)
    partial_rows = len(cols["entity"])
    del cols
    if since is not None:
        combined = touched(combined, since, horizon)
        log.info(
            "features: %d of %d partial rows belong to entities with rows after the cut",
            len(combined["entity"]),
            partial_rows,
        )
    chunks = _entity_chunks(combined)
    del combined
    lap("load")
    created_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    out_dir = settings.feature_data_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".build-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        _compute(chunks, catalog, created_us, keys, horizon, since, staging)
        del chunks
        lap("aggregate")
        bs.clear_build_state(settings)  # from here on the tables change
        driver = driver_tables(catalog_table, created_us)
        old_horizon = None if previous is None else previous.horizon
        rows = _publish(
            settings, staging, since, keys, catalog, driver, horizon, old_horizon, created_us
        )
        lap("publish")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    state = bs.BuildState(definition, catalog_id, horizon, diff.versions)
    bs.write_build_state(settings, state)
    prune_store(settings, state)
    seconds["total"] = clock.total()
    path = "full" if since is None else "incremental"
    log.info(
        "features: %s build, %d of %d partitions recomputed", path, len(diff.recomputed), n_parts
    )
    return FeatureBuildSummary(
        diff.events_read, partial_rows, 0, rows, seconds, path, n_parts, len(diff.recomputed)
    )


def record_state(settings: Settings, previous: bs.BuildState | None) -> int:
    """After a full Ray Data build: store every partition's partials (reusing unchanged
    ones) and write the state, so the next build is incremental. Returns partitions
    recomputed."""
    diff = diff_lake(settings, previous)
    horizon = max(v.last_hour for v in diff.versions.values()) + 1
    state = bs.BuildState(
        bs.definition_digest(), bs.catalog_digest(settings.items_path), horizon, diff.versions
    )
    bs.write_build_state(settings, state)
    prune_store(settings, state)
    return len(diff.recomputed)
