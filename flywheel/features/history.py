"""The change-point tables of ranking_v2: windows exact at any time, rows only where they move.

Each table has a row at every hour end where one of its windows changes for the key:
``h + 1`` after an hour ``h`` with events and ``h + 1 + W`` when that hour leaves window
``W`` (:func:`~flywheel.features.windows.change_points`). So the latest row at or before a
time ``t`` holds the windows ending at ``t``'s hour start, however long ago the key was last
active, and a key's rows stop with the zero row that closes its longest window.

Why not hour-end snapshots here: a snapshot keeps the value of the key's last activity, so a
user who carted an item three days ago and comes back would still read "carted in the last
24 h" until the ttl. For per-pair signals (re-views, abandoned carts) that is the very
signal, so it must be exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from flywheel.features.keys import KeySpace
from flywheel.features.partials import (
    COUNTS,
    KIND_USER_ITEM_CART,
    KIND_USER_ITEM_PURCHASE,
    KIND_USER_ITEM_VIEW,
    Columns,
    reduce_runs,
)
from flywheel.features.windows import (
    NO_EVENT,
    WINDOW_HOURS,
    build_stamps,
    change_points,
    dense_rank,
    hour_stamps,
    latest_before,
    pair_rank,
    ratio,
    unix_or_null,
    window_sums,
)
from flywheel.schemas import (
    ITEM_ACTIVITY_30D_SCHEMA,
    USER_ACTIVITY_30D_SCHEMA,
    USER_CATEGORY_HISTORY_SCHEMA,
    USER_ITEM_SCHEMA,
)

_SHOPPING = COUNTS[:3]  # views, carts, purchases
_LAST = {
    "view": KIND_USER_ITEM_VIEW,
    "cart": KIND_USER_ITEM_CART,
    "purchase": KIND_USER_ITEM_PURCHASE,
}


def _first_rows(group: np.ndarray, of_groups: np.ndarray) -> np.ndarray:
    """Index of the first row of each group in ``of_groups`` (rows sorted by group)."""
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(group) else group
    return starts[of_groups]


def _windows(
    group: np.ndarray,
    hour: np.ndarray,
    counts: np.ndarray,
    names: Sequence[str],
    horizon: int,
    since: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, str], np.ndarray]]:
    """Change points of ``group`` rows and the ``counts`` windows at each.

    Out: (group, end hour) per output row and, per (column of ``counts``, window name), one
    contiguous array: computed a window at a time, so only one (n_rows, k) block is alive.
    ``since``: only the change points after that hour end (an incremental build's rows).
    """
    hours = [WINDOW_HOURS[n] for n in names]
    q_group, q_end = change_points(group, hour, hours, horizon)
    if since is not None:
        keep = q_end > since
        q_group, q_end = q_group[keep], q_end[keep]
    out: dict[tuple[int, str], np.ndarray] = {}
    for name in names:
        block = window_sums(group, hour, counts, q_group, q_end, WINDOW_HOURS[name])
        out |= {(j, name): np.ascontiguousarray(block[:, j]) for j in range(counts.shape[1])}
        del block
    return q_group, q_end, out


def user_item_table(
    pairs: Columns, horizon: int, created_us: int, keys: KeySpace, since: int | None = None
) -> pa.Table:
    """``user_item`` rows from the combined user-item partials (all three kinds).

    In: partial rows of the ``USER_ITEM_KINDS`` (``entity`` = user, ``sub`` = item),
    ``horizon`` = the end hour of the lake's last event hour. Out: rows sorted by user,
    item, event_timestamp.
    """
    last = {
        f"last_{name}": np.where(pairs["kind"] == kind, pairs["last_us"], NO_EVENT)
        for name, kind in _LAST.items()
    }
    merged = reduce_runs(
        {c: pairs[c] for c in ("entity", "sub", "hour", *_SHOPPING)} | last,
        ["entity", "sub", "hour"],
        _SHOPPING,
        list(last),
    )
    if len(merged["entity"]) == 0:
        return USER_ITEM_SCHEMA.empty_table()
    g, h = pair_rank(merged["entity"], merged["sub"]), merged["hour"].astype(np.int64)
    counts = np.stack([merged[c] for c in _SHOPPING], axis=1).astype(np.int64)
    q_group, q_end, w = _windows(g, h, counts, ("24h", "7d", "30d"), horizon, since)
    first = _first_rows(g, q_group)
    cols: dict[str, pa.Array | np.ndarray] = {
        "user_id": keys.ids("user", merged["entity"][first]),
        "item_id": keys.ids("item", merged["sub"][first]),
        "event_timestamp": hour_stamps(q_end),
        "created_timestamp": build_stamps(len(q_end), created_us),
    }
    for j, kind in enumerate(_SHOPPING):
        cols |= {f"ui_{kind}_{n}": w[j, n] for n in ("24h", "7d", "30d")}
    del w, counts
    for name in _LAST:
        stamp = latest_before(g, h, merged[f"last_{name}"], q_group, q_end)
        cols[f"ui_last_{name}_unix"] = unix_or_null(stamp)
    return pa.Table.from_pydict(cols, schema=USER_ITEM_SCHEMA)


def user_category_history_table(
    user_cats: Columns,
    categories: Sequence[str],
    horizon: int,
    created_us: int,
    keys: KeySpace,
    since: int | None = None,
) -> pa.Table:
    """``user_category_history`` rows from combined user-category partials sorted by
    (entity, sub, hour). Out: rows sorted by user, category, event_timestamp."""
    if len(user_cats["entity"]) == 0:
        return USER_CATEGORY_HISTORY_SCHEMA.empty_table()
    g = pair_rank(user_cats["entity"], user_cats["sub"])
    h = user_cats["hour"].astype(np.int64)
    counts = np.stack([user_cats[c] for c in _SHOPPING], axis=1).astype(np.int64)
    q_group, q_end, w = _windows(g, h, counts, ("7d", "30d"), horizon, since)
    first = _first_rows(g, q_group)
    codes = user_cats["sub"][first]
    names = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(categories, pa.string()))
    cols = {
        "user_id": keys.ids("user", user_cats["entity"][first]),
        "category": names.cast(pa.string()),
        "event_timestamp": hour_stamps(q_end),
        "created_timestamp": build_stamps(len(q_end), created_us),
        "cat_carts_7d": w[1, "7d"],
        "cat_purchases_7d": w[2, "7d"],
        "cat_views_30d": w[0, "30d"],
        "cat_carts_30d": w[1, "30d"],
        "cat_purchases_30d": w[2, "30d"],
    }
    return pa.Table.from_pydict(cols, schema=USER_CATEGORY_HISTORY_SCHEMA)


def user_activity_30d_table(
    users: Columns, horizon: int, created_us: int, keys: KeySpace, since: int | None = None
) -> pa.Table:
    """``user_activity_30d`` rows from combined user partials sorted by (entity, hour)."""
    g, h = dense_rank(users["entity"]), users["hour"].astype(np.int64)
    counts = np.stack([users[c] for c in COUNTS], axis=1).astype(np.int64)
    q_group, q_end, w = _windows(g, h, counts, ("30d",), horizon, since)
    first = _first_rows(g, q_group)
    cols = {
        "user_id": keys.ids("user", users["entity"][first]),
        "event_timestamp": hour_stamps(q_end),
        "created_timestamp": build_stamps(len(q_end), created_us),
    }
    cols |= {f"{c}_30d": w[j, "30d"] for j, c in enumerate(COUNTS)}
    return pa.Table.from_pydict(cols, schema=USER_ACTIVITY_30D_SCHEMA)


def item_activity_30d_table(
    items: Columns, horizon: int, created_us: int, keys: KeySpace, since: int | None = None
) -> pa.Table:
    """``item_activity_30d`` rows (30d counts, 24h-vs-7d trend) from combined item
    partials sorted by (entity, hour)."""
    counts = np.stack([items[c] for c in _SHOPPING], axis=1).astype(np.int64)
    moved = counts.any(axis=1)  # an hour of clicks alone changes none of these windows
    entity, counts = items["entity"][moved], counts[moved]
    g, h = dense_rank(entity), items["hour"][moved].astype(np.int64)
    q_group, q_end, w = _windows(g, h, counts, ("24h", "7d", "30d"), horizon, since)
    first = _first_rows(g, q_group)
    cols = {
        "item_id": keys.ids("item", entity[first]),
        "event_timestamp": hour_stamps(q_end),
        "created_timestamp": build_stamps(len(q_end), created_us),
        "item_views_30d": w[0, "30d"],
        "item_carts_30d": w[1, "30d"],
        "item_purchases_30d": w[2, "30d"],
        "item_trend_24h_7d": ratio(7 * w[0, "24h"], w[0, "7d"]),
    }
    return pa.Table.from_pydict(cols, schema=ITEM_ACTIVITY_30D_SCHEMA)
