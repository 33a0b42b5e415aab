"""Publishing feature tables: atomic single-file writes, and the incremental merge.

The small tables are one Parquet file under ``settings.feature_data_dir``, written to a temp
file and ``os.replace``d, so readers never see half a table; the per-entity ones are day
folders (:mod:`~flywheel.features.day_parts`). An incremental build keeps the published rows
stamped at or before its cut (older days' files as they are, hard-linked) and merges the rows
it computed after the cut into the day of the cut, in the order a full build writes (keys,
then ``event_timestamp``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel.features import day_parts
from flywheel.features.day_parts import SORT_KEYS
from flywheel.features.keys import KeySpace
from flywheel.features.packed import user_item_latest_table
from flywheel.features.partials import US_PER_HOUR
from flywheel.packed_history import HISTORY_TTL_S
from flywheel.schemas import TS_TYPE

#: Rows of ``user_item`` packed into ``user_item_latest`` at a time (cut at user bounds).
_LATEST_SLICE_ROWS = 2_000_000


def write_atomic(parts: Sequence[Path | pa.Table], schema: pa.Schema, dest: Path) -> None:
    """Write parts (files or tables) in order as one Parquet file; readers never see half."""
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                table = part if isinstance(part, pa.Table) else pq.read_table(part)
                writer.write_table(table.cast(schema))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def kept_rows(path: Path, since: int) -> pa.Table:
    """The rows of a table file stamped at or before hour end ``since``."""
    table = pq.read_table(path)
    cut = pa.scalar(since * US_PER_HOUR, TS_TYPE)
    return table.filter(pc.less_equal(table["event_timestamp"], cut))


def publish_days(
    dest: Path,
    schema: pa.Schema,
    new: pa.Table,
    since: int | None,
    name: str,
    keys: KeySpace,
    categories: Sequence[str],
) -> int:
    """Publish day folder ``dest``: its days before the cut's unchanged (linked), the cut's
    day as its kept rows merged with the new ones, later days the new rows alone.
    ``since=None``: the new rows are the whole table. Returns the table's rows."""
    with day_parts.staged_table(dest, schema) as writer:
        rows = new.num_rows
        new_days = day_parts.row_days(new) if new.num_rows else np.zeros(0, np.int64)
        open_day = None if since is None else day_parts.first_open_day(since)
        kept = schema.empty_table()
        for path in [] if since is None else day_parts.table_files(dest):
            day = day_parts.part_day(path)
            if open_day is not None and day < open_day:
                writer.link(path)
                rows += pq.read_metadata(path).num_rows
            elif day == open_day:
                kept = kept_rows(path, since).cast(schema)  # type: ignore[arg-type]
                rows += kept.num_rows
        days = set(np.unique(new_days).tolist())
        if kept.num_rows:
            days.add(open_day)
        for day in sorted(days):
            mine = new.take(pa.array(np.flatnonzero(new_days == day))).cast(schema)
            old = kept if day == open_day else schema.empty_table()
            writer.write(merge_rows(old, mine, name, keys, categories), day=day)
    return rows


def _codes(table: pa.Table, name: str, keys: KeySpace, categories: Sequence[str]) -> np.ndarray:
    """One int64 sort code per row from the table's key columns (dense key order = id order)."""
    code = np.zeros(table.num_rows, np.int64)
    for column in SORT_KEYS[name]:
        values = table[column]
        if column == "user_id":
            part, card = keys.user_keys(values), len(keys.users)
        elif column == "item_id":
            part, card = keys.item_keys(values), len(keys.items)
        else:  # category: the catalog's sorted names
            found = pc.index_in(values, value_set=pa.array(categories, pa.string()))
            part, card = np.asarray(found.to_numpy(zero_copy_only=False)), len(categories)
        if (part < 0).any():
            raise ValueError(f"{name}: a published {column} is not in this build's key space")
        code = code * max(card, 1) + part
    return code


def merge_rows(
    old: pa.Table,
    new: pa.Table,
    name: str,
    keys: KeySpace,
    categories: Sequence[str],
) -> pa.Table:
    """Kept rows and new rows (each sorted as published; every kept row of a key precedes
    its new rows) as one table in published order: a stable sort by key."""
    both = pa.concat_tables([old, new.cast(old.schema)])
    if old.num_rows == 0 or new.num_rows == 0:
        return both
    order = np.argsort(_codes(both, name, keys, categories), kind="stable")
    return both.take(pa.array(order))


def latest_of(folder: Path, keys: KeySpace, horizon: int, created_us: int) -> list[pa.Table]:
    """``user_item_latest`` from the published ``user_item`` day folder: only the days within
    the history ttl of the horizon are read (an older row cannot be served), the last row of
    each pair taken, then packed a slice of whole users at a time."""
    low_hour = horizon - int(HISTORY_TTL_S // 3600)
    files = [
        p for p in day_parts.table_files(folder) if 24 * day_parts.part_day(p) + 24 >= low_hour
    ]
    tables = [t for t in (pq.read_table(p) for p in files) if t.num_rows]
    if not tables:
        return []
    user_item = pa.concat_tables(tables)
    del tables
    # days in order and each day in (user, item, stamp) order: a pair's last row is its
    # last occurrence; np.unique orders the pairs by (user, item) as the full build does
    code = keys.user_keys(user_item["user_id"]) * max(len(keys.items), 1)
    code += keys.item_keys(user_item["item_id"])
    _, first_reversed = np.unique(code[::-1], return_index=True)
    user_item = user_item.take(pa.array(len(code) - 1 - first_reversed))
    del code
    n = user_item.num_rows
    codes = pc.dictionary_encode(user_item["user_id"].combine_chunks()).indices.to_numpy()
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])  # sorted by user
    out, lo = [], 0
    while lo < n:
        at = int(np.searchsorted(starts, lo + _LATEST_SLICE_ROWS))
        hi = int(starts[at]) if at < len(starts) else n
        out.append(user_item_latest_table(user_item.slice(lo, hi - lo), horizon, created_us))
        lo = hi
    return out
