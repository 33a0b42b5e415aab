"""Publishing feature tables: atomic single-file writes, and the incremental merge.

Each table is one Parquet file under ``settings.feature_data_dir``, written to a temp file
and ``os.replace``d, so readers never see half a table. An incremental build keeps the
published rows stamped at or before its cut and merges the rows it computed after the cut
into them, in the order a full build writes (keys, then ``event_timestamp``).
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

from flywheel.features.keys import KeySpace
from flywheel.features.packed import user_item_latest_table
from flywheel.features.partials import US_PER_HOUR
from flywheel.schemas import TS_TYPE

#: Sort keys of each per-entity table (then ``event_timestamp``; ``user_category`` is
#: sorted by user, event_timestamp, category, so its rows merge by user alone).
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "user_activity": ("user_id",),
    "user_category": ("user_id",),
    "item_activity": ("item_id",),
    "user_item": ("user_id", "item_id"),
    "user_category_history": ("user_id", "category"),
    "user_activity_30d": ("user_id",),
    "item_activity_30d": ("item_id",),
}
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
    """The published rows of a table stamped at or before hour end ``since``."""
    table = pq.read_table(path)
    cut = pa.scalar(since * US_PER_HOUR, TS_TYPE)
    return table.filter(pc.less_equal(table["event_timestamp"], cut))


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


def latest_of(user_item: pa.Table, horizon: int, created_us: int) -> list[pa.Table]:
    """``user_item_latest`` of a whole published-order ``user_item`` table, a slice of whole
    users at a time."""
    n = user_item.num_rows
    if n == 0:
        return []
    codes = pc.dictionary_encode(user_item["user_id"].combine_chunks()).indices.to_numpy()
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])  # sorted by user
    out, lo = [], 0
    while lo < n:
        at = int(np.searchsorted(starts, lo + _LATEST_SLICE_ROWS))
        hi = int(starts[at]) if at < len(starts) else n
        out.append(user_item_latest_table(user_item.slice(lo, hi - lo), horizon, created_us))
        lo = hi
    return out
