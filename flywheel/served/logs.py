"""Reading the JSON-lines logs: new complete lines from an offset, parsed and validated records."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from flywheel.ingest import (
    CheckContext,
    InputKind,
    Validation,
    json_object,
    validate_table,
)
from flywheel.schemas import (
    QUARANTINE_SCHEMA,
)

if TYPE_CHECKING:
    pass
from flywheel.served.checks import NOT_JSON

log = logging.getLogger(__name__)


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
