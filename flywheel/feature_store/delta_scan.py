"""Which rows a delta materialization must look at, and the DuckDB queries that find them.

Each key's latest row within a view's ``[start, end]`` is found as a small record, never as
the row itself: the key, ``__h`` (the hash of the row's features and event time), ``__ts``
(its event time), ``__file`` (the name of the Parquet file holding it) and ``__row`` (its
row number in that file). That record is the view's digest entry for the key; the full
rows are read only for the keys that changed (:func:`rows_sql`), so a 100 MB table of list
features is hashed, not copied.

Day folders (:mod:`flywheel.features.day_parts`) let a daily run skip the history: every
file whose identity (inode, size, modification time) is the one the last run scanned, and
whose day is before the first day that changed, holds the same rows as then, and every row
of a later day is newer than every row of an earlier one. So a key found in the days from
the first changed one on (:func:`plan`'s ``first_day``) has its latest row there; a key not
found there keeps its digest entry (if still within ``start``), unless that entry pointed
into the changed days (its row was removed, e.g. a re-ingest with fewer events): such a
key's latest row is looked up again in the older days. A single-file table, a moved window
start or end, a digest without file identities or files whose times overlap are scanned
whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from flywheel.feature_store.online_digest import HASH_COLUMN
from flywheel.features import day_parts

TS_COLUMN = "__ts"
FILE_COLUMN = "__file"
ROW_COLUMN = "__row"
#: The digest's columns after the view's keys.
RECORD_COLUMNS = (HASH_COLUMN, TS_COLUMN, FILE_COLUMN, ROW_COLUMN)


@dataclass(frozen=True)
class Spec:
    """An online view as far as the delta needs it."""

    name: str
    path: str
    keys: tuple[str, ...]
    features: tuple[str, ...]
    ts: str
    created: str | None


@dataclass(frozen=True)
class Plan:
    """Which files to scan: ``first_day=None`` scans every file (no day shortcut)."""

    files: tuple[Path, ...]
    identities: dict[str, str]
    first_day: int | None

    def recent(self) -> list[Path]:
        """The files scanned for latest rows (all, or the days from ``first_day`` on)."""
        if self.first_day is None:
            return list(self.files)
        return [p for p in self.files if day_parts.part_day(p) >= self.first_day]

    def older(self) -> list[Path]:
        """The files before ``first_day`` (looked up only for keys whose row went away)."""
        if self.first_day is None:
            return []
        return [p for p in self.files if day_parts.part_day(p) < self.first_day]


def quote(name: str) -> str:
    """A SQL identifier, quoted (column names come from the definitions)."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_files(spec: Spec) -> list[Path]:
    return day_parts.table_files(Path(spec.path))


def identity(path: Path) -> str:
    """What changes when a file is rewritten (a hard link keeps all three)."""
    st = path.stat()
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _ts_range(path: Path, column: str) -> tuple[Any, Any] | None:
    """A file's min and max of ``column`` from its footer's statistics (None: unknown)."""
    meta = pq.read_metadata(path)
    lo = hi = None
    index = meta.schema.to_arrow_schema().get_field_index(column)
    if index < 0:
        return None
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(index).statistics
        if stats is None or not stats.has_min_max:
            return None
        lo = stats.min if lo is None else min(lo, stats.min)
        hi = stats.max if hi is None else max(hi, stats.max)
    return None if lo is None else (lo, hi)


