"""Delta materialization: write online only the keys whose latest row changed.

Per online feature view, DuckDB reads the view's Parquet table and keeps each key's latest
row within the view's ttl back from ``end`` (event timestamp, then created timestamp,
descending: Feast's own "latest per key" rule, bounds ``[end - ttl, end]`` inclusive as
Feast's pull). That answer goes to a temporary Parquet file with its row hash
(:mod:`flywheel.feature_store.online_digest`), so the table is read once and DuckDB keeps
to ``feast.offline_memory_limit`` (spilling under ``<workspace>/tmp/duckdb``); no pandas
frame of the table is made. The rows to write are those whose (key, hash) is not in the
previous digest: new keys, keys with a newer row, and keys whose latest row a late event
corrected (same timestamp, other values), including a correction back to an older value.
They stream to the online store in Arrow batches of :func:`view_batch_rows` rows, through
Feast's own Arrow-to-proto conversion and the provider's ``online_write_batch``.

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


@dataclass(frozen=True)
class _Spec:
    name: str
    path: str
    keys: tuple[str, ...]
    features: tuple[str, ...]
    ts: str
    created: str | None

    @property
    def signature(self) -> str:
        return view_signature(self.keys, self.features, self.ts, self.created)


def _spec(view: FeatureView, data_dir: Path) -> _Spec:
    source: Any = view.batch_source
    path = Path(source.path)
    return _Spec(
        name=view.name,
        path=str(path if path.is_absolute() else data_dir.absolute() / path),
        keys=tuple(c.name for c in view.entity_columns),
        features=tuple(f.name for f in view.features),
        ts=source.timestamp_field,
        created=source.created_timestamp_column or None,
    )


def _quote(name: str) -> str:
    """A SQL identifier, quoted (column names come from the definitions)."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _scan(path: str) -> str:
    """``read_parquet`` over one file, or every Parquet file under a folder."""
    if Path(path).is_dir():
        return f"read_parquet({_literal(str(Path(path) / '**' / '*.parquet'))})"
    return f"read_parquet({_literal(path)})"


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


def latest_sql(spec: _Spec, start: datetime, end: datetime) -> str:
    """Each key's latest row in ``[start, end]``, with its hash (:data:`HASH_COLUMN`)."""
    keys = ", ".join(map(_quote, spec.keys))
    ts = _quote(spec.ts)
    order = f"{ts} DESC" + (f", {_quote(spec.created)} DESC" if spec.created else "")
    cols = [*spec.keys, *spec.features, spec.ts, *([spec.created] if spec.created else [])]
    hashed = ", ".join(map(_quote, [*spec.features, spec.ts]))
    stamp = f"CAST({ts} AS TIMESTAMPTZ)"
    lo, hi = _literal(start.isoformat()), _literal(end.isoformat())
    return (
        f"SELECT {', '.join(map(_quote, cols))}, hash({hashed}) AS {HASH_COLUMN} "
        f"FROM {_scan(spec.path)} "
        f"WHERE {stamp} >= CAST({lo} AS TIMESTAMPTZ) AND {stamp} <= CAST({hi} AS TIMESTAMPTZ) "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1"
    )


def _changed_sql(spec: _Spec, latest: Path, old: Path | None) -> str:
    """The rows of ``latest`` whose (key, hash) the old digest does not hold."""
    scan = f"read_parquet({_literal(str(latest))}) AS l"
    if old is None:
        return f"SELECT l.* EXCLUDE ({HASH_COLUMN}) FROM {scan}"
    on = " AND ".join(f"l.{_quote(k)} = o.{_quote(k)}" for k in (*spec.keys, HASH_COLUMN))
    return (
        f"SELECT l.* EXCLUDE ({HASH_COLUMN}) FROM {scan} "
        f"ANTI JOIN read_parquet({_literal(str(old))}) AS o ON {on}"
    )


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = con.execute(f"SELECT count(*) FROM ({sql})").fetchall()
    return int(rows[0][0])


def _write(store: FeatureStore, view: FeatureView, reader: Any) -> int:
    """Stream ``reader``'s record batches into the online store; return rows written."""
    from feast.utils import _convert_arrow_to_proto

    provider = store._get_provider()
    join_types = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
    written = 0
    for batch in reader:
        if batch.num_rows == 0:
            continue
        rows = _convert_arrow_to_proto(batch, view, join_types)
        provider.online_write_batch(store.config, view, rows, None)
        written += batch.num_rows
    return written


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
    old = state.trusted(spec.name, spec.signature)
    mode = "full" if full or old is None else "delta"
    work = settings.workspace.absolute() / "tmp" / f"online-delta-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True, exist_ok=True)
    staged = state.staging(spec.name)
    try:
        latest = work / "latest.parquet"
        con.execute(f"COPY ({latest_sql(spec, start, end)}) TO {_literal(str(latest))}").fetchall()
        keys = ", ".join(map(_quote, (*spec.keys, HASH_COLUMN)))
        scan = f"read_parquet({_literal(str(latest))})"
        con.execute(f"COPY (SELECT {keys} FROM {scan}) TO {_literal(str(staged))}").fetchall()
        scanned = _count(con, f"SELECT 1 FROM {scan}")
        changed_sql = _changed_sql(spec, latest, old)
        changed = scanned if old is None else _count(con, changed_sql)
        rows = view_batch_rows(view, settings.feast.online_write_batch_mib * 2**20)
        log.info(
            "materializing %s (%s): %d of %d keys changed, %d-row write batches",
            spec.name, mode, changed, scanned, rows,
        )  # fmt: skip
        sql = _changed_sql(spec, latest, None) if mode == "full" else changed_sql
        written = _write(store, view, con.sql(sql).to_arrow_reader(rows))
        store.registry.apply_materialization(view, settings.feast.project, start, end)
        state.commit(spec.name, staged, spec.signature, end, scanned)
    finally:
        staged.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    return ViewDelta(spec.name, mode, scanned, changed, written, rows, time.perf_counter() - began)
