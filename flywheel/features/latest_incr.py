"""``user_item_latest`` of an incremental build: the previous one updated with the new days.

A full build packs, per user, the last ``user_item`` row of each pair within the ttl
(:func:`~flywheel.features.publish.latest_of`: every day of ``user_item`` within 30 days of
the horizon read again). An incremental build with cut ``since`` rewrote only the days from
``D = first_open_day(since)`` on and kept the older ones as they were, so a pair's last row
is its last row in the new days ``>= D`` if it has one there, and else the one the previous
``user_item_latest`` holds (its last row before ``D``, unchanged). :func:`updated_latest`
unpacks the previous table into pair rows, replaces the pairs that have rows in the new
days, applies the ttl at the new horizon and packs again in (user, item) key order, as the
full build does: the same values, byte for byte.

It cannot when the previous table does not hold what the days before ``D`` give:

- a previous pair fresh at the new horizon whose row lies in a day ``>= D`` but which has
  no row there now (rows were removed: a re-ingest with fewer events), since its last row
  is then an older one the previous table does not have;
- the horizon moved back (the previous table left out pairs that are fresh again);
- an id outside this build's key space.

Then :func:`publish_latest` recomputes the table in full (correct, slower); it logs which
path ran.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel.features import day_parts
from flywheel.features.keys import KeySpace
from flywheel.features.packed import pack_pairs, pair_values
from flywheel.features.partials import US_PER_HOUR
from flywheel.features.publish import latest_of
from flywheel.packed_history import HISTORY_FEATURES, HISTORY_TTL_S, WIDTH

log = logging.getLogger(__name__)

#: Pairs packed at a time (cut at user bounds), as :func:`latest_of` does.
_SLICE_PAIRS = 2_000_000
_COLUMNS = ["user_id", "item_id", "event_timestamp", *HISTORY_FEATURES]


class _Pairs:
    """Pair rows: ``codes`` (user key * items + item key), row times, packed values."""

    def __init__(self, codes: np.ndarray, ts_us: np.ndarray, values: np.ndarray) -> None:
        self.codes, self.ts_us, self.values = codes, ts_us, values


def _unpack(path: Path, keys: KeySpace) -> _Pairs | None:
    """The previous ``user_item_latest`` as pair rows (``None``: an id outside ``keys``)."""
    n_items = max(len(keys.items), 1)
    codes, values = [], []
    for batch in pq.ParquetFile(path).iter_batches(columns=["user_id", "ui_items", "ui_values"]):
        items = batch.column("ui_items")
        users = keys.user_keys(batch.column("user_id"))
        item_keys = keys.item_keys(pc.list_flatten(items))
        if (users < 0).any() or (item_keys < 0).any():
            return None
        lengths = pc.list_value_length(items).to_numpy(zero_copy_only=False)
        codes.append(np.repeat(users, lengths) * n_items + item_keys)
        flat = pc.list_flatten(batch.column("ui_values")).to_numpy(zero_copy_only=False)
        values.append(flat.reshape(-1, WIDTH))
    if not codes:
        return _Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, WIDTH)))
    matrix = np.concatenate(values)
    ts_us = np.rint(matrix[:, 0] * 1e6).astype(np.int64)  # value 0: the row's epoch seconds
    return _Pairs(np.concatenate(codes), ts_us, matrix)


def _new_days(folder: Path, keys: KeySpace, first_day: int) -> _Pairs | None:
    """Each pair's last row in the ``user_item`` days from ``first_day`` on (days in order,
    each in (user, item, stamp) order; ``None``: an id outside ``keys``)."""
    files = [p for p in day_parts.table_files(folder) if day_parts.part_day(p) >= first_day]
    tables = [t for t in (pq.read_table(p, columns=_COLUMNS) for p in files) if t.num_rows]
    if not tables:
        return _Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, WIDTH)))
    user_item = pa.concat_tables(tables)
    del tables
    users, items = keys.user_keys(user_item["user_id"]), keys.item_keys(user_item["item_id"])
    if (users < 0).any() or (items < 0).any():
        return None
    code = users * max(len(keys.items), 1) + items
    del users, items
    codes, first_reversed = np.unique(code[::-1], return_index=True)
    rows = len(code) - 1 - first_reversed
    ts_us = user_item["event_timestamp"].combine_chunks().cast(pa.int64()).to_numpy()[rows]
    return _Pairs(codes, ts_us, pair_values(user_item, rows))


def updated_latest(
    previous: Path,
    folder: Path,
    keys: KeySpace,
    since: int,
    horizon: int,
    previous_horizon: int,
    created_us: int,
) -> list[pa.Table] | None:
    """``user_item_latest`` from the ``previous`` one (built at ``previous_horizon``) and
    the ``user_item`` days of ``folder`` from the cut's day on; ``None`` where it cannot
    be (the module docstring), and the caller recomputes it."""
    if horizon < previous_horizon:
        log.info("features: user_item_latest: the horizon moved back")
        return None
    old = _unpack(previous, keys)
    first_day = day_parts.first_open_day(since)
    new = None if old is None else _new_days(folder, keys, first_day)
    if old is None or new is None:
        log.info("features: user_item_latest: an id outside this build's key space")
        return None
    low_us = horizon * US_PER_HOUR - HISTORY_TTL_S * 1e6
    replaced = np.isin(old.codes, new.codes, assume_unique=True)
    old_days = (old.ts_us // US_PER_HOUR - 1) // 24
    lost = ~replaced & (old_days >= first_day) & (old.ts_us >= low_us)
    if lost.any():
        log.info("features: user_item_latest: %d pairs lost their rows after the cut", lost.sum())
        return None
    keep_old = np.flatnonzero(~replaced & (old.ts_us >= low_us))
    keep_new = np.flatnonzero(new.ts_us >= low_us)
    # one index over [old rows, new rows]; in (user key, item key) order, as latest_of
    source = np.concatenate([keep_old, keep_new + len(old.codes)])
    codes = np.concatenate([old.codes[keep_old], new.codes[keep_new]])
    order = np.argsort(codes, kind="stable")
    return _pack(codes[order], source[order], old, new, keys, created_us)


def _pack(
    codes: np.ndarray,
    source: np.ndarray,
    old: _Pairs,
    new: _Pairs,
    keys: KeySpace,
    created_us: int,
) -> list[pa.Table]:
    """Pack the sorted pairs ``codes`` (rows ``source`` of old then new), a slice of whole
    users at a time."""
    n_items = max(len(keys.items), 1)
    users = codes // n_items
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else users
    out, lo, n_old = [], 0, len(old.codes)
    while lo < len(codes):
        at = int(np.searchsorted(starts, lo + _SLICE_PAIRS))
        hi = int(starts[at]) if at < len(starts) else len(codes)
        rows = source[lo:hi]
        from_old = rows < n_old
        ts_us = np.empty(hi - lo, np.int64)
        values = np.empty((hi - lo, WIDTH), np.float64)
        ts_us[from_old], values[from_old] = old.ts_us[rows[from_old]], old.values[rows[from_old]]
        picked = rows[~from_old] - n_old
        ts_us[~from_old], values[~from_old] = new.ts_us[picked], new.values[picked]
        user_ids = keys.ids("user", users[lo:hi])
        item_ids = keys.ids("item", codes[lo:hi] % n_items)
        out.append(pack_pairs(user_ids, item_ids, ts_us, values, created_us))
        lo = hi
    return out


def publish_latest(
    folder: Path,
    dest: Path,
    keys: KeySpace,
    since: int | None,
    horizon: int,
    previous_horizon: int | None,
    created_us: int,
) -> list[pa.Table]:
    """The new ``user_item_latest`` (to be written at ``dest``): the previous one there
    updated (:func:`updated_latest`) when the build has a cut and it exists, else (or when
    it cannot be) recomputed from ``folder`` (``user_item``) within the ttl."""
    if since is not None and previous_horizon is not None and dest.is_file():
        latest = updated_latest(dest, folder, keys, since, horizon, previous_horizon, created_us)
        if latest is not None:
            log.info(
                "features: user_item_latest updated from the previous one and the days from %s",
                day_parts.part_name(day_parts.first_open_day(since)),
            )
            return latest
    log.info("features: user_item_latest recomputed from user_item within its ttl")
    return latest_of(folder, keys, horizon, created_us)
