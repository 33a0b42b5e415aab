"""``user_item_latest``: the online form of ``user_item``, one packed row per user.

See :mod:`flywheel.packed_history` for the layout and why it exists.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.features.partials import US_PER_HOUR
from flywheel.packed_history import HISTORY_FEATURES, HISTORY_TTL_S, WIDTH, pack_rows
from flywheel.schemas import USER_ITEM_LATEST_SCHEMA


def user_item_latest_table(
    user_item: pa.Table, horizon: int, created_us: int, ttl_s: float = HISTORY_TTL_S
) -> pa.Table:
    """Per user, the latest ``user_item`` row of each pair still within ``ttl_s`` of the
    horizon, packed (:mod:`flywheel.packed_history`).

    In: a ``user_item`` table sorted by user, item, event_timestamp (one bucket's, holding
    all rows of its users); ``horizon``: the end (epoch hour) of the lake's last event hour.
    Out: one row per user with a packed pair, sorted by user; its ``event_timestamp`` is the
    newest of its pairs' row times.
    """
    n = user_item.num_rows
    if n == 0:
        return USER_ITEM_LATEST_SCHEMA.empty_table()
    users, items = user_item["user_id"].combine_chunks(), user_item["item_id"].combine_chunks()
    ts_us = user_item["event_timestamp"].combine_chunks().cast(pa.int64()).to_numpy()
    last = np.ones(n, dtype=bool)  # the last row of each (user, item) run
    if n > 1:
        same_user = pc.equal(users[1:], users[:-1]).to_numpy(zero_copy_only=False)
        same_item = pc.equal(items[1:], items[:-1]).to_numpy(zero_copy_only=False)
        last[:-1] = ~(same_user & same_item)
    keep = last & (ts_us >= horizon * US_PER_HOUR - ttl_s * 1e6)
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        return USER_ITEM_LATEST_SCHEMA.empty_table()
    take = pa.array(rows)
    return pack_pairs(
        users.take(take), items.take(take), ts_us[rows], pair_values(user_item, rows), created_us
    )


def pair_values(user_item: pa.Table, rows: np.ndarray) -> np.ndarray:
    """The packed values (:data:`~flywheel.packed_history.VALUE_COLUMNS`) of ``user_item``'s
    ``rows``: ``[len(rows), WIDTH]`` float64, the row's time in epoch seconds first, NaN
    where a feature is null."""
    ts_us = user_item["event_timestamp"].combine_chunks().cast(pa.int64()).to_numpy()
    values = np.empty((len(rows), WIDTH), dtype=np.float64)
    values[:, 0] = ts_us[rows] / 1e6
    take = pa.array(rows)
    for j, name in enumerate(HISTORY_FEATURES, start=1):
        column = user_item[name].combine_chunks().take(take)
        values[:, j] = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return values


def pack_pairs(
    users: pa.Array, items: pa.Array, ts_us: np.ndarray, values: np.ndarray, created_us: int
) -> pa.Table:
    """One packed row per user from pair rows sorted by (user, item): ``users``, ``items``
    their ids, ``ts_us`` their row times (int microseconds), ``values`` their
    :func:`pair_values`. Each user's ``event_timestamp`` is the newest of its pairs'."""
    if len(users) == 0:
        return USER_ITEM_LATEST_SCHEMA.empty_table()
    # Equal users are adjacent (sorted by user): compare by dictionary index.
    codes = pc.dictionary_encode(users).indices.to_numpy()
    starts, item_offsets, value_offsets = pack_rows(codes)
    newest = np.maximum.reduceat(ts_us, starts)
    table = {
        "user_id": users.take(pa.array(starts)),
        "event_timestamp": pa.array(newest, USER_ITEM_LATEST_SCHEMA.field("event_timestamp").type),
        "created_timestamp": pa.array(
            np.full(len(starts), created_us, np.int64),
            USER_ITEM_LATEST_SCHEMA.field("created_timestamp").type,
        ),
        "ui_items": pa.ListArray.from_arrays(pa.array(item_offsets), items),
        "ui_values": pa.ListArray.from_arrays(pa.array(value_offsets), pa.array(values.ravel())),
    }
    return pa.Table.from_pydict(table, schema=USER_ITEM_LATEST_SCHEMA)


def packed_from_user_item(user_item: pa.Table, horizon: int | None = None) -> pa.Table:
    """``user_item_latest`` of a whole ``user_item`` table in any row order (fixtures,
    benchmark worlds): sorted here; ``horizon`` defaults to the end of the hour of its
    newest row; ``created_timestamp`` is the newest row's."""
    if user_item.num_rows == 0:
        return USER_ITEM_LATEST_SCHEMA.empty_table()
    ordered = user_item.sort_by(
        [("user_id", "ascending"), ("item_id", "ascending"), ("event_timestamp", "ascending")]
    )
    newest = pc.max(ordered["event_timestamp"]).cast(pa.int64()).as_py()
    created = pc.max(ordered["created_timestamp"]).cast(pa.int64()).as_py()
    if horizon is None:
        horizon = newest // US_PER_HOUR + 1
    return user_item_latest_table(ordered, horizon, created)
