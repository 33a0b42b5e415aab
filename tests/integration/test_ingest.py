"""Ingest end to end on a real local Ray: lake layout, dedupe, watermark, crash recovery."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel import lake
from flywheel.config import RaySettings, Settings
from flywheel.ingest import IngestSummary, InputFileError, ingest_events
from flywheel.ray_runtime import ensure_ray, shutdown_ray
from flywheel.schemas import EVENT_SCHEMA, ITEM_SCHEMA, QUARANTINE_SCHEMA

pytestmark = pytest.mark.integration

NOW = datetime(2024, 3, 10, tzinfo=UTC)
T0 = datetime(2024, 3, 1, 20, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def ray_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    ensure_ray(Settings(workspace=tmp_path_factory.mktemp("ray"), ray=RaySettings(num_cpus=2)))
    yield
    shutdown_ray()


@pytest.fixture
def settings(tmp_path: Path, ray_started: None) -> Settings:
    return Settings(workspace=tmp_path / "ws", ray=RaySettings(num_cpus=2, batch_size=1000))


def make_events(ids: range | list[int], hour_step: int = 5) -> list[dict[str, object]]:
    """Events ``e<i>`` spaced ``hour_step`` hours apart from T0, so they span several days."""
    return [
        {
            "event_id": f"e{i}",
            "user_id": i % 7,
            "item_id": 100 + i % 11,
            "event_type": ["view", "cart", "purchase", "click"][i % 4],
            "ts": (T0 + timedelta(hours=hour_step * i)).isoformat(),
            "session_id": f"s{i // 3}",
            "device": "web",
        }
        for i in ids
    ]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    names = EVENT_SCHEMA.names
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(names)] + [",".join(str(r[n]) for n in names) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{**r, "ts": datetime.fromisoformat(str(r["ts"]))} for r in rows])
    pq.write_table(table, path)
    return path


def lake_ids(settings: Settings) -> list[str]:
    return sorted(lake.read_lake_events(settings, columns=["event_id"])["event_id"].to_pylist())


def expected_partitions(rows: list[dict[str, object]]) -> set[str]:
    days = {datetime.fromisoformat(str(r["ts"])).astimezone(UTC).date() for r in rows}
    return {f"date={d.isoformat()}" for d in days}


def run(settings: Settings, paths: list[Path], **kw: object) -> IngestSummary:
    return ingest_events(settings, paths, now=NOW, **kw)  # type: ignore[arg-type]


def test_end_to_end_into_the_lake(settings: Settings, tmp_path: Path) -> None:
    rows = make_events(range(30))
    inbox = tmp_path / "inbox"
    write_jsonl(inbox / "a.jsonl", rows[:10])
    write_csv(inbox / "sub" / "b.csv", rows[10:20])
    write_parquet(inbox / "c.parquet", rows[20:])
    bad = [{**rows[0], "event_id": "bad1", "user_id": " "}, {**rows[1], "event_id": "bad2"}]
    bad[1]["ts"] = "2024-03-02 10:00:00"
    write_jsonl(inbox / "d.jsonl", bad)

    summary = run(settings, [inbox])

    assert (summary.files_read, summary.files_skipped) == (4, 0)
    assert (summary.rows_read, summary.accepted, summary.quarantined) == (32, 30, 2)
    assert summary.quarantine_reasons == {"user_id is missing": 1, "ts has no timezone": 1}
    assert lake_ids(settings) == sorted(str(r["event_id"]) for r in rows)
    dirs = {p.parent.name for p in lake.lake_files(settings)}
    assert dirs == expected_partitions(rows)
    assert summary.partitions_written == len(dirs)
    for f in lake.lake_files(settings):
        table = pq.read_table(f)
        assert table.schema.names == EVENT_SCHEMA.names
        stamps = table["ts"].to_pylist()
        assert {t.date().isoformat() for t in stamps} == {f.parent.name.removeprefix("date=")}
        assert stamps == sorted(stamps)
    got = {r["event_id"]: r for r in lake.read_lake_events(settings).to_pylist()}
    for r in rows:
        assert got[r["event_id"]]["ts"] == datetime.fromisoformat(str(r["ts"]))
        assert got[r["event_id"]]["user_id"] == str(r["user_id"])  # int in, decimal text out
    assert summary.quarantine_file is not None
    quarantine = pq.read_table(summary.quarantine_file)
    assert quarantine.schema == QUARANTINE_SCHEMA
    assert sorted(json.loads(r)["event_id"] for r in quarantine["row"].to_pylist()) == [
        "bad1",
        "bad2",
    ]
    assert not (settings.lake_dir / "_staging").exists() or not any(
        (settings.lake_dir / "_staging").iterdir()
    )


def test_dedupe_within_and_across_runs(settings: Settings, tmp_path: Path) -> None:
    rows = make_events(range(12))
    first = write_jsonl(tmp_path / "in" / "one.jsonl", rows[:8] + rows[2:4])
    dup_csv = write_csv(tmp_path / "in" / "two.csv", rows[6:8])
    s1 = run(settings, [first, dup_csv])
    assert (s1.accepted, s1.duplicates_dropped) == (8, 4)
    s2 = run(settings, [write_parquet(tmp_path / "later" / "three.parquet", rows[4:])])
    assert (s2.accepted, s2.duplicates_dropped, s2.files_read) == (4, 4, 1)
    assert lake_ids(settings) == sorted(str(r["event_id"]) for r in rows)


def test_rerun_is_idempotent_and_watermark_advances(settings: Settings, tmp_path: Path) -> None:
    rows = make_events(range(10))
    path = write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    s1 = run(settings, [tmp_path / "in"])
    files_before = lake.lake_files(settings)
    top = max(datetime.fromisoformat(str(r["ts"])) for r in rows)
    assert s1.watermark is not None and datetime.fromisoformat(s1.watermark) == top
    state = lake.read_state(settings)
    recorded = state["events"]["files"][str(path.resolve())]
    assert recorded["size"] == path.stat().st_size

    s2 = run(settings, [tmp_path / "in"])
    assert (s2.files_read, s2.files_skipped, s2.accepted, s2.rows_read) == (0, 1, 0, 0)
    assert lake.lake_files(settings) == files_before
    assert s2.watermark == s1.watermark

    more = make_events(range(10, 14))
    write_csv(tmp_path / "in" / "b.csv", more)
    s3 = run(settings, [tmp_path / "in"])
    assert (s3.files_read, s3.files_skipped, s3.accepted) == (1, 1, 4)
    top3 = max(datetime.fromisoformat(str(r["ts"])) for r in more)
    assert s3.watermark is not None and datetime.fromisoformat(s3.watermark) == top3
    assert datetime.fromisoformat(lake.read_state(settings)["events"]["watermark"]) == top3


def test_changed_file_appends_only_its_new_rows(settings: Settings, tmp_path: Path) -> None:
    rows = make_events(range(9))
    path = write_jsonl(tmp_path / "log.jsonl", rows[:5])
    run(settings, [path])
    write_jsonl(path, rows)  # the log grew
    s2 = run(settings, [path])
    assert (s2.files_read, s2.accepted, s2.duplicates_dropped) == (1, 4, 5)
    ids = lake_ids(settings)
    assert ids == sorted(str(r["event_id"]) for r in rows)
    assert len(ids) == len(set(ids))


def test_missing_input_is_a_clear_error_and_writes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    good = write_jsonl(tmp_path / "a.jsonl", make_events(range(3)))
    with pytest.raises(InputFileError, match=r"does-not-exist\.csv"):
        run(settings, [good, tmp_path / "does-not-exist.csv"])
    with pytest.raises(InputFileError, match=r"items\.csv"):
        run(settings, [good], items=tmp_path / "items.csv")
    assert not settings.workspace.exists()


def test_unreadable_file_midway_leaves_lake_and_state_untouched(
    settings: Settings, tmp_path: Path
) -> None:
    run(settings, [write_jsonl(tmp_path / "a.jsonl", make_events(range(3)))])
    before = (lake.lake_files(settings), lake.read_state(settings))
    broken = tmp_path / "b.jsonl"
    broken.write_bytes(b'{"event_id": "x"}\n\xff\xfe not utf-8\n')
    with pytest.raises(InputFileError, match=r"b\.jsonl"):
        run(settings, [broken, write_jsonl(tmp_path / "c.jsonl", make_events(range(5, 8)))])
    assert (lake.lake_files(settings), lake.read_state(settings)) == before


def test_crash_before_state_then_rerun_keeps_one_copy(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = make_events(range(20))
    inbox = tmp_path / "inbox"
    write_jsonl(inbox / "a.jsonl", rows[:12])
    write_parquet(inbox / "b.parquet", rows[8:])

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated crash before the state was written")

    monkeypatch.setattr(lake, "write_state", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(settings, [inbox])
    assert lake_ids(settings) == sorted(str(r["event_id"]) for r in rows)  # parts committed
    assert not lake.state_path(settings).exists()
    monkeypatch.undo()

    again = run(settings, [inbox])
    assert (again.files_read, again.accepted, again.duplicates_dropped) == (2, 0, 24)
    ids = lake_ids(settings)
    assert ids == sorted(str(r["event_id"]) for r in rows)
    assert lake.read_state(settings)["events"]["watermark"] is not None
    assert run(settings, [inbox]).files_skipped == 2


def test_items_ingested_with_events(settings: Settings, tmp_path: Path) -> None:
    catalog = tmp_path / "items.csv"
    catalog.write_text(
        "item_id,category,price,created_ts\n"
        "1,shoes,10.5,2024-01-01T00:00:00Z\n"
        "2,hats,-1,2024-01-01T00:00:00Z\n"
        "3,bags,30,2024-01-02T00:00:00+02:00\n"
    )
    summary = run(
        settings, [write_jsonl(tmp_path / "e.jsonl", make_events(range(2)))], items=catalog
    )
    assert summary.items is not None
    assert (summary.items.accepted, summary.items.quarantined, summary.items.new_items) == (2, 1, 2)
    items = pq.read_table(settings.items_path)
    assert items.schema == ITEM_SCHEMA
    assert items["item_id"].to_pylist() == ["1", "3"]
    assert items["created_ts"][1].as_py() == datetime(2024, 1, 1, 22, tzinfo=UTC)
    assert summary.items.quarantine_file is not None
    reasons = pq.read_table(summary.items.quarantine_file)["reason"].to_pylist()
    assert reasons == ["price is not a positive finite number: '-1'"]


def test_string_ids_round_trip_exactly(settings: Settings, tmp_path: Path) -> None:
    """Lake and catalog hold the ids as sent (trimmed); integer-typed columns as decimal text."""
    uid = "3f1c0c8e-5b7a-4c3e-9d2a-0f6b1e2d3c4b"
    rows = [
        {**r, "user_id": u, "item_id": i}
        for r, u, i in zip(
            make_events(range(4)),
            ["u00042", uid, " u00042 ", "x" * 128],
            ["sku-00017", "sku-00017", uid, "042"],
            strict=True,
        )
    ]
    write_csv(tmp_path / "in" / "a.csv", rows)
    typed = pa.table(
        {
            **{k: [v] for k, v in make_events([9])[0].items() if k not in ("user_id", "ts")},
            "user_id": pa.array([42], pa.int64()),
            "ts": pa.array([T0], pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(typed, tmp_path / "in" / "b.parquet")
    catalog = tmp_path / "items.jsonl"
    write_jsonl(
        catalog,
        [
            {"item_id": i, "category": "c", "price": 1.5, "created_ts": "2024-01-01T00:00:00Z"}
            for i in ["sku-00017", uid, 42]
        ],
    )
    summary = run(settings, [tmp_path / "in"], items=catalog)
    assert (summary.accepted, summary.quarantined) == (5, 0)
    got = {
        r["event_id"]: (r["user_id"], r["item_id"])
        for r in lake.read_lake_events(settings).to_pylist()
    }
    assert got == {
        "e0": ("u00042", "sku-00017"),
        "e1": (uid, "sku-00017"),
        "e2": ("u00042", uid),
        "e3": ("x" * 128, "042"),
        "e9": ("42", "109"),
    }
    assert lake.read_lake_events(settings).schema.field("user_id").type == pa.string()
    assert pq.read_table(settings.items_path)["item_id"].to_pylist() == sorted(
        ["sku-00017", uid, "42"]
    )
