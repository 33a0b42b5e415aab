"""Compaction: a partition's many small files merged into one, with the same records.

Each ingest adds one ``part-<uuid>.parquet`` to every date it touches, and every serving
process opens a new ``<pid>-<uuid>.jsonl`` per day; after months the lake and the logs are
thousands of small files, which every scan pays for. This module merges them:

* **Lake tables** (events, served predictions, served feedback): every part of a
  partition becomes one ``part-<uuid>.parquet`` holding the same rows (the same multiset),
  sorted by ``ts`` as each ingested part is, in row groups of
  ``retention.compact_row_group_rows``. Dedupe reads a partition's keys from whatever parts
  it holds, and the ingest watermark names source files, not parts: re-ingesting a file
  still adds nothing. The newest partition of a table (still being filled) is left alone.
* **Serving logs** (``serving/<kind>/date=*/*.jsonl``): the *closed* files of a partition
  (unmodified for ``retention.closed_log_hours``, not in the log's newest partition, read
  to their end by served ingest) become one ``compacted-<uuid>.jsonl``, their lines
  concatenated. Files still open stay, as the same inode (hard-linked), so a writer
  appending to one loses nothing. ``served_state.json`` learns the merged file as read to
  its end before the switch, so served ingest never reads its lines again.

The switch is :func:`flywheel.housekeeping.swap.switch` (an atomic directory exchange),
so a crash at any step leaves every record in its partition exactly once.
Callers hold the workspace lock (:func:`flywheel.housekeeping.gc.compact_workspace`).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel import lake
from flywheel.housekeeping import swap

if TYPE_CHECKING:
    from flywheel.config import Settings

COMPACTED_LOG_PREFIX = "compacted-"


@dataclass(frozen=True)
class Compaction:
    """One partition merged (or, in a dry run, that would be): files in, files out."""

    path: Path
    kind: str
    files_before: int
    files_after: int
    bytes_before: int
    records: int
    done: bool
    note: str = ""


def lake_tables(settings: Settings) -> list[tuple[str, Path, pa.Schema]]:
    """``(kind, root, schema)`` of every date-partitioned lake table."""
    from flywheel.schemas import EVENT_SCHEMA, FEEDBACK_SCHEMA, PREDICTION_LOG_SCHEMA

    return [
        ("events", settings.events_dir, EVENT_SCHEMA),
        ("predictions", settings.lake_dir / "predictions", PREDICTION_LOG_SCHEMA),
        ("feedback", settings.lake_dir / "feedback", FEEDBACK_SCHEMA),
    ]


def partitioned_roots(settings: Settings) -> list[Path]:
    """Every date-partitioned folder housekeeping works in: lake tables and serving logs."""
    from flywheel.predlog import log_dir

    lake_roots = [root for _, root, _ in lake_tables(settings)]
    return [*lake_roots, log_dir(settings, "predictions"), log_dir(settings, "feedback")]


def partitions(root: Path) -> list[Path]:
    """The ``date=YYYY-MM-DD`` folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if lake.partition_day(p) and p.is_dir())


def _write_part(table: pa.Table, folder: Path, row_group_rows: int) -> Path:
    path = folder / f"part-{uuid.uuid4().hex}.parquet"
    tmp = folder / f".{path.name}.tmp"
    pq.write_table(table, tmp, row_group_size=row_group_rows)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def compact_lake_partition(
    partition: Path, schema: pa.Schema, *, min_files: int, row_group_rows: int, dry_run: bool
) -> Compaction | None:
    """Merge the part files of one lake partition; None when it has fewer than ``min_files``.

    Raises:
        RuntimeError: the merged file does not hold the parts' row count (nothing switched).
        ExchangeUnsupported: the filesystem cannot exchange folders (nothing switched).
    """
    parts = sorted(partition.glob(lake.PART_GLOB))
    if len(parts) < min_files:
        return None
    size = sum(p.stat().st_size for p in parts)
    rows = sum(pq.read_metadata(p).num_rows for p in parts)
    kind = f"lake/{partition.parent.name}"
    if dry_run:
        return Compaction(partition, kind, len(parts), 1, size, rows, done=False)
    table = pa.concat_tables([pq.read_table(p, schema=schema) for p in parts])
    # A stable sort: rows of one timestamp keep their part order.
    table = table.sort_by([("ts", "ascending")])
    staging = swap.new_staging(partition)
    merged = _write_part(table, staging.folder, row_group_rows)
    if pq.read_metadata(merged).num_rows != rows or table.num_rows != rows:
        swap.recover(partition.parent)
        raise RuntimeError(f"compacting {partition}: merged file does not hold {rows} rows")
    swap.switch(staging, [p.name for p in parts], [merged.name])
    return Compaction(partition, kind, len(parts), 1, size, rows, done=True)


