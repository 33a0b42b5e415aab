"""Served impressions into the lake: the prediction and feedback logs, read incrementally.

Serving appends JSON lines to one file per worker (:mod:`flywheel.predlog`). This module
moves them into two lake tables and feeds feedback back into the event lake::

    settings.lake_dir / "predictions" / "date=YYYY-MM-DD" / "part-<uuid>.parquet"
    settings.lake_dir / "feedback"    / "date=YYYY-MM-DD" / "part-<uuid>.parquet"

(exactly ``PREDICTION_LOG_SCHEMA`` / ``FEEDBACK_SCHEMA``; the partition is the UTC date of
``ts``), and every feedback record becomes an event (``event_type`` click/cart/purchase, the
user of the request it answers, ``session_id`` = the request id, ``device`` = ``"api"``, a
deterministic ``event_id``), so user and item features count it.

* **Watermark.** ``state_dir/served_state.json`` keeps, per log file, the bytes consumed so
  far. A run reads each file from its offset up to its last newline: a file still being
  appended is read incrementally, and a torn final line is left for the next run (it is
  completed then, or stays pending forever if its writer died).
* **Validation.** Each line is checked against its contract with the same column checks as
  event ingest (:func:`flywheel.ingest.validate_table`); bad rows (and lines that are not
  JSON objects) go to ``quarantine_dir/<run-id>.parquet`` with a reason naming the field.
* **Dedupe.** Predictions on ``(request_id, item_id)``, feedback on
  ``(request_id, item_id, event_type, ts)``, events on ``event_id``: within a run (first
  occurrence wins) and against the lake partitions of the same dates. A record's key fixes
  its ``ts`` (one request's records share it), so equal keys always meet in one partition.
* **Crash safety.** Parts are written atomically (:func:`flywheel.lake.commit_part`), then
  the event lake's state (watermark and served counts, so the pipeline's lake fingerprint
  changes exactly when served data arrived), then ``served_state.json`` last. A crash
  anywhere leaves the offsets where they were; the re-run re-reads the same bytes and dedupe
  drops what was committed. Events are derived from every valid feedback row of the run,
  new or not, so a crash between the feedback and the event commit loses no event.
  One ingest runs at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel import lake
from flywheel.ingest import (
    CheckContext,
    Coerced,
    InputKind,
    Validation,
    check_id,
    check_integer,
    check_string,
    check_timestamp,
    json_object,
    new_run_id,
    quarantine_table,
    reason_key,
    validate_table,
)
from flywheel.predlog import log_dir, log_files, normal_traffic
from flywheel.schemas import (
    EVENT_SCHEMA,
    FEEDBACK_SCHEMA,
    FEEDBACK_TYPES,
    PREDICTION_LOG_SCHEMA,
    QUARANTINE_SCHEMA,
    TS_TYPE,
)

if TYPE_CHECKING:
    import pandas as pd

    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: Name of the served-log watermark under ``settings.state_dir``.
SERVED_STATE_FILE: Final = "served_state.json"
#: ``device`` of events that came from serving feedback.
FEEDBACK_DEVICE: Final = "api"
#: Dedupe keys of the lake tables.
PREDICTION_KEY: Final[tuple[str, ...]] = ("request_id", "item_id")
FEEDBACK_KEY: Final[tuple[str, ...]] = ("request_id", "item_id", "event_type", "ts")
EVENT_KEY: Final[tuple[str, ...]] = ("event_id",)
#: Quarantine reason of a log line that is not a JSON object.
NOT_JSON: Final = "not a non-empty JSON object"
_INT32_MAX: Final = 2**31 - 1


class ServedIngestError(ValueError):
    """Served logs cannot be ingested; the message names the file and what was expected."""


# ---- Column checks for the log contracts (pure) -------------------------------------------


def _float_values(col: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Any column as float64: (values, missing mask, not-a-number mask)."""
    arr = col.combine_chunks()
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        missing = np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool)
        return pc.cast(arr, pa.float64()), missing, np.zeros(len(arr), dtype=bool)
    text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    missing = _mask(pc.or_kleene(pc.is_null(text), pc.equal(text, "")))
    looks = _mask(pc.match_substring_regex(text, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"))
    values = pc.cast(_nulled(text, ~looks), pa.float64())
    return values, missing, ~missing & ~looks


def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _finite(values: pa.Array) -> np.ndarray:
    return _mask(pc.is_finite(values))


def _nulled(values: pa.Array, bad: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(bad), pa.nulls(len(values), values.type), values)


def check_score(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """A finite number (a model score may have any sign)."""
    values, missing, not_number = _float_values(col)
    infinite = ~missing & ~not_number & ~_finite(values)
    problems = [("is missing", missing), ("is not a number", not_number)]
    problems.append(("is not finite", infinite))
    return Coerced(_nulled(values, missing | not_number | infinite), problems)


def check_propensity(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """A probability in ``(0, 1]``: the chance the policy served this item in this slot."""
    values, missing, not_number = _float_values(col)
    ok = _finite(values) & _mask(pc.and_(pc.greater(values, 0.0), pc.less_equal(values, 1.0)))
    out_of_range = ~missing & ~not_number & ~ok
    problems = [("is missing", missing), ("is not a number", not_number)]
    problems.append(("is not in (0, 1]", out_of_range))
    return Coerced(_nulled(values, missing | not_number | out_of_range), problems)


def check_position(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """A slot index: an integer in ``[0, 2**31)``, as int32."""
    checked = check_integer(col, ctx)
    bad_so_far = np.logical_or.reduce([m for _, m in checked.problems])
    in_range = pc.and_(
        pc.greater_equal(checked.values, 0), pc.less_equal(checked.values, _INT32_MAX)
    )
    out = ~bad_so_far & ~_mask(in_range)
    values = pc.cast(_nulled(checked.values, bad_so_far | out), pa.int32())
    return Coerced(values, [*checked.problems, (f"is not in [0, {_INT32_MAX}]", out)])


def check_optional_json(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """Optional JSON text (the features the model saw); null stays null."""
    arr = col.combine_chunks()
    values = arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())
    return Coerced(values, [])


def check_optional_flag(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """An optional boolean (``degraded``): ``true``/``false``, null stays null."""
    arr = col.combine_chunks()
    if pa.types.is_boolean(arr.type):
        return Coerced(arr, [])
    text = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(arr, pa.string())))
    present = ~_mask(pc.is_null(text))
    true, false = _mask(pc.equal(text, "true")), _mask(pc.equal(text, "false"))
    values = pa.array(true, pa.bool_(), mask=~(present & (true | false)))
    return Coerced(values, [("is not true or false", present & ~true & ~false)])


PREDICTIONS: Final = InputKind(
    name="predictions",
    schema=PREDICTION_LOG_SCHEMA,
    checks={
        "request_id": check_string,
        "ts": check_timestamp,
        "user_id": check_id,
        "item_id": check_id,
        "position": check_position,
        "score": check_score,
        "model_version": check_string,
        "propensity": check_propensity,
        "features": check_optional_json,
        "degraded": check_optional_flag,
    },
    partition_by="ts",
)

FEEDBACK: Final = InputKind(
    name="feedback",
    schema=FEEDBACK_SCHEMA,
    checks={
        "request_id": check_string,
        "item_id": check_id,
        "event_type": lambda col, ctx: check_string(col, ctx, allowed=FEEDBACK_TYPES),
        "ts": check_timestamp,
    },
    partition_by="ts",
)

_KINDS: Final[dict[str, tuple[InputKind, tuple[str, ...]]]] = {
    "predictions": (PREDICTIONS, PREDICTION_KEY),
    "feedback": (FEEDBACK, FEEDBACK_KEY),
}


# ---- Reading log files from a byte offset (pure apart from the read) ----------------------


@dataclass(frozen=True)
class LogChunk:
    """The complete lines of one log file between two byte offsets.

    ``end`` is just past the last newline read; bytes after it (a torn or still-growing
    final line) are ``pending`` and are read by a later run.
    """

    path: Path
    start: int
    end: int
    pending: int
    data: bytes


def read_new_lines(path: Path, offset: int) -> LogChunk:
    """The complete lines of ``path`` after byte ``offset``.

    A file shorter than ``offset`` was rewritten rather than appended to: it is read from
    the start again (dedupe drops what was already ingested) and a warning is logged.
    """
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < offset:
            log.warning("%s shrank from %d to %d bytes: reading it again", path, offset, size)
            offset = 0
        fh.seek(offset)
        data = fh.read(size - offset)
    cut = data.rfind(b"\n") + 1
    return LogChunk(path, offset, offset + cut, len(data) - cut, data[:cut])


def parse_lines(data: bytes) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """JSON lines -> (records, rejects); a reject is ``(reason, original line)``.

    Blank lines are ignored; a line that is not a non-empty JSON object is rejected.
    """
    records: list[dict[str, Any]] = []
    rejects: list[tuple[str, str]] = []
    for raw in data.split(b"\n"):
        line = raw.decode("utf-8", errors="replace")
        if not line.strip():
            continue
        record = json_object(line)
        if record is not None:
            records.append(record)
        else:
            rejects.append((NOT_JSON, line))
    return records, rejects


def records_table(records: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Records as an all-string table (the checks decide types, not the JSON reader).

    Non-string values are JSON-encoded; an absent optional field becomes a null column,
    an absent required one stays absent (so validation quarantines every row naming it).
    """
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    for f in schema:
        if f.nullable:
            names.setdefault(f.name, None)
    columns = {
        name: pa.array(
            [_as_text(r.get(name)) for r in records],
            pa.string(),
        )
        for name in names
    }
    return pa.table(columns)


def _as_text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(value)


def validate_records(
    records: Sequence[Mapping[str, Any]], kind: InputKind, ctx: CheckContext, source: str
) -> Validation:
    """Validate parsed log records against ``kind``'s contract (see ``validate_table``)."""
    if not records:
        return Validation(
            kind.schema.empty_table(), np.zeros(0, np.int64), QUARANTINE_SCHEMA.empty_table(), {}
        )
    return validate_table(records_table(records, kind.schema), kind, ctx, source)


# ---- Dedupe and append (pure apart from the lake reads and writes) ------------------------


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


def feedback_event_id(request_id: str, item_id: str, event_type: str, ts: datetime) -> str:
    """A deterministic event id for one feedback record: ``fb-`` + 32 hex of its key."""
    micros = round(ts.astimezone(UTC).timestamp() * 1_000_000) if ts.tzinfo else None
    if micros is None:
        raise ValueError(f"ts={ts.isoformat()} is naive; feedback timestamps are tz-aware")
    # An integer id's decimal text: the same event id as before ids became strings.
    blob = f"{request_id}\x1f{item_id}\x1f{event_type}\x1f{micros}".encode()
    return "fb-" + hashlib.sha256(blob).hexdigest()[:32]


def feedback_events(feedback: pa.Table, users: Mapping[str, str]) -> tuple[pa.Table, int]:
    """Feedback records (``FEEDBACK_SCHEMA``) -> events (``EVENT_SCHEMA``).

    Args:
        feedback: validated feedback rows.
        users: request id -> the user it served (from the prediction log).

    Returns:
        The events (user of the request, ``session_id`` = request id, device ``"api"``)
        and how many feedback rows had a request unknown to ``users`` (no event made).
    """
    rows = [r for r in feedback.to_pylist() if r["request_id"] in users]
    table = pa.Table.from_pylist(
        [
            {
                "event_id": feedback_event_id(
                    r["request_id"], r["item_id"], r["event_type"], r["ts"]
                ),
                "user_id": users[r["request_id"]],
                "item_id": r["item_id"],
                "event_type": r["event_type"],
                "ts": r["ts"],
                "session_id": r["request_id"],
                "device": FEEDBACK_DEVICE,
            }
            for r in rows
        ],
        schema=EVENT_SCHEMA,
    )
    return table, feedback.num_rows - len(rows)


# ---- Lake tables of served data ---------------------------------------------------------


def predictions_dir(settings: Settings) -> Path:
    """The prediction-log lake table (``PREDICTION_LOG_SCHEMA``, partitioned by date)."""
    return settings.lake_dir / "predictions"


def feedback_dir(settings: Settings) -> Path:
    """The feedback lake table (``FEEDBACK_SCHEMA``, partitioned by date)."""
    return settings.lake_dir / "feedback"


def read_served_table(
    root: Path,
    schema: pa.Schema,
    columns: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pa.Table:
    """Rows of a served lake table with ``start <= ts < end`` (bounds optional, tz-aware)."""
    import pyarrow.dataset as ds

    names = list(columns or schema.names)
    files = lake.partition_files(root, start, end)
    if not files:
        return schema.empty_table().select(names)
    cond = None
    if start is not None:
        cond = ds.field("ts") >= pa.scalar(start, TS_TYPE)
    if end is not None:
        upper = ds.field("ts") < pa.scalar(end, TS_TYPE)
        cond = upper if cond is None else cond & upper
    dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
    return dataset.to_table(columns=names, filter=cond)


def read_served(
    settings: Settings, start: datetime, end: datetime, feedback_end: datetime | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions with ``start <= ts < end`` and feedback with ``start <= ts < feedback_end``
    (default ``end``), as ``label_served_impressions`` takes them: ``(request_id, ts,
    user_id, item_id)`` and ``(request_id, item_id, event_type, ts)``; both empty when
    nothing was served. Degraded predictions (ranked without the online store) are left
    out: they are not the model's normal traffic, so nothing trains on them."""
    predictions = read_served_table(
        predictions_dir(settings),
        PREDICTION_LOG_SCHEMA,
        ["request_id", "ts", "user_id", "item_id", "degraded"],
        start,
        end,
    )
    predictions = normal_traffic(predictions).drop(["degraded"])
    feedback = read_served_table(
        feedback_dir(settings), FEEDBACK_SCHEMA, None, start, feedback_end or end
    )
    return predictions.to_pandas(), feedback.to_pandas()


def request_users(settings: Settings, request_ids: Sequence[str]) -> dict[str, str]:
    """request id -> user id, from the prediction-log lake table."""
    import pyarrow.dataset as ds

    files = lake.partition_files(predictions_dir(settings))
    if not files or not request_ids:
        return {}
    dataset = ds.dataset([str(f) for f in files], schema=PREDICTION_LOG_SCHEMA, format="parquet")
    wanted = pa.array(sorted(set(request_ids)), pa.string())
    table = dataset.to_table(
        columns=["request_id", "user_id"], filter=ds.field("request_id").isin(wanted)
    )
    return dict(zip(table["request_id"].to_pylist(), table["user_id"].to_pylist(), strict=True))


# ---- State -----------------------------------------------------------------------------


def served_state_path(settings: Settings) -> Path:
    """Where the served-log watermark (bytes consumed per log file) lives."""
    return settings.state_dir / SERVED_STATE_FILE


def read_served_state(settings: Settings) -> dict[str, Any]:
    """``{"predictions": {"files": {rel path: offset}}, "feedback": {...}}`` or ``{}``.

    Raises:
        ServedIngestError: the file exists but is not a JSON object (naming it).
    """
    return lake.read_json_state(served_state_path(settings), "served state", ServedIngestError)


def advance_lake_state(
    state: dict[str, Any], events_max_ts: datetime | None, added: Mapping[str, int]
) -> dict[str, Any]:
    """The event lake's state after a served ingest (pure).

    The events watermark moves to the newest feedback event (features materialize up to
    it); ``served`` counts the rows accepted so far per table, so the lake fingerprint that
    drives pipeline caching changes exactly when served data arrived.
    """
    events = dict(state.get("events", {}))
    marks = [m for m in (events.get("watermark"), events_max_ts and events_max_ts.isoformat()) if m]
    if marks:
        events["watermark"] = max(marks, key=datetime.fromisoformat)
    served = dict(state.get("served", {}))
    for table, n in added.items():
        served[f"{table}_rows"] = int(served.get(f"{table}_rows", 0)) + int(n)
    return {**state, "events": events, "served": served, "version": 1}


# ---- Orchestration ------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedIngestSummary:
    """What one served-log ingest did.

    Per table, ``*_read = *_accepted + duplicates + quarantined``; ``pending_bytes`` are
    partial final lines left for the next run; ``feedback_unmatched`` counts feedback rows
    whose request is not in the prediction log (kept in the feedback table, no event).
    """

    run_id: str
    files_read: int
    bytes_read: int
    pending_bytes: int
    predictions_read: int
    predictions_accepted: int
    feedback_read: int
    feedback_accepted: int
    duplicates_dropped: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    events_added: int
    feedback_unmatched: int
    quarantine_file: str | None
    seconds: float


@dataclass(frozen=True)
class _KindRead:
    valid: pa.Table
    quarantine: pa.Table
    reasons: Counter[str]
    rows: int
    offsets: dict[str, int]
    files: int
    bytes_read: int
    pending: int


def _read_kind(
    settings: Settings, name: str, offsets: Mapping[str, int], now: datetime
) -> _KindRead:
    """Read and validate the new complete lines of every log file of one kind."""
    kind = _KINDS[name][0]
    root = log_dir(settings, "predictions" if name == "predictions" else "feedback")
    ctx = CheckContext(now, settings.ingest.max_future_skew_s)
    valid, bad = [kind.schema.empty_table()], [QUARANTINE_SCHEMA.empty_table()]
    reasons: Counter[str] = Counter()
    new_offsets, files, nbytes, pending, rows = dict(offsets), 0, 0, 0, 0
    for path in log_files(root):
        rel = path.relative_to(root).as_posix()
        chunk = read_new_lines(path, int(offsets.get(rel, 0)))
        pending += chunk.pending
        new_offsets[rel] = chunk.end
        if chunk.end == chunk.start:
            continue
        files, nbytes = files + 1, nbytes + chunk.end - chunk.start
        records, rejects = parse_lines(chunk.data)
        checked = validate_records(records, kind, ctx, str(path))
        valid.append(checked.valid)
        bad += [
            quarantine_table(
                str(path), [r for r, _ in rejects], [json.dumps(t) for _, t in rejects], now
            ),
            checked.quarantine,
        ]
        reasons.update(checked.reasons)
        reasons.update(reason_key(r) for r, _ in rejects)
        rows += len(records) + len(rejects)
    return _KindRead(
        pa.concat_tables(valid),
        pa.concat_tables(bad),
        reasons,
        rows,
        new_offsets,
        files,
        nbytes,
        pending,
    )


@dataclass(frozen=True)
class _Committed:
    appended: dict[str, AppendResult]
    events: AppendResult
    unmatched: int
    quarantine_file: str | None


def _commit(settings: Settings, reads: Mapping[str, _KindRead], run_id: str) -> _Committed:
    """Lake tables, then events, then quarantine, then the lake state, then offsets last."""
    roots = {"predictions": predictions_dir(settings), "feedback": feedback_dir(settings)}
    appended = {
        name: append_deduped(reads[name].valid, roots[name], _KINDS[name][1]) for name in roots
    }
    fb = reads["feedback"].valid
    users = request_users(settings, fb.column("request_id").to_pylist())
    events, unmatched = feedback_events(fb, users)
    added_events = append_deduped(events, settings.events_dir, EVENT_KEY)
    quarantine = pa.concat_tables([r.quarantine for r in reads.values()])
    qfile = settings.quarantine_dir / f"{run_id}.parquet"
    if quarantine.num_rows:
        lake.write_parquet_atomic(quarantine, qfile)
    added = {name: a.accepted for name, a in appended.items()}
    if any(added.values()) or added_events.accepted:
        state = lake.read_state(settings)
        lake.write_state(settings, advance_lake_state(state, added_events.max_ts, added))
    offsets = {name: {"files": r.offsets} for name, r in reads.items()}
    if any(r.files for r in reads.values()):
        lake.write_json_atomic(
            served_state_path(settings), {**offsets, "version": 1, "run_id": run_id}
        )
    return _Committed(
        appended, added_events, unmatched, str(qfile) if quarantine.num_rows else None
    )


def ingest_served(settings: Settings, *, now: datetime | None = None) -> ServedIngestSummary:
    """Ingest the prediction and feedback logs written since the last run into the lake.

    Args:
        settings: where the logs, lake, quarantine and state live.
        now: the ingest clock for the future-skew check (default: the current time).

    Returns:
        A :class:`ServedIngestSummary`; quarantine reasons are keyed ``"<log>: <reason>"``.

    Raises:
        ServedIngestError: the served state file is corrupt.
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    run_id = f"{new_run_id(now)}-served"
    state = read_served_state(settings)
    reads = {
        name: _read_kind(settings, name, state.get(name, {}).get("files", {}), now)
        for name in _KINDS
    }
    done = _commit(settings, reads, run_id)
    reasons = Counter({f"{n}: {k}": v for n, r in reads.items() for k, v in r.reasons.items()})
    summary = ServedIngestSummary(
        run_id=run_id,
        files_read=sum(r.files for r in reads.values()),
        bytes_read=sum(r.bytes_read for r in reads.values()),
        pending_bytes=sum(r.pending for r in reads.values()),
        predictions_read=reads["predictions"].rows,
        predictions_accepted=done.appended["predictions"].accepted,
        feedback_read=reads["feedback"].rows,
        feedback_accepted=done.appended["feedback"].accepted,
        duplicates_dropped=sum(a.dup_run + a.dup_lake for a in done.appended.values()),
        quarantined=sum(r.quarantine.num_rows for r in reads.values()),
        quarantine_reasons=dict(reasons.most_common()),
        events_added=done.events.accepted,
        feedback_unmatched=done.unmatched,
        quarantine_file=done.quarantine_file,
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info(
        "served logs: %d prediction(s), %d feedback, %d event(s) added, %d duplicate(s), "
        "%d quarantined in %.1f s",
        summary.predictions_accepted,
        summary.feedback_accepted,
        summary.events_added,
        summary.duplicates_dropped,
        summary.quarantined,
        summary.seconds,
    )
    return summary
