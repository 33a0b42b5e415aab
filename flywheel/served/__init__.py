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

A package by concern: contracts and checks (``checks``), reading the logs (``logs``),
dedupe (``dedupe``), feedback as events (``events``), the served tables and watermark
(``tables``) and the run itself (``run``).
"""

from flywheel.served.checks import (
    EVENT_KEY,
    FEEDBACK,
    FEEDBACK_DEVICE,
    FEEDBACK_KEY,
    NOT_JSON,
    PREDICTION_KEY,
    PREDICTIONS,
    SERVED_STATE_FILE,
    ServedIngestError,
    check_optional_flag,
    check_optional_json,
    check_position,
    check_propensity,
    check_score,
)
from flywheel.served.dedupe import AppendResult, append_deduped, first_occurrences, key_strings
from flywheel.served.events import feedback_event_id, feedback_events
from flywheel.served.logs import (
    LogChunk,
    parse_lines,
    read_new_lines,
    records_table,
    validate_records,
)
from flywheel.served.run import ServedIngestSummary, ingest_served
from flywheel.served.tables import (
    advance_lake_state,
    feedback_dir,
    predictions_dir,
    read_served,
    read_served_state,
    read_served_table,
    request_users,
    served_state_path,
)

__all__ = [
    "EVENT_KEY",
    "FEEDBACK",
    "FEEDBACK_DEVICE",
    "FEEDBACK_KEY",
    "NOT_JSON",
    "PREDICTIONS",
    "PREDICTION_KEY",
    "SERVED_STATE_FILE",
    "AppendResult",
    "LogChunk",
    "ServedIngestError",
    "ServedIngestSummary",
    "advance_lake_state",
    "append_deduped",
    "check_optional_flag",
    "check_optional_json",
    "check_position",
    "check_propensity",
    "check_score",
    "feedback_dir",
    "feedback_event_id",
    "feedback_events",
    "first_occurrences",
    "ingest_served",
    "key_strings",
    "parse_lines",
    "predictions_dir",
    "read_new_lines",
    "read_served",
    "read_served_state",
    "read_served_table",
    "records_table",
    "request_users",
    "served_state_path",
    "validate_records",
]
