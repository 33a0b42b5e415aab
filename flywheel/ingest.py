"""Ingest: raw web-log events and the item catalog into the validated event lake.

Users may bring their own logs, so nothing about the input is trusted:

* Inputs are Parquet, JSON lines (``.jsonl``/``.json``/``.ndjson``; a ``.json`` file holding
  one JSON array also works) or CSV with the contract's columns. Extra columns are dropped
  (and reported). A file lacking a required column has **every row quarantined** with the
  reason ``missing column 'x'`` rather than failing the run: one bad export should not
  block the others, and the quarantine says exactly what was wrong.
* A missing, unreadable or corrupt input file is an :class:`InputFileError` naming the path,
  raised before anything is written (Parquet footers are checked up front).
* Every row is validated (:func:`validate_table`, pure and Ray-free). Bad rows go to
  ``settings.quarantine_dir / "<run-id>.parquet"`` with a reason ``"<field> <problem>: <value>"``
  and never reach the lake. Timestamps must carry a zone: ISO strings with an offset or
  ``Z`` (a trailing ``UTC``/``GMT`` counts), or tz-aware Parquet timestamps. **Naive
  timestamps are quarantined** (``ts has no timezone``): guessing a zone would silently shift
  events by hours. Numbers (epoch values) are not accepted as timestamps (unit unknown).
  Ids may be integers or integer strings (``"42"``, ``"42.0"``); ``event_type`` is trimmed
  and lower-cased before it is checked against ``EVENT_TYPES``.
* Events are deduplicated on ``event_id`` within a run (first occurrence in sorted file
  order wins) and against the lake's affected date partitions.
* The watermark records every ingested file (path, size, mtime, SHA-256); a file whose size
  and hash were ingested before (under any path) is skipped. A file that grew is re-read
  and dedupe keeps only its new rows. The watermark's ``ts`` is the max event ``ts`` that
  any run has put in the lake.

Crash safety: Ray workers validate files in parallel and stage results under
``lake_dir/_staging/<run-id>``; each affected partition is then deduplicated and committed as
one new part file (temp name + rename). The quarantine file and then the watermark
(``state_dir/ingest_state.json``) are written only after every partition is committed. A
crash anywhere leaves the lake readable and the state unchanged; the re-run re-reads the
same files and dedupe drops what was already committed. One ingest runs at a time.

The code is organised by input *kind* (:class:`InputKind`: schema, per-column checks, dedupe
key, partition column); prediction logs and feedback become new kinds plus a lake directory.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel import lake
from flywheel.schemas import (
    EVENT_SCHEMA,
    EVENT_TYPES,
    ITEM_SCHEMA,
    QUARANTINE_SCHEMA,
    TS_TYPE,
)

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv",)
INPUT_SUFFIXES = PARQUET_SUFFIXES + JSON_SUFFIXES + CSV_SUFFIXES
#: Order columns carried through staging so "first occurrence wins" is deterministic.
_FILE_COL, _ROW_COL = "__file_idx", "__row_idx"
_US_PER_DAY = 86_400_000_000


class IngestError(ValueError):
    """Ingest cannot proceed; the message names the file or field and what was expected."""


class InputFileError(IngestError):
    """An input path is missing, unreadable, corrupt or of an unsupported type."""


# ---- Column checks (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class CheckContext:
    """What checks need besides the data: the ingest clock and the allowed future skew."""

    now: datetime
    max_future_skew_s: int = 3600


@dataclass(frozen=True)
class Coerced:
    """One column converted to its contract type (null where bad) and its problems.

    ``problems`` lists ``(problem text, boolean row mask)``; a row may match several, the
    first listed is the one reported.
    """

    values: pa.Array
    problems: list[tuple[str, np.ndarray]]


Check = Callable[[pa.ChunkedArray, CheckContext], Coerced]


def _mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean pyarrow array as a numpy mask (null counts as False)."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def as_strings(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Any column as strings (nested values JSON-encoded), nulls kept."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_string(arr.type):
        return arr
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        # ISO with the zone visible, so a quarantined naive value reads as naive.
        return pa.array(
            [None if v is None else v.isoformat() for v in arr.to_pylist()], pa.string()
        )
    try:
        return pc.cast(arr, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        values = arr.to_pylist()
        return pa.array(
            [None if v is None else json.dumps(v, default=str) for v in values], pa.string()
        )


def _present(col: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Trimmed strings and the mask of rows that are null or blank."""
    trimmed = pc.utf8_trim_whitespace(as_strings(col))
    missing = _mask(pc.or_kleene(pc.is_null(trimmed), pc.equal(trimmed, "")))
    return trimmed, missing


