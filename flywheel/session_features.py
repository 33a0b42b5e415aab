"""The session signal: one definition of a user's current session, offline and online.

Hourly snapshots cannot see what a user did earlier in the same clock hour, so a user whose
only recent activity is this session looks brand new to the model (issue #11 item 5). These
features are computed at the row's own time instead, from the user's events themselves:

**The session at time t** of user u: take u's events (any type: view, cart, purchase,
click; organic events and feedback alike, as the event lake holds them) with ``ts < t``
strictly. If there is none, or the latest is more than :data:`SESSION_GAP` before ``t``,
the session is empty (the user is starting a new one). Otherwise it is the run of events
ending at that latest one in which consecutive events are at most :data:`SESSION_GAP`
apart (ingest's session rule, ``sessions.gap_minutes`` = 30 by default), cut at
:data:`SESSION_SPAN` before ``t``: its events are u's events with ``lo <= ts < t``.

The gap rule runs on ``(user, ts)`` alone, not on the lake's ``session_id``: feedback events
carry their request id as session id, a source's own ids follow its own rules, and serving
cannot know either. Nothing at or after ``t`` is ever read, so a planted future event cannot
move a value.

Features (float64, 0 for an empty session), for an entity row (user, item, category, t):

==================== =============================================================
``session_events``    events in the session (all types)
``session_views``     views in it
``session_carts``     carts in it
``session_purchases`` purchases in it
``session_seconds``   seconds from the session's first event to ``t``
``session_item_views`` views of this row's item in it ("viewed it earlier in this session")
``session_cat_views`` views of items of this row's catalog category in it (0 when the
                      item has no category)
==================== =============================================================

Two implementations of the one definition, tested equal to each other and to a brute-force
reference: :func:`offline_session_features` (vectorised, numpy over the lake's events, for
training sets) and :func:`session_values` (one user's buffered events at request time, as
:mod:`flywheel.serving.sessions` holds them). This module imports numpy and pyarrow only.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import pandas as pd

    from flywheel.config import Settings

#: The longest pause within a session (ingest's default ``sessions.gap_minutes``).
SESSION_GAP: Final = timedelta(minutes=30)
#: A session is looked at over at most this long before the row's time (bounds the buffer).
SESSION_SPAN: Final = timedelta(hours=6)
_GAP_US: Final = SESSION_GAP // timedelta(microseconds=1)
_SPAN_US: Final = SESSION_SPAN // timedelta(microseconds=1)

#: Event types counted per type (clicks count in ``session_events`` only).
_TYPED: Final = {"view": "session_views", "cart": "session_carts", "purchase": "session_purchases"}
#: The raw session features, in the order a feature set lists them.
SESSION_FEATURES: Final[tuple[str, ...]] = (
    "session_events",
    "session_views",
    "session_carts",
    "session_purchases",
    "session_seconds",
    "session_item_views",
    "session_cat_views",
)
#: Columns an events table needs for :func:`offline_session_features`.
EVENT_COLUMNS: Final = ("user_id", "item_id", "event_type", "ts")


def to_micros(ts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A timestamp column (any unit, tz-aware or not) as int64 µs since the epoch (UTC)."""
    column = pc.cast(ts, pa.timestamp("us", tz="UTC"))
    return np.asarray(pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False), np.int64)


# ---- online: one user's events ----------------------------------------------------------


def session_values(
    ts_us: Sequence[int],
    types: Sequence[str],
    items: Sequence[str],
    categories: Sequence[str | None],
    at_us: int,
    candidates: Sequence[str],
    candidate_categories: Sequence[str | None],
) -> dict[str, np.ndarray]:
    """The session features of one user against ``candidates`` at ``at_us``.

    Args:
        ts_us, types, items, categories: the user's known events sorted by time (µs; the
            category of each event's item, ``None`` when it has none); events at or after
            ``at_us`` may be present and are ignored.
        at_us: the request time, µs since the epoch.
        candidates, candidate_categories: the items scored and their catalog categories.

    Returns:
        One float64 array per :data:`SESSION_FEATURES` name, ``len(candidates)`` long.
    """
    n = len(candidates)
    end = bisect.bisect_left(ts_us, at_us)  # events strictly before at_us
    lo = end
    if end and at_us - ts_us[end - 1] <= _GAP_US:
        lo = end - 1
        oldest = at_us - _SPAN_US
        while lo > 0 and ts_us[lo] - ts_us[lo - 1] <= _GAP_US and ts_us[lo - 1] >= oldest:
            lo -= 1
    counts = dict.fromkeys(SESSION_FEATURES, 0.0)
    item_views: dict[str, int] = {}
    cat_views: dict[str, int] = {}
    for j in range(lo, end):
        kind = types[j]
        if kind in _TYPED:
            counts[_TYPED[kind]] += 1
        if kind == "view":
            item_views[items[j]] = item_views.get(items[j], 0) + 1
            category = categories[j]
            if category is not None:
                cat_views[category] = cat_views.get(category, 0) + 1
    out = {name: np.full(n, counts[name]) for name in SESSION_FEATURES}
    out["session_events"][:] = end - lo
    out["session_seconds"][:] = (at_us - ts_us[lo]) / 1e6 if end > lo else 0.0
    if item_views:
        out["session_item_views"] = np.array([item_views.get(i, 0) for i in candidates], float)
    if cat_views:
        out["session_cat_views"] = np.array(
            [cat_views.get(c, 0) if c is not None else 0 for c in candidate_categories], float
        )
    return out


