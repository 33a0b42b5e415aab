"""Pure feature math over numpy columns: every feature table of one bucket of entities.

No Ray here, so everything is unit-testable on small hand-built frames. The pieces:

* :mod:`~flywheel.features.partials`: raw events -> hourly partials per (kind, entity, sub),
  and the user-category partials a bucket derives from its user-item ones;
* :mod:`~flywheel.features.windows`: window sums, change points, latest-before lookups;
* :mod:`~flywheel.features.snapshots`: ranking_v1's hour-end snapshot tables;
* :mod:`~flywheel.features.history`: ranking_v2's exact-window (change-point) tables;
* :mod:`~flywheel.features.catalog`: the tables of the catalog alone (built in the driver).

:func:`bucket_features` computes every per-entity table of one bucket; a bucket holds all
partials of its users (user and user-item kinds) or of its items.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from flywheel.features.catalog import category_price_table, item_catalog_table
from flywheel.features.history import (
    item_activity_30d_table,
    user_activity_30d_table,
    user_category_history_table,
    user_item_table,
)
from flywheel.features.keys import KeySpace
from flywheel.features.packed import user_item_latest_table
from flywheel.features.partials import (
    EVENT_COLUMNS,
    KIND_ITEM,
    KIND_USER,
    KIND_USER_ITEM_PURCHASE,
    KIND_USER_ITEM_VIEW,
    PARTIAL_DTYPES,
    US_PER_HOUR,
    CatalogIndex,
    Columns,
    FeatureBuildError,
    category_partials,
    combine_partials,
    concat_partials,
    hourly_partials,
    slice_kind,
    with_view_prices,
)
from flywheel.features.snapshots import (
    item_activity_table,
    user_activity_table,
    user_category_table,
)
from flywheel.features.windows import WINDOW_HOURS, window_sums

__all__ = [
    "DRIVER_TABLES",
    "EVENT_COLUMNS",
    "KIND_ITEM",
    "PARTIAL_DTYPES",
    "US_PER_HOUR",
    "WINDOW_HOURS",
    "CatalogIndex",
    "Columns",
    "FeatureBuildError",
    "bucket_features",
    "category_price_table",
    "concat_partials",
    "driver_tables",
    "hourly_partials",
    "item_catalog_table",
    "iter_bucket_features",
    "window_sums",
]

#: Tables computed from the catalog alone, once, in the driver.
DRIVER_TABLES = ("item_catalog", "category_price")


def driver_tables(items: pa.Table, created_us: int) -> dict[str, pa.Table]:
    """The :data:`DRIVER_TABLES` of a catalog with ``ITEM_SCHEMA`` columns."""
    return {
        "item_catalog": item_catalog_table(items, created_us),
        "category_price": category_price_table(items, created_us),
    }


def iter_bucket_features(
    partials: Columns,
    catalog: CatalogIndex,
    created_us: int,
    keys: KeySpace,
    horizon: int,
) -> Iterator[tuple[str, pa.Table]]:
    """Every per-entity table for the entities whose partials are all in ``partials``, one
    at a time, so a caller that writes each and lets it go holds one table at a time.

    In: partial columns holding every partial of each entity present, in any order and
    with repeated keys; the catalog; ``horizon``: the end (epoch hour) of the lake's last
    event hour, the same for every bucket. Out: ``(name, table)`` for the snapshot tables
    (``user_activity``, ``user_category``, ``item_activity``) and the change-point tables
    (``user_item``, ``user_category_history``, ``user_activity_30d``,
    ``item_activity_30d``) and ``user_item``'s packed online form (``user_item_latest``,
    one row per user), each sorted by its keys then event_timestamp
    (``user_category``: user, event_timestamp, category).
    """
    combined = combine_partials(partials)
    users = slice_kind(combined, KIND_USER)
    items = slice_kind(combined, KIND_ITEM)
    pairs = slice_kind(combined, KIND_USER_ITEM_VIEW, KIND_USER_ITEM_PURCHASE)
    user_cats = category_partials(pairs, catalog)
    categories = catalog.categories
    user_activity = user_activity_table(with_view_prices(users, pairs, catalog), created_us, keys)
    views_7d = user_activity["views_7d"].to_numpy()
    yield "user_activity", user_activity
    del user_activity
    yield (
        "user_category",
        user_category_table(user_cats, users, views_7d, categories, created_us, keys),
    )
    yield "item_activity", item_activity_table(items, created_us, keys)
    user_item = user_item_table(pairs, horizon, created_us, keys)
    yield "user_item_latest", user_item_latest_table(user_item, horizon, created_us)
    yield "user_item", user_item
    del user_item
    yield (
        "user_category_history",
        user_category_history_table(user_cats, categories, horizon, created_us, keys),
    )
    yield "user_activity_30d", user_activity_30d_table(users, horizon, created_us, keys)
    yield "item_activity_30d", item_activity_30d_table(items, horizon, created_us, keys)


def bucket_features(
    partials: Columns,
    catalog: CatalogIndex,
    created_us: int,
    keys: KeySpace,
    horizon: int,
) -> dict[str, pa.Table]:
    """:func:`iter_bucket_features` as one dict (all tables held at once; for tests)."""
    return dict(iter_bucket_features(partials, catalog, created_us, keys, horizon))