def _null_where(values: pa.Array, bad: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(bad), pa.nulls(len(values), values.type), values)


def check_string(
    col: pa.ChunkedArray, ctx: CheckContext, *, allowed: tuple[str, ...] | None = None
) -> Coerced:
    """Non-blank string, trimmed; with ``allowed``, lower-cased and one of those values."""
    values, missing = _present(col)
    problems = [("is missing", missing)]
    if allowed is not None:
        values = pc.utf8_lower(values)
        unknown = ~missing & ~_mask(pc.is_in(values, pa.array(allowed)))
        problems.append((f"is not one of {'|'.join(allowed)}", unknown))
    bad = np.logical_or.reduce([m for _, m in problems])
    return Coerced(_null_where(values, bad), problems)


def check_integer(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """A 64-bit integer: integer columns, integral floats, or strings like ``"42"``/``"42.0"``."""
    arr = col.combine_chunks()
    if pa.types.is_integer(arr.type):
        return Coerced(pc.cast(arr, pa.int64()), [("is missing", _mask(pc.is_null(arr)))])
    if pa.types.is_floating(arr.type):
        missing = _mask(pc.is_null(arr))
        integral = _mask(pc.and_(pc.is_finite(arr), pc.equal(pc.floor(arr), arr)))
        small = _mask(pc.less(pc.abs(arr), 2.0**62))
        bad = ~missing & ~(integral & small)
        values = pc.cast(_null_where(arr, missing | bad), pa.int64())
        return Coerced(values, [("is missing", missing), ("is not an integer", bad)])
    text, missing = _present(arr)
    ok = _mask(pc.match_substring_regex(text, r"^[+-]?\d{1,18}(\.0*)?$"))
    digits = pc.replace_substring_regex(text, r"\.0*$", "")
    values = pc.cast(_null_where(digits, ~ok), pa.int64())
    return Coerced(values, [("is missing", missing), ("is not an integer", ~missing & ~ok)])


def check_positive_float(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """A finite number > 0 (numeric columns or numeric strings)."""
    arr = col.combine_chunks()
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        missing = _mask(pc.is_null(arr))
        number = pc.cast(arr, pa.float64())
        not_number = np.zeros(len(arr), dtype=bool)
    else:
        text, missing = _present(arr)
        looks = _mask(pc.match_substring_regex(text, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"))
        not_number = ~missing & ~looks
        number = pc.cast(_null_where(text, ~looks), pa.float64())
    positive = _mask(pc.and_(pc.is_finite(number), pc.greater(number, 0.0)))
    not_positive = ~missing & ~not_number & ~positive
    problems = [
        ("is missing", missing),
        ("is not a number", not_number),
        ("is not a positive finite number", not_positive),
    ]
    return Coerced(_null_where(number, missing | not_number | not_positive), problems)


_AWARE_ISO = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)$"
_NAIVE_ISO = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$"


def _parse_aware_strings(text: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Parse ISO strings to UTC; returns (values, naive mask, unparseable mask)."""
    import pandas as pd

    text = pc.replace_substring_regex(text, r"\s*(UTC|GMT)$", "Z")
    aware = _mask(pc.match_substring_regex(text, _AWARE_ISO))
    naive = _mask(pc.match_substring_regex(text, _NAIVE_ISO))
    parsed = pd.to_datetime(
        _null_where(text, ~aware).to_pandas(), format="ISO8601", utc=True, errors="coerce"
    )
    values = pc.cast(pa.Array.from_pandas(parsed), TS_TYPE, safe=False)
    failed = aware & _mask(pc.is_null(values))
    return values, naive, ~aware & ~naive | failed


def check_timestamp(col: pa.ChunkedArray, ctx: CheckContext, *, future: bool = True) -> Coerced:
    """A tz-aware instant, converted to UTC; with ``future``, at most the skew past ``now``."""
    arr = col.combine_chunks()
    missing = _mask(pc.is_null(arr))
    naive = unparseable = np.zeros(len(arr), dtype=bool)
    if pa.types.is_timestamp(arr.type) and arr.type.tz is not None:
        values = pc.cast(arr, TS_TYPE, safe=False)
    elif pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        naive, values = ~missing, pa.nulls(len(arr), TS_TYPE)
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text, missing = _present(arr)
        values, naive, unparseable = _parse_aware_strings(text)
        naive, unparseable = naive & ~missing, unparseable & ~missing
    else:
        unparseable, values = ~missing, pa.nulls(len(arr), TS_TYPE)
    problems = [
        ("is missing", missing),
        ("has no timezone", naive),
        ("is not an ISO-8601 timestamp", unparseable),
    ]
    if future:
        limit = pa.scalar(ctx.now + timedelta(seconds=ctx.max_future_skew_s), TS_TYPE)
        problems.append(
            (
                f"is more than {ctx.max_future_skew_s} s in the future",
                _mask(pc.greater(values, limit)),
            )
        )
    bad = np.logical_or.reduce([m for _, m in problems])
    return Coerced(_null_where(values, bad), problems)


# ---- Input kinds --------------------------------------------------------------------------


@dataclass(frozen=True)
class InputKind:
    """One kind of input: its contract, a check per column, its dedupe key and partition column.

    Adding prediction logs or feedback means one more ``InputKind`` (and a lake directory).
    """

    name: str
    schema: pa.Schema
    checks: Mapping[str, Check]
    key: str | None = None
    partition_by: str | None = None


EVENTS = InputKind(
    name="events",
    schema=EVENT_SCHEMA,
    checks={
        "event_id": check_string,
        "user_id": check_integer,
        "item_id": check_integer,
        "event_type": functools.partial(check_string, allowed=EVENT_TYPES),
        "ts": check_timestamp,
        "session_id": check_string,
        "device": check_string,
    },
    key="event_id",
    partition_by="ts",
)

ITEMS = InputKind(
    name="items",
    schema=ITEM_SCHEMA,
    checks={
        "item_id": check_integer,
        "category": check_string,
        "price": check_positive_float,
        "created_ts": functools.partial(check_timestamp, future=False),
    },
    key="item_id",
)

KINDS: dict[str, InputKind] = {k.name: k for k in (EVENTS, ITEMS)}


# ---- Validation (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """The outcome of validating one raw table.

    ``valid`` has exactly the kind's schema; ``valid_index`` gives each valid row's position
    in the raw table; ``quarantine`` has ``QUARANTINE_SCHEMA``; ``reasons`` counts rows per
    reason key (the reason without the offending value).
    """

    valid: pa.Table
    valid_index: np.ndarray
    quarantine: pa.Table
    reasons: dict[str, int]
    dropped_columns: tuple[str, ...] = ()


def reason_key(reason: str) -> str:
    """The countable part of a quarantine reason (everything before the value)."""
    return reason.split(": ", 1)[0]


def quarantine_table(source: str, reasons: list[str], rows: list[str], at: datetime) -> pa.Table:
    """Quarantine records: one per (reason, original row as JSON) pair."""
    n = len(reasons)
    return pa.table(
        {
            "source_file": pa.array([source] * n, pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "row": pa.array(rows, pa.string()),
            "quarantined_at": pa.array([at] * n, TS_TYPE),
        },
        schema=QUARANTINE_SCHEMA,
    )


def _rows_as_json(raw: pa.Table, idx: np.ndarray) -> list[str]:
    """The original rows at ``idx`` as JSON objects of strings."""
    picked = raw.take(pa.array(idx, pa.int64()))
    cols = {name: as_strings(picked.column(name)).to_pylist() for name in picked.column_names}
    return [
        json.dumps({k: v[i] for k, v in cols.items()}, ensure_ascii=False) for i in range(len(idx))
    ]


def _first_problems(
    raw: pa.Table, checked: dict[str, Coerced]
) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """Rows with a problem, and per (field, problem) the rows it is the first problem of."""
    bad = np.zeros(raw.num_rows, dtype=bool)
    groups: list[tuple[np.ndarray, str]] = []
    for name, result in checked.items():
        for problem, mask in result.problems:
            first = mask & ~bad
            if first.any():
                groups.append((np.flatnonzero(first), f"{name} {problem}"))
                bad |= first
    return bad, groups


def validate_table(
    raw: pa.Table, kind: InputKind, ctx: CheckContext, source: str = "<memory>"
) -> Validation:
    """Split a raw table (any column types) into contract rows and quarantine records.

    Args:
        raw: rows as read from a file; columns beyond the contract are dropped.
        kind: which contract to enforce (``EVENTS``, ``ITEMS``).
        ctx: the ingest clock and allowed skew.
        source: the file name recorded with quarantined rows.
    """
    dropped = tuple(c for c in raw.column_names if c not in kind.schema.names)
    absent = [c for c in kind.schema.names if c not in raw.column_names]
    if absent:
        reasons = [f"missing column '{absent[0]}'"] * raw.num_rows
        rows = _rows_as_json(raw, np.arange(raw.num_rows))
        return Validation(
            valid=kind.schema.empty_table(),
            valid_index=np.zeros(0, dtype=np.int64),
            quarantine=quarantine_table(source, reasons, rows, ctx.now),
            reasons={reasons[0]: raw.num_rows} if rows else {},
            dropped_columns=dropped,
        )
    checked = {name: kind.checks[name](raw.column(name), ctx) for name in kind.schema.names}
    bad, groups = _first_problems(raw, checked)
    by_row: dict[int, str] = {}
    for idx, key in groups:
        originals = as_strings(raw.column(key.split(" ", 1)[0])).take(pa.array(idx)).to_pylist()
        for i, value in zip(idx.tolist(), originals, strict=True):
            by_row[i] = f"{key}: {value!r}" if value is not None and value.strip() else key
    order = np.array(sorted(by_row), dtype=np.int64)
    keep = pa.array(~bad)
    valid = pa.Table.from_arrays(
        [checked[n].values.filter(keep) for n in kind.schema.names], schema=kind.schema
    )
    return Validation(
        valid=valid,
        valid_index=np.flatnonzero(~bad),
        quarantine=quarantine_table(
            source, [by_row[i] for i in order.tolist()], _rows_as_json(raw, order), ctx.now
        ),
        reasons={key: len(idx) for idx, key in groups},
        dropped_columns=dropped,
    )


# ---- Reading input files ------------------------------------------------------------------


@dataclass(frozen=True)
class RawBatch:
    """Rows read from a file as-is, plus lines that could not even be parsed.

    ``rejects`` holds ``(reason, original text)`` pairs; they are quarantined like bad rows.
    """

    table: pa.Table
    rejects: list[tuple[str, str]] = field(default_factory=list)

    def rejects_table(self, source: str, at: datetime) -> pa.Table:
        """The rejected lines as quarantine records (each line JSON-encoded as a string)."""
        reasons = [reason for reason, _ in self.rejects]
        return quarantine_table(source, reasons, [json.dumps(t) for _, t in self.rejects], at)


def _rebatch(tables: Iterable[pa.Table], batch_size: int) -> Iterator[pa.Table]:
    """Concatenate small tables up to ``batch_size`` rows (schemas may differ by type)."""
    pending: list[pa.Table] = []
    rows = 0
    for table in tables:
        pending.append(table)
        rows += table.num_rows
        if rows >= batch_size:
            yield pa.concat_tables(pending, promote_options="permissive")
            pending, rows = [], 0
    if pending:
        yield pa.concat_tables(pending, promote_options="permissive")


def _read_parquet(path: Path, batch_size: int) -> Iterator[RawBatch]:
    reader = pq.ParquetFile(path)
    for batch in reader.iter_batches(batch_size=batch_size):
        yield RawBatch(pa.Table.from_batches([batch]))


def _read_csv(path: Path, batch_size: int) -> Iterator[RawBatch]:
    """CSV read as strings (types are decided by the checks, not guessed by the reader)."""
    import pyarrow.csv as pacsv

    with path.open(newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        return
    rejects: list[tuple[str, str]] = []

    def on_invalid(row: Any) -> str:
        reason = f"malformed CSV row (expected {row.expected_columns} fields): line {row.number}"
        rejects.append((reason, row.text))
        return "skip"

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=16 << 20, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=False
        ),
    )
    tables = (pa.Table.from_batches([b]) for b in reader)
    for table in _rebatch(tables, batch_size):
        yield RawBatch(table, rejects[:])
        rejects.clear()
    if rejects:
        yield RawBatch(pa.table({name: pa.array([], pa.string()) for name in header}), rejects)


def _json_records(path: Path) -> Iterator[tuple[dict[str, Any] | None, str]]:
    """``(record, line)`` per non-blank line (``record`` None when it is not a JSON object)."""
    with path.open(encoding="utf-8") as fh:
        head = fh.read(1)
        while head.isspace():
            head = fh.read(1)
        fh.seek(0)
        if head == "[":  # one JSON array of objects rather than JSON lines
            for item in json.load(fh):
                yield (item if isinstance(item, dict) and item else None), json.dumps(item)
            return
        for line in fh:
            if line.strip():
                yield json_object(line), line.rstrip("\n")


def json_object(line: str) -> dict[str, Any] | None:
    """``line`` parsed, when it is one non-empty JSON object; otherwise None."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) and value else None


def _strings_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records as an all-string table; non-string JSON values are JSON-encoded."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    columns = {}
    for name in names:
        values = [r.get(name) for r in records]
        columns[name] = pa.array(
            [v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string()
        )
    return pa.table(columns)


def _read_json(path: Path, batch_size: int) -> Iterator[RawBatch]:
    records: list[dict[str, Any]] = []
    rejects: list[tuple[str, str]] = []
    for record, line in _json_records(path):
        if record is None:
            rejects.append(("not a non-empty JSON object", line))
        else:
            records.append(record)
        if len(records) >= batch_size:
            yield RawBatch(_strings_table(records), rejects)
            records, rejects = [], []
    if records or rejects:
        yield RawBatch(_strings_table(records), rejects)


def read_raw(path: Path, batch_size: int = 250_000) -> Iterator[RawBatch]:
    """Stream a Parquet, JSON-lines or CSV file in batches of about ``batch_size`` rows.

    Raises:
        InputFileError: the file cannot be read or parsed as its type (naming the path).
    """
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        reader = _read_parquet
    elif suffix in JSON_SUFFIXES:
        reader = _read_json
    elif suffix in CSV_SUFFIXES:
        reader = _read_csv
    else:
        raise InputFileError(f"{path}: unsupported file type {suffix!r}; expected {INPUT_SUFFIXES}")
    try:
        yield from reader(path, batch_size)
    except (OSError, UnicodeDecodeError, pa.ArrowException, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path}: cannot read as {suffix[1:]}: {exc}") from exc


def expand_inputs(paths: Iterable[Path | str]) -> list[Path]:
    """Input files: files as given, directories as all input files under them (sorted).

    Raises:
        InputFileError: a path is missing, a file is unreadable or has an unsupported type,
            or a Parquet file has no valid footer. Checked before anything is written.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputFileError(f"{path}: input path does not exist")
    for path in files:
        _preflight(path)
    return list(dict.fromkeys(p.resolve() for p in files))


def _preflight(path: Path) -> None:
    if path.suffix.lower() not in INPUT_SUFFIXES:
        raise InputFileError(
            f"{path}: unsupported file type {path.suffix!r}; expected {INPUT_SUFFIXES}"
        )
    try:
        with path.open("rb") as fh:
            fh.read(1)
        if path.suffix.lower() in PARQUET_SUFFIXES:
            pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputFileError(f"{path}: cannot read input file: {exc}") from exc


def fingerprint(path: Path) -> dict[str, Any]:
    """Size, mtime and SHA-256 of a file: how the watermark recognises ingested files."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    stat = path.stat()
    return {"size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest.hexdigest()}


# ---- Ray tasks: validate-and-stage one file, dedupe-and-commit one partition ---------------


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


# ---- Orchestration --------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemIngestSummary:
    """What one catalog ingest did."""

    run_id: str
    rows_read: int
    accepted: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    new_items: int
    updated_items: int
    catalog_items: int
    quarantine_file: str | None
    seconds: float


@dataclass(frozen=True)
class IngestSummary:
    """What one event ingest did. ``rows_read = accepted + duplicates_dropped + quarantined``.

    ``watermark`` is the max event ``ts`` ever accepted (ISO, UTC), after this run.
    """

    run_id: str
    files_read: int
    files_skipped: int
    rows_read: int
    accepted: int
    duplicates_dropped: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    partitions_written: int
    columns_dropped: tuple[str, ...]
    watermark: str | None
    quarantine_file: str | None
    seconds: float
    items: ItemIngestSummary | None = None


def new_run_id(now: datetime) -> str:
    """A sortable, unique run id such as ``20240501T120000Z-1a2b3c4d``."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _ray_map(
    settings: Settings, fn: Callable[[dict[str, Any]], dict[str, Any]], tasks: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run ``fn`` over ``tasks`` with Ray Data, one block (task) per item; results unordered."""
    import ray.data

    from flywheel.ray_runtime import ensure_ray

    ensure_ray(settings)
    ds = ray.data.from_items(tasks, override_num_blocks=len(tasks)).map(fn)
    return list(ds.iter_rows())


def _collect_quarantine(staging: Path, target: Path) -> str | None:
    """Merge the staged quarantine chunks into one file (temp + rename); its path or None."""
    chunks = sorted((staging / "_quarantine").glob("*.parquet"))
    if not chunks:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with pq.ParquetWriter(tmp, QUARANTINE_SCHEMA) as writer:
        for chunk in chunks:
            writer.write_table(pq.read_table(chunk, schema=QUARANTINE_SCHEMA))
    tmp.replace(target)
    return str(target)


def _validate_files(
    settings: Settings, kind: InputKind, files: list[Path], staging: Path, now: datetime
) -> list[dict[str, Any]]:
    log.info("validating %d %s file(s) with Ray Data", len(files), kind.name)
    tasks = [
        {
            "path": str(p),
            "file_idx": i,
            "kind": kind.name,
            "staging": str(staging),
            "now": now.isoformat(),
            "max_future_skew_s": settings.ingest.max_future_skew_s,
            "batch_size": settings.ray.batch_size,
        }
        for i, p in enumerate(files)
    ]
    results = _ray_map(settings, stage_file, tasks)
    errors = sorted(r["error"] for r in results if r["error"])
    if errors:
        raise InputFileError("; ".join(errors))
    for r in sorted(results, key=lambda r: r["path"]):
        log.info("%s: %d rows, %d valid", r["path"], r["rows"], r["valid"])
    return results


def _commit_partitions(
    settings: Settings, kind: InputKind, target: Path, staging: Path
) -> list[dict[str, Any]]:
    names = sorted(p.name for p in staging.iterdir() if lake.partition_day(p) is not None)
    if not names:
        return []
    log.info("deduplicating and committing %d partition(s)", len(names))
    tasks = [
        {"kind": kind.name, "partition": n, "staging": str(staging), "target": str(target)}
        for n in names
    ]
    return _ray_map(settings, commit_partition, tasks)


def _pending_files(
    files: list[Path], kind_state: dict[str, Any]
) -> tuple[list[Path], dict[Path, dict[str, Any]]]:
    """Files whose (size, hash) the watermark has not seen, and every file's fingerprint."""
    seen = {(f["size"], f["sha256"]) for f in kind_state.get("files", {}).values()}
    prints = {p: fingerprint(p) for p in files}
    todo = [p for p in files if (prints[p]["size"], prints[p]["sha256"]) not in seen]
    return todo, prints


def _advance_state(
    state: dict[str, Any],
    kind: InputKind,
    prints: dict[Path, dict[str, Any]],
    run_id: str,
    max_ts: str | None,
) -> dict[str, Any]:
    """The state after a run: files recorded with their fingerprint, watermark advanced."""
    kind_state = dict(state.get(kind.name, {}))
    files = dict(kind_state.get("files", {}))
    for path, fp in prints.items():
        files[str(path)] = {**fp, "run_id": run_id}
    marks = [m for m in (kind_state.get("watermark"), max_ts) if m]
    kind_state["files"] = files
    kind_state["watermark"] = max(marks, key=datetime.fromisoformat) if marks else None
    return {**state, kind.name: kind_state, "version": 1}


def _partitioned_ingest(
    settings: Settings, kind: InputKind, target: Path, files: list[Path], now: datetime, run_id: str
) -> dict[str, Any]:
    """Validate, stage, dedupe and commit ``files`` of a partitioned kind; then the state."""
    state = lake.read_state(settings)
    todo, prints = _pending_files(files, state.get(kind.name, {}))
    counts: dict[str, Any] = {"files_read": len(todo), "files_skipped": len(files) - len(todo)}
    if counts["files_skipped"]:
        log.info("skipping %d file(s) already ingested", counts["files_skipped"])
    if not todo:
        return {**counts, "watermark": state.get(kind.name, {}).get("watermark")}
    staging = settings.lake_dir / "_staging" / run_id
    try:
        staged = _validate_files(settings, kind, todo, staging, now)
        committed = _commit_partitions(settings, kind, target, staging)
        quarantine = _collect_quarantine(staging, settings.quarantine_dir / f"{run_id}.parquet")
        max_ts = max(
            (c["max_ts"] for c in committed if c["max_ts"]),
            default=None,
            key=datetime.fromisoformat,
        )
        new_state = _advance_state(state, kind, {p: prints[p] for p in todo}, run_id, max_ts)
        lake.write_state(settings, new_state)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    reasons: Counter[str] = Counter()
    for s in staged:
        reasons.update(json.loads(s["reasons"]))
    return {
        **counts,
        "rows_read": sum(s["rows"] for s in staged),
        "accepted": sum(c["accepted"] for c in committed),
        "duplicates_dropped": sum(c["dup_run"] + c["dup_lake"] for c in committed),
        "quarantined": sum(reasons.values()),
        "quarantine_reasons": dict(reasons.most_common()),
        "partitions_written": sum(1 for c in committed if c["accepted"]),
        "columns_dropped": tuple(sorted({c for s in staged for c in json.loads(s["dropped"])})),
        "watermark": new_state[kind.name]["watermark"],
        "quarantine_file": quarantine,
    }


def ingest_events(
    settings: Settings,
    paths: list[Path],
    items: Path | None = None,
    *,
    now: datetime | None = None,
) -> IngestSummary:
    """Ingest raw event files (and optionally an item catalog file) into the event lake.

    Args:
        settings: where the lake, quarantine and state live; Ray and ingest rules.
        paths: files, or directories meaning every ``*.parquet``/``*.jsonl``/``*.json``/
            ``*.csv`` under them (recursive, sorted).
        items: an item catalog file (or directory) to upsert after the events, see
            :func:`ingest_items`.
        now: the ingest clock for the future-skew check (default: the current time).

    Returns:
        An :class:`IngestSummary` of counts, quarantine reasons and timing.

    Raises:
        InputFileError: an input path is missing, unreadable or unsupported (before any write).
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    files = expand_inputs(paths)
    if items is not None:
        expand_inputs([items])
    run_id = new_run_id(now)
    log.info("ingest run %s: %d event file(s)", run_id, len(files))
    result = _partitioned_ingest(settings, EVENTS, settings.events_dir, files, now, run_id)
    item_summary = (
        ingest_items(settings, items, now=now, run_id=f"{run_id}-items") if items else None
    )
    summary = IngestSummary(
        run_id=run_id,
        files_read=result["files_read"],
        files_skipped=result["files_skipped"],
        rows_read=result.get("rows_read", 0),
        accepted=result.get("accepted", 0),
        duplicates_dropped=result.get("duplicates_dropped", 0),
        quarantined=result.get("quarantined", 0),
        quarantine_reasons=result.get("quarantine_reasons", {}),
        partitions_written=result.get("partitions_written", 0),
        columns_dropped=result.get("columns_dropped", ()),
        watermark=result["watermark"],
        quarantine_file=result.get("quarantine_file"),
        seconds=time.perf_counter() - started,
        items=item_summary,
    )
    if summary.columns_dropped:
        log.info("dropped extra columns %s", ", ".join(summary.columns_dropped))
    log.info(
        "ingested %d new event(s), %d duplicate(s), %d quarantined in %.1f s",
        summary.accepted,
        summary.duplicates_dropped,
        summary.quarantined,
        summary.seconds,
    )
    return summary


# ---- Item catalog -----------------------------------------------------------------------


def upsert_items(catalog: pa.Table | None, incoming: pa.Table) -> tuple[pa.Table, int, int]:
    """Merge validated item rows into the catalog, one row per ``item_id``.

    The row with the latest ``created_ts`` wins; on a tie the newer ingest wins (incoming
    over catalog, a later row of the file over an earlier one). Returns the new catalog
    (sorted by ``item_id``), the number of new items and the number of changed items.
    """
    import pandas as pd

    old = (catalog if catalog is not None else ITEM_SCHEMA.empty_table()).to_pandas()
    new = incoming.to_pandas()
    both = pd.concat([old.assign(_src=0), new.assign(_src=1)], ignore_index=True)
    both["_row"] = np.arange(len(both))
    both = both.sort_values(["item_id", "created_ts", "_src", "_row"], kind="stable")
    winners = both.drop_duplicates("item_id", keep="last")
    known = set(old["item_id"].tolist())
    new_items = int((~winners["item_id"].isin(known)).sum())
    changed = winners[(winners["_src"] == 1) & winners["item_id"].isin(known)]
    before = old.set_index("item_id").loc[changed["item_id"]]
    after = changed.set_index("item_id")[before.columns]
    updated = int((before != after).any(axis=1).sum())
    out = winners.drop(columns=["_src", "_row"]).reset_index(drop=True)
    return pa.Table.from_pandas(out, schema=ITEM_SCHEMA, preserve_index=False), new_items, updated


def ingest_items(
    settings: Settings,
    path: Path,
    *,
    now: datetime | None = None,
    run_id: str | None = None,
) -> ItemIngestSummary:
    """Validate an item catalog file (or directory of them) and upsert it by ``item_id``.

    Bad rows (ids not integers, price not a finite number > 0, blank category, naive or
    unparseable ``created_ts``) go to ``quarantine_dir/<run-id>.parquet``. The catalog at
    ``settings.items_path`` is replaced atomically. See :func:`upsert_items` for who wins.

    Raises:
        InputFileError: the path is missing, unreadable or unsupported (before any write).
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    files = expand_inputs([path])
    run_id = run_id or new_run_id(now)
    ctx = CheckContext(now, settings.ingest.max_future_skew_s)
    valid: list[pa.Table] = [ITEM_SCHEMA.empty_table()]
    quarantined: list[pa.Table] = [QUARANTINE_SCHEMA.empty_table()]
    reasons: Counter[str] = Counter()
    rows = 0
    for file in files:
        for batch in read_raw(file, settings.ray.batch_size):
            checked = validate_table(batch.table, ITEMS, ctx, str(file))
            quarantined += [batch.rejects_table(str(file), now), checked.quarantine]
            valid.append(checked.valid)
            reasons.update(checked.reasons)
            reasons.update(reason_key(r) for r, _ in batch.rejects)
            rows += batch.table.num_rows + len(batch.rejects)
    incoming = pa.concat_tables(valid)
    catalog = pq.read_table(settings.items_path) if settings.items_path.exists() else None
    merged, new_items, updated = upsert_items(catalog, incoming)
    if incoming.num_rows:
        lake.write_parquet_atomic(merged, settings.items_path)
    bad = pa.concat_tables(quarantined)
    qfile = settings.quarantine_dir / f"{run_id}.parquet"
    if bad.num_rows:
        lake.write_parquet_atomic(bad, qfile)
    log.info("items: %d new, %d updated, %d quarantined", new_items, updated, bad.num_rows)
    return ItemIngestSummary(
        run_id=run_id,
        rows_read=rows,
        accepted=incoming.num_rows,
        quarantined=bad.num_rows,
        quarantine_reasons=dict(reasons.most_common()),
        new_items=new_items,
        updated_items=updated,
        catalog_items=merged.num_rows,
        quarantine_file=str(qfile) if bad.num_rows else None,
        seconds=time.perf_counter() - started,
    )