def _day_of(moment: datetime) -> int:
    """The day file holding rows stamped at ``moment`` (an hour end closes the day before)."""
    hours = int(moment.timestamp() // 3600)
    return (hours - 1) // 24


def plan(spec: Spec, entry: dict[str, Any] | None, start: datetime, end: datetime) -> Plan:
    """The files of ``spec``'s table and, where the day shortcut holds against the digest's
    ``entry`` (the manifest's record of the last run), the first day that must be scanned."""
    files = table_files(spec)
    ids = {p.name: identity(p) for p in files}
    whole = Plan(tuple(files), ids, None)
    if not entry or not Path(spec.path).is_dir():
        return whole
    old_ids, old_start, old_end = entry.get("files"), entry.get("start"), entry.get("end")
    if not isinstance(old_ids, dict) or not old_start or not old_end:
        return whole
    if start < datetime.fromisoformat(old_start) or end < datetime.fromisoformat(old_end):
        return whole  # the window reaches rows the last run did not consider
    try:
        days = {name: day_parts.part_day(Path(name)) for name in {*ids, *old_ids}}
    except ValueError:
        return whole
    dirty = [days[n] for n in ids if old_ids.get(n) != ids[n]]
    dirty += [days[n] for n in old_ids if n not in ids]
    # rows after the last run's end were not considered, wherever they are
    first = min([*dirty, _day_of(datetime.fromisoformat(old_end))])
    if not _days_ordered(spec, files, first):
        return whole
    return Plan(tuple(files), ids, first)


def _days_ordered(spec: Spec, files: list[Path], first: int) -> bool:
    """Every row before day ``first`` older than every row from it on (footer statistics)."""
    ranges = []
    for p in files:
        r = _ts_range(p, spec.ts)
        if r is None and pq.read_metadata(p).num_rows:
            return False
        if r is not None:
            ranges.append((day_parts.part_day(p) >= first, r))
    old = [r[1] for recent, r in ranges if not recent]
    new = [r[0] for recent, r in ranges if recent]
    return not old or not new or max(old) < min(new)


def _scan(files: list[Path], columns: str) -> str:
    paths = ", ".join(literal(str(p)) for p in files)
    return f"(SELECT {columns} FROM read_parquet([{paths}], filename=true, file_row_number=true))"


def latest_sql(
    spec: Spec, files: list[Path], start: datetime, end: datetime, only: str | None = None
) -> str:
    """Each key's latest row in ``[start, end]`` (inclusive, event time then created time
    descending: Feast's rule) among ``files``, as a digest record (keys, then
    :data:`RECORD_COLUMNS`); ``only``: a relation whose keys it is limited to."""
    cols = [*spec.keys, *spec.features, spec.ts, *filter(None, [spec.created])]
    src = _scan(files, f"{', '.join(map(quote, cols))}, filename, file_row_number")
    keys = ", ".join(f"s.{quote(k)}" for k in spec.keys)
    ts = f"s.{quote(spec.ts)}"
    order = f"{ts} DESC" + (f", s.{quote(spec.created)} DESC" if spec.created else "")
    hashed = ", ".join(f"s.{quote(c)}" for c in [*spec.features, spec.ts])
    stamp = f"CAST({ts} AS TIMESTAMPTZ)"
    lo, hi = literal(start.isoformat()), literal(end.isoformat())
    limit = ""
    if only is not None:
        on = " AND ".join(f"s.{quote(k)} = o.{quote(k)}" for k in spec.keys)
        limit = f"AND EXISTS (SELECT 1 FROM {only} o WHERE {on}) "
    return (
        f"SELECT {keys}, hash({hashed}) AS {HASH_COLUMN}, {stamp} AS {TS_COLUMN}, "
        f"parse_filename(s.filename) AS {FILE_COLUMN}, s.file_row_number AS {ROW_COLUMN} "
        f"FROM {src} s "
        f"WHERE {stamp} >= CAST({lo} AS TIMESTAMPTZ) AND {stamp} <= CAST({hi} AS TIMESTAMPTZ) "
        f"{limit}QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1"
    )


def rows_sql(spec: Spec, files: list[Path], records: str) -> str:
    """The full rows (keys, features, timestamps) of the digest ``records`` among ``files``."""
    cols = [*spec.keys, *spec.features, spec.ts, *filter(None, [spec.created])]
    src = _scan(files, f"{', '.join(map(quote, cols))}, filename, file_row_number")
    return (
        f"SELECT {', '.join('s.' + quote(c) for c in cols)} FROM {src} s "
        f"SEMI JOIN {records} r ON parse_filename(s.filename) = r.{FILE_COLUMN} "
        f"AND s.file_row_number = r.{ROW_COLUMN}"
    )
