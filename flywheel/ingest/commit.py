"""Ray task: dedupe one staged partition and commit it; the run's quarantine file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel import lake
from flywheel.ingest.checks import _mask
from flywheel.ingest.stage import _FILE_COL, _ROW_COL
from flywheel.ingest.validate import KINDS
from flywheel.schemas import QUARANTINE_SCHEMA


def _committed_keys(partition: Path, key: str, key_type: pa.DataType) -> pa.Array:
    """The ``key`` values already committed in one lake partition (only that column is read)."""
    chunks = [
        pq.read_table(p, columns=[key]).column(key).combine_chunks()
        for p in sorted(partition.glob(lake.PART_GLOB))
    ]
    return pa.concat_arrays(chunks) if chunks else pa.array([], key_type)


def commit_partition(task: dict[str, Any]) -> dict[str, Any]:
    """Ray Data task: dedupe one staged partition and commit what is new as one part file.

    ``task`` holds ``kind``, ``partition`` (``date=...``), ``staging`` and ``target`` (the
    lake directory). Rows are ordered by (file, row) so the first occurrence wins; keys
    already in the lake partition are dropped. Returns counts and the partition's max ``ts``
    among this run's valid rows (new or already committed).
    """
    kind = KINDS[task["kind"]]
    assert kind.key is not None and kind.partition_by is not None
    name = task["partition"]
    staged_files = sorted((Path(task["staging"]) / name).glob("*.parquet"))
    staged = pa.concat_tables([pq.read_table(p) for p in staged_files])
    staged = staged.sort_by([(_FILE_COL, "ascending"), (_ROW_COL, "ascending")])
    keys = staged.column(kind.key).combine_chunks()
    dup_run = keys.to_pandas().duplicated(keep="first").to_numpy()
    target = Path(task["target"]) / name
    in_lake = ~dup_run & _mask(pc.is_in(keys, _committed_keys(target, kind.key, keys.type)))
    fresh = staged.filter(pa.array(~dup_run & ~in_lake))
    fresh = pa.Table.from_arrays([fresh.column(n) for n in kind.schema.names], schema=kind.schema)
    # Time-sorted parts give readers tight row-group statistics for ts range filters.
    fresh = fresh.sort_by(kind.partition_by)
    if fresh.num_rows:
        lake.commit_part(fresh, target)
    # Rows dropped as already in the lake count too: a re-run after a crash must still
    # advance the watermark past what the crashed run committed.
    top = pc.max(staged.column(kind.partition_by)).as_py()
    return {
        "partition": name,
        "accepted": fresh.num_rows,
        "dup_run": int(dup_run.sum()),
        "dup_lake": int(in_lake.sum()),
        "max_ts": top.isoformat() if top else "",
    }


def collect_quarantine(folder: Path, target: Path) -> str | None:
    """Merge the quarantine chunks in ``folder`` into one file (temp + rename); path or None."""
    chunks = sorted(folder.glob("*.parquet"))
    if not chunks:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with pq.ParquetWriter(tmp, QUARANTINE_SCHEMA) as writer:
        for chunk in chunks:
            writer.write_table(pq.read_table(chunk, schema=QUARANTINE_SCHEMA))
    tmp.replace(target)
    return str(target)
