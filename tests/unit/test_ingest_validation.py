"""Row validation and input parsing for ingest: pure functions, no Ray."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.ingest import (
    EVENTS,
    ITEMS,
    CheckContext,
    InputFileError,
    read_raw,
    validate_table,
)
from flywheel.schemas import EVENT_SCHEMA, ITEM_SCHEMA, QUARANTINE_SCHEMA

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
CTX = CheckContext(now=NOW, max_future_skew_s=3600)


def event(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "event_id": "e1",
        "user_id": "7",
        "item_id": "11",
        "event_type": "view",
        "ts": "2024-03-01T10:00:00Z",
        "session_id": "s1",
        "device": "web",
    }
    row.update(overrides)
    return row


def raw_table(rows: list[dict[str, object]]) -> pa.Table:
    """Rows as an all-string table, the way a CSV arrives."""
    names = list(rows[0])
    return pa.table(
        {
            n: pa.array([None if r[n] is None else str(r[n]) for r in rows], pa.string())
            for n in names
        }
    )


def only_reason(row: dict[str, object]) -> str:
    result = validate_table(raw_table([row]), EVENTS, CTX, "f.csv")
    assert result.valid.num_rows == 0
    assert result.quarantine.num_rows == 1
    return str(result.quarantine.column("reason")[0].as_py())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"user_id": "  "}, "user_id is missing"),
        ({"item_id": "x" * 129}, f"item_id is longer than 128 characters: '{'x' * 129}'"),
        ({"user_id": "u\x071"}, "user_id has control characters: 'u\\x071'"),
        ({"event_type": "like"}, "event_type is not one of view|cart|purchase|click: 'like'"),
        ({"session_id": ""}, "session_id is missing"),
        ({"device": None}, "device is missing"),
        ({"event_id": "   "}, "event_id is missing"),
        ({"ts": "2024-03-01 10:00:00"}, "ts has no timezone: '2024-03-01 10:00:00'"),
        ({"ts": "2024-03-01"}, "ts has no timezone: '2024-03-01'"),
        ({"ts": "yesterday"}, "ts is not an ISO-8601 timestamp: 'yesterday'"),
        ({"ts": "2024-13-01T00:00:00Z"}, "ts is not an ISO-8601 timestamp: '2024-13-01T00:00:00Z'"),
        (
            {"ts": "2024-03-01T13:00:01Z"},
            "ts is more than 3600 s in the future: '2024-03-01T13:00:01Z'",
        ),
    ],
)
def test_each_bad_row_is_quarantined_with_its_reason(
    overrides: dict[str, object], expected: str
) -> None:
    assert only_reason(event(**overrides)) == expected


def test_future_skew_boundary_is_inclusive() -> None:
    at_limit = event(ts=(NOW + timedelta(seconds=3600)).isoformat())
    result = validate_table(raw_table([at_limit]), EVENTS, CTX)
    assert result.valid.num_rows == 1


def test_first_bad_column_in_contract_order_is_reported() -> None:
    assert only_reason(event(user_id="", event_type="nope")) == "user_id is missing"


def test_quarantine_keeps_the_original_row_and_source() -> None:
    row = event(user_id="u\n1", referrer="google")
    result = validate_table(raw_table([row]), EVENTS, CTX, "in/web.csv")
    q = result.quarantine
    assert q.schema == QUARANTINE_SCHEMA
    assert q.column("source_file").to_pylist() == ["in/web.csv"]
    assert json.loads(q.column("row")[0].as_py()) == {k: str(v) for k, v in row.items()}
    assert q.column("quarantined_at").to_pylist() == [NOW]
    assert result.dropped_columns == ("referrer",)


def test_good_rows_pass_and_counts_add_up() -> None:
    rows = [
        event(event_id="a"),
        event(event_id="b", user_id=" "),
        event(event_id="c", event_type=" PURCHASE ", user_id=" u-9 "),
        event(event_id="d", ts="nope"),
        event(event_id="e", user_id="42.0"),
        event(event_id="f", user_id=None),
    ]
    result = validate_table(raw_table(rows), EVENTS, CTX)
    assert result.valid.schema == EVENT_SCHEMA
    assert result.valid.column("event_id").to_pylist() == ["a", "c", "e"]
    assert result.valid.column("event_type").to_pylist() == ["view", "purchase", "view"]
    assert result.valid.column("user_id").to_pylist() == ["7", "u-9", "42.0"]
    assert result.valid_index.tolist() == [0, 2, 4]
    assert result.reasons == {"user_id is missing": 2, "ts is not an ISO-8601 timestamp": 1}
    assert result.valid.num_rows + result.quarantine.num_rows == len(rows)


def test_missing_column_quarantines_every_row() -> None:
    rows = [event(event_id=str(i)) for i in range(3)]
    table = raw_table(rows).drop(["device"])
    result = validate_table(table, EVENTS, CTX)
    assert result.valid.num_rows == 0
    assert result.quarantine.column("reason").to_pylist() == ["missing column 'device'"] * 3
    assert result.reasons == {"missing column 'device'": 3}


def test_mixed_timezones_are_converted_to_utc() -> None:
    stamps = [
        "2024-02-29T23:30:00-02:00",
        "2024-03-01T05:15:00+05:30",
        "2024-03-01T01:00:00.250Z",
        "2024-03-01 00:00:00 UTC",
        "2024-03-01T09:00:00+0100",
    ]
    rows = [event(event_id=str(i), ts=t) for i, t in enumerate(stamps)]
    result = validate_table(raw_table(rows), EVENTS, CTX)
    expected = [datetime.fromisoformat(t.replace(" UTC", "+00:00")).astimezone(UTC) for t in stamps]
    assert result.valid.column("ts").to_pylist() == expected
    assert result.valid.schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_typed_parquet_timestamps_aware_converted_naive_quarantined() -> None:
    new_york = ZoneInfo("America/New_York")
    local = pa.array(
        [datetime(2024, 3, 1, 6, 0, tzinfo=new_york)], pa.timestamp("ns", tz="America/New_York")
    )
    naive = pa.array([datetime(2024, 3, 1, 10, 0)], pa.timestamp("ms"))
    base = pa.table({k: [v] for k, v in event().items() if k != "ts"})
    ok = validate_table(base.append_column("ts", local), EVENTS, CTX)
    assert ok.valid.column("ts").to_pylist() == [datetime(2024, 3, 1, 11, 0, tzinfo=UTC)]
    bad = validate_table(base.append_column("ts", naive), EVENTS, CTX)
    assert bad.reasons == {"ts has no timezone": 1}


def test_typed_numeric_ids() -> None:
    table = pa.table(
        {
            **{k: [v, v] for k, v in event().items() if k not in ("user_id", "item_id")},
            "user_id": pa.array([3.0, 3.5]),
            "item_id": pa.array([9, 9], pa.int32()),
        }
    )
    result = validate_table(table, EVENTS, CTX)
    assert result.valid.column("user_id").to_pylist() == ["3"]
    assert result.valid.column("item_id").to_pylist() == ["9"]
    assert result.reasons == {"user_id is not a string or integer id": 1}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"price": "0"}, "price is not a positive finite number: '0'"),
        ({"price": "-3.5"}, "price is not a positive finite number: '-3.5'"),
        ({"price": "nan"}, "price is not a number: 'nan'"),
        ({"price": "inf"}, "price is not a number: 'inf'"),
        ({"price": "1e999"}, "price is not a positive finite number: '1e999'"),
        ({"price": "-1e999"}, "price is not a positive finite number: '-1e999'"),
        ({"price": "cheap"}, "price is not a number: 'cheap'"),
        ({"category": " "}, "category is missing"),
        ({"item_id": " "}, "item_id is missing"),
        (
            {"created_ts": "2024-01-01T00:00:00"},
            "created_ts has no timezone: '2024-01-01T00:00:00'",
        ),
    ],
)
def test_bad_items_are_quarantined(overrides: dict[str, object], expected: str) -> None:
    row: dict[str, object] = {
        "item_id": "5",
        "category": "shoes",
        "price": "19.99",
        "created_ts": "2024-01-01T00:00:00Z",
    }
    row.update(overrides)
    result = validate_table(raw_table([row]), ITEMS, CTX)
    assert result.quarantine.column("reason").to_pylist() == [expected]


def test_good_item_row() -> None:
    row: dict[str, object] = {
        "item_id": "5",
        "category": "shoes",
        "price": "1e2",
        "created_ts": "2030-01-01T00:00Z",
    }
    result = validate_table(raw_table([row]), ITEMS, CTX)
    assert result.valid.schema == ITEM_SCHEMA
    assert result.valid.to_pylist() == [
        {
            "item_id": "5",
            "category": "shoes",
            "price": 100.0,
            "created_ts": datetime(2030, 1, 1, tzinfo=UTC),
        }
    ]


def test_typed_infinite_prices_are_quarantined() -> None:
    table = pa.table(
        {
            "item_id": pa.array([1, 2, 3], pa.int64()),
            "category": ["a", "b", "c"],
            "price": pa.array([float("inf"), 4.5, float("-inf")], pa.float64()),
            "created_ts": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * 3),
        }
    )
    result = validate_table(table, ITEMS, CTX)
    assert result.valid.column("item_id").to_pylist() == ["2"]
    assert result.reasons == {"price is not a positive finite number": 2}


def test_infinite_prices_never_reach_the_catalog(tmp_path: Path) -> None:
    """Text (``inf``, ``1e999``) and typed (float inf) infinities, through ingest_items."""
    from flywheel.config import Settings
    from flywheel.ingest import ingest_items

    settings = Settings(workspace=tmp_path / "ws")
    text = tmp_path / "items.csv"
    text.write_text(
        "item_id,category,price,created_ts\n"
        "1,shoes,inf,2024-01-01T00:00:00Z\n"
        "2,shoes,1e999,2024-01-01T00:00:00Z\n"
        "3,shoes,19.99,2024-01-01T00:00:00Z\n"
    )
    typed = tmp_path / "items.parquet"
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array([4, 5], pa.int64()),
                "category": ["hats", "hats"],
                "price": pa.array([float("inf"), 7.0]),
                "created_ts": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * 2),
            }
        ),
        typed,
    )
    for path in (text, typed):
        ingest_items(settings, path, now=NOW)
    catalog = pq.read_table(settings.items_path).to_pydict()
    assert sorted(catalog["item_id"]) == ["3", "5"]
    assert all(np.isfinite(catalog["price"]))
    reasons = pa.concat_tables(
        pq.read_table(f) for f in sorted(settings.quarantine_dir.glob("*.parquet"))
    ).column("reason")
    assert sorted(reasons.to_pylist()) == [
        "price is not a number: 'inf'",
        "price is not a positive finite number: '1e999'",
        "price is not a positive finite number: 'inf'",
    ]


# ---- Reading the three formats -----------------------------------------------------------

ROWS = [
    ("e1", 1, 10, "view", "2024-02-29T23:30:00-02:00", "s1", "web"),
    ("e2", 2, 20, "cart", "2024-03-01T08:00:00+01:00", "s2", "ios"),
    ("e3", 3, 30, "purchase", "2024-03-01T11:00:00Z", "s3", "android"),
]


def expected_events() -> pa.Table:
    """The contract table for ROWS, built with the standard library's ISO parser."""
    cols = list(zip(*ROWS, strict=True))
    return pa.table(
        {
            "event_id": list(cols[0]),
            "user_id": [str(v) for v in cols[1]],
            "item_id": [str(v) for v in cols[2]],
            "event_type": list(cols[3]),
            "ts": pa.array([datetime.fromisoformat(t).astimezone(UTC) for t in cols[4]]),
            "session_id": list(cols[5]),
            "device": list(cols[6]),
        }
    ).cast(EVENT_SCHEMA)


