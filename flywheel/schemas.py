"""Data contracts shared by every stage.

Each contract is a pyarrow schema plus the rules a row must satisfy. Stages exchange data
only in these shapes, so a user can bring their own web logs and catalog instead of the
simulator's as long as they match (see the README, "Bring your own data").

Timestamps are always timezone-aware UTC (``timestamp[us, tz=UTC]``). User and item ids are
the shop's own strings (:mod:`flywheel.ids`: at most 128 characters, integers read as their
decimal text) in every contract and table; they are Feast's join keys too.
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
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
    ]
)

ITEM_SCHEMA: Final = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
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
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
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
        pa.field("item_id", pa.string(), nullable=False),
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
    lines += [f"| `{f.name}` | `{f.type}` | {'yes' if not f.nullable else 'no'} |" for f in schema]
    return "\n".join(lines)


# ---- Feature tables (written by flywheel.features, served by Feast) ---------------------
# Every feature row is stamped with ``event_timestamp``: the moment its values became true.
# Rows are snapshots taken at the end of each hour in which the entity had activity; a
# window of length W at snapshot time T covers events with ``T - W <= ts < T``. Nothing at
# or after T is used, so a point-in-time join can never leak the future.
# ``created_timestamp`` is when the row was computed (Feast's tie-breaker).

#: Hour-end snapshot cadence of the activity feature tables.
SNAPSHOT_SECONDS: Final = 3600

#: Window lengths, in seconds, used in feature names (``_1h``, ``_24h``, ``_7d``).
WINDOWS: Final[dict[str, int]] = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400}

_FEATURE_KEYS = [
    pa.field("event_timestamp", TS_TYPE, nullable=False),
    pa.field("created_timestamp", TS_TYPE, nullable=False),
]

#: Per-user activity. Rates are ``numerator / views_7d`` and 0.0 when ``views_7d`` is 0.
#: ``avg_price_7d`` is the mean catalog price of items the user viewed in 7d (0.0 if none).
#: ``last_event_unix`` is the epoch seconds of the user's latest event before the snapshot.
USER_ACTIVITY_SCHEMA: Final = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        *_FEATURE_KEYS,
        pa.field("views_1h", pa.int64(), nullable=False),
        pa.field("views_24h", pa.int64(), nullable=False),
        pa.field("views_7d", pa.int64(), nullable=False),
        pa.field("carts_24h", pa.int64(), nullable=False),
        pa.field("carts_7d", pa.int64(), nullable=False),
        pa.field("purchases_7d", pa.int64(), nullable=False),
        pa.field("clicks_7d", pa.int64(), nullable=False),
        pa.field("cart_rate_7d", pa.float64(), nullable=False),
        pa.field("conversion_rate_7d", pa.float64(), nullable=False),
        pa.field("avg_price_7d", pa.float64(), nullable=False),
        pa.field("last_event_unix", pa.float64(), nullable=False),
    ]
)

#: Per (user, category) affinity over 7d, one row per category the user viewed in the
#: window at each of the user's snapshots. ``cat_affinity_7d = cat_views_7d / views_7d``.
USER_CATEGORY_SCHEMA: Final = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        *_FEATURE_KEYS,
        pa.field("cat_views_7d", pa.int64(), nullable=False),
        pa.field("cat_affinity_7d", pa.float64(), nullable=False),
    ]
)

#: Per-item popularity. Rates are ``numerator / item_views_7d`` (0.0 when no views).
ITEM_ACTIVITY_SCHEMA: Final = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        *_FEATURE_KEYS,
        pa.field("item_views_24h", pa.int64(), nullable=False),
        pa.field("item_views_7d", pa.int64(), nullable=False),
        pa.field("item_carts_7d", pa.int64(), nullable=False),
        pa.field("item_purchases_7d", pa.int64(), nullable=False),
        pa.field("item_clicks_7d", pa.int64(), nullable=False),
        pa.field("item_conversion_rate_7d", pa.float64(), nullable=False),
    ]
)

#: Static item attributes from the catalog, stamped with ``created_ts``.
ITEM_CATALOG_SCHEMA: Final = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        *_FEATURE_KEYS,
        pa.field("category", pa.string(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
    ]
)

#: Directory names of the feature tables under ``Settings.feature_data_dir`` (the Feast
#: repo_path), keyed by Feast feature view name.
FEATURE_TABLES: Final[dict[str, pa.Schema]] = {
    "user_activity": USER_ACTIVITY_SCHEMA,
    "user_category": USER_CATEGORY_SCHEMA,
    "item_activity": ITEM_ACTIVITY_SCHEMA,
    "item_catalog": ITEM_CATALOG_SCHEMA,
}
