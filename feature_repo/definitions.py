"""Feast definitions of the Flywheel feature tables (declarative only).

Each table is one Parquet file named after its feature view (``flywheel/schemas.py``,
``FEATURE_TABLES``). Paths are relative to the Feast ``repo_path``: ``flywheel.feature_store``
anchors them to ``Settings.feature_data_dir`` when it registers these objects.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float64, Int64, String

# How long an activity snapshot stays valid for a point-in-time join or an online lookup.
ACTIVITY_TTL = timedelta(days=7)
# The change-point views (ranking_v2) write a zero row when a window empties, so their ttl
# only has to outlive their longest window: a non-zero row is always replaced within it.
HISTORY_TTL = timedelta(days=30)

# A shopper; the key of every per-user table.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)

# A catalog item; the key of every per-item table.
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING)

# An item category; with `user` it keys the user x category affinity table.
category = Entity(name="category", join_keys=["category"], value_type=ValueType.STRING)

# Hourly per-user activity snapshots written by the feature build.
user_activity_source = FileSource(
    name="user_activity_source",
    path="user_activity.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)

# Real-time user activity pushed by the serving layer; backfills from the file above.
user_activity_push = PushSource(name="user_activity_push", batch_source=user_activity_source)

# Hourly per (user, category) affinity snapshots.
user_category_source = FileSource(
    name="user_category_source",
    path="user_category.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)

# Hourly per-item popularity snapshots.
item_activity_source = FileSource(
    name="item_activity_source",
    path="item_activity.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)

# Static catalog attributes, stamped with the item's creation time.
item_catalog_source = FileSource(
    name="item_catalog_source",
    path="item_catalog.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)

# Per (user, item) history rows at every hour end where one of its windows changes.
user_item_source = FileSource(
    name="user_item_source",
    path="user_item.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)

# Per user, the latest row of each of the user's pairs, packed (user_item's online form).
user_item_latest_source = FileSource(
    name="user_item_latest_source",
    path="user_item_latest.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)

# Per (user, category) 7d/30d carts, purchases and views, at every change.
user_category_history_source = FileSource(
    name="user_category_history_source",
    path="user_category_history.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)

# Per-user 30-day counts, at every change.
user_activity_30d_source = FileSource(
    name="user_activity_30d_source",
    path="user_activity_30d.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)

# Per-item 30-day counts and 24h-vs-7d trend, at every change.
item_activity_30d_source = FileSource(
    name="item_activity_30d_source",
    path="item_activity_30d.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)

# Per-category median catalog price, at every listing.
category_price_source = FileSource(
    name="category_price_source",
    path="category_price.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)

# What a user has been doing lately (views, carts, purchases, rates, recency).
user_activity = FeatureView(
    name="user_activity",
    entities=[user],
    ttl=ACTIVITY_TTL,
    schema=[
        Field(name="user_id", dtype=String),
        Field(name="views_1h", dtype=Int64),
        Field(name="views_24h", dtype=Int64),
        Field(name="views_7d", dtype=Int64),
        Field(name="carts_24h", dtype=Int64),
        Field(name="carts_7d", dtype=Int64),
        Field(name="purchases_7d", dtype=Int64),
        Field(name="clicks_7d", dtype=Int64),
        Field(name="cart_rate_7d", dtype=Float64),
        Field(name="conversion_rate_7d", dtype=Float64),
        Field(name="avg_price_7d", dtype=Float64),
        Field(name="last_event_unix", dtype=Float64),
    ],
    source=user_activity_push,
    online=True,
)

# How much of a user's attention went to one category over the last week.
user_category = FeatureView(
    name="user_category",
    entities=[user, category],
    ttl=ACTIVITY_TTL,
    schema=[
        Field(name="user_id", dtype=String),
        Field(name="category", dtype=String),
        Field(name="cat_views_7d", dtype=Int64),
        Field(name="cat_affinity_7d", dtype=Float64),
    ],
    source=user_category_source,
    online=True,
)

# How popular an item has been lately.
item_activity = FeatureView(
    name="item_activity",
    entities=[item],
    ttl=ACTIVITY_TTL,
    schema=[
        Field(name="item_id", dtype=String),
        Field(name="item_views_24h", dtype=Int64),
        Field(name="item_views_7d", dtype=Int64),
        Field(name="item_carts_7d", dtype=Int64),
        Field(name="item_purchases_7d", dtype=Int64),
        Field(name="item_clicks_7d", dtype=Int64),
        Field(name="item_conversion_rate_7d", dtype=Float64),
    ],
    source=item_activity_source,
    online=True,
)

# Catalog attributes; they never expire (ttl 0). `category` is served so the ranking
# layer can find an item's user_category row.
item_catalog = FeatureView(
    name="item_catalog",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="item_id", dtype=String),
        Field(name="category", dtype=String),
        Field(name="price", dtype=Float64),
    ],
    source=item_catalog_source,
    online=True,
)

# What this user has done with this item: re-views and abandoned carts. Keyed by both ids;
# rows exist while the pair has an event in the last 30 days (and the row that closes it).
user_item = FeatureView(
    name="user_item",
    entities=[user, item],
    ttl=HISTORY_TTL,
    schema=[
        Field(name="user_id", dtype=String),
        Field(name="item_id", dtype=String),
        Field(name="ui_views_24h", dtype=Int64),
        Field(name="ui_views_7d", dtype=Int64),
        Field(name="ui_views_30d", dtype=Int64),
        Field(name="ui_carts_24h", dtype=Int64),
        Field(name="ui_carts_7d", dtype=Int64),
        Field(name="ui_carts_30d", dtype=Int64),
        Field(name="ui_purchases_24h", dtype=Int64),
        Field(name="ui_purchases_7d", dtype=Int64),
        Field(name="ui_purchases_30d", dtype=Int64),
        Field(name="ui_last_view_unix", dtype=Float64),
        Field(name="ui_last_cart_unix", dtype=Float64),
        Field(name="ui_last_purchase_unix", dtype=Float64),
    ],
    source=user_item_source,
    # Offline only: its latest rows go online packed per user (user_item_latest below).
    online=False,
)

# user_item's online form: one row per user, the latest row of each of the user's pairs
# within the ttl packed into two lists (flywheel/packed_history.py). Serving reads it for a
# service that has user_item; training sets join user_item itself.
user_item_latest = FeatureView(
    name="user_item_latest",
    entities=[user],
    ttl=HISTORY_TTL,
    schema=[
        Field(name="user_id", dtype=String),
        Field(name="ui_items", dtype=Array(String)),
        Field(name="ui_values", dtype=Array(Float64)),
    ],
    source=user_item_latest_source,
    online=True,
)

# Buying intent per category: carts and purchases, not only views, over 7 and 30 days.
user_category_history = FeatureView(
    name="user_category_history",
    entities=[user, category],
    ttl=HISTORY_TTL,
    schema=[
        Field(name="user_id", dtype=String),
        Field(name="category", dtype=String),
        Field(name="cat_carts_7d", dtype=Int64),
        Field(name="cat_purchases_7d", dtype=Int64),
        Field(name="cat_views_30d", dtype=Int64),
        Field(name="cat_carts_30d", dtype=Int64),
        Field(name="cat_purchases_30d", dtype=Int64),
    ],
    source=user_category_history_source,
    online=True,
)

# A user's activity over the last 30 days.
user_activity_30d = FeatureView(
    name="user_activity_30d",
    entities=[user],
    ttl=HISTORY_TTL,
    schema=[
        Field(name="user_id", dtype=String),
        Field(name="views_30d", dtype=Int64),
        Field(name="carts_30d", dtype=Int64),
        Field(name="purchases_30d", dtype=Int64),
        Field(name="clicks_30d", dtype=Int64),
    ],
    source=user_activity_30d_source,
    online=True,
)

# An item's popularity over 30 days and whether it is rising (24h views vs the 7d mean).
item_activity_30d = FeatureView(
    name="item_activity_30d",
    entities=[item],
    ttl=HISTORY_TTL,
    schema=[
        Field(name="item_id", dtype=String),
        Field(name="item_views_30d", dtype=Int64),
        Field(name="item_carts_30d", dtype=Int64),
        Field(name="item_purchases_30d", dtype=Int64),
        Field(name="item_trend_24h_7d", dtype=Float64),
    ],
    source=item_activity_30d_source,
    online=True,
)

# A category's price level: the item's price is compared with it (never expires).
category_price = FeatureView(
    name="category_price",
    entities=[category],
    ttl=timedelta(0),
    schema=[
        Field(name="category", dtype=String),
        Field(name="cat_median_price", dtype=Float64),
    ],
    source=category_price_source,
    online=True,
)

# The ranking model's inputs, version 1: training sets and serving both read through it.
# `item_catalog.category` is left out: it is a join key of the entity rows, not an input.
# Kept while a champion trained on it may still serve (its lineage names its service).
ranking_v1 = FeatureService(
    name="ranking_v1",
    features=[user_activity, user_category, item_activity, item_catalog[["price"]]],
    description="Ranking model features, version 1 (training and serving).",
    tags={"model": "ranking", "version": "1"},
)

# Version 2: version 1's views plus the user x item history, user x category intent,
# 30-day activity, item trend and category price level.
ranking_v2 = FeatureService(
    name="ranking_v2",
    features=[
        user_activity,
        user_category,
        item_activity,
        item_catalog[["price"]],
        user_item,
        user_category_history,
        user_activity_30d,
        item_activity_30d,
        category_price,
    ],
    description="Ranking model features, version 2 (training and serving).",
    tags={"model": "ranking", "version": "2"},
)
