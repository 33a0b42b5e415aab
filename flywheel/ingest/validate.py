"""Table validation: a raw table split into contract rows and quarantine records (pure).

The code is organised by input *kind* (:class:`InputKind`: schema, per-column checks, dedupe
key, partition column); prediction logs and feedback are more kinds (:mod:`flywheel.served`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from flywheel.ingest.checks import (
    Check,
    CheckContext,
    Coerced,
    as_strings,
    check_id,
    check_positive_float,
    check_string,
)
from flywheel.ingest.timestamps import check_timestamp
from flywheel.schemas import EVENT_SCHEMA, EVENT_TYPES, ITEM_SCHEMA, QUARANTINE_SCHEMA, TS_TYPE


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
        "user_id": check_id,
        "item_id": check_id,
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
        "item_id": check_id,
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


def rows_as_json(raw: pa.Table, idx: np.ndarray) -> list[str]:
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
        rows = rows_as_json(raw, np.arange(raw.num_rows))
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
            source, [by_row[i] for i in order.tolist()], rows_as_json(raw, order), ctx.now
        ),
        reasons={key: len(idx) for idx, key in groups},
        dropped_columns=dropped,
    )
