"""Durable prediction and feedback logs: JSON lines, one file per serving process.

Layout (a contract the next cycle's ingest relies on)::

    <workspace>/serving/predictions/date=YYYY-MM-DD/<pid>-<uuid>.jsonl
    <workspace>/serving/feedback/date=YYYY-MM-DD/<pid>-<uuid>.jsonl
    <workspace>/serving/candidates/date=YYYY-MM-DD/<pid>-<uuid>.jsonl

Each line is one record of ``PREDICTION_LOG_SCHEMA`` (one per request and served item),
``FEEDBACK_SCHEMA`` or ``CANDIDATE_LOG_SCHEMA`` (one per request: every candidate, for the
off-policy check; only with ``serving.log_candidates``, and read by nothing but that
check: the served ingest reads the first two), ``ts`` as ISO 8601 UTC (``...Z``); the
date partition is the UTC date of the record's ``ts``. Every process writes its own files,
so workers never interleave.

Durability: a request's records are encoded first and handed to the OS in one ``write()``
on a file opened with ``O_APPEND`` and no user-space buffer, before the response leaves.
A ``kill -9`` after the response therefore loses nothing (the page cache outlives the
process; only a machine crash could, and ``fsync`` per request would cost milliseconds).
A process killed during a write leaves at most one torn final line in its own file; the
reader skips and counts it. Nothing is buffered across requests.
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import pyarrow as pa

from flywheel.schemas import CANDIDATE_LOG_SCHEMA, FEEDBACK_SCHEMA, PREDICTION_LOG_SCHEMA

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

LogKind = Literal["predictions", "feedback", "candidates"]
#: The contract each kind of log holds.
LOG_SCHEMAS: Final[dict[str, pa.Schema]] = {
    "predictions": PREDICTION_LOG_SCHEMA,
    "feedback": FEEDBACK_SCHEMA,
    "candidates": CANDIDATE_LOG_SCHEMA,
}
PARTITION_PREFIX: Final = "date="
LOG_SUFFIX: Final = ".jsonl"


class PredictionLogError(ValueError):
    """A log file breaks the contract; the message names the file and what is wrong."""


def log_dir(settings: Settings, kind: LogKind) -> Path:
    """Where one kind of log lives: ``<workspace>/serving/<kind>``."""
    if kind not in LOG_SCHEMAS:
        raise ValueError(f"log kind {kind!r} is unknown; expected one of {list(LOG_SCHEMAS)}")
    return settings.workspace / "serving" / kind


def iso_utc(ts: datetime) -> str:
    """``ts`` as ISO 8601 UTC with microseconds and ``Z`` (what the reader parses)."""
    if ts.tzinfo is None:
        raise ValueError(f"ts={ts.isoformat()} is naive; log timestamps must be tz-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: ``json.dumps(..., separators=(",", ":"), allow_nan=False)``, made once.
_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode_records(records: Sequence[Mapping[str, Any]]) -> bytes:
    """JSON lines for ``records`` (``ts`` may be a datetime); NaN/inf are refused."""
    lines = []
    last: tuple[datetime | None, str] = (None, "")
    for record in records:
        row = dict(record)
        ts = row.get("ts")
        if isinstance(ts, datetime):
            if ts is not last[0]:  # one request's records share one ts: format it once
                last = (ts, iso_utc(ts))
            row["ts"] = last[1]
        lines.append(_ENCODE(row))
    return ("\n".join(lines) + "\n").encode() if lines else b""


class LogWriter:
    """Appends records of one kind to this process's own file of the day.

    Not thread-safe across instances sharing a file (each instance opens its own file);
    one instance may be shared by threads, since each ``append`` is one ``write()`` on an
    ``O_APPEND`` descriptor.
    """

    def __init__(self, root: Path, kind: LogKind) -> None:
        self.root, self.kind = Path(root), kind
        self._fd: int | None = None
        self._day: date | None = None
        self._pid = os.getpid()
        self.path: Path | None = None

    def append(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Write ``records`` (all of one request) in one ``write()``; return bytes written.

        The partition is the UTC date of the first record's ``ts``: one request's records
        share a timestamp, so they never straddle two files.
        """
        if not records:
            return 0
        data = encode_records(records)
        first = records[0]["ts"]
        day = first.astimezone(UTC).date() if isinstance(first, datetime) else None
        fd = self._descriptor(day or datetime.now(UTC).date())
        written = os.write(fd, data)
        # A regular file takes the whole buffer unless the disk is full; finish anyway so
        # a short write never leaves a torn line behind a live process.
        while written < len(data):
            written += os.write(fd, data[written:])
        return written

    def _descriptor(self, day: date) -> int:
        if self._fd is not None and day == self._day and os.getpid() == self._pid:
            return self._fd
        self.close()
        self._pid = os.getpid()
        folder = self.root / f"{PARTITION_PREFIX}{day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{self._pid}-{uuid.uuid4().hex}{LOG_SUFFIX}"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._day = day
        log.info("logging %s to %s", self.kind, self.path)
        return self._fd

    def close(self) -> None:
        """Close the current file (the next ``append`` opens a new one)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ---- reading --------------------------------------------------------------------------


@dataclass(frozen=True)
class LogScan:
    """What a read of one kind of log found."""

    table: pa.Table
    files: int
    torn_lines: int


def _partition_day(path: Path) -> date | None:
    name = path.name
    if not name.startswith(PARTITION_PREFIX):
        return None
    try:
        return date.fromisoformat(name[len(PARTITION_PREFIX) :])
    except ValueError:
        return None


def log_files(root: Path, since: datetime | None = None) -> list[Path]:
    """Log files under ``root``, oldest partition first; partitions before ``since`` skipped."""
    if not root.is_dir():
        return []
    first = since.astimezone(UTC).date() if since is not None else None
    files: list[Path] = []
    for folder in sorted(root.iterdir()):
        day = _partition_day(folder)
        if day is None or not folder.is_dir() or (first is not None and day < first):
            continue
        files += sorted(folder.glob(f"*{LOG_SUFFIX}"))
    return files


def _complete_lines(path: Path) -> tuple[bytes, bool]:
    """The file's bytes up to its last newline, and whether a torn tail was cut off."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return data[:end], end < len(data)


