"""Data contracts shared by every stage.

Each contract is a pyarrow schema plus the rules a row must satisfy. Stages exchange data
only in these shapes, so a user can bring their own web logs and catalog instead of the
simulator's as long as they match (see the README, "Bring your own data").

Timestamps are always timezone-aware UTC (``timestamp[us, tz=UTC]``). User and item ids are
64-bit integers: they are join keys in Feast and in every aggregation, and integers keep the
10M-event feature build within memory.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

TS_TYPE: Final = pa.timestamp("us", tz="UTC")

#: Raw web-log event types accepted by the lake.
EVENT_TYPES: Final[tuple[str, ...]] = ("view", "cart", "purchase", "click")
#: Feedback event types the serving API accepts about what it served.
FEEDBACK_TYPES: Final[tuple[str, ...]] = ("click", "cart", "purchase")

EVENT_SCHEMA: Final = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
    ]
)

ITEM_SCHEMA: Final = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("created_ts", TS_TYPE, nullable=False),
    ]
)

#: One record per (request, candidate served). ``features`` holds the feature values the
#: model saw, JSON-encoded, so a later cycle can audit or replay exactly what was scored.
PREDICTION_LOG_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("propensity", pa.float64(), nullable=False),
        pa.field("features", pa.string(), nullable=True),
    ]
)

FEEDBACK_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
    ]
)

#: Rows that failed validation: the original values (as strings), why, and where from.
QUARANTINE_SCHEMA: Final = pa.schema(
    [
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("row", pa.string(), nullable=False),
        pa.field("quarantined_at", TS_TYPE, nullable=False),
    ]
)


def column_names(schema: pa.Schema) -> list[str]:
    """Return the column names of a contract, in contract order."""
    return [f.name for f in schema]


def describe(schema: pa.Schema) -> str:
    """Render a contract as a Markdown table (used by the README and error messages)."""
    lines = ["| column | type | required |", "|---|---|---|"]
    lines += [
        f"| `{f.name}` | `{f.type}` | {'yes' if not f.nullable else 'no'} |" for f in schema
    ]
    return "\n".join(lines)
