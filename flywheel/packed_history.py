"""The user x item history online: one packed row per user instead of one row per pair.

``user_item`` (per (user, item) change points) is the offline view: training sets join it
point-in-time like every other view. Its latest rows are many (7.2M pairs at 10M events,
12 values each, so ~86M rows in Feast's SQLite online store, which keeps one row per
feature value: materializing them did not finish in 12 minutes). So ``user_item`` is not
materialized (``online=False``); the feature build also writes ``user_item_latest``: per
user, the latest ``user_item`` row of each of the user's pairs that is still within the
view's ttl at the build's horizon, packed into two list features:

- ``ui_items``: the pairs' item ids (sorted);
- ``ui_values``: per pair, :data:`VALUE_COLUMNS` in order (the row's event time in epoch
  seconds, then the 12 ``user_item`` features; NaN for a null ``ui_last_*``), row-major.

Serving reads one row per request (the user's) and :func:`expand` gives every candidate
the columns ``user_item`` would give: the values of the pair's latest row, or nulls when
the user has no fresh row for that item (the pair's event time older than the ttl at the
request time). The build horizon is the online row's time, so the online value of a pair at
a time ``t`` after the build equals the offline point-in-time value at ``t`` (the offline
table also ends at the horizon); ``tests`` check that equality.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

#: The offline view whose online values are packed, and the online view holding them.
OFFLINE_VIEW: Final = "user_item"
PACKED_VIEW: Final = "user_item_latest"
#: ``user_item``'s features, in the packed order.
HISTORY_FEATURES: Final[tuple[str, ...]] = (
    *(f"ui_{k}_{w}" for k in ("views", "carts", "purchases") for w in ("24h", "7d", "30d")),
    "ui_last_view_unix",
    "ui_last_cart_unix",
    "ui_last_purchase_unix",
)
#: ``user_item``'s ttl (the Feast view's, ``feature_repo/definitions.py``): a pair's latest row
#: older than this at the horizon is not packed, and older at a request is null.
HISTORY_TTL_S: Final = 30 * 86_400.0
#: One packed pair: its row's event time (epoch seconds), then the features.
VALUE_COLUMNS: Final[tuple[str, ...]] = ("ts_unix", *HISTORY_FEATURES)
WIDTH: Final = len(VALUE_COLUMNS)


def packed_view_of(view: str) -> str | None:
    """The online view holding ``view``'s values packed per user, if it has one."""
    return PACKED_VIEW if view == OFFLINE_VIEW else None


def expand(
    items: Sequence[str] | None,
    values: Sequence[float] | np.ndarray | None,
    item_ids: Sequence[str],
    as_of_unix: float,
    ttl_s: float | None,
    features: Sequence[str] = HISTORY_FEATURES,
) -> dict[str, np.ndarray]:
    """``features`` of ``user_item`` for each of ``item_ids``, from one user's packed row.

    Args:
        items, values: the row's ``ui_items`` and ``ui_values`` (``None``: the user has no
            row, or it expired).
        item_ids: the candidates, in the order of the returned arrays.
        as_of_unix: the request time; a pair whose row is older than ``ttl_s`` then is null.
        ttl_s: ``user_item``'s ttl in seconds (``None``: never expires).
        features: which of :data:`HISTORY_FEATURES` to return.

    Returns:
        One float64 array per feature (NaN where null), aligned with ``item_ids``.

    Raises:
        ValueError: ``values`` does not hold :data:`WIDTH` numbers per item.
    """
    n = len(item_ids)
    out = {f: np.full(n, np.nan) for f in features}
    if not items:
        return out
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.size != len(items) * WIDTH:
        raise ValueError(
            f"{PACKED_VIEW}: {matrix.size} values for {len(items)} items; "
            f"expected {WIDTH} per item ({', '.join(VALUE_COLUMNS)})"
        )
    matrix = matrix.reshape(len(items), WIDTH)
    if ttl_s is not None:
        fresh = matrix[:, 0] >= as_of_unix - ttl_s
    else:
        fresh = np.ones(len(items), dtype=bool)
    position = {item: j for j, item in enumerate(items) if fresh[j]}
    rows = np.array([position.get(str(i), -1) for i in item_ids], dtype=np.int64)
    found = rows >= 0
    if not found.any():
        return out
    for f in features:
        out[f][found] = matrix[rows[found], VALUE_COLUMNS.index(f)]
    return out


def pack_rows(users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user offsets of pair rows sorted by user.

    Args:
        users: the rows' user keys (any comparable dtype), equal keys adjacent.

    Returns:
        ``(first_row_of_each_user, item_offsets, value_offsets)``: int32 offsets of Arrow
        list arrays over the rows' items and over their ``[rows, WIDTH]`` values, raveled.
    """
    n = len(users)
    if n == 0:
        empty = np.zeros(1, dtype=np.int32)
        return np.zeros(0, dtype=np.int64), empty, empty
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    offsets = np.r_[starts, n].astype(np.int32)
    return starts, offsets, (offsets * WIDTH).astype(np.int32)
