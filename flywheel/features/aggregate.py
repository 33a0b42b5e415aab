"""Pure feature math over numpy columns: hourly partials, rolling windows, feature tables.

No Ray here, so everything is unit-testable on small hand-built frames. Snapshots are hour
ends and every window is a whole number of hours, so a window ``[T - W, T)`` is exactly the
union of the hourly partials with ``T - W <= hour start < T``.

Partials are ``Columns`` (a dict of equal-length 1-D numpy arrays, ``PARTIAL_DTYPES``) of
three kinds: user rows (counts by type, sum/count of catalog prices of views, latest ts),
item rows (counts by type) and user-category rows (views of catalog items per category).
Entities are the dense keys of the build's :class:`~flywheel.features.keys.KeySpace`; the
tables map them back to the ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.features.keys import KeySpace
from flywheel.schemas import (
    EVENT_TYPES,
    ITEM_ACTIVITY_SCHEMA,
    ITEM_CATALOG_SCHEMA,
    ITEM_SCHEMA,
    SNAPSHOT_SECONDS,
    TS_TYPE,
    USER_ACTIVITY_SCHEMA,
    USER_CATEGORY_SCHEMA,
    WINDOWS,
)

Columns = dict[str, np.ndarray]

US_PER_HOUR = SNAPSHOT_SECONDS * 1_000_000
#: Window lengths in snapshot hours.
WINDOW_HOURS = {name: seconds // SNAPSHOT_SECONDS for name, seconds in WINDOWS.items()}
#: Columns of the lake the build reads (``event_id`` etc. are not needed).
EVENT_COLUMNS = ["user_id", "item_id", "event_type", "ts"]

KIND_USER, KIND_ITEM, KIND_USER_CATEGORY = 0, 1, 2
#: Count columns in EVENT_TYPES order.
COUNTS = ["views", "carts", "purchases", "clicks"]
_SUMMED = [*COUNTS, "price_n"]
#: Partial aggregates per (kind, entity, cat, hour); ``cat`` is -1 except for user-category.
PARTIAL_DTYPES: dict[str, type[np.generic]] = {
    "kind": np.int8,
    "entity": np.int64,
    "cat": np.int32,
    "hour": np.int32,  # epoch hours fit in int32 for the next 240,000 years
    **dict.fromkeys(_SUMMED, np.int32),
    "price_sum": np.float64,
    "last_us": np.int64,
}
_KEYS = ["kind", "entity", "cat", "hour"]


class FeatureBuildError(ValueError):
    """The lake or catalog cannot be turned into features; the message says why."""


@dataclass(frozen=True)
class CatalogIndex:
    """The catalog as sorted arrays, small enough to broadcast to every task."""

    item_ids: np.ndarray  # sorted, unique item keys (int64)
    prices: np.ndarray  # float64, aligned with item_ids
    cat_codes: np.ndarray  # int32 index into ``categories``
    categories: tuple[str, ...]  # sorted, so code order is category order

    @classmethod
    def from_table(cls, items: pa.Table, keys: KeySpace) -> CatalogIndex:
        """Index a catalog table with ``ITEM_SCHEMA`` columns; item ids must be unique.

        Every catalog id must be in ``keys`` (the build puts them there).
        """
        missing = [c for c in ITEM_SCHEMA.names if c not in items.column_names]
        if missing:
            raise FeatureBuildError(f"catalog lacks columns {missing}; expected {ITEM_SCHEMA}")
        ids = keys.item_keys(items["item_id"])
        if (ids < 0).any():
            raise FeatureBuildError("catalog item ids are missing from the build's key space")
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        if len(ids) > 1 and (dup := ids[1:][ids[1:] == ids[:-1]]).size:
            raise FeatureBuildError(
                f"catalog item_id {keys.ids('item', dup[:1])[0].as_py()!r} appears more than "
                "once; expected one row per item"
            )
        cats = items["category"].to_numpy(zero_copy_only=False)[order].astype(str)
        categories, codes = np.unique(cats, return_inverse=True)
        prices = np.asarray(items["price"].to_numpy(), dtype=np.float64)[order]
        return cls(ids, prices, codes.astype(np.int32), tuple(str(c) for c in categories))

    def lookup(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (known mask, price, category code) for each item id (0.0 / -1 if unknown)."""
        if len(self.item_ids) == 0:
            n = len(item_ids)
            return np.zeros(n, bool), np.zeros(n), np.full(n, -1, np.int32)
        pos = np.searchsorted(self.item_ids, item_ids).clip(0, len(self.item_ids) - 1)
        known = self.item_ids[pos] == item_ids
        price = np.where(known, self.prices[pos], 0.0)
        return known, price, np.where(known, self.cat_codes[pos], -1).astype(np.int32)


