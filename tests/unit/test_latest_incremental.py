"""user_item_latest of an incremental build: the previous table updated with the new days
equals the full recomputation (``latest_of``) of the same ``user_item`` folder, value for
value (bit for bit, NaN where null), or the update declines and the full one runs.

Real day folders on disk (``day_parts.write_day_parts``), real key spaces; no mocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flywheel.features import day_parts
from flywheel.features.keys import KeySpace
from flywheel.features.latest_incr import publish_latest, updated_latest
from flywheel.features.partials import US_PER_HOUR
from flywheel.features.publish import latest_of, write_atomic
from flywheel.packed_history import HISTORY_FEATURES
from flywheel.schemas import USER_ITEM_LATEST_SCHEMA, USER_ITEM_SCHEMA

DAY = 20_120  # an epoch day (2025-02-02)
H0 = 24 * DAY + 12  # the previous build's horizon: mid-day, so its day is the open one
H1 = H0 + 24  # this build's horizon
TTL_H = 30 * 24
CREATED_OLD, CREATED_NEW = 11, 22


def _row(user: str, item: str, hour: int, seed: int) -> dict:
    """A user_item row stamped at hour end ``hour``; ``ui_last_cart_unix`` null on odd
    seeds, ``ui_last_purchase_unix`` always null (NaN when packed)."""
    row: dict = {"user_id": user, "item_id": item}
    row["event_timestamp"] = hour * US_PER_HOUR
    row["created_timestamp"] = hour * US_PER_HOUR
    for j, name in enumerate(HISTORY_FEATURES):
        row[name] = seed * 100 + j
    row["ui_last_view_unix"] = hour * 3600.0 - 17.25 * seed
    row["ui_last_cart_unix"] = None if seed % 2 else hour * 3600.0 - 3.5
    row["ui_last_purchase_unix"] = None
    return row


def _folder(path: Path, rows: list[dict]) -> Path:
    """A user_item day folder of ``rows``, each day file in (user, item, stamp) order."""
    table = pa.Table.from_pylist(rows, schema=USER_ITEM_SCHEMA)
    table = day_parts.in_key_order(table, "user_item")
    day_parts.write_day_parts([table], USER_ITEM_SCHEMA, path)
    return path


def _keys(rows: list[dict]) -> KeySpace:
    users = sorted({r["user_id"] for r in rows})
    items = sorted({r["item_id"] for r in rows})
    return KeySpace(pa.array(users, pa.string()), pa.array(items, pa.string()))


def _previous(tmp: Path, rows: list[dict], horizon: int = H0) -> Path:
    """The previous build's user_item_latest (the full computation at ``horizon``)."""
    folder = _folder(tmp / "old" / "user_item.parquet", rows)
    dest = tmp / "user_item_latest.parquet"
    parts = latest_of(folder, _keys(rows), horizon, CREATED_OLD)
    write_atomic(parts or [USER_ITEM_LATEST_SCHEMA.empty_table()], USER_ITEM_LATEST_SCHEMA, dest)
    return dest


def _table(parts: list[pa.Table]) -> pa.Table:
    return pa.concat_tables([USER_ITEM_LATEST_SCHEMA.empty_table(), *parts])