# ---- serving logs ------------------------------------------------------------------------


def _is_closed(path: Path, now: float, closed_s: float) -> bool:
    return now - path.stat().st_mtime >= closed_s


def closed_log_files(
    settings: Settings, root: Path, offsets: dict[str, Any], now: float
) -> dict[Path, list[Path]]:
    """Per partition of one serving log, its closed files that served ingest read to the end.

    Closed: unmodified for ``retention.closed_log_hours`` and not in the log's newest
    partition (the serving clock is still on it). Read to the end: the offset that
    ``served_state.json`` records is the file's size, and the file ends with a newline.
    """
    closed_s = settings.retention.closed_log_hours * 3600
    folders = partitions(root)
    out: dict[Path, list[Path]] = {}
    for folder in folders[:-1]:
        done = []
        for path in sorted(folder.glob("*.jsonl")):
            size = path.stat().st_size
            rel = path.relative_to(root).as_posix()
            if int(offsets.get(rel, -1)) != size or not _is_closed(path, now, closed_s):
                continue
            if size and not _ends_with_newline(path):
                continue
            done.append(path)
        if done:
            out[folder] = done
    return out


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _served_offsets(settings: Settings) -> dict[str, Any]:
    from flywheel.served import read_served_state

    return read_served_state(settings)


def _write_served_state(settings: Settings, state: dict[str, Any]) -> None:
    from flywheel.served import served_state_path

    lake.write_json_atomic(served_state_path(settings), state)


def compact_log_partition(
    settings: Settings, kind: str, root: Path, folder: Path, files: list[Path], *, dry_run: bool
) -> Compaction:
    """Merge ``files`` (closed, fully ingested logs of one partition) into one file."""
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in files}
    size = sum(n for n, _ in before.values())
    label = f"serving/{kind}"
    others = [p for p in sorted(folder.iterdir()) if p not in files and not p.name.startswith(".")]
    if dry_run:
        return Compaction(folder, label, len(files), 1, size, -1, done=False)
    staging = swap.new_staging(folder)
    merged = staging.folder / f"{COMPACTED_LOG_PREFIX}{uuid.uuid4().hex}.jsonl"
    lines = 0
    with merged.open("wb") as out:
        for path in files:
            data = path.read_bytes()
            lines += data.count(b"\n")
            out.write(data)
        out.flush()
        os.fsync(out.fileno())
    for path in others:  # open (or unread) files stay as they are: the same inode
        os.link(path, staging.folder / path.name)
    if merged.stat().st_size != size or any(_stamp(p) != before[p] for p in files):
        swap.recover(folder.parent)
        raise RuntimeError(f"compacting {folder}: a log file changed while it was merged")
    # Before the switch: the merged file is known as read to its end, so served ingest
    # never reads its lines twice; entries of the replaced files go after the switch.
    state = _served_offsets(settings)
    section = dict(state.get(kind, {}))
    offsets = dict(section.get("files", {}))
    offsets[f"{folder.name}/{merged.name}"] = size
    _write_served_state(settings, {**state, kind: {**section, "files": offsets}})
    swap.switch(staging, [p.name for p in files], [merged.name, *(p.name for p in others)])
    prune_served_state(settings)
    return Compaction(folder, label, len(files), 1, size, lines, done=True)


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def prune_served_state(settings: Settings) -> int:
    """Drop ``served_state.json`` entries of log files that no longer exist; returns how many.

    Safe under the workspace lock: a log file's name is unique (pid and uuid) and its entry
    is written only after the file exists, so a missing file never comes back.
    """
    from flywheel.predlog import log_dir

    state = _served_offsets(settings)
    dropped, new = 0, dict(state)
    for kind in ("predictions", "feedback"):
        section = state.get(kind)
        if not isinstance(section, dict):
            continue
        root = log_dir(settings, kind)  # type: ignore[arg-type]
        files = dict(section.get("files", {}))
        kept = {rel: n for rel, n in files.items() if (root / rel).exists()}
        dropped += len(files) - len(kept)
        new[kind] = {**section, "files": kept}
    if dropped:
        _write_served_state(settings, new)
    return dropped


def now_s() -> float:
    """The wall clock, seconds (file ages compare with ``st_mtime``)."""
    return time.time()
