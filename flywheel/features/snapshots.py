"""The snapshot tables of ranking_v1: a row at the end of each hour with activity.

``user_activity`` and ``item_activity`` have one row per (entity, active hour);
``user_category`` has, at each user snapshot, one row per category viewed in the 7-day
window and a zero row for a category whose last view left the window since the user's
previous snapshot, so the latest row of a (user, category) at or before any time is the
count at the user's latest snapshot (issue #11: without it, the last non-zero count stayed
until the ttl).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from flywheel.features.keys import KeySpace
from flywheel.features.partials import COUNTS, Columns
from flywheel.features.windows import (
    WINDOW_HOURS,
    build_stamps,
    dense_rank,
    hour_stamps,
    ratio,
    window_sums,
)
from flywheel.schemas import ITEM_ACTIVITY_SCHEMA, USER_ACTIVITY_SCHEMA, USER_CATEGORY_SCHEMA


def user_activity_table(
    users: Columns, created_us: int, keys: KeySpace, since: int | None = None
) -> pa.Table:
    """``user_activity`` rows from combined user partials sorted by (entity, hour), with
    their viewed prices (:func:`~flywheel.features.partials.with_view_prices`); ``since``:
    only the rows stamped after that hour end (the windows still see every partial)."""
    g, h = dense_rank(users["entity"]), users["hour"].astype(np.int64)
    counts = np.stack([users[c] for c in (*COUNTS, "price_n")], axis=1).astype(np.int64)
    end = h + 1
    sel = rows_after(end, since)
    q_g, q_end = g[sel], end[sel]
    w = {
        name: window_sums(g, h, counts, q_g, q_end, WINDOW_HOURS[name])
        for name in ("1h", "24h", "7d")
    }
    price_sum = users["price_sum"][:, None]
    price = window_sums(g, h, price_sum, q_g, q_end, WINDOW_HOURS["7d"])[:, 0]
    w7 = w["7d"]
    cols = {
        "user_id": keys.ids("user", users["entity"][sel]),
        "event_timestamp": hour_stamps(q_end),
        "created_timestamp": build_stamps(len(q_end), created_us),
        "views_1h": w["1h"][:, 0],
        "views_24h": w["24h"][:, 0],
        "views_7d": w7[:, 0],
        "carts_24h": w["24h"][:, 1],
        "carts_7d": w7[:, 1],
        "purchases_7d": w7[:, 2],
        "clicks_7d": w7[:, 3],
        "cart_rate_7d": ratio(w7[:, 1], w7[:, 0]),
        "conversion_rate_7d": ratio(w7[:, 2], w7[:, 0]),
        "avg_price_7d": ratio(price, w7[:, 4]),
        # the latest event before T = s + 1h is the latest one in hour s itself
        "last_event_unix": users["last_us"][sel] / 1e6,
    }
    return pa.Table.from_pydict(cols, schema=USER_ACTIVITY_SCHEMA)


def rows_after(end: np.ndarray, since: int | None) -> np.ndarray:
    """Indices of the rows stamped after ``since`` (all rows when None)."""
    return np.arange(len(end)) if since is None else np.flatnonzero(end > since)


def item_activity_table(
    items: Columns, created_us: int, keys: KeySpace, since: int | None = None
) -> pa.Table:
    """``item_activity`` rows from combined item partials sorted by (entity, hour)."""
    g, h = dense_rank(items["entity"]), items["hour"].astype(np.int64)
    counts = np.stack([items[c] for c in COUNTS], axis=1).astype(np.int64)
    end = h + 1
    sel = rows_after(end, since)
    q_g, q_end = g[sel], end[sel]
    w24 = window_sums(g, h, counts[:, :1], q_g, q_end, WINDOW_HOURS["24h"])
    w7 = window_sums(g, h, counts, q_g, q_end, WINDOW_HOURS["7d"])
    cols = {
        "item_id": keys.ids("item", items["entity"][sel]),
        "event_timestamp": hour_stamps(q_end),
        "created_timestamp": build_stamps(len(q_end), created_us),
        "item_views_24h": w24[:, 0],
        "item_views_7d": w7[:, 0],
        "item_carts_7d": w7[:, 1],
        "item_purchases_7d": w7[:, 2],
        "item_clicks_7d": w7[:, 3],
        "item_conversion_rate_7d": ratio(w7[:, 2], w7[:, 0]),
    }
    return pa.Table.from_pydict(cols, schema=ITEM_ACTIVITY_SCHEMA)


def _category_snapshots(
    user_cats: Columns, users: Columns, user_rank: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user snapshot row, category code, user rank of each user-category partial) pairs.

    A view in hour h is inside the window of the user's snapshots T = s + 1 with
    h <= s < h + window. Overlapping ranges of one (user, category) are merged into runs
    first, so every (snapshot, category) pair comes out once, sorted by snapshot row then
    category. Each run also gets the user's first snapshot after it (its last view has
    left the window there: a zero row), unless the pair's next run starts at that snapshot.
    """
    u_ent, u_h = users["entity"], users["hour"].astype(np.int64)
    c_ent, c_cat, c_h = user_cats["entity"], user_cats["sub"], user_cats["hour"].astype(np.int64)
    c_rank = user_rank[np.searchsorted(u_ent, c_ent)]
    new_pair = np.ones(len(c_h), bool)
    new_pair[1:] = (c_ent[1:] != c_ent[:-1]) | (c_cat[1:] != c_cat[:-1])
    new_run = new_pair.copy()
    new_run[1:] |= c_h[1:] > c_h[:-1] + window
    first = np.flatnonzero(new_run)
    last = np.append(first[1:], len(c_h)) - 1
    base = int(min(u_h.min(), c_h.min()))
    span = int(max(u_h.max(), c_h.max())) + window - base + 1
    snapshot_keys = user_rank * span + (u_h - base)
    lo = np.searchsorted(snapshot_keys, c_rank[first] * span + (c_h[first] - base))
    hi = np.searchsorted(snapshot_keys, c_rank[first] * span + (c_h[last] + window - base))
    # the closing snapshot: hi itself, if it is this user's and not the next run's start
    closing = hi < len(u_h)
    closing &= user_rank[np.minimum(hi, len(u_h) - 1)] == c_rank[first]
    nxt = np.append(first[1:], 0)
    same_pair_next = np.append(~new_pair[first[1:]], False)
    closing &= ~(same_pair_next & (u_h[np.minimum(hi, len(u_h) - 1)] == c_h[nxt]))
    n = hi - lo + closing
    rows = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(n.sum())
    n_cat = int(c_cat.max()) + 1
    pairs = np.sort(rows * n_cat + np.repeat(c_cat[first].astype(np.int64), n))
    return pairs // n_cat, (pairs % n_cat).astype(np.int32), c_rank