def group_order(keys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sort rows by ``keys`` (most significant first): the permutation and run starts.

    Keys are packed into one int64 code (offsets for small ranges, dense ranks otherwise),
    since one integer argsort is several times faster than a multi-key lexsort.
    """
    n = len(keys[0])
    code, size = np.zeros(n, np.int64), 1
    for key in keys:
        lo, hi = (int(key.min()), int(key.max())) if n else (0, 0)
        if hi - lo < 1 << 20:
            part, card = key.astype(np.int64) - lo, hi - lo + 1
        else:
            uniq, part = np.unique(key, return_inverse=True)
            card = len(uniq)
        size *= card
        if size >= 1 << 62:  # cannot pack: fall back to the multi-key sort
            order = np.lexsort(keys[::-1])
            new = np.zeros(n, bool)
            for k in keys:
                new[1:] |= k[order][1:] != k[order][:-1]
            return order, np.flatnonzero(new | (np.arange(n) == 0))
        code = code * card + part
    order = np.argsort(code)
    code = code[order]
    return order, np.flatnonzero(np.r_[True, code[1:] != code[:-1]][:n])


def reduce_runs(
    cols: Columns, keys: Sequence[str], sums: Sequence[str], maxes: Sequence[str] = ()
) -> Columns:
    """Group ``cols`` by ``keys``: one row per distinct key, sorted, with sums and maxima."""
    if len(cols[keys[0]]) == 0:
        return {c: cols[c][:0] for c in [*keys, *sums, *maxes]}
    order, starts = group_order([cols[k] for k in keys])
    first = order[starts]
    out = {k: cols[k][first] for k in keys}
    out |= {c: np.add.reduceat(cols[c][order], starts) for c in sums}
    out |= {c: np.maximum.reduceat(cols[c][order], starts) for c in maxes}
    return out


def concat_partials(parts: Sequence[Columns]) -> Columns:
    """Concatenate partial column sets in ``PARTIAL_DTYPES`` layout (absent columns: 0)."""
    out = {}
    for col, dtype in PARTIAL_DTYPES.items():
        arrays = [p.get(col, np.zeros(len(p["entity"]), dtype)) for p in parts]
        out[col] = (
            np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)
        )
    return out


def hourly_partials(events: pa.Table, catalog: CatalogIndex, keys: KeySpace) -> Columns:
    """Reduce raw events to per-(entity, hour) partial aggregates of three kinds.

    In: a table with ``user_id, item_id, event_type, ts`` (any batch of the lake), ids
    mapped through ``keys``.
    Out: ``PARTIAL_DTYPES`` columns with ``hour = floor(ts / 1h)`` in epoch hours, each
    (kind, entity, cat, hour) once.
    """
    codes = pc.index_in(events["event_type"], value_set=pa.array(EVENT_TYPES))
    if codes.null_count:
        bad = pc.filter(events["event_type"], pc.is_null(codes))[0]
        raise FeatureBuildError(f"event_type {bad.as_py()!r} is unknown; expected {EVENT_TYPES}")
    code = np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int8)
    user = keys.user_keys(events["user_id"])
    item = keys.item_keys(events["item_id"])
    if (user < 0).any() or (item < 0).any():
        raise FeatureBuildError("an event id is missing from the build's key space")
    ts_us = np.asarray(events["ts"].to_numpy()).view(np.int64)  # timestamp[us] -> µs
    hour = (ts_us // US_PER_HOUR).astype(np.int32)
    known, price, cat = catalog.lookup(item)
    priced_view = known & (code == 0)
    group_by = ["entity", "cat", "hour"]
    base = {"hour": hour, "cat": np.full(len(code), -1, np.int32)}
    base |= {c: (code == i).astype(np.int32) for i, c in enumerate(COUNTS)}  # EVENT_TYPES order
    users = base | {
        "entity": user,
        "price_n": priced_view.astype(np.int32),
        "price_sum": np.where(priced_view, price, 0.0),
        "last_us": ts_us,
    }
    items = base | {"entity": item}
    v = priced_view
    user_cats = {"entity": user[v], "cat": cat[v], "hour": hour[v], "views": base["views"][v]}
    parts = [
        reduce_runs(users, group_by, [*_SUMMED, "price_sum"], ["last_us"]),
        reduce_runs(items, group_by, COUNTS),
        reduce_runs(user_cats, group_by, ["views"]),
    ]
    for part, kind in zip(parts, (KIND_USER, KIND_ITEM, KIND_USER_CATEGORY), strict=True):
        part["kind"] = np.full(len(part["entity"]), kind, np.int8)
    return concat_partials(parts)


def combine_partials(partials: Columns) -> Columns:
    """Merge partials of the same (kind, entity, cat, hour); sorted by those keys."""
    out = reduce_runs(partials, _KEYS, [*_SUMMED, "price_sum"], ["last_us"])
    return {c: out[c].astype(t, copy=False) for c, t in PARTIAL_DTYPES.items()}


# ---- rolling windows -----------------------------------------------------------------


def window_sums(
    group: np.ndarray,
    hour: np.ndarray,
    values: np.ndarray,
    query_group: np.ndarray,
    query_end: np.ndarray,
    window_hours: int,
) -> np.ndarray:
    """Sum rows of ``values`` in the same group with ``query_end - window <= hour < query_end``.

    In: rows sorted by (group, hour), groups non-negative integers, ``values`` (n, k);
    queries as (group, end hour). Out: (n_queries, k) sums with the dtype of ``values``.
    """
    base = int(min(hour.min(initial=0), query_end.min(initial=0))) - window_hours
    span = int(max(hour.max(initial=0), query_end.max(initial=0))) - base + 1
    keys = group.astype(np.int64) * span + (hour - base)
    q = query_group.astype(np.int64) * span
    hi = np.searchsorted(keys, q + (query_end - base), side="left")
    lo = np.searchsorted(keys, q + (query_end - window_hours - base), side="left")
    csum = np.zeros((len(values) + 1, values.shape[1]), dtype=values.dtype)
    np.cumsum(values, axis=0, out=csum[1:])
    return csum[hi] - csum[lo]


def _dense_rank(sorted_values: np.ndarray) -> np.ndarray:
    """0-based rank of each value of an already sorted array."""
    rank = np.zeros(len(sorted_values), np.int64)
    np.cumsum(sorted_values[1:] != sorted_values[:-1], out=rank[1:])
    return rank


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def _ts(hours: np.ndarray) -> pa.Array:
    return pa.array(hours.astype(np.int64) * US_PER_HOUR, type=TS_TYPE)


def _stamp(n: int, created_us: int) -> pa.Array:
    return pa.array(np.full(n, created_us, np.int64), TS_TYPE)


def _slice(cols: Columns, kind: int) -> Columns:
    """The rows of one kind of combined (kind-sorted) partials, as views."""
    lo, hi = np.searchsorted(cols["kind"], [kind, kind + 1])
    return {c: v[lo:hi] for c, v in cols.items()}


def user_activity_table(users: Columns, created_us: int, keys: KeySpace) -> pa.Table:
    """``user_activity`` rows from combined user partials sorted by (entity, hour)."""
    g, h = _dense_rank(users["entity"]), users["hour"].astype(np.int64)
    counts = np.stack([users[c] for c in _SUMMED], axis=1).astype(np.int64)
    end = h + 1
    w = {name: window_sums(g, h, counts, g, end, hrs) for name, hrs in WINDOW_HOURS.items()}
    price = window_sums(g, h, users["price_sum"][:, None], g, end, WINDOW_HOURS["7d"])[:, 0]
    w7 = w["7d"]
    cols = {
        "user_id": keys.ids("user", users["entity"]),
        "event_timestamp": _ts(end),
        "created_timestamp": _stamp(len(h), created_us),
        "views_1h": w["1h"][:, 0],
        "views_24h": w["24h"][:, 0],
        "views_7d": w7[:, 0],
        "carts_24h": w["24h"][:, 1],
        "carts_7d": w7[:, 1],
        "purchases_7d": w7[:, 2],
        "clicks_7d": w7[:, 3],
        "cart_rate_7d": _ratio(w7[:, 1], w7[:, 0]),
        "conversion_rate_7d": _ratio(w7[:, 2], w7[:, 0]),
        "avg_price_7d": _ratio(price, w7[:, 4]),
        # the latest event before T = s + 1h is the latest one in hour s itself
        "last_event_unix": users["last_us"] / 1e6,
    }
    return pa.Table.from_pydict(cols, schema=USER_ACTIVITY_SCHEMA)


def item_activity_table(items: Columns, created_us: int, keys: KeySpace) -> pa.Table:
    """``item_activity`` rows from combined item partials sorted by (entity, hour)."""
    g, h = _dense_rank(items["entity"]), items["hour"].astype(np.int64)
    counts = np.stack([items[c] for c in COUNTS], axis=1).astype(np.int64)
    end = h + 1
    w24 = window_sums(g, h, counts[:, :1], g, end, WINDOW_HOURS["24h"])
    w7 = window_sums(g, h, counts, g, end, WINDOW_HOURS["7d"])
    cols = {
        "item_id": keys.ids("item", items["entity"]),
        "event_timestamp": _ts(end),
        "created_timestamp": _stamp(len(h), created_us),
        "item_views_24h": w24[:, 0],
        "item_views_7d": w7[:, 0],
        "item_carts_7d": w7[:, 1],
        "item_purchases_7d": w7[:, 2],
        "item_clicks_7d": w7[:, 3],
        "item_conversion_rate_7d": _ratio(w7[:, 2], w7[:, 0]),
    }
    return pa.Table.from_pydict(cols, schema=ITEM_ACTIVITY_SCHEMA)


def _category_snapshots(
    user_cats: Columns, users: Columns, user_rank: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user snapshot row, category code, user rank of each user-category partial) pairs.

    A view in hour h is inside the window of the user's snapshots T = s + 1 with
    h <= s < h + window. Overlapping ranges of one (user, category) are merged first, so
    every (snapshot, category) pair comes out once, sorted by snapshot row then category.
    """
    u_ent, u_h = users["entity"], users["hour"].astype(np.int64)
    c_ent, c_cat, c_h = user_cats["entity"], user_cats["cat"], user_cats["hour"].astype(np.int64)
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
    n = hi - lo
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
) -> pa.Table:
    """``user_category`` rows: at each user snapshot, each category viewed in the 7d window.

    In: combined user-category partials sorted by (entity, cat, hour); combined user
    partials sorted by (entity, hour) (the snapshots) and their ``views_7d``; category names
    (index = code). Out: rows sorted by user, event_timestamp, category.
    """
    if len(user_cats["entity"]) == 0:
        return USER_CATEGORY_SCHEMA.empty_table()
    wh = WINDOW_HOURS["7d"]
    rank = _dense_rank(users["entity"])
    row, cat, c_rank = _category_snapshots(user_cats, users, rank, wh)
    n_cat = len(categories)
    end = users["hour"][row].astype(np.int64) + 1
    cat_views = window_sums(
        c_rank * n_cat + user_cats["cat"],
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
        "event_timestamp": _ts(end),
        "created_timestamp": _stamp(len(row), created_us),
        "cat_views_7d": cat_views,
        "cat_affinity_7d": _ratio(cat_views, views_7d[row]),
    }
    return pa.Table.from_pydict(cols, schema=USER_CATEGORY_SCHEMA)


