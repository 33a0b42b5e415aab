"""The per-entity tables of an incremental build: only the rows stamped after a cut hour.

An incremental build (:mod:`~flywheel.features.incremental`) keeps every published row
stamped at or before ``since`` (the cut: the first changed hour, or the previous horizon if
that is earlier) and computes the rows after it here. A row stamped at hour end ``T`` reads
only partials of hours ``< T`` and exists because of them (``windows``), so rows at or before
the cut cannot change; rows after it are computed from the partials as a full build would.

Only the last 30 days (the longest window, plus two hours) of user x item partials can reach
a row after the cut, except the latest-event stamps (``ui_last_*_unix``): those are carried as
one zero-count row per (user, item, kind) just before that range, whose change points all
lie at or before the cut. ``user_category`` (its closing zero rows may follow a view of any
age) and the small user and item partials are used whole.

With ``since=None`` this computes every row, as :func:`~flywheel.features.aggregate.
iter_bucket_features` does (``user_item_latest`` is left to the caller: it needs the merged
``user_item`` table).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from flywheel.features.history import (
    item_activity_30d_table,
    user_activity_30d_table,
    user_category_history_table,
    user_item_table,
)
from flywheel.features.keys import KeySpace
from flywheel.features.partials import (
    KIND_ITEM,
    KIND_USER,
    KIND_USER_ITEM_PURCHASE,
    KIND_USER_ITEM_VIEW,
    CatalogIndex,
    Columns,
    category_partials,
    combine_partials,
    concat_partials,
    reduce_runs,
    slice_kind,
    with_view_prices,
)
from flywheel.features.snapshots import (
    item_activity_table,
    rows_after,
    user_activity_table,
    user_category_table,
)
from flywheel.features.windows import WINDOW_HOURS

#: Hours before the cut whose user x item partials can reach a row after it (with margin).
LOOKBACK_HOURS = max(WINDOW_HOURS.values()) + 2


def recent_pairs(pairs: Columns, since: int) -> Columns:
    """User x item partials of hours ``>= since - LOOKBACK_HOURS``, plus one zero-count row
    per (kind, user, item) of the older ones holding their latest ``last_us``, one hour
    before that range. Sorted as combined partials."""
    low = since - LOOKBACK_HOURS
    old = pairs["hour"] < low
    if not old.any():
        return pairs
    carry = reduce_runs(
        {c: pairs[c][old] for c in ("kind", "entity", "sub", "last_us")},
        ["kind", "entity", "sub"],
        [],
        ["last_us"],
    )
    carry["hour"] = np.full(len(carry["entity"]), low - 1, np.int32)
    recent = {c: v[~old] for c, v in pairs.items()}
    return combine_partials(concat_partials([carry, recent]))


def iter_incremental_features(
    partials: Columns,
    catalog: CatalogIndex,
    created_us: int,
    keys: KeySpace,
    horizon: int,
    since: int | None,
) -> Iterator[tuple[str, pa.Table]]:
    """The per-entity tables (but ``user_item_latest``) of the entities whose partials are
    all in ``partials``: only their rows stamped after ``since`` (every row when None).

    Tables are sorted as :func:`~flywheel.features.aggregate.iter_bucket_features` sorts
    them; ``horizon`` is the end hour of the lake's last event hour.
    """
    combined = combine_partials(partials)
    users = slice_kind(combined, KIND_USER)
    items = slice_kind(combined, KIND_ITEM)
    pairs = slice_kind(combined, KIND_USER_ITEM_VIEW, KIND_USER_ITEM_PURCHASE)
    del combined
    recent = pairs if since is None else recent_pairs(pairs, since)
    categories = catalog.categories
    user_activity = user_activity_table(
        with_view_prices(users, recent, catalog), created_us, keys, since
    )
    # user_category reads views_7d at its rows' snapshots: those after the cut
    views_7d = np.zeros(len(users["entity"]), np.int64)
    views_7d[rows_after(users["hour"].astype(np.int64) + 1, since)] = user_activity["views_7d"]
    yield "user_activity", user_activity
    del user_activity
    user_cats = category_partials(pairs, catalog)
    yield (
        "user_category",
        user_category_table(user_cats, users, views_7d, categories, created_us, keys, since),
    )
    del pairs
    recent_cats = user_cats if since is None else category_partials(recent, catalog)
    del user_cats
    yield "item_activity", item_activity_table(items, created_us, keys, since)
    yield "user_item", user_item_table(recent, horizon, created_us, keys, since)
    yield (
        "user_category_history",
        user_category_history_table(recent_cats, categories, horizon, created_us, keys, since),
    )
    yield "user_activity_30d", user_activity_30d_table(users, horizon, created_us, keys, since)
    yield "item_activity_30d", item_activity_30d_table(items, horizon, created_us, keys, since)