def _parse(path: Path, data: bytes, schema: pa.Schema) -> pa.Table:
    import pyarrow.json as pj

    # Parse with every field optional, so a missing field is reported by name below. Id
    # fields are inferred: logs written before ids became strings hold JSON integers, which
    # read as their decimal text (the id they always meant), so no accepted record is lost.
    lenient = pa.schema([f.with_nullable(True) for f in schema if f.name not in _ID_FIELDS])
    options = pj.ParseOptions(explicit_schema=lenient, unexpected_field_behavior="infer")
    try:
        table = pj.read_json(io.BytesIO(data), parse_options=options)
    except pa.ArrowInvalid as exc:
        raise PredictionLogError(f"log file {path} has a malformed record: {exc}") from exc
    unexpected = [n for n in table.column_names if n not in schema.names]
    if unexpected:
        raise PredictionLogError(f"log file {path} has unexpected field(s) {unexpected}")
    table = _ids_as_strings(path, table, schema)
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise PredictionLogError(
                f"log file {path}: {table.column(field.name).null_count} record(s) lack "
                f"required field {field.name!r} ({field.type})"
            )
    # pyarrow's JSON reader marks every column nullable; the contract is stricter.
    return pa.Table.from_arrays(table.select(schema.names).columns, schema=schema)


#: Id fields of the log contracts (strings; JSON integers in older logs).
_ID_FIELDS: Final = ("user_id", "item_id")


def _ids_as_strings(path: Path, table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Id columns as strings: integers as decimal text; absent ones as all-null."""
    for name in _ID_FIELDS:
        if name not in schema.names:
            continue
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
            continue
        col = table.column(name)
        kind = col.type
        if not (pa.types.is_string(kind) or pa.types.is_integer(kind) or pa.types.is_null(kind)):
            raise PredictionLogError(
                f"log file {path}: field {name!r} holds {col.type} values; expected "
                "string ids (or integers in older logs)"
            )
        table = table.set_column(table.schema.get_field_index(name), name, col.cast(pa.string()))
    return table


def scan_logs(settings: Settings, kind: LogKind, since: datetime | None = None) -> LogScan:
    """Read one kind of log into its contract schema.

    Args:
        settings: whose workspace holds the logs.
        kind: ``"predictions"``, ``"feedback"`` or ``"candidates"``.
        since: tz-aware; only records with ``ts >= since`` (default: all).

    Returns:
        A :class:`LogScan`: the records (exactly ``LOG_SCHEMAS[kind]``), the files read and
        how many torn final lines were skipped (at most one per file).

    Raises:
        PredictionLogError: a complete line is not a valid record (names the file).
    """
    schema = LOG_SCHEMAS[kind]
    if since is not None and since.tzinfo is None:
        raise ValueError(f"since={since.isoformat()} is naive; pass a tz-aware time")
    files = log_files(log_dir(settings, kind), since)
    tables, torn = [], 0
    for path in files:
        data, cut = _complete_lines(path)
        torn += cut
        if data:
            tables.append(_parse(path, data, schema))
    if torn:
        log.warning("skipped %d torn final line(s) in %s logs", torn, kind)
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if since is not None and table.num_rows:
        import pyarrow.compute as pc

        table = table.filter(
            pc.greater_equal(table["ts"], pa.scalar(since, schema.field("ts").type))
        )
    return LogScan(table, len(files), torn)


def normal_traffic(predictions: pa.Table) -> pa.Table:
    """The rows of a prediction table (with its ``degraded`` column) that serving did not
    rank degraded, i.e. with the online store answering: what training and the monitor
    may treat as the model's traffic."""
    import pyarrow.compute as pc

    degraded = pc.fill_null(predictions["degraded"], False)
    if not pc.any(degraded).as_py():
        return predictions
    log.info("prediction log: %d degraded row(s) left out", pc.sum(degraded).as_py())
    return predictions.filter(pc.invert(degraded))


def read_prediction_logs(settings: Settings, since: datetime | None = None) -> pa.Table:
    """Every prediction record (``PREDICTION_LOG_SCHEMA``) with ``ts >= since``."""
    return scan_logs(settings, "predictions", since).table


def read_feedback_logs(settings: Settings, since: datetime | None = None) -> pa.Table:
    """Every feedback record (``FEEDBACK_SCHEMA``) with ``ts >= since``."""
    return scan_logs(settings, "feedback", since).table


def read_candidate_logs(settings: Settings, since: datetime | None = None) -> pa.Table:
    """Every candidate record (``CANDIDATE_LOG_SCHEMA``) with ``ts >= since``; none when
    serving never logged candidates."""
    return scan_logs(settings, "candidates", since).table