# ---- offline: many rows, vectorised -----------------------------------------------------


def offline_session_features(
    events: pa.Table,
    category_of: Callable[[pa.Array], pa.Array],
    users: Sequence[str] | pa.Array,
    items: Sequence[str] | pa.Array,
    at_us: np.ndarray,
) -> dict[str, np.ndarray]:
    """The session features of every row ``(users[k], items[k], at_us[k])``.

    Args:
        events: lake events with :data:`EVENT_COLUMNS`, any order, covering at least
            ``[min(at_us) - SESSION_SPAN, max(at_us))`` for the rows' users (more is fine).
        category_of: item ids -> their catalog categories (null when unknown), aligned;
            used for both the events' and the rows' items.
        users, items: the rows' entity ids (strings).
        at_us: the rows' times, µs since the epoch.

    Returns:
        One float64 array per :data:`SESSION_FEATURES` name, one value per row.
    """
    n_rows = len(at_us)
    row_t = np.asarray(at_us, np.int64)
    row_users = pa.array(users, pa.string()) if not isinstance(users, pa.Array) else users
    row_items = pa.array(items, pa.string()) if not isinstance(items, pa.Array) else items
    out = {name: np.zeros(n_rows) for name in SESSION_FEATURES}
    if n_rows == 0 or events.num_rows == 0:
        return out
    ev_users = pc.dictionary_encode(events.column("user_id").combine_chunks())
    u = np.asarray(ev_users.indices.to_numpy(zero_copy_only=False), np.int64)
    ev_t = to_micros(events.column("ts"))
    order = np.lexsort((ev_t, u))
    u, t = u[order], ev_t[order]
    ev_type = events.column("event_type").combine_chunks().take(pa.array(order))
    ev_item = events.column("item_id").combine_chunks().take(pa.array(order))
    row_u = _codes(row_users, ev_users.dictionary)
    known = row_u >= 0

    # Dense time ranks make (user, time) one sortable int64 key.
    times = np.unique(np.concatenate([t, row_t, row_t - _SPAN_US]))
    rank = len(times) + 1

    def key(codes: np.ndarray, stamps: np.ndarray) -> np.ndarray:
        return codes * rank + np.searchsorted(times, stamps)

    _check_keys(int(u.max()) + 1, rank)
    ev_key = key(u, t)
    end = np.searchsorted(ev_key, key(row_u, row_t), side="left")
    last = np.maximum(end - 1, 0)
    live = known & (end > 0) & (u[last] == row_u) & (row_t - t[last] <= _GAP_US)
    # Each sorted event's session start: the latest break (new user or a pause > gap).
    brk = np.ones(len(t), bool)
    brk[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] > _GAP_US)
    seg_start = np.maximum.accumulate(np.where(brk, np.arange(len(t)), 0))
    span_start = np.searchsorted(ev_key, key(row_u, row_t - _SPAN_US), side="left")
    lo = np.where(live, np.maximum(seg_start[last], span_start), end)

    out["session_events"] = (end - lo).astype(np.float64)
    for kind, name in _TYPED.items():
        hit = np.asarray(pc.equal(ev_type, kind).to_numpy(zero_copy_only=False), bool)
        cum = np.concatenate([[0], np.cumsum(hit)])
        out[name] = (cum[end] - cum[lo]).astype(np.float64)
    first_t = t[np.minimum(lo, len(t) - 1)]
    out["session_seconds"] = np.where(end > lo, (row_t - first_t) / 1e6, 0.0)

    # Views of the row's item / category in [t[lo], t): counts over (user, x) view keys.
    is_view = np.asarray(pc.equal(ev_type, "view").to_numpy(zero_copy_only=False), bool)
    lo_t = np.where(end > lo, first_t, row_t)
    view_idx = np.flatnonzero(is_view)
    ev_cats = category_of(ev_item)
    for name, ev_x, row_x in (
        ("session_item_views", ev_item, row_items),
        ("session_cat_views", ev_cats, category_of(row_items)),
    ):
        out[name] = _pair_counts(
            u[view_idx], ev_x.take(pa.array(view_idx)), t[view_idx], row_u, row_x,
            lo_t, row_t, live & (end > lo), times,
        )  # fmt: skip
    return out


