"""Ingest: raw web-log events and the item catalog into the validated event lake.

Users may bring their own logs, so nothing about the input is trusted:

* Inputs are Parquet, JSON lines (``.jsonl``/``.json``/``.ndjson``; a ``.json`` file holding
  one JSON array also works) or CSV with the contract's columns, or in another layout read
  through a source mapping (:mod:`~flywheel.ingest.mapping`: renames, an event-type
  vocabulary, timestamp formats, derived event ids and sessions, a catalog from event
  attributes). Extra columns are dropped
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
  events by hours. Numbers (epoch values) are not accepted as timestamps (unit unknown)
  unless a mapping declares the unit; a mapping may also declare the zone of naive times.
  Ids are strings by :mod:`flywheel.ids`' rules (:func:`check_id`: trimmed, at most 128
  characters, integers as decimal text); ``event_type`` is trimmed and lower-cased before
  it is checked against ``EVENT_TYPES``.
* Events are deduplicated on ``event_id`` within a run (first occurrence in sorted file
  order wins) and against the lake's affected date partitions.
* The watermark records every ingested file (path, size, mtime, SHA-256); a file whose size
  and hash were ingested before (under any path) is skipped. A file that grew is re-read
  and dedupe keeps only its new rows. The watermark's ``ts`` is the max event ``ts`` that
  any run has put in the lake.

Crash safety: Ray workers validate files in parallel and stage results under
``lake_dir/_staging/<run-id>``; each affected partition is then deduplicated and committed as
one new part file (temp name + rename). The quarantine file, the catalog rows a mapping
derived, and then the watermark (``state_dir/ingest_state.json``) are written only after
every partition is committed. A
crash anywhere leaves the lake readable and the state unchanged; the re-run re-reads the
same files and dedupe drops what was already committed. One ingest runs at a time.

Modules, one concern each: :mod:`~flywheel.ingest.checks` (column checks),
:mod:`~flywheel.ingest.validate` (input kinds, table validation, quarantine records),
:mod:`~flywheel.ingest.readers` (Parquet/CSV/JSON lines), :mod:`~flywheel.ingest.stage` and
:mod:`~flywheel.ingest.commit` (the two Ray tasks), :mod:`~flywheel.ingest.state` (run ids,
watermark), :mod:`~flywheel.ingest.timestamps` (the timestamp check),
:mod:`~flywheel.ingest.mapping` and :mod:`~flywheel.ingest.mapped` (source mappings and
validating through one), :mod:`~flywheel.ingest.derive` and :mod:`~flywheel.ingest.sessions`
(derived event ids and sessions), :mod:`~flywheel.ingest.catalog` (the item catalog) and
:mod:`~flywheel.ingest.run` (:func:`ingest_events`). This package re-exports the names
other modules use.
"""

from __future__ import annotations

from flywheel.ingest.catalog import ItemIngestSummary, ingest_items, upsert_items
from flywheel.ingest.checks import (
    Check,
    CheckContext,
    Coerced,
    as_strings,
    check_id,
    check_integer,
    check_positive_float,
    check_string,
)
from flywheel.ingest.commit import commit_partition
from flywheel.ingest.errors import IngestError, InputFileError
from flywheel.ingest.mapped import validate_mapped
from flywheel.ingest.mapping import (
    MappingError,
    SourceMapping,
    builtin_mappings,
    load_mapping,
    mapping_argument,
    mapping_from_argument,
    parse_mapping,
)
from flywheel.ingest.readers import INPUT_SUFFIXES, RawBatch, expand_inputs, json_object, read_raw
from flywheel.ingest.run import IngestSummary, ingest_events
from flywheel.ingest.stage import stage_file
from flywheel.ingest.state import fingerprint, new_run_id
from flywheel.ingest.timestamps import check_timestamp
from flywheel.ingest.validate import (
    EVENTS,
    ITEMS,
    KINDS,
    InputKind,
    Validation,
    quarantine_table,
    reason_key,
    validate_table,
)

__all__ = [
    "EVENTS",
    "INPUT_SUFFIXES",
    "ITEMS",
    "KINDS",
    "Check",
    "CheckContext",
    "Coerced",
    "IngestError",
    "IngestSummary",
    "InputFileError",
    "InputKind",
    "ItemIngestSummary",
    "MappingError",
    "RawBatch",
    "SourceMapping",
    "Validation",
    "as_strings",
    "builtin_mappings",
    "check_id",
    "check_integer",
    "check_positive_float",
    "check_string",
    "check_timestamp",
    "commit_partition",
    "expand_inputs",
    "fingerprint",
    "ingest_events",
    "ingest_items",
    "json_object",
    "load_mapping",
    "mapping_argument",
    "mapping_from_argument",
    "new_run_id",
    "parse_mapping",
    "quarantine_table",
    "read_raw",
    "reason_key",
    "stage_file",
    "upsert_items",
    "validate_mapped",
    "validate_table",
]
