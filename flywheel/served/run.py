"""``ingest_served``: one incremental, crash-safe run from the logs into the lake."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from flywheel import lake
from flywheel.ingest import (
    CheckContext,
    new_run_id,
    quarantine_table,
    reason_key,
)
from flywheel.predlog import log_dir, log_files
from flywheel.schemas import (
    QUARANTINE_SCHEMA,
)

if TYPE_CHECKING:
    from flywheel.config import Settings
from flywheel.served.checks import EVENT_KEY, KINDS
from flywheel.served.dedupe import AppendResult, append_deduped
from flywheel.served.events import feedback_events
from flywheel.served.logs import parse_lines, read_new_lines, validate_records
from flywheel.served.tables import (
    advance_lake_state,
    feedback_dir,
    predictions_dir,
    read_served_state,
    request_users,
    served_state_path,
)

log = logging.getLogger(__name__)


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
    kind = KINDS[name][0]
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
        name: append_deduped(reads[name].valid, roots[name], KINDS[name][1]) for name in roots
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
        for name in KINDS
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
