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

from flywheel import lake
from flywheel.ingest.checks import CheckContext
from flywheel.ingest.errors import InputFileError
from flywheel.ingest.readers import read_raw
from flywheel.ingest.validate import KINDS, reason_key, validate_table

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

    A file that cannot be read is reported in ``error`` rather than raised: Ray wraps task
    exceptions in its own types, and the driver should raise a plain InputFileError.
    """
    try:
        return _stage_file(task)
    except InputFileError as exc:
        return {
            "path": task["path"],
            "error": str(exc),
            "rows": 0,
            "valid": 0,
            "reasons": "{}",
            "dropped": "[]",
        }


def _stage_file(task: dict[str, Any]) -> dict[str, Any]:
    """Read, validate and stage one input file (see :func:`stage_file`).

    ``task`` holds ``path``, ``file_idx``, ``kind``, ``staging``, ``now`` (ISO),
    ``max_future_skew_s`` and ``batch_size``. Valid rows are staged per partition with
    their (file, row) order; quarantine records under ``staging/_quarantine``.
    """
    kind, path, staging = KINDS[task["kind"]], Path(task["path"]), Path(task["staging"])
    ctx = CheckContext(datetime.fromisoformat(task["now"]), task["max_future_skew_s"])
    reasons: Counter[str] = Counter()
    dropped: set[str] = set()
    rows = valid = offset = 0
    for b, batch in enumerate(read_raw(path, task["batch_size"])):
        stem = f"{task['file_idx']:06d}-{b:06d}"
        checked = validate_table(batch.table, kind, ctx, str(path))
        quarantine = pa.concat_tables([batch.rejects_table(str(path), ctx.now), checked.quarantine])
        if quarantine.num_rows:
            (staging / "_quarantine").mkdir(parents=True, exist_ok=True)
            pq.write_table(quarantine, staging / "_quarantine" / f"{stem}.parquet")
        if checked.valid.num_rows and kind.partition_by:
            n = checked.valid.num_rows
            ordered = checked.valid.append_column(
                _FILE_COL, pa.array(np.full(n, task["file_idx"], dtype=np.int64))
            ).append_column(_ROW_COL, pa.array(offset + checked.valid_index))
            _stage_by_partition(ordered, kind.partition_by, staging, stem)
        reasons.update(checked.reasons)
        reasons.update(reason_key(r) for r, _ in batch.rejects)
        dropped.update(checked.dropped_columns)
        rows += batch.table.num_rows + len(batch.rejects)
        valid += checked.valid.num_rows
        offset += batch.table.num_rows
    return {
        "path": str(path),
        "error": "",
        "rows": rows,
        "valid": valid,
        "reasons": json.dumps(dict(reasons)),
        "dropped": json.dumps(sorted(dropped)),
    }