def _codes(values: pa.Array, dictionary: pa.Array) -> np.ndarray:
    """Each value's index in ``dictionary``, -1 where absent or null."""
    found = pc.index_in(values, value_set=dictionary)
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)


def _check_keys(n_codes: int, rank: int) -> None:
    if n_codes * rank >= 2**62:
        raise OverflowError(f"{n_codes} keys x {rank} distinct times do not fit an int64 key")


def _pair_counts(
    ev_u: np.ndarray,
    ev_x: pa.Array,
    ev_t: np.ndarray,
    row_u: np.ndarray,
    row_x: pa.Array,
    lo_t: np.ndarray,
    row_t: np.ndarray,
    live: np.ndarray,
    times: np.ndarray,
) -> np.ndarray:
    """Per row, the events of ``(row_u, row_x)`` with ``lo_t <= ts < row_t`` (0 if not live
    or ``row_x`` is null); events with a null ``x`` count for no row."""
    out = np.zeros(len(row_t))
    if len(ev_t) == 0:
        return out
    x_dict = pc.unique(ev_x.drop_null())
    ex = _codes(ev_x, x_dict)
    rx = _codes(row_x, x_dict)
    keep = ex >= 0
    ev_pair = ev_u[keep] * (len(x_dict) + 1) + ex[keep]
    pairs, dense = np.unique(ev_pair, return_inverse=True)
    if len(pairs) == 0:
        return out
    row_pair = row_u * (len(x_dict) + 1) + rx
    at = np.minimum(np.searchsorted(pairs, row_pair), len(pairs) - 1)
    ok = live & (rx >= 0) & (row_u >= 0) & (pairs[at] == row_pair)
    rank = len(times) + 1
    _check_keys(len(pairs), rank)
    ev_key = np.sort(dense * rank + np.searchsorted(times, ev_t[keep]))
    hi = np.searchsorted(ev_key, at * rank + np.searchsorted(times, row_t), side="left")
    lo = np.searchsorted(ev_key, at * rank + np.searchsorted(times, lo_t), side="left")
    return np.where(ok, hi - lo, 0).astype(np.float64)


def catalog_lookup(catalog: pa.Table | Mapping[str, str]) -> Callable[[pa.Array], pa.Array]:
    """``category_of`` for :func:`offline_session_features` from ``item_id, category`` rows
    (or a mapping): null for items not in the catalog."""
    if isinstance(catalog, Mapping):
        keys = pa.array(list(catalog), pa.string())
        values = pa.array(list(catalog.values()), pa.string())
    else:
        keys = catalog.column("item_id").combine_chunks().cast(pa.string())
        values = catalog.column("category").combine_chunks().cast(pa.string())

    def category_of(ids: pa.Array) -> pa.Array:
        return values.take(pc.index_in(ids.cast(pa.string()), value_set=keys))

    return category_of


def lake_session_features(
    settings: Settings, rows: pd.DataFrame, catalog: pa.Table
) -> dict[str, np.ndarray]:
    """:func:`offline_session_features` of training rows, from the event lake.

    Args:
        rows: ``user_id``, ``item_id`` and tz-aware ``event_timestamp`` (a training set's
            entity rows, any order).
        catalog: the item catalog (``item_id, category``).

    Reads only the lake's events in ``[first row - SESSION_SPAN, last row)`` of the rows'
    users (``user_id, item_id, event_type, ts``).
    """
    import pandas as pd

    from flywheel.lake import read_lake_events

    at = to_micros(pa.array(pd.to_datetime(rows["event_timestamp"], utc=True)))
    if len(at) == 0:
        return {name: np.zeros(0) for name in SESSION_FEATURES}
    start = datetime.fromtimestamp(int(at.min()) / 1e6, UTC) - SESSION_SPAN
    end = datetime.fromtimestamp(int(at.max()) / 1e6, UTC) + timedelta(seconds=1)
    events = read_lake_events(settings, list(EVENT_COLUMNS), start, end)
    users = pa.array(rows["user_id"].astype(str).to_numpy(), pa.string())
    events = events.filter(pc.is_in(events.column("user_id"), value_set=pc.unique(users)))
    items = pa.array(rows["item_id"].astype(str).to_numpy(), pa.string())
    return offline_session_features(events, catalog_lookup(catalog), users, items, at)
