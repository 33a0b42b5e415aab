"""Appending to a lake table without duplicates: within a run and against committed parts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel import lake

if TYPE_CHECKING:
    pass


def key_strings(table: pa.Table, key: Sequence[str]) -> pa.Array:
    """One string per row identifying its ``key`` (timestamps as epoch microseconds)."""
    parts = []
    for name in key:
        col = table.column(name).combine_chunks()
        if pa.types.is_timestamp(col.type):
            col = pc.cast(col, pa.int64())
        parts.append(pc.cast(col, pa.string()))
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "\x1f")


def first_occurrences(keys: pa.Array) -> np.ndarray:
    """Mask of rows whose key has not appeared on an earlier row."""
    import pandas as pd

    return ~pd.Series(keys.to_numpy(zero_copy_only=False)).duplicated(keep="first").to_numpy()


@dataclass(frozen=True)
class AppendResult:
    """What appending rows to one lake table did."""

    accepted: int
    dup_run: int
    dup_lake: int
    partitions: int
    max_ts: datetime | None


def _utc_days(ts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.cast(ts, pa.int64()).to_numpy(), dtype=np.int64) // 86_400_000_000


def append_deduped(table: pa.Table, root: Path, key: Sequence[str]) -> AppendResult:
    """Append the rows of ``table`` whose ``key`` is new to the date-partitioned ``root``.

    Rows are deduplicated within ``table`` (first wins) and against the part files of the
    partitions they fall in (the UTC date of ``ts``); each touched partition gets one new
    time-sorted part file, written atomically.
    """
    keys = key_strings(table, key) if table.num_rows else pa.array([], pa.string())
    first = first_occurrences(keys)
    table, keys = table.filter(pa.array(first)), keys.filter(pa.array(first))
    days = _utc_days(table.column("ts")) if table.num_rows else np.zeros(0, np.int64)
    accepted = dup_lake = partitions = 0
    for day in np.unique(days):
        in_day = days == day
        part_dir = root / lake.partition_name(datetime.fromtimestamp(int(day) * 86_400, UTC).date())
        existing = _committed_keys(part_dir, key)
        new = in_day & ~np.asarray(pc.is_in(keys, existing).to_numpy(zero_copy_only=False))
        dup_lake += int(in_day.sum() - new.sum())
        if new.any():
            lake.commit_part(table.filter(pa.array(new)).sort_by("ts"), part_dir)
            accepted += int(new.sum())
            partitions += 1
    top = pc.max(table.column("ts")).as_py() if table.num_rows else None
    return AppendResult(accepted, int((~first).sum()), dup_lake, partitions, top)


def _committed_keys(part_dir: Path, key: Sequence[str]) -> pa.Array:
    chunks = [
        key_strings(pq.read_table(p, columns=list(key)), key)
        for p in sorted(part_dir.glob(lake.PART_GLOB))
    ]
    return pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())


# ---- Feedback as events (pure) ------------------------------------------------------------