def write_inputs(tmp_path: Path) -> dict[str, Path]:
    names = EVENT_SCHEMA.names
    csv_path = tmp_path / "events.csv"
    csv_path.write_text(
        ",".join(names) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in ROWS)
    )
    jsonl_path = tmp_path / "events.jsonl"
    jsonl_path.write_text(
        "".join(json.dumps(dict(zip(names, r, strict=True))) + "\n" for r in ROWS)
    )
    pq_path = tmp_path / "events.parquet"
    typed = pa.table(
        {
            n: pa.array([r[i] for r in ROWS])
            if n != "ts"
            else pa.array(
                [datetime.fromisoformat(r[i]) for r in ROWS],  # type: ignore[arg-type]
                pa.timestamp("ms", tz="Europe/Berlin"),
            )
            for i, n in enumerate(names)
        }
    )
    pq.write_table(typed, pq_path)
    return {"csv": csv_path, "jsonl": jsonl_path, "parquet": pq_path}


def read_and_validate(path: Path, batch_size: int = 1000) -> pa.Table:
    tables = [validate_table(b.table, EVENTS, CTX).valid for b in read_raw(path, batch_size)]
    return pa.concat_tables(tables)


def test_csv_jsonl_parquet_parse_to_the_same_table(tmp_path: Path) -> None:
    expected = expected_events()
    for fmt, path in write_inputs(tmp_path).items():
        got = read_and_validate(path)
        assert got.equals(expected), fmt