def user_category_table(
    user_cats: Columns,
    users: Columns,
    views_7d: np.ndarray,
    categories: Sequence[str],
    created_us: int,
    keys: KeySpace,
    since: int | None = None,
) -> pa.Table:
    """``user_category`` rows: at each user snapshot, each category viewed in the 7d window,
    and the zero row of each category whose views left it since the previous snapshot.
    ``since``: only the rows stamped after that hour end (``views_7d`` need only be right
    at those snapshots).

    In: combined user-category partials sorted by (entity, sub, hour) (rows without views
    are ignored); combined user partials sorted by (entity, hour) (the snapshots) and their
    ``views_7d``; category names (index = code). Out: rows sorted by user,
    event_timestamp, category.
    """
    viewed = user_cats["views"] > 0
    user_cats = {c: v[viewed] for c, v in user_cats.items()}
    if len(user_cats["entity"]) == 0:
        return USER_CATEGORY_SCHEMA.empty_table()
    wh = WINDOW_HOURS["7d"]
    rank = dense_rank(users["entity"])
    row, cat, c_rank = _category_snapshots(user_cats, users, rank, wh)
    n_cat = len(categories)
    end = users["hour"][row].astype(np.int64) + 1
    if since is not None:
        keep = end > since
        row, cat, end = row[keep], cat[keep], end[keep]
    cat_views = window_sums(
        c_rank * n_cat + user_cats["sub"],
        user_cats["hour"].astype(np.int64),
        user_cats["views"][:, None].astype(np.int64),
        rank[row] * n_cat + cat,
        end,
        wh,
    )[:, 0]
    names = pa.DictionaryArray.from_arrays(pa.array(cat), pa.array(categories, pa.string()))
    cols = {
        "user_id": keys.ids("user", users["entity"][row]),
        "category": names.cast(pa.string()),
        "event_timestamp": hour_stamps(end),
        "created_timestamp": build_stamps(len(row), created_us),
        "cat_views_7d": cat_views,
        "cat_affinity_7d": ratio(cat_views, views_7d[row]),
    }
    return pa.Table.from_pydict(cols, schema=USER_CATEGORY_SCHEMA)
