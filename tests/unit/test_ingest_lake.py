"""Lake layout helpers, input discovery, watermark state and the item upsert (no Ray)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel import lake
from flywheel.config import Settings
from flywheel.ingest import (
    EVENTS,
    InputFileError,
    commit_partition,
    expand_inputs,
    stage_file,
    upsert_items,
)
from flywheel.schemas import EVENT_SCHEMA, ITEM_SCHEMA

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def events(ids: list[str], hours: list[int]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "event_id": ids,
            "user_id": [f"u{i}" for i in range(n)],
            "item_id": ["sku-1"] * n,
            "event_type": ["view"] * n,
            "ts": pa.array([T0 + timedelta(hours=h) for h in hours], pa.timestamp("us", tz="UTC")),
            "session_id": ["s"] * n,
            "device": ["web"] * n,
        },
        schema=EVENT_SCHEMA,
    )


def put_partition(settings: Settings, day: date, table: pa.Table) -> Path:
    return lake.commit_part(table, settings.events_dir / lake.partition_name(day))


def test_lake_files_and_read_prune_by_partition(tmp_path: Path) -> None:
    s = Settings(workspace=tmp_path)
    assert lake.lake_files(s) == []
    assert lake.read_lake_events(s).schema == EVENT_SCHEMA
    f1 = put_partition(s, date(2024, 3, 1), events(["a", "b"], [1, 23]))
    f2 = put_partition(s, date(2024, 3, 2), events(["c"], [25]))
    f3 = put_partition(s, date(2024, 3, 3), events(["d"], [50]))
    (s.events_dir / "date=2024-03-02" / ".part-x.parquet.tmp").write_bytes(b"junk")
    (s.events_dir / "_staging").mkdir()
    assert lake.lake_files(s) == [f1, f2, f3]
    assert lake.lake_files(s, start=date(2024, 3, 2)) == [f2, f3]
    assert lake.lake_files(s, end="2024-03-02") == [f1]  # end is exclusive
    assert lake.lake_files(s, start=T0 + timedelta(hours=30), end=T0 + timedelta(hours=49)) == [
        f2,
        f3,
    ]
    got = lake.read_lake_events(s, columns=["event_id"], start=T0 + timedelta(hours=23))
    assert got.column_names == ["event_id"]
    assert sorted(got.column("event_id").to_pylist()) == ["b", "c", "d"]
    window = lake.read_lake_events(s, start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=25))
    assert sorted(window.column("event_id").to_pylist()) == ["a", "b"]


def test_read_lake_events_rejects_bad_arguments(tmp_path: Path) -> None:
    s = Settings(workspace=tmp_path)
    with pytest.raises(ValueError, match="not event columns"):
        lake.read_lake_events(s, columns=["nope"])
    with pytest.raises(ValueError, match="naive"):
        lake.lake_files(s, start=datetime(2024, 1, 1))


def test_state_round_trip_is_atomic(tmp_path: Path) -> None:
    s = Settings(workspace=tmp_path)
    assert lake.read_state(s) == {}
    lake.write_state(s, {"events": {"watermark": "2024-03-01T00:00:00+00:00"}})
    assert lake.read_state(s)["events"]["watermark"] == "2024-03-01T00:00:00+00:00"
    assert [p.name for p in s.state_dir.iterdir()] == ["ingest_state.json"]
    lake.state_path(s).write_text("[1]")
    with pytest.raises(ValueError, match=r"ingest_state\.json"):
        lake.read_state(s)


def test_expand_inputs(tmp_path: Path) -> None:
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for name in ["b/deep/z.csv", "b/a.jsonl", "b/c.parquet", "b/notes.txt", "b/x.json"]:
        (tmp_path / name).write_text("")
    pq.write_table(events(["a"], [0]), tmp_path / "b" / "c.parquet")
    got = expand_inputs([tmp_path / "b"])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == [
        "b/a.jsonl",
        "b/c.parquet",
        "b/deep/z.csv",
        "b/x.json",
    ]
    with pytest.raises(InputFileError, match=r"nope\.csv"):
        expand_inputs([tmp_path / "b", tmp_path / "nope.csv"])
    with pytest.raises(InputFileError, match=r"notes\.txt"):
        expand_inputs([tmp_path / "b" / "notes.txt"])
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    with pytest.raises(InputFileError, match=r"bad\.parquet"):
        expand_inputs([tmp_path / "bad.parquet"])


def test_stage_then_commit_dedupes_within_run_and_against_lake(tmp_path: Path) -> None:
    """The two Ray task bodies, called directly."""
    s = Settings(workspace=tmp_path)
    put_partition(s, date(2024, 3, 1), events(["old"], [2]))
    first = events(["old", "a", "b", "a"], [2, 3, 4, 3])
    second = events(["b", "c"], [4, 30])
    staging = tmp_path / "staging"
    for i, table in enumerate([first, second]):
        pq.write_table(table, tmp_path / f"in{i}.parquet")
        out = stage_file(
            {
                "path": str(tmp_path / f"in{i}.parquet"),
                "file_idx": i,
                "kind": "events",
                "staging": str(staging),
                "now": "2024-03-05T00:00:00+00:00",
                "max_future_skew_s": 0,
                "batch_size": 1000,
            }
        )
        assert (out["rows"], out["valid"]) == (table.num_rows, table.num_rows)
    parts = sorted(p.name for p in staging.iterdir())
    assert parts == ["date=2024-03-01", "date=2024-03-02"]
    results = [
        commit_partition(
            {"kind": "events", "partition": p, "staging": str(staging), "target": str(s.events_dir)}
        )
        for p in parts
    ]
    assert [(r["accepted"], r["dup_run"], r["dup_lake"]) for r in results] == [(2, 2, 1), (1, 0, 0)]
    assert results[1]["max_ts"] == (T0 + timedelta(hours=30)).isoformat()
    lake_ids = lake.read_lake_events(s, columns=["event_id"]).column("event_id").to_pylist()
    assert sorted(lake_ids) == ["a", "b", "c", "old"]
    for f in lake.lake_files(s):
        assert pq.read_schema(f).names == EVENT_SCHEMA.names


def test_events_kind_covers_its_contract() -> None:
    assert list(EVENTS.checks) == EVENT_SCHEMA.names


def items(rows: list[tuple[int, str, float, int]]) -> pa.Table:
    return pa.table(
        {
            "item_id": [f"sku-{r[0]}" for r in rows],
            "category": [r[1] for r in rows],
            "price": [r[2] for r in rows],
            "created_ts": pa.array(
                [T0 + timedelta(days=r[3]) for r in rows], pa.timestamp("us", tz="UTC")
            ),
        },
        schema=ITEM_SCHEMA,
    )


def test_upsert_items_latest_created_wins_ties_go_to_new_ingest() -> None:
    catalog = items([(1, "a", 1.0, 5), (2, "b", 2.0, 5), (3, "c", 3.0, 5)])
    incoming = items([(1, "a2", 9.0, 4), (2, "b2", 8.0, 5), (3, "c2", 7.0, 6), (4, "d", 1.5, 0)])
    merged, new, updated = upsert_items(catalog, incoming)
    assert merged.schema == ITEM_SCHEMA
    by_id = {r["item_id"]: (r["category"], r["price"]) for r in merged.to_pylist()}
    assert by_id == {
        "sku-1": ("a", 1.0),
        "sku-2": ("b2", 8.0),
        "sku-3": ("c2", 7.0),
        "sku-4": ("d", 1.5),
    }
    assert (new, updated) == (1, 2)
    again, new2, updated2 = upsert_items(merged, incoming)
    assert again.equals(merged)
    assert (new2, updated2) == (0, 0)


def test_upsert_items_within_one_file_later_row_wins() -> None:
    merged, new, _ = upsert_items(None, items([(1, "x", 1.0, 3), (1, "y", 2.0, 3)]))
    assert merged.column("category").to_pylist() == ["y"]
    assert new == 1


def test_state_file_is_json(tmp_path: Path) -> None:
    s = Settings(workspace=tmp_path)
    lake.write_state(s, {"a": 1})
    assert json.loads(lake.state_path(s).read_text()) == {"a": 1}
