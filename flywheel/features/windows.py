"""Rolling windows over hourly partials, and the change points of the exact-window tables.

Snapshots are hour ends and every window is a whole number of hours, so a window
``[T - W, T)`` is exactly the union of the hourly partials with ``T - W <= hour start < T``.
Hours here are epoch hours (int); a row stamped at hour end ``T`` covers partial hours
``h < T``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from flywheel.features.partials import US_PER_HOUR
from flywheel.schemas import SNAPSHOT_SECONDS, TS_TYPE, WINDOWS

#: Window lengths in snapshot hours.
WINDOW_HOURS = {name: seconds // SNAPSHOT_SECONDS for name, seconds in WINDOWS.items()}
#: "No such event" in a latest-timestamp column.
NO_EVENT = -1


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


def latest_before(
    group: np.ndarray,
    hour: np.ndarray,
    stamps: np.ndarray,
    query_group: np.ndarray,
    query_end: np.ndarray,
) -> np.ndarray:
    """Per query, the largest ``stamps`` value of its group among rows with hour < end.

    In: rows sorted by (group, hour), ``stamps`` non-decreasing within a group where set and
    :data:`NO_EVENT` where a row has none. Out: one stamp per query, ``NO_EVENT`` if none.
    """
    n = len(group)
    if n == 0:
        return np.full(len(query_group), NO_EVENT, np.int64)
    base = int(min(hour.min(), query_end.min(initial=0)))
    span = int(max(hour.max(), query_end.max(initial=0))) - base + 1
    keys = group.astype(np.int64) * span + (hour - base)
    at = np.searchsorted(keys, query_group.astype(np.int64) * span + (query_end - base)) - 1
    filled = np.maximum.accumulate(np.where(stamps != NO_EVENT, np.arange(n), -1))
    src = filled[np.clip(at, 0, None)]
    ok = (at >= 0) & (src >= 0)
    ok &= group[np.clip(src, 0, None)] == query_group
    return np.where(ok, stamps[np.clip(src, 0, None)], NO_EVENT)


def change_points(
    group: np.ndarray, hour: np.ndarray, windows: Sequence[int], horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (group, end hour) of every row of an exact-window table, sorted and unique.

    An event in hour ``h`` changes the windows ending at ``h + 1`` (it enters all of them)
    and at ``h + 1 + W`` for each window ``W`` (it leaves that one); between two such hour
    ends no window of the group changes. Ends after ``horizon`` (the end of the lake's
    last event hour) are dropped: no row claims a future the lake has not seen.
    """
    steps = np.array([1, *(1 + w for w in windows)], np.int64)
    ends = (hour.astype(np.int64)[:, None] + steps[None, :]).ravel()
    groups = np.repeat(group.astype(np.int64), len(steps))
    keep = ends <= horizon
    ends, groups = ends[keep], groups[keep]
    if len(ends) == 0:
        return groups, ends
    base = int(ends.min())
    span = int(ends.max()) - base + 1
    code = np.sort(groups * span + (ends - base))  # a plain sort: ~10x np.unique's hash
    code = code[np.r_[True, code[1:] != code[:-1]]]
    return code // span, code % span + base


def dense_rank(sorted_values: np.ndarray) -> np.ndarray:
    """0-based rank of each value of an already sorted array."""
    rank = np.zeros(len(sorted_values), np.int64)
    np.cumsum(sorted_values[1:] != sorted_values[:-1], out=rank[1:])
    return rank


def pair_rank(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """0-based rank of each (first, second) pair of rows sorted by both."""
    rank = np.zeros(len(first), np.int64)
    new = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    np.cumsum(new, out=rank[1:])
    return rank


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, 0.0 where ``den`` is 0."""
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def hour_stamps(hours: np.ndarray) -> pa.Array:
    """Epoch hours as UTC timestamps."""
    return pa.array(hours.astype(np.int64) * US_PER_HOUR, type=TS_TYPE)


def build_stamps(n: int, created_us: int) -> pa.Array:
    """``n`` copies of the build's ``created_timestamp``."""
    return pa.array(np.full(n, created_us, np.int64), TS_TYPE)


def unix_or_null(stamps_us: np.ndarray) -> pa.Array:
    """Epoch µs as float epoch seconds, null where :data:`NO_EVENT`."""
    return pa.array(stamps_us / 1e6, pa.float64(), mask=stamps_us == NO_EVENT)
