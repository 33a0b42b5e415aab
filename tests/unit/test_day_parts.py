"""Day folders of the per-entity feature tables: which day a row belongs to, and the
incremental publish (older days linked, the cut's day merged, later days new)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.features import day_parts
from flywheel.features.keys import KeySpace
from flywheel.features.partials import US_PER_HOUR
from flywheel.features.publish import publish_days
from flywheel.schemas import USER_ACTIVITY_30D_SCHEMA

SCHEMA = USER_ACTIVITY_30D_SCHEMA
DAY0 = datetime(2025, 3, 1, tzinfo=UTC)
H0 = int(DAY0.timestamp()) // 3600  # epoch hour of DAY0 00:00


def _rows(pairs: list[tuple[str, int]], views: int = 1) -> pa.Table:
    """Rows (user, stamp hour) sorted as published: by user, then stamp."""
    pairs = sorted(pairs)
    stamps = [DAY0 + timedelta(hours=h) for _, h in pairs]
    data = {
        "user_id": [u for u, _ in pairs],
        "event_timestamp": stamps,
        "created_timestamp": stamps,
    }
    for name in SCHEMA.names[3:]:
        data[name] = [views] * len(pairs)
    return pa.Table.from_pydict(data, schema=SCHEMA)


def test_a_row_belongs_to_the_day_of_the_hour_it_closes() -> None:
    table = _rows([("a", 1), ("a", 24), ("a", 25), ("b", 48)])
    days = day_parts.row_days(table) - (H0 // 24)
    assert days.tolist() == [0, 0, 1, 1]  # stamp 24:00 closes 23:00-24:00 of day 0
    assert day_parts.first_open_day(H0 + 24) == H0 // 24 + 1  # all of day 0 is kept
    assert day_parts.first_open_day(H0 + 23) == H0 // 24  # day 0's last hour is not
    name = day_parts.part_name(H0 // 24)
    assert name == "part-2025-03-01.parquet"
    assert day_parts.part_day(Path(name)) == H0 // 24


def test_write_day_parts_splits_by_day_keeping_order(tmp_path: Path) -> None:
    table = _rows([("a", 3), ("a", 30), ("b", 5), ("b", 50), ("c", 29)])
    dest = tmp_path / "user_activity_30d.parquet"
    assert day_parts.write_day_parts([table.slice(0, 2), table.slice(2)], SCHEMA, dest) == 5
    files = day_parts.table_files(dest)
    assert [f.name for f in files] == [
        "part-2025-03-01.parquet",
        "part-2025-03-02.parquet",
        "part-2025-03-03.parquet",
    ]
    assert pq.read_table(files[0])["user_id"].to_pylist() == ["a", "b"]
    assert pq.read_table(files[1])["user_id"].to_pylist() == ["a", "c"]
    # an empty table is one empty file: readers still find the schema
    empty = tmp_path / "empty.parquet"
    day_parts.write_day_parts([], SCHEMA, empty)
    assert pq.read_table(empty).schema.equals(SCHEMA)
    assert pq.read_table(empty).num_rows == 0


def test_publish_days_links_old_days_and_merges_the_cut(tmp_path: Path) -> None:
    keys = KeySpace(pa.array(["a", "b", "c"]), pa.array([], pa.string()))
    old = _rows([("a", 3), ("b", 5), ("a", 30), ("c", 40), ("b", 44)])
    dest = tmp_path / "user_activity_30d.parquet"
    day_parts.write_day_parts([old], SCHEMA, dest)
    first = {p.name: p.stat().st_ino for p in day_parts.table_files(dest)}
    since = H0 + 40  # rows stamped after hour 40 of the lake are recomputed
    new = _rows([("a", 45), ("b", 41), ("c", 50)], views=9)
    rows = publish_days(dest, SCHEMA, new, since, "user_activity_30d", keys, ())
    files = day_parts.table_files(dest)
    assert rows == sum(pq.read_metadata(f).num_rows for f in files) == 7
    assert files[0].stat().st_ino == first["part-2025-03-01.parquet"]  # linked, not rewritten
    day1 = pq.read_table(files[1])
    # kept (a@30, c@40) and new (a@45, b@41) rows, by user then stamp; b@44 dropped
    assert day1["user_id"].to_pylist() == ["a", "a", "b", "c"]
    assert day1["views_30d"].to_pylist() == [1, 9, 9, 1]
    hours = (day1["event_timestamp"].cast(pa.int64()).to_numpy() // US_PER_HOUR - H0).tolist()
    assert hours == [30, 45, 41, 40]
    assert pq.read_table(files[2])["user_id"].to_pylist() == ["c"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_a_failed_publish_keeps_the_published_days(tmp_path: Path) -> None:
    keys = KeySpace(pa.array(["a"]), pa.array([], pa.string()))
    dest = tmp_path / "user_activity_30d.parquet"
    day_parts.write_day_parts([_rows([("a", 3), ("a", 30)])], SCHEMA, dest)
    before = {p.name: p.read_bytes() for p in day_parts.table_files(dest)}
    bad = _rows([("zz", 35)])  # an id outside the key space
    with pytest.raises(ValueError, match="key space"):
        publish_days(dest, SCHEMA, bad, H0 + 32, "user_activity_30d", keys, ())
    assert {p.name: p.read_bytes() for p in day_parts.table_files(dest)} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert np.array_equal(pq.read_table(dest)["views_30d"].to_numpy(), np.array([1, 1]))


def test_a_folder_is_replaced_in_one_step_and_leftovers_go(tmp_path: Path) -> None:
    dest = tmp_path / "user_activity_30d.parquet"
    day_parts.write_day_parts([_rows([("a", 3)])], SCHEMA, dest)
    old_inode = dest.stat().st_ino
    day_parts.write_day_parts([_rows([("b", 30)])], SCHEMA, dest)
    assert dest.stat().st_ino != old_inode  # another folder under the same name
    assert pq.read_table(dest)["user_id"].to_pylist() == ["b"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # a crash's hidden folders are dropped, the table and other files are not
    (tmp_path / ".user_item.parquet.abc.new").mkdir()
    (tmp_path / ".user_item.parquet.def.old").mkdir()
    (tmp_path / ".keep.tmp").touch()
    assert day_parts.drop_leftovers(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep.tmp", dest.name]


def test_a_single_file_table_becomes_a_folder(tmp_path: Path) -> None:
    dest = tmp_path / "user_activity_30d.parquet"
    pq.write_table(_rows([("a", 3)]), dest)  # an older version's layout
    day_parts.write_day_parts([_rows([("b", 30)])], SCHEMA, dest)
    assert dest.is_dir()
    assert [f.name for f in day_parts.table_files(dest)] == ["part-2025-03-02.parquet"]


def test_only_entities_with_rows_after_the_cut_are_recomputed() -> None:
    from flywheel.features.incremental import touched
    from flywheel.features.partials import KIND_ITEM, KIND_USER, KIND_USER_ITEM_VIEW
    from flywheel.features.windows import WINDOW_HOURS

    assert sorted(set(WINDOW_HOURS.values())) == [1, 24, 168, 720]
    since, horizon = 1000, 1024
    rows = [  # (kind, entity, hour)
        (KIND_USER, 0, 1010),  # active after the cut
        (KIND_USER, 1, 980),  # leaves its 24 h window at 1005
        (KIND_USER, 2, 900),  # leaves windows at 925, 1069 (after the horizon), 1621
        (KIND_USER, 3, 831),  # leaves its 7 d window at 1000: at the cut, not after it
        (KIND_USER, 4, 832),  # ... at 1001
        (KIND_USER, 5, 900),
        (KIND_USER_ITEM_VIEW, 5, 1012),  # user 5 through one of its pairs
        (KIND_ITEM, 2, 290),  # leaves its 30 d window at 1011 (items: their own keys)
        (KIND_ITEM, 1, 900),
        (KIND_ITEM, 0, 1000),
    ]
    cols = {
        "kind": np.array([k for k, _, _ in rows], np.int8),
        "entity": np.array([e for _, e, _ in rows], np.int32),
        "hour": np.array([h for _, _, h in rows], np.int32),
        "views": np.arange(len(rows), dtype=np.int64),
    }
    out = touched(cols, since, horizon)
    got = sorted(
        zip(out["kind"].tolist(), out["entity"].tolist(), out["hour"].tolist(), strict=True)
    )
    want = [r for r in rows if (r[0] == KIND_ITEM and r[1] in (0, 2))]
    want += [r for r in rows if r[0] != KIND_ITEM and r[1] in (0, 1, 4, 5)]
    assert got == sorted(want)
    assert out["views"].tolist() == [i for i, r in enumerate(rows) if r in want]
