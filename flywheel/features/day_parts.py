"""Feature tables on disk: one file per day for the tables that grow with the history.

Each per-entity table (:data:`DAY_PARTED`) is a folder ``<name>.parquet/`` holding one file
per UTC day, ``part-YYYY-MM-DD.parquet``: the rows whose stamp closes an hour of that day (a
row stamped at hour end ``T`` describes the hour before ``T``), each file in the table's key
order (keys, then ``event_timestamp``). pyarrow, DuckDB and Feast read the folder as one table
(files in name order, so the rows come day by day). So a daily incremental build rewrites the
day of its cut and writes the days after it, and hard-links every older day unchanged: its
publish follows the new data, not the history. The small tables (the catalog's,
``user_item_latest``) stay single files.

A folder is replaced by writing the new one beside it (hidden, ``.<name>.<id>.new``) and
exchanging the two names in one step where the filesystem can (Linux ``renameat2``: ext4,
xfs, btrfs, tmpfs), then deleting the old. Elsewhere the old is renamed away and the new in:
between the two renames a reader finds no table, and a crash there leaves none; the build
state is cleared before publishing starts, so the next build is then a full one. Nothing is
lost: feature tables are derived from the lake. Hidden folders a crash left are removed at
the next publish (:func:`drop_leftovers`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.features.partials import US_PER_HOUR

#: The per-entity tables, written as day folders, and each one's sort keys within a day
#: file (then ``event_timestamp``; ``user_category`` is sorted by user, event_timestamp,
#: category, so its rows merge by user alone).
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "user_activity": ("user_id",),
    "user_category": ("user_id",),
    "item_activity": ("item_id",),
    "user_item": ("user_id", "item_id"),
    "user_category_history": ("user_id", "category"),
    "user_activity_30d": ("user_id",),
    "item_activity_30d": ("item_id",),
}
DAY_PARTED = frozenset(SORT_KEYS)
_EPOCH = date(1970, 1, 1)
_PREFIX, _SUFFIX = "part-", ".parquet"


def part_name(day: int) -> str:
    """The file name of epoch day ``day``'s rows."""
    return f"{_PREFIX}{_EPOCH + timedelta(days=int(day))}{_SUFFIX}"


def part_day(path: Path) -> int:
    """The epoch day a part file holds (raises ``ValueError`` on another name)."""
    stem = path.name.removeprefix(_PREFIX).removesuffix(_SUFFIX)
    return (date.fromisoformat(stem) - _EPOCH).days


def row_days(table: pa.Table) -> np.ndarray:
    """Epoch day of the hour each row's ``event_timestamp`` (an hour end) closes."""
    stamps = table["event_timestamp"].combine_chunks().cast(pa.int64()).to_numpy()
    return (stamps // US_PER_HOUR - 1) // 24


def first_open_day(since: int) -> int:
    """The first day holding rows stamped after hour end ``since``: older days' rows are all
    at or before it (day ``d`` holds stamps ``24d + 1 .. 24d + 24``)."""
    return since // 24


def table_files(path: Path) -> list[Path]:
    """A table's Parquet files: the file itself, or a day folder's parts in day order."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(path.glob(f"{_PREFIX}*{_SUFFIX}"))
    return []


class DayPartWriter:
    """Write tables (each in key order) into per-day files of a new folder: the rows of a
    day keep their order, so parts written in key order make day files in key order."""

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder, self.schema = folder, schema
        self.writers: dict[int, pq.ParquetWriter] = {}
        folder.mkdir(parents=True)

    def write(self, table: pa.Table, day: int | None = None) -> None:
        """Append ``table``'s rows to their days' files (all to ``day`` when given)."""
        if table.num_rows == 0:
            return
        table = table.cast(self.schema)
        if day is not None:
            self._writer(day).write_table(table)
            return
        days = row_days(table)
        for d in np.unique(days):
            self._writer(int(d)).write_table(table.take(pa.array(np.flatnonzero(days == d))))

    def link(self, path: Path) -> None:
        """Take an unchanged day file of the old folder as it is (hard link, else a copy)."""
        dest = self.folder / path.name
        try:
            os.link(path, dest)
        except OSError:
            shutil.copy2(path, dest)

    def _writer(self, day: int) -> pq.ParquetWriter:
        if day not in self.writers:
            self.writers[day] = pq.ParquetWriter(self.folder / part_name(day), self.schema)
        return self.writers[day]

    def finish(self) -> None:
        """Close every day file; a table with no rows gets one empty file (day 0) so that
        readers of the folder still find its schema."""
        if not self.writers and not any(self.folder.iterdir()):
            self._writer(0)
        self.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def staging_folder(dest: Path) -> Path:
    """A fresh hidden folder beside ``dest`` for its next version."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.new")


def replace_table(staged: Path, dest: Path) -> None:
    """Make ``staged`` (a folder) the table at ``dest`` (a folder or an older single file).

    Folder for folder, the two names are exchanged in one step (``renameat2``, see
    :mod:`flywheel.housekeeping.swap`): a reader finds the old table or the new one, never
    none. Where the filesystem cannot, two renames (the gap the module docstring names)."""
    from flywheel.housekeeping.swap import ExchangeUnsupported, exchange

    if dest.is_dir():
        try:
            exchange(staged, dest)
        except ExchangeUnsupported:
            pass
        else:
            shutil.rmtree(staged, ignore_errors=True)  # now the old table
            return
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.old")
        os.rename(dest, old)
    os.rename(staged, dest)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def drop_leftovers(folder: Path) -> int:
    """Remove the hidden new / old table folders a crashed publish left in ``folder``."""
    removed = 0
    for path in folder.glob(".*.parquet.*"):
        if path.is_dir() and path.suffix in (".new", ".old"):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


@contextmanager
def staged_table(dest: Path, schema: pa.Schema) -> Iterator[DayPartWriter]:
    """A writer into a hidden folder beside ``dest`` that becomes the table at ``dest`` when
    the block ends without an error; on an error the folder is dropped and ``dest`` kept."""
    staged = staging_folder(dest)
    writer = DayPartWriter(staged, schema)
    try:
        yield writer
        writer.finish()
        replace_table(staged, dest)
    finally:
        writer.close()
        shutil.rmtree(staged, ignore_errors=True)


def write_day_parts(parts: list[Path | pa.Table], schema: pa.Schema, dest: Path) -> int:
    """Write parts (files or tables, in key order) as the day folder ``dest``; rows written."""
    rows = 0
    with staged_table(dest, schema) as writer:
        for part in parts:
            table = part if isinstance(part, pa.Table) else pq.read_table(part)
            rows += table.num_rows
            writer.write(table)
            del table
    return rows


def in_key_order(table: pa.Table, name: str) -> pa.Table:
    """A table's rows in key order (keys, then ``event_timestamp``; ``user_category``: user,
    stamp, category), as one sorted file would hold them: a day folder reads day by day.
    Tables that are not day folders come back as they are."""
    if name not in DAY_PARTED:
        return table
    keys = [*SORT_KEYS[name], "event_timestamp"]
    if name == "user_category":
        keys.append("category")
    return table.sort_by([(k, "ascending") for k in keys])