def bucket_features(
    partials: Columns, categories: Sequence[str], created_us: int, keys: KeySpace
) -> dict[str, pa.Table]:
    """The three activity tables for the entities whose partials are all in ``partials``.

    In: partial columns holding every partial of each entity present, in any order and
    with repeated keys. Out: ``user_activity``, ``user_category`` and ``item_activity``,
    each sorted by entity, event_timestamp (and category).
    """
    combined = combine_partials(partials)
    users = _slice(combined, KIND_USER)
    user_activity = user_activity_table(users, created_us, keys)
    views_7d = user_activity["views_7d"].to_numpy()
    user_cats = _slice(combined, KIND_USER_CATEGORY)
    return {
        "user_activity": user_activity,
        "user_category": user_category_table(
            user_cats, users, views_7d, categories, created_us, keys
        ),
        "item_activity": item_activity_table(_slice(combined, KIND_ITEM), created_us, keys),
    }


def item_catalog_table(items: pa.Table, created_us: int) -> pa.Table:
    """``item_catalog`` rows: one per catalog item, stamped with its ``created_ts``."""
    items = items.sort_by([("item_id", "ascending"), ("created_ts", "ascending")])
    cols = {
        "item_id": items["item_id"],
        "event_timestamp": items["created_ts"].cast(TS_TYPE),
        "created_timestamp": _stamp(items.num_rows, created_us),
        "category": items["category"].cast(pa.string()),
        "price": items["price"].cast(pa.float64()),
    }
    return pa.Table.from_pydict(cols, schema=ITEM_CATALOG_SCHEMA)
