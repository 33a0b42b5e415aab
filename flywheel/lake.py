"""The event lake on disk: where partitions live, how to read them, how to write safely.

Layout (a contract every later stage relies on)::

    settings.events_dir / "date=YYYY-MM-DD" / "part-<uuid>.parquet"

Each part file holds exactly the ``EVENT_SCHEMA`` columns; the ``date`` partition (the UTC
date of ``ts``) is in the path only. Files are written under a hidden temporary name and
renamed into place, so a reader never sees half a file and only ``part-*.parquet`` counts.

Small bookkeeping files (the ingest watermark) are JSON written the same way.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.schemas import EVENT_SCHEMA

if TYPE_CHECKING:
    from flywheel.config import Settings

PARTITION_PREFIX = "date="
PART_GLOB = "part-*.parquet"
#: Name of the ingest watermark file under ``settings.state_dir``.
STATE_FILE = "ingest_state.json"

DateBound = date | datetime | str


def partition_name(day: date) -> str:
    """``date=YYYY-MM-DD`` for a UTC calendar day."""
    return f"{PARTITION_PREFIX}{day.isoformat()}"


def partition_day(path: Path) -> date | None:
    """The day a ``date=YYYY-MM-DD`` directory holds, or None for any other name."""
    if not path.name.startswith(PARTITION_PREFIX):
        return None
    try:
        return date.fromisoformat(path.name[len(PARTITION_PREFIX) :])
    except ValueError:
        return None


def _as_utc_datetime(bound: DateBound, name: str) -> datetime:
    """A bound as an aware UTC datetime; a date (or ``YYYY-MM-DD``) means its midnight UTC."""
    if isinstance(bound, str):
        try:
            bound = datetime.fromisoformat(bound) if "T" in bound else date.fromisoformat(bound)
        except ValueError as exc:
            raise ValueError(f"{name}={bound!r} is not an ISO date or datetime") from exc
    if isinstance(bound, datetime):
        if bound.tzinfo is None:
            raise ValueError(f"{name}={bound.isoformat()!r} is naive; expected a tz-aware datetime")
        return bound.astimezone(UTC)
    return datetime.combine(bound, time(), tzinfo=UTC)


def partition_files(
    root: Path, start: DateBound | None = None, end: DateBound | None = None
) -> list[Path]:
    """Committed part files under ``root`` whose partition may hold ``start <= ts < end``.

    Only directory names are inspected (no file is opened), so a date range costs nothing
    beyond the partitions it touches. Sorted by partition, then file name.
    """
    first = _as_utc_datetime(start, "start").date() if start is not None else date.min
    # end is exclusive: a bound at midnight does not pull in that day's partition.
    last = (
        (_as_utc_datetime(end, "end") - timedelta(microseconds=1)).date()
        if end is not None
        else date.max
    )
    if not root.is_dir():
        return []
    files: list[Path] = []
    for sub in sorted(root.iterdir()):
        day = partition_day(sub)
        if day is not None and first <= day <= last and sub.is_dir():
            files.extend(sorted(sub.glob(PART_GLOB)))
    return files


def lake_files(
    settings: Settings, start: DateBound | None = None, end: DateBound | None = None
) -> list[Path]:
    """Event part files, optionally only the partitions overlapping ``[start, end)``.

    ``start``/``end`` are tz-aware datetimes, dates or ISO strings (a date is its midnight
    UTC). Use this to hand a date range to ``ray.data.read_parquet`` without listing the lake.
    """
    return partition_files(settings.events_dir, start, end)


def read_lake_events(
    settings: Settings,
    columns: list[str] | None = None,
    start: DateBound | None = None,
    end: DateBound | None = None,
) -> pa.Table:
    """Read events with ``start <= ts < end`` (either bound optional) from the lake.

    Only the partitions in range are opened. Returns an Arrow table with ``columns`` (default:
    every ``EVENT_SCHEMA`` column, in contract order); an empty lake gives an empty table.
    """
    import pyarrow.dataset as ds

    names = columns or EVENT_SCHEMA.names
    unknown = [c for c in names if c not in EVENT_SCHEMA.names]
    if unknown:
        raise ValueError(f"columns {unknown} are not event columns; expected {EVENT_SCHEMA.names}")
    files = lake_files(settings, start, end)
    if not files:
        return EVENT_SCHEMA.empty_table().select(names)
    cond = None
    if start is not None:
        cond = ds.field("ts") >= pa.scalar(
            _as_utc_datetime(start, "start"), EVENT_SCHEMA.field("ts").type
        )
    if end is not None:
        upper = ds.field("ts") < pa.scalar(
            _as_utc_datetime(end, "end"), EVENT_SCHEMA.field("ts").type
        )
        cond = upper if cond is None else cond & upper
    dataset = ds.dataset([str(f) for f in files], schema=EVENT_SCHEMA, format="parquet")
    return dataset.to_table(columns=names, filter=cond)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` via a hidden temp file and a rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def commit_part(table: pa.Table, partition_dir: Path) -> Path:
    """Add ``table`` to a partition as a new ``part-<uuid>.parquet``; returns its path."""
    path = partition_dir / f"part-{uuid.uuid4().hex}.parquet"
    write_parquet_atomic(table, path)
    return path


def state_path(settings: Settings) -> Path:
    """Where the ingest watermark lives."""
    return settings.state_dir / STATE_FILE


def read_json_state(path: Path, what: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """A JSON-object state file (``{}`` when absent).

    Raises:
        error: the file exists but is not a JSON object; the message names ``what`` and path.
    """
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{what} {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{what} {str(path)!r} must hold a JSON object")
    return data


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace a JSON state file atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_state(settings: Settings) -> dict[str, Any]:
    """The ingest state (``{}`` before the first ingest).

    Raises:
        ValueError: if the file exists but is not a JSON object (naming the file).
    """
    return read_json_state(state_path(settings), "ingest state")


def write_state(settings: Settings, state: dict[str, Any]) -> None:
    """Replace the ingest state atomically (temp file, fsync, rename)."""
    write_json_atomic(state_path(settings), state)


def watermark(settings: Settings) -> datetime | None:
    """The latest event time the lake has accepted (``None`` before the first ingest)."""
    value = read_state(settings).get("events", {}).get("watermark")
    return datetime.fromisoformat(value) if value else None


def feature_time(settings: Settings) -> datetime:
    """The time up to which the lake's features are complete: the end of the snapshot hour
    holding the watermark. Materialization runs up to here, not up to the wall clock, so
    replayed or simulated history (whose events lie in the past) is served online too.

    Raises:
        ValueError: the lake is empty.
    """
    from flywheel.schemas import SNAPSHOT_SECONDS

    mark = watermark(settings)
    if mark is None:
        raise ValueError(f"the event lake at {str(settings.events_dir)!r} is empty: run ingest")
    hour = mark.replace(minute=0, second=0, microsecond=0)
    # +1 s: the last snapshot row is stamped exactly at the hour's end, and Feast's
    # materialization window excludes its end.
    return hour + timedelta(seconds=SNAPSHOT_SECONDS + 1)