def _assert_same(got: list[pa.Table], want: list[pa.Table]) -> None:
    a, b = _table(got), _table(want)
    assert a["user_id"].to_pylist() == b["user_id"].to_pylist()
    assert a["event_timestamp"].to_pylist() == b["event_timestamp"].to_pylist()
    assert a["ui_items"].to_pylist() == b["ui_items"].to_pylist()
    va = a["ui_values"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vb = b["ui_values"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(va.view(np.uint64), vb.view(np.uint64))  # bit for bit
    assert a["ui_items"].combine_chunks().offsets.equals(b["ui_items"].combine_chunks().offsets)


OLD = [
    _row("u1", "a", H0 - 100, 1),  # a's latest moves to a new day
    _row("u1", "b", H1 - TTL_H - 30, 2),
    _row("u1", "b", H1 - TTL_H - 1, 3),  # fresh at H0, out of the ttl at H1
    _row("u1", "c", H0 - 3, 4),  # in the open day, at or before the cut: kept as it is
    _row("u2", "a", H0 - 50, 5),  # unchanged
    _row("u3", "x", H1 - TTL_H - 10, 6),  # u3: every pair expires at H1
    _row("u3", "y", H1 - TTL_H - 2, 7),
    _row("u5", "z", H0 - TTL_H - 5, 8),  # expired already at H0
    _row("10", "a", H0 - 1, 9),  # ids whose sort order differs from their numbers'
    _row("9", "a", H0 - 400, 10),
    _row("9", "c", H0 - 2, 11),
]
NEW_ROWS = [
    _row("u1", "a", H0 + 2, 12),
    _row("u1", "a", H1 - 2, 13),
    _row("u4", "a", H1 - 1, 14),  # a new user
    _row("u2", "new-item", H1 - 5, 15),
    _row("9", "c", H0 + 5, 16),
]


def test_update_equals_the_full_computation(tmp_path: Path) -> None:
    previous = _previous(tmp_path, OLD)
    new_rows = OLD + NEW_ROWS  # the cut at H0: every old row kept
    folder = _folder(tmp_path / "new" / "user_item.parquet", new_rows)
    keys = _keys(new_rows)
    got = updated_latest(previous, folder, keys, H0, H1, H0, CREATED_NEW)
    assert got is not None, "the update declined: nothing was removed"
    want = latest_of(folder, keys, H1, CREATED_NEW)
    _assert_same(got, want)
    table = _table(got)
    assert "u3" not in table["user_id"].to_pylist()  # all its pairs expired
    assert "u4" in table["user_id"].to_pylist()
    u1 = table.filter(pc.equal(table["user_id"], "u1")).to_pylist()[0]
    assert u1["ui_items"] == ["a", "c"]  # b dropped out of the ttl
    assert u1["ui_values"][0] == (H1 - 2) * 3600.0  # a's latest from the new day
    assert set(table["created_timestamp"].cast(pa.int64()).to_pylist()) == {CREATED_NEW}


def test_removed_rows_fall_back_to_the_full_computation(tmp_path: Path) -> None:
    old = [*OLD, _row("u2", "d", H0 - 200, 17), _row("u2", "d", H0 - 2, 18)]
    previous = _previous(tmp_path, old)
    since = H0 - 6  # a re-ingest of the last hours removed (u2, d)'s row at H0 - 2
    removed = ("u2", "d")
    kept = [
        r
        for r in old
        if (r["user_id"], r["item_id"]) != removed or r["event_timestamp"] <= since * US_PER_HOUR
    ]
    new_rows = kept + NEW_ROWS
    folder = _folder(tmp_path / "new" / "user_item.parquet", new_rows)
    keys = _keys(new_rows)
    assert updated_latest(previous, folder, keys, since, H1, H0, CREATED_NEW) is None
    got = publish_latest(folder, previous, keys, since, H1, H0, CREATED_NEW)
    want = latest_of(folder, keys, H1, CREATED_NEW)
    _assert_same(got, want)
    u2 = _table(got).filter(pc.equal(_table(got)["user_id"], "u2")).to_pylist()[0]
    d = u2["ui_items"].index("d")
    assert u2["ui_values"][13 * d] == (H0 - 200) * 3600.0  # the older row, not the removed


def test_horizon_moving_back_falls_back(tmp_path: Path) -> None:
    previous = _previous(tmp_path, OLD, horizon=H1)
    folder = _folder(tmp_path / "new" / "user_item.parquet", OLD)
    keys = _keys(OLD)
    assert updated_latest(previous, folder, keys, H0, H0, H1, CREATED_NEW) is None
    got = publish_latest(folder, previous, keys, H0, H0, H1, CREATED_NEW)
    _assert_same(got, latest_of(folder, keys, H0, CREATED_NEW))


def test_no_cut_or_no_previous_table_is_the_full_computation(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "user_item.parquet", OLD + NEW_ROWS)
    keys = _keys(OLD + NEW_ROWS)
    want = latest_of(folder, keys, H1, CREATED_NEW)
    missing = tmp_path / "none.parquet"
    _assert_same(publish_latest(folder, missing, keys, H0, H1, H0, CREATED_NEW), want)
    previous = _previous(tmp_path, OLD)
    _assert_same(publish_latest(folder, previous, keys, None, H1, None, CREATED_NEW), want)


@pytest.mark.parametrize("seed", range(12))
def test_random_lakes_match_the_full_computation(tmp_path: Path, seed: int) -> None:
    """Random histories and cuts (some rows after the cut removed, some added): the result
    equals the full computation whichever path ran, and the update runs when nothing of a
    fresh pair after the cut was lost."""
    rng = np.random.default_rng(seed)
    users = [f"u{i}" for i in range(int(rng.integers(3, 12)))] + ["10", "9", "Ω"]
    items = [f"i{i}" for i in range(int(rng.integers(2, 8)))] + ["77"]
    pairs = {(str(rng.choice(users)), str(rng.choice(items))) for _ in range(40)}
    old = [
        _row(u, i, int(h), int(rng.integers(0, 50)))
        for u, i in sorted(pairs)
        for h in np.unique(rng.integers(H0 - 45 * 24, H0 + 1, int(rng.integers(1, 6))))
    ]
    previous = _previous(tmp_path, old)
    since = int(H0 - rng.integers(0, 40))
    removal = bool(rng.integers(0, 2))
    cut_us = since * US_PER_HOUR
    kept = [r for r in old if r["event_timestamp"] <= cut_us or (not removal)]
    added = [
        _row(str(rng.choice(users)), str(rng.choice(items)), int(h), int(rng.integers(0, 50)))
        for h in rng.integers(since + 1, H1 + 1, 15)
    ]
    seen = {(r["user_id"], r["item_id"], r["event_timestamp"]) for r in kept}
    added = [r for r in added if (r["user_id"], r["item_id"], r["event_timestamp"]) not in seen]
    new_rows = kept + added
    folder = _folder(tmp_path / "new" / "user_item.parquet", new_rows)
    keys = _keys(new_rows + old)
    got = publish_latest(folder, previous, keys, since, H1, H0, CREATED_NEW)
    _assert_same(got, latest_of(folder, keys, H1, CREATED_NEW))
    if not removal:
        assert updated_latest(previous, folder, keys, since, H1, H0, CREATED_NEW) is not None
