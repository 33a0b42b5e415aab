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
#: ``degraded`` is true when the request was ranked without the online store (it was
#: unreachable; serving's degraded mode), absent (null) otherwise: training and the
#: monitor leave such impressions out, as they are not the model's normal traffic.
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
        pa.field("degraded", pa.bool_(), nullable=True),
    ]
)

#: The candidate log (``<workspace>/serving/candidates``, :mod:`flywheel.predlog`): one
#: record per ranked request with what a challenger needs to re-rank it exactly (the
#: off-policy check, :mod:`flywheel.ope_candidates`): every candidate's item id, the
#: champion's score of each, ``served`` (candidate indices in served order), the slate's
#: ``epsilon`` and ``candidates`` (the count), and the raw values the champion scored:
#: ``features``, a JSON object of the columns every candidate shares (the user's own
#: features; ``null``: missing for all) and ``category`` (one value or the list);
#: ``varying``, the other columns' names, and ``values``, their float64 matrix (candidates x
#: ``varying``, NaN for missing) as base64 of its little-endian bytes
#: (:func:`flywheel.serving.records.candidate_columns` decodes it). ``degraded`` as in the
#: prediction log.
CANDIDATE_LOG_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("epsilon", pa.float64(), nullable=False),
        pa.field("candidates", pa.int32(), nullable=False),
        pa.field("served", pa.list_(pa.int32()), nullable=False),
        pa.field("item_ids", pa.list_(pa.string()), nullable=False),
        pa.field("scores", pa.list_(pa.float64()), nullable=False),
        pa.field("features", pa.string(), nullable=True),
        pa.field("varying", pa.list_(pa.string()), nullable=True),
        pa.field("values", pa.string(), nullable=True),
        pa.field("degraded", pa.bool_(), nullable=True),
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
# Every feature row is stamped with ``event_timestamp`` T, an hour end: the moment its values
# became true. A window of length W at T covers events with ``T - W <= ts < T``; nothing at
# or after T is used, so a point-in-time join can never leak the future.
# Two kinds of tables (README, "Feature tables"):
# * snapshot tables (ranking_v1's): a row at the end of each hour in which the entity had
#   activity; between two rows the values stay those of the entity's last activity;
# * change-point tables (added by ranking_v2): a row at the end of each hour with an event
#   (entry) and at each hour end when an event leaves one of the windows (exit; a zero row
#   when the last one leaves), so the latest row at or before any time t holds exactly the
#   windows ending at t's hour start. No row is stamped after the lake's last event hour.
# ``created_timestamp`` is when the row was computed (Feast's tie-breaker).

#: Hour-end snapshot cadence of the activity feature tables.
SNAPSHOT_SECONDS: Final = 3600

#: Window lengths, in seconds, used in feature names (``_1h``, ``_24h``, ``_7d``, ``_30d``).
WINDOWS: Final[dict[str, int]] = {
    "1h": 3600,
    "24h": 86_400,
    "7d": 7 * 86_400,
    "30d": 30 * 86_400,
}

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

#: Per (user, category) affinity over 7d at each of the user's snapshots: one row per
#: category the user viewed in the window, and a zero row at the first snapshot after a
#: category's last view left it. ``cat_affinity_7d = cat_views_7d / views_7d``.
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

# ---- change-point tables (ranking_v2) ----------------------------------------------------


def _counts(prefix: str, kinds: tuple[str, ...], windows: tuple[str, ...]) -> list[pa.Field]:
    return [
        pa.field(f"{prefix}{kind}_{w}", pa.int64(), nullable=False)
        for kind in kinds
        for w in windows
    ]


#: Per (user, item) history: views, carts and purchases of this item by this user over
#: 24h/7d/30d, and the epoch seconds of the latest view/cart/purchase before T (null if
#: none). Rows exist while the pair has an event in the last 30 days, plus the zero row that
#: closes the 30-day window.
USER_ITEM_SCHEMA: Final = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        *_FEATURE_KEYS,
        *_counts("ui_", ("views", "carts", "purchases"), ("24h", "7d", "30d")),
        pa.field("ui_last_view_unix", pa.float64(), nullable=True),
        pa.field("ui_last_cart_unix", pa.float64(), nullable=True),
        pa.field("ui_last_purchase_unix", pa.float64(), nullable=True),
    ]
)

#: ``user_item``'s online form: per user, the latest row of each of the user's pairs, packed
#: (``flywheel/packed_history.py``): ``ui_items`` the items, ``ui_values`` 13 numbers per item.
USER_ITEM_LATEST_SCHEMA: Final = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        *_FEATURE_KEYS,
        pa.field("ui_items", pa.list_(pa.string()), nullable=False),
        pa.field("ui_values", pa.list_(pa.float64()), nullable=False),
    ]
)

#: Per (user, category) intent: carts and purchases of the category's (catalog) items over
#: 7d, and views, carts and purchases over 30d.
USER_CATEGORY_HISTORY_SCHEMA: Final = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        *_FEATURE_KEYS,
        pa.field("cat_carts_7d", pa.int64(), nullable=False),
        pa.field("cat_purchases_7d", pa.int64(), nullable=False),
        pa.field("cat_views_30d", pa.int64(), nullable=False),
        pa.field("cat_carts_30d", pa.int64(), nullable=False),
        pa.field("cat_purchases_30d", pa.int64(), nullable=False),
    ]
)

#: Per-user activity over 30 days.
USER_ACTIVITY_30D_SCHEMA: Final = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        *_FEATURE_KEYS,
        *_counts("", ("views", "carts", "purchases", "clicks"), ("30d",)),
    ]
)

#: Per-item activity over 30 days, and the item's trend: ``item_trend_24h_7d`` is the
#: views of the last 24h against the daily mean of the last 7d (``7 * views_24h /
#: views_7d``; 1.0 = steady, 0.0 when no views in 7d).
ITEM_ACTIVITY_30D_SCHEMA: Final = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        *_FEATURE_KEYS,
        *_counts("item_", ("views", "carts", "purchases"), ("30d",)),
        pa.field("item_trend_24h_7d", pa.float64(), nullable=False),
    ]
)

#: Per-category price level: the median catalog price of the category's items created at
#: or before T, one row per distinct creation time (the model's input is the item's price
#: over it, ``ranking.model_inputs``).
CATEGORY_PRICE_SCHEMA: Final = pa.schema(
    [
        pa.field("category", pa.string(), nullable=False),
        *_FEATURE_KEYS,
        pa.field("cat_median_price", pa.float64(), nullable=False),
    ]
)

#: Directory names of the feature tables under ``Settings.feature_data_dir`` (the Feast
#: repo_path), keyed by Feast feature view name.
FEATURE_TABLES: Final[dict[str, pa.Schema]] = {
    "user_activity": USER_ACTIVITY_SCHEMA,
    "user_category": USER_CATEGORY_SCHEMA,
    "item_activity": ITEM_ACTIVITY_SCHEMA,
    "item_catalog": ITEM_CATALOG_SCHEMA,
    "user_item": USER_ITEM_SCHEMA,
    "user_item_latest": USER_ITEM_LATEST_SCHEMA,
    "user_category_history": USER_CATEGORY_HISTORY_SCHEMA,
    "user_activity_30d": USER_ACTIVITY_30D_SCHEMA,
    "item_activity_30d": ITEM_ACTIVITY_30D_SCHEMA,
    "category_price": CATEGORY_PRICE_SCHEMA,
}