def test_readers_stream_in_batches(tmp_path: Path) -> None:
    for fmt, path in write_inputs(tmp_path).items():
        sizes = [b.table.num_rows for b in read_raw(path, batch_size=2)]
        assert sum(sizes) == 3, fmt
        assert fmt == "csv" or max(sizes) <= 2, fmt


def test_unparseable_lines_become_rejects(tmp_path: Path) -> None:
    names = EVENT_SCHEMA.names
    good = json.dumps(dict(zip(names, ROWS[0], strict=True)))
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(f"{good}\n{{broken\n\n[1, 2]\n")
    batches = list(read_raw(jsonl))
    assert sum(b.table.num_rows for b in batches) == 1
    assert [r for b in batches for r in b.rejects] == [
        ("not a non-empty JSON object", "{broken"),
        ("not a non-empty JSON object", "[1, 2]"),
    ]
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(",".join(names) + "\n" + ",".join(map(str, ROWS[0])) + "\ne9,1\n")
    rejects = [r for b in read_raw(csv_path) for r in b.rejects]
    assert rejects == [("malformed CSV row (expected 7 fields): line 3", "e9,1")]


def test_json_array_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text(json.dumps([dict(zip(EVENT_SCHEMA.names, r, strict=True)) for r in ROWS]))
    assert read_and_validate(path).equals(expected_events())


