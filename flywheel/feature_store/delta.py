"""Delta materialization: write online only the keys whose latest row changed.

Per online feature view, DuckDB finds each key's latest row within the view's ttl back from
``end`` (event timestamp, then created timestamp, descending: Feast's own "latest per key"
rule, bounds ``[start, end]`` inclusive as Feast's pull) as a small record: the key, the
row's hash (:mod:`flywheel.feature_store.online_digest`) and where the row is
(:mod:`flywheel.feature_store.delta_scan`). On day folders a run scans only the days from
the first one that changed since the last run and keeps the other keys' records, so its
cost follows the new days, not the history. The records go to Parquet files under
``<workspace>/tmp``, so DuckDB keeps to ``feast.offline_memory_limit`` (spilling under
``<workspace>/tmp/duckdb``); no pandas frame of a table is made. The rows to write are
those whose (key, hash) is not in the previous digest: new keys, keys with a newer row, and
keys whose latest row a late event corrected (same timestamp, other values), including a
correction back to an older value. Only those rows are read in full, and they stream to the
online store in Arrow batches of :func:`view_batch_rows` rows: into the local SQLite store
as they are (:mod:`flywheel.feature_store.arrow_rows`, the rows Feast would write), into
any other through Feast's own Arrow-to-proto conversion and the provider's
``online_write_batch``.

Redis's ``online_write_batch`` skips a row whose event timestamp is not newer than the
stored one, which would drop exactly the corrections; the delta writes with Feast's
``skip_dedup`` (every row handed over is written), which is right because each row it
hands over is the key's current latest row. After a view's write succeeded its
materialization interval is recorded in the registry (serving's item cache watches it)
and then its digest replaced.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.feature_store.delta_scan import (
    FILE_COLUMN,
    RECORD_COLUMNS,
    TS_COLUMN,
    Plan,
    Spec,
    latest_sql,
    literal,
    quote,
    rows_sql,
)
from flywheel.feature_store.delta_scan import plan as make_plan
from flywheel.feature_store.online_digest import HASH_COLUMN, DigestState, view_signature
from flywheel.feature_store.write_batches import view_batch_rows

if TYPE_CHECKING:
    import duckdb
    from feast import FeatureStore, FeatureView

    from flywheel.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewDelta:
    """What one view's delta materialization did."""

    name: str
    #: ``delta`` (changed keys only) or ``full`` (every latest row: ``--full``, a first run,
    #: or a digest that does not describe this store).
    mode: str
    #: Keys with a latest row in ``[start, end]``.
    keys_scanned: int
    #: Keys whose latest row is new or differs from the digest's.
    keys_changed: int
    keys_written: int
    batch_rows: int
    seconds: float
    files_scanned: int
    files_total: int


def _spec(view: FeatureView, data_dir: Path) -> Spec:
    source: Any = view.batch_source
    path = Path(source.path)
    return Spec(
        name=view.name,
        path=str(path if path.is_absolute() else data_dir.absolute() / path),
        keys=tuple(c.name for c in view.entity_columns),
        features=tuple(f.name for f in view.features),
        ts=source.timestamp_field,
        created=source.created_timestamp_column or None,
    )


def signature(spec: Spec) -> str:
    return view_signature(spec.keys, spec.features, spec.ts, spec.created)


