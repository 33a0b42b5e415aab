"""Hourly partials: raw events reduced to per-(kind, entity, sub, hour) aggregates.

Partials are ``Columns`` (a dict of equal-length 1-D numpy arrays, ``PARTIAL_DTYPES``):

* user rows: counts by type, latest event ts;
* item rows: counts by type;
* user-item rows, one kind per event type (``sub`` = item key): the count of that type in
  its column and the latest such event in ``last_us``, so the latest view, cart and
  purchase of a pair each survive the merge.

What a user bucket can derive from its users' user-item rows and the catalog is not
shipped: the user-category rows (:func:`category_partials`) and the viewed-price sums of
the user rows (:func:`with_view_prices`). So the shuffle carries one 37-byte row per
(user, item, hour, type), per (user, hour) and per (item, hour); at 10M events that is
12.5M rows, about what ranking_v1's build shipped alone.

Entities are the dense keys of the build's :class:`~flywheel.features.keys.KeySpace`; the
tables map them back to the ids. No Ray here: everything is unit-testable on small frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.features.keys import KeySpace
from flywheel.schemas import EVENT_TYPES, ITEM_SCHEMA, SNAPSHOT_SECONDS

Columns = dict[str, np.ndarray]

US_PER_HOUR = SNAPSHOT_SECONDS * 1_000_000
#: Columns of the lake the build reads (``event_id`` etc. are not needed).
EVENT_COLUMNS = ["user_id", "item_id", "event_type", "ts"]

KIND_USER, KIND_ITEM = 0, 1
#: User-item kinds, one per event type the user x item history counts.
KIND_USER_ITEM_VIEW, KIND_USER_ITEM_CART, KIND_USER_ITEM_PURCHASE = 3, 4, 5
USER_ITEM_KINDS = (KIND_USER_ITEM_VIEW, KIND_USER_ITEM_CART, KIND_USER_ITEM_PURCHASE)
#: Count columns in EVENT_TYPES order.
COUNTS = ["views", "carts", "purchases", "clicks"]
#: Partial aggregates per (kind, entity, sub, hour); ``sub`` is the item key of user-item
#: rows and -1 otherwise (the category code in :func:`category_partials`).
PARTIAL_DTYPES: dict[str, type[np.generic]] = {
    "kind": np.int8,
    "entity": np.int32,  # dense keys: at most 2**31 - 1 users and items (checked)
    "sub": np.int32,
    "hour": np.int32,  # epoch hours fit in int32 for the next 240,000 years
    **dict.fromkeys(COUNTS, np.int32),
    "last_us": np.int64,
}
_KEYS = ["kind", "entity", "sub", "hour"]


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


def _event_codes(events: pa.Table) -> np.ndarray:
    codes = pc.index_in(events["event_type"], value_set=pa.array(EVENT_TYPES))
    if codes.null_count:
        bad = pc.filter(events["event_type"], pc.is_null(codes))[0]
        raise FeatureBuildError(f"event_type {bad.as_py()!r} is unknown; expected {EVENT_TYPES}")
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int8)


def hourly_partials(events: pa.Table, catalog: CatalogIndex, keys: KeySpace) -> Columns:
    """Reduce raw events to per-(kind, entity, sub, hour) partial aggregates.

    In: a table with ``user_id, item_id, event_type, ts`` (any batch of the lake), ids
    mapped through ``keys``.
    Out: ``PARTIAL_DTYPES`` columns with ``hour = floor(ts / 1h)`` in epoch hours, each
    (kind, entity, sub, hour) once.
    """
    code = _event_codes(events)
    user = keys.user_keys(events["user_id"])
    item = keys.item_keys(events["item_id"])
    if (user < 0).any() or (item < 0).any():
        raise FeatureBuildError("an event id is missing from the build's key space")
    for which, ids in (("user", keys.users), ("item", keys.items)):
        if len(ids) >= 1 << 31:
            raise FeatureBuildError(f"{len(ids):,} distinct {which} ids; at most 2**31 - 1")
    ts_us = np.asarray(events["ts"].to_numpy()).view(np.int64)  # timestamp[us] -> µs
    hour = (ts_us // US_PER_HOUR).astype(np.int32)
    group_by = ["entity", "sub", "hour"]
    base = {"hour": hour, "sub": np.full(len(code), -1, np.int32)}
    base |= {c: (code == i).astype(np.int32) for i, c in enumerate(COUNTS)}  # EVENT_TYPES order
    users = base | {"entity": user, "last_us": ts_us}
    items = base | {"entity": item}
    parts = [
        reduce_runs(users, group_by, COUNTS, ["last_us"]),
        reduce_runs(items, group_by, COUNTS),
    ]
    kinds = [KIND_USER, KIND_ITEM]
    for type_code, kind in enumerate(USER_ITEM_KINDS):  # view, cart, purchase
        mine = code == type_code
        pair = {"entity": user[mine], "sub": item[mine].astype(np.int32), "hour": hour[mine]}
        pair |= {COUNTS[type_code]: base[COUNTS[type_code]][mine], "last_us": ts_us[mine]}
        parts.append(reduce_runs(pair, group_by, [COUNTS[type_code]], ["last_us"]))
        kinds.append(kind)
    for part, kind in zip(parts, kinds, strict=True):
        part["kind"] = np.full(len(part["entity"]), kind, np.int8)
    return concat_partials(parts)


def combine_partials(partials: Columns) -> Columns:
    """Merge partials of the same (kind, entity, sub, hour); sorted by those keys."""
    out = reduce_runs(partials, _KEYS, COUNTS, ["last_us"])
    return {c: out[c].astype(t, copy=False) for c, t in PARTIAL_DTYPES.items()}


def category_partials(pairs: Columns, catalog: CatalogIndex) -> Columns:
    """User-category partials from a bucket's user-item partials: views, carts and
    purchases of catalog items per (user, category code in ``sub``, hour), sorted."""
    known, _, cat = catalog.lookup(pairs["sub"].astype(np.int64))
    cols = {c: pairs[c][known] for c in ("entity", "hour", *COUNTS[:3])}
    cols["sub"] = cat[known]
    return reduce_runs(cols, ["entity", "sub", "hour"], COUNTS[:3])


def with_view_prices(users: Columns, pairs: Columns, catalog: CatalogIndex) -> Columns:
    """User partials plus ``price_n`` / ``price_sum``: the views of catalog items in each
    (user, hour) and the sum of their catalog prices, from the bucket's user-item rows."""
    viewed = pairs["views"] > 0  # the view kind's rows
    known, price, _ = catalog.lookup(pairs["sub"][viewed].astype(np.int64))
    views = pairs["views"][viewed][known]
    cols = {"entity": pairs["entity"][viewed][known], "hour": pairs["hour"][viewed][known]}
    cols |= {"price_n": views, "price_sum": views * price[known]}
    sums = reduce_runs(cols, ["entity", "hour"], ["price_n", "price_sum"])
    out = dict(users)
    out["price_n"] = np.zeros(len(users["entity"]), np.int64)
    out["price_sum"] = np.zeros(len(users["entity"]), np.float64)
    if len(sums["entity"]) and len(users["entity"]):
        # every (user, hour) of a user-item row is a user row: place the sums on them
        span = int(max(users["hour"].max(), sums["hour"].max())) + 1
        user_code = users["entity"].astype(np.int64) * span + users["hour"]
        at = np.searchsorted(user_code, sums["entity"].astype(np.int64) * span + sums["hour"])
        out["price_n"][at] = sums["price_n"]
        out["price_sum"][at] = sums["price_sum"]
    return out


def slice_kind(cols: Columns, kind: int, last: int | None = None) -> Columns:
    """The rows of kinds ``kind..last`` of combined (kind-sorted) partials, as views."""
    lo, hi = np.searchsorted(cols["kind"], [kind, (kind if last is None else last) + 1])
    return {c: v[lo:hi] for c, v in cols.items()}