def test_mixed_json_value_types_are_read_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    rows = [event(user_id=5), event(event_id="e2", user_id=" 6 "), event(event_id="e3", user_id=[])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = validate_table(next(iter(read_raw(path))).table, EVENTS, CTX)
    assert result.valid.column("user_id").to_pylist() == ["5", "6", "[]"]


def test_single_typed_json_fields_are_judged_by_type(tmp_path: Path) -> None:
    """A JSON field whose values share one type keeps it: 4.0 is the id "4", true is no id."""
    path = tmp_path / "typed.jsonl"
    rows = [
        event(event_id="a", user_id=4.0, item_id=True),
        event(event_id="b", user_id=4.5, item_id=False),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = validate_table(next(iter(read_raw(path))).table, EVENTS, CTX)
    assert result.valid.num_rows == 0
    assert result.quarantine.column("reason").to_pylist() == [
        "item_id is not a string or integer id: 'true'",
        "user_id is not a string or integer id: '4.5'",
    ]


def test_corrupt_parquet_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputFileError, match=r"broken\.parquet"):
        list(read_raw(path))


def test_large_batch_mask_alignment() -> None:
    """Vectorised checks keep rows aligned on a table with many chunks."""
    n = 5000
    rng = np.random.default_rng(3)
    bad = rng.random(n) < 0.1
    rows = [event(event_id=str(i), user_id="" if b else f"u{i}") for i, b in enumerate(bad)]
    chunked = pa.concat_tables([raw_table(rows[i : i + 700]) for i in range(0, n, 700)])
    result = validate_table(chunked, EVENTS, CTX)
    assert result.valid.column("user_id").to_pylist() == [f"u{i}" for i in range(n) if not bad[i]]
    assert result.valid_index.tolist() == np.flatnonzero(~bad).tolist()


def test_csv_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    names = EVENT_SCHEMA.names
    text = ",".join(names) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in ROWS)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_and_validate(path).equals(expected_events())
