"""Ray task: read, validate and stage one input file under the run's staging folder."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel import lake, storage
from flywheel.ingest.checks import CheckContext
from flywheel.ingest.errors import IngestError
from flywheel.ingest.mapped import MappedBatch, validate_mapped
from flywheel.ingest.mapping import SourceMapping
from flywheel.ingest.readers import read_raw
from flywheel.ingest.validate import KINDS, InputKind, reason_key, validate_table

#: Order columns carried through staging so "first occurrence wins" is deterministic.
_FILE_COL, _ROW_COL = "__file_idx", "__row_idx"
_US_PER_DAY = 86_400_000_000


def _stage_by_partition(table: pa.Table, column: str, staging: Path, stem: str) -> None:
    """Write ``table`` split by the UTC date of ``column`` under ``staging/date=.../``."""
    days = pc.cast(table.column(column), pa.int64()).to_numpy() // _US_PER_DAY
    for day in np.unique(days):
        name = lake.partition_name(date(1970, 1, 1) + timedelta(days=int(day)))
        (staging / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pa.array(days == day)), staging / name / f"{stem}.parquet")


def stage_file(task: dict[str, Any]) -> dict[str, Any]:
    """Ray Data task: read, validate and stage one input file; returns its counts.

    A file that cannot be read (or lacks a column its mapping reads) is reported in
    ``error`` rather than raised: Ray wraps task exceptions in its own types, and the
    driver should raise a plain InputFileError.
    """
    try:
        return _stage_file(task)
    except IngestError as exc:
        return {"path": task["path"], "error": str(exc), **_counts(Counter(), set(), 0, 0)}


def _counts(
    reasons: Counter[str], dropped: set[str], rows: int, valid: int, **more: Counter[str] | int
) -> dict[str, Any]:
    """A file's counts as Ray-friendly scalars (dicts and lists JSON-encoded)."""
    extra = {k: json.dumps(dict(v)) if isinstance(v, Counter) else v for k, v in more.items()}
    return {
        "rows": rows,
        "valid": valid,
        "reasons": json.dumps(dict(reasons)),
        "dropped": json.dumps(sorted(dropped)),
        "dropped_types": "{}",
        "item_rows": 0,
        "item_reasons": "{}",
        **extra,
    }


def _write(table: pa.Table, folder: Path, stem: str) -> None:
    if table.num_rows:
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"{stem}.parquet")


def _with_order(table: pa.Table, file_idx: int, rows: np.ndarray) -> pa.Table:
    """``table`` with its (file, row) order columns, so "first/last occurrence" is defined."""
    n = table.num_rows
    return table.append_column(
        _FILE_COL, pa.array(np.full(n, file_idx, dtype=np.int64))
    ).append_column(_ROW_COL, pa.array(rows, pa.int64()))


def _validate_batch(
    raw: pa.Table, kind: InputKind, mapping: SourceMapping | None, ctx: CheckContext, src: str
) -> MappedBatch:
    if mapping is None:
        return MappedBatch(validate_table(raw, kind, ctx, src), {})
    return validate_mapped(raw, mapping, ctx, src)


def _stage_file(task: dict[str, Any]) -> dict[str, Any]:
    """Read, validate and stage one input file (see :func:`stage_file`).

    ``task`` holds ``path``, ``file_idx``, ``kind``, ``staging``, ``now`` (ISO),
    ``max_future_skew_s``, ``batch_size`` and optionally ``mapping`` (a
    :class:`SourceMapping` as a dict) and ``s3`` (:class:`~flywheel.storage.S3Options` as a
    dict, for an ``s3://`` path: workers need not share the driver's environment). Valid
    rows are staged per partition with their (file, row) order; quarantine records under
    ``staging/_quarantine``; with item attributes, each batch's latest row per item under
    ``staging/_items`` and the attribute rows that break the catalog rules under
    ``staging/_items_quarantine``.
    """
    kind, path, staging = (
        KINDS[task["kind"]],
        storage.location_of(task["path"]),
        Path(task["staging"]),
    )
    s3 = storage.S3Options(**task["s3"]) if task.get("s3") else None
    mapping = SourceMapping.model_validate(task["mapping"]) if task.get("mapping") else None
    ctx = CheckContext(datetime.fromisoformat(task["now"]), task["max_future_skew_s"])
    reasons: Counter[str] = Counter()
    dropped_types: Counter[str] = Counter()
    item_reasons: Counter[str] = Counter()
    dropped: set[str] = set()
    rows = valid = offset = item_rows = 0
    for b, batch in enumerate(read_raw(path, task["batch_size"], s3)):
        stem = f"{task['file_idx']:06d}-{b:06d}"
        mapped = _validate_batch(batch.table, kind, mapping, ctx, str(path))
        checked = mapped.validation
        rejects = batch.rejects_table(str(path), ctx.now)
        _write(pa.concat_tables([rejects, checked.quarantine]), staging / "_quarantine", stem)
        if checked.valid.num_rows and kind.partition_by:
            ordered = _with_order(checked.valid, task["file_idx"], offset + checked.valid_index)
            _stage_by_partition(ordered, kind.partition_by, staging, stem)
        if mapped.items is not None:
            items = _with_order(mapped.items, task["file_idx"], offset + mapped.items_index)
            _write(latest_per_item(items), staging / "_items", stem)
            _write(mapped.items_quarantine, staging / "_items_quarantine", stem)
            item_rows += mapped.items.num_rows + mapped.items_quarantine.num_rows
            item_reasons.update(mapped.items_reasons)
        reasons.update(checked.reasons)
        reasons.update(reason_key(r) for r, _ in batch.rejects)
        dropped_types.update(mapped.dropped_types)
        dropped.update(checked.dropped_columns)
        rows += batch.table.num_rows + len(batch.rejects)
        valid += checked.valid.num_rows
        offset += batch.table.num_rows
    return {
        "path": str(path),
        "error": "",
        **_counts(
            reasons,
            dropped,
            rows,
            valid,
            dropped_types=dropped_types,
            item_rows=item_rows,
            item_reasons=item_reasons,
        ),
    }


#: Earliest event time of an item among the rows folded into a staged catalog row.
FIRST_TS_COL = "__first_ts"


def latest_per_item(items: pa.Table) -> pa.Table:
    """One row per ``item_id``: the latest ``created_ts``, ties to the later (file, row).

    The row also carries ``FIRST_TS_COL``, the item's earliest ``created_ts`` among the
    rows (or among their own ``FIRST_TS_COL`` when folding staged rows again), so a
    catalog derived from events can date an item from its first event.
    """
    first = items.column(FIRST_TS_COL) if FIRST_TS_COL in items.column_names else None
    if first is None:
        items = items.append_column(FIRST_TS_COL, items.column("created_ts"))
    order = items.sort_by(
        [
            ("item_id", "ascending"),
            ("created_ts", "ascending"),
            (_FILE_COL, "ascending"),
            (_ROW_COL, "ascending"),
        ]
    )
    ids = order.column("item_id").combine_chunks()
    n = len(ids)
    if n == 0:
        return order
    last = np.ones(n, dtype=bool)
    last[:-1] = np.asarray(
        pc.not_equal(ids.slice(0, n - 1), ids.slice(1)).to_numpy(zero_copy_only=False), bool
    )
    earliest = order.group_by("item_id", use_threads=False).aggregate([(FIRST_TS_COL, "min")])
    latest = order.filter(pa.array(last)).drop_columns([FIRST_TS_COL])
    return (
        latest.join(earliest, "item_id")
        .rename_columns([*latest.column_names, FIRST_TS_COL])
        .sort_by([("item_id", "ascending")])
    )