def connect(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection within the offline memory limit, times in UTC."""
    import duckdb

    config: dict[str, Any] = {"preserve_insertion_order": False}
    if settings.feast.offline_memory_limit:
        config["memory_limit"] = settings.feast.offline_memory_limit
        spill = settings.workspace.absolute() / "tmp" / "duckdb"
        spill.mkdir(parents=True, exist_ok=True)
        config["temp_directory"] = str(spill)
    con = duckdb.connect(config=config)
    con.execute("SET TimeZone = 'UTC'")
    return con


def _parquet(path: Path) -> str:
    return f"read_parquet({literal(str(path))})"


def _copy(con: duckdb.DuckDBPyConnection, sql: str, path: Path) -> str:
    con.execute(f"COPY ({sql}) TO {literal(str(path))} (FORMAT parquet)").fetchall()
    return _parquet(path)


def _count(con: duckdb.DuckDBPyConnection, relation: str) -> int:
    rows = con.execute(f"SELECT count(*) FROM {relation}").fetchall()
    return int(rows[0][0])


def _not_in(alias: str, keys: tuple[str, ...], other: str) -> str:
    """``alias``'s key has no row in ``other``."""
    on = " AND ".join(f"{alias}.{quote(k)} = x.{quote(k)}" for k in keys)
    return f"NOT EXISTS (SELECT 1 FROM {other} x WHERE {on})"


def _records(
    con: duckdb.DuckDBPyConnection,
    spec: Spec,
    plan: Plan,
    old: Path | None,
    window: tuple[datetime, datetime],
    work: Path,
) -> tuple[str, str]:
    """(every key's record now, the records found by this run's scans) as relations: the
    second is the first on a whole scan; with the day shortcut, the first adds the old
    records the scanned days do not replace."""
    start, end = window
    recent = _copy(con, latest_sql(spec, plan.recent(), start, end), work / "recent.parquet")
    if plan.first_day is None or old is None:
        return recent, recent
    older = [p.name for p in plan.older()]
    names = "[" + ", ".join(literal(n) for n in older) + "]::VARCHAR[]"
    cols = ", ".join(f"o.{quote(c)}" for c in (*spec.keys, *RECORD_COLUMNS))
    in_window = (
        f"o.{TS_COLUMN} >= CAST({literal(start.isoformat())} AS TIMESTAMPTZ) "
        f"AND o.{TS_COLUMN} <= CAST({literal(end.isoformat())} AS TIMESTAMPTZ)"
    )
    replaced = _not_in("o", spec.keys, recent)
    kept = (
        f"SELECT {cols} FROM {_parquet(old)} o WHERE list_contains({names}, o.{FILE_COLUMN}) "
        f"AND {in_window} AND {replaced}"
    )
    gone = (  # records that pointed into the scanned days and were not found there again
        f"SELECT {', '.join(f'o.{quote(k)}' for k in spec.keys)} FROM {_parquet(old)} o "
        f"WHERE NOT list_contains({names}, o.{FILE_COLUMN}) AND {in_window} AND {replaced}"
    )
    gone_rel = _copy(con, gone, work / "gone.parquet")
    found = recent
    if older and _count(con, gone_rel):
        again = latest_sql(spec, plan.older(), start, end, only=gone_rel)
        both = f"SELECT * FROM {recent} UNION ALL SELECT * FROM ({again})"
        found = _copy(con, both, work / "found.parquet")
    every = f"(SELECT * FROM {found} UNION ALL {kept})"
    return every, found


def _write(store: FeatureStore, view: FeatureView, reader: Any) -> int:
    """Stream ``reader``'s record batches into the online store; return rows written."""
    from feast.utils import _convert_arrow_to_proto

    from flywheel.online_store import BatchedSqliteOnlineStore

    provider = store._get_provider()
    online = getattr(provider, "online_store", None)
    direct = online if isinstance(online, BatchedSqliteOnlineStore) else None
    join_types = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
    written = 0
    for batch in reader:
        if batch.num_rows == 0:
            continue
        # The local store takes Arrow as it is; other stores get Feast's protos.
        if direct is None or not direct.write_arrow(store.config, view, batch):
            rows = _convert_arrow_to_proto(batch, view, join_types)
            provider.online_write_batch(store.config, view, rows, None)
        written += batch.num_rows
    return written


def _write_records(
    store: FeatureStore,
    view: FeatureView,
    con: duckdb.DuckDBPyConnection,
    spec: Spec,
    plan: Plan,
    records: str,
    batch_rows: int,
) -> int:
    """Read the full rows of ``records`` (from the files they name only) and write them."""
    names = {r[0] for r in con.execute(f"SELECT DISTINCT {FILE_COLUMN} FROM {records}").fetchall()}
    files = [p for p in plan.files if p.name in names]
    if not files:
        return 0
    return _write(store, view, con.sql(rows_sql(spec, files, records)).to_arrow_reader(batch_rows))


def materialize_view(
    settings: Settings,
    store: FeatureStore,
    con: duckdb.DuckDBPyConnection,
    state: DigestState,
    view: FeatureView,
    start: datetime,
    end: datetime,
    full: bool,
) -> ViewDelta:
    """Write ``view``'s changed keys (all keys if ``full`` or no trusted digest) online,
    record the interval in the registry, then replace its digest."""
    began = time.perf_counter()
    spec = _spec(view, settings.feature_data_dir)
    old = state.trusted(spec.name, signature(spec))
    mode = "full" if full or old is None else "delta"
    plan = make_plan(spec, state.entry(spec.name) if mode == "delta" else None, start, end)
    work = settings.workspace.absolute() / "tmp" / f"online-delta-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True, exist_ok=True)
    staged = state.staging(spec.name)
    try:
        every, found = _records(con, spec, plan, old, (start, end), work)
        con.execute(f"COPY (SELECT * FROM {every}) TO {literal(str(staged))}").fetchall()
        scanned = _count(con, _parquet(staged))
        changed = found
        if old is not None:
            on = " AND ".join(f"f.{quote(k)} = o.{quote(k)}" for k in (*spec.keys, HASH_COLUMN))
            anti = f"SELECT f.* FROM {found} f ANTI JOIN {_parquet(old)} o ON {on}"
            changed = _copy(con, anti, work / "changed.parquet")
        n_changed = _count(con, changed)
        to_write = _parquet(staged) if mode == "full" else changed
        rows = view_batch_rows(view, settings.feast.online_write_batch_mib * 2**20)
        scope = (
            "every file scanned"
            if plan.first_day is None
            else f"{len(plan.recent())} of {len(plan.files)} day files scanned"
        )
        log.info(
            "materializing %s (%s): %d of %d keys changed, %s, %d-row write batches",
            spec.name, mode, n_changed, scanned, scope, rows,
        )  # fmt: skip
        written = _write_records(store, view, con, spec, plan, to_write, rows)
        store.registry.apply_materialization(view, settings.feast.project, start, end)
        state.commit(spec.name, staged, signature(spec), (start, end), scanned, plan.identities)
    finally:
        staged.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - began
    files = (len(plan.recent()), len(plan.files))
    return ViewDelta(spec.name, mode, scanned, n_changed, written, rows, seconds, *files)
