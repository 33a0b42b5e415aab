"""Served-log ingest: validation, dedupe, byte offsets with torn lines, idempotence, events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel import served
from flywheel.config import Settings
from flywheel.ingest import CheckContext
from flywheel.lake import partition_files, read_lake_events, read_state, watermark
from flywheel.predlog import encode_records, log_dir
from flywheel.schemas import EVENT_SCHEMA, FEEDBACK_SCHEMA, PREDICTION_LOG_SCHEMA

T0 = datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
NOW = T0 + timedelta(days=1)


def _pred(request_id: str, user: int, item: int, pos: int, ts: datetime = T0) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "ts": ts,
        "user_id": user,
        "item_id": item,
        "position": pos,
        "score": 0.5 - pos / 10,
        "model_version": "m:1",
        "propensity": 0.9 if pos == 0 else 0.05,
        "features": json.dumps({"views_7d": pos}),
    }


def _fb(request_id: str, item: int, event_type: str, ts: datetime) -> dict[str, Any]:
    return {"request_id": request_id, "item_id": item, "event_type": event_type, "ts": ts}


def _write(settings: Settings, kind: str, name: str, data: bytes, day: str = "2025-03-01") -> Path:
    """Append raw bytes to one log file, as a serving worker would."""
    folder = log_dir(settings, kind) / f"date={day}"  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("ab") as fh:
        fh.write(data)
    return path


def _lake(root: Path, schema: pa.Schema) -> list[dict[str, Any]]:
    files = partition_files(root)
    if not files:
        return []
    return pa.concat_tables([pq.read_table(f, schema=schema) for f in files]).to_pylist()


def _ctx() -> CheckContext:
    return CheckContext(NOW)


# ---- validation ---------------------------------------------------------------------------


def test_valid_prediction_records_become_the_contract() -> None:
    records = json.loads("[" + encode_records([_pred("r1", 7, 100, 0)]).decode().strip() + "]")
    result = served.validate_records(records, served.PREDICTIONS, _ctx(), "f")
    assert result.valid.schema.equals(PREDICTION_LOG_SCHEMA)
    row = result.valid.to_pylist()[0]
    # integer ids (logs written before ids were strings) read as their decimal text
    assert row == {
        **_pred("r1", 7, 100, 0),
        "ts": T0,
        "user_id": "7",
        "item_id": "100",
        "degraded": None,
    }
    assert result.quarantine.num_rows == 0


def test_string_ids_in_logs_are_kept_exactly() -> None:
    pred = {**_pred("r1", 7, 100, 0), "user_id": "u-7 Ω", "item_id": "sku-00100"}
    records = json.loads("[" + encode_records([pred]).decode().strip() + "]")
    result = served.validate_records(records, served.PREDICTIONS, _ctx(), "f")
    assert result.valid.to_pylist()[0] == {**pred, "ts": T0, "degraded": None}


def test_the_degraded_flag_is_validated_and_kept() -> None:
    """Serving marks predictions ranked without the online store; the lake keeps the mark
    (the dataset stage leaves those rows out) and quarantines a flag that is not a bool."""
    preds = [{**_pred(f"r{i}", 7, 100 + i, 0), "degraded": v} for i, v in
             enumerate([True, False, None, "maybe"])]  # fmt: skip
    records = [json.loads(line) for line in encode_records(preds).decode().splitlines()]
    result = served.validate_records(records, served.PREDICTIONS, _ctx(), "f")
    assert result.valid["degraded"].to_pylist() == [True, False, None]
    assert result.quarantine.num_rows == 1
    assert "degraded" in result.quarantine["reason"][0].as_py()


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("user_id", "", "user_id is missing"),
        ("item_id", "x" * 129, "item_id is longer than 128 characters: '" + "x" * 129 + "'"),
        ("position", -1, "position is not in [0, 2147483647]: '-1'"),
        ("score", "nan", "score is not a number: 'nan'"),
        ("propensity", 0, "propensity is not in (0, 1]: '0'"),
        ("propensity", 1.5, "propensity is not in (0, 1]: '1.5'"),
        ("ts", "2025-03-01T12:00:00", "ts has no timezone: '2025-03-01T12:00:00'"),
        ("model_version", " ", "model_version is missing"),
    ],
)
def test_bad_prediction_rows_are_quarantined_naming_the_field(
    field: str, value: Any, reason: str
) -> None:
    good = encode_records([_pred("r1", 7, 100, 0)])
    bad = json.loads(good)
    bad[field] = value
    result = served.validate_records([json.loads(good), bad], served.PREDICTIONS, _ctx(), "f")
    assert result.valid.num_rows == 1
    assert result.quarantine.column("reason").to_pylist() == [reason]
    assert json.loads(result.quarantine.column("row")[0].as_py())[field] == (
        value if isinstance(value, str) else json.dumps(value)
    )


def test_feedback_type_must_be_a_feedback_type_and_features_are_optional() -> None:
    fb = json.loads(encode_records([_fb("r1", 1, "view", T0)]))
    result = served.validate_records([fb], served.FEEDBACK, _ctx(), "f")
    assert result.quarantine.column("reason").to_pylist() == [
        "event_type is not one of click|cart|purchase: 'view'"
    ]
    pred = json.loads(encode_records([_pred("r1", 7, 100, 0)]))
    del pred["features"]
    result = served.validate_records([pred], served.PREDICTIONS, _ctx(), "f")
    assert result.valid.column("features").to_pylist() == [None]
    del pred["score"]
    result = served.validate_records([pred], served.PREDICTIONS, _ctx(), "f")
    assert result.quarantine.column("reason").to_pylist() == ["missing column 'score'"]


def test_parse_lines_rejects_non_objects_and_skips_blank_lines() -> None:
    records, rejects = served.parse_lines(b'{"a": 1}\n\n[1, 2]\nnot json\n{}\n')
    assert records == [{"a": 1}]
    assert rejects == [
        (served.NOT_JSON, "[1, 2]"),
        (served.NOT_JSON, "not json"),
        (served.NOT_JSON, "{}"),
    ]


# ---- byte offsets -------------------------------------------------------------------------


def test_read_new_lines_stops_at_the_last_newline(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    chunk = served.read_new_lines(path, 0)
    assert (chunk.start, chunk.end, chunk.pending) == (0, 16, 5)
    assert chunk.data == b'{"a":1}\n{"b":2}\n'
    with path.open("ab") as fh:
        fh.write(b"3}\n")
    again = served.read_new_lines(path, chunk.end)
    assert (again.start, again.end, again.pending, again.data) == (16, 24, 0, b'{"c":3}\n')
    path.write_bytes(b'{"z":0}\n')  # rewritten, shorter than the offset: read from the start
    assert served.read_new_lines(path, again.end).data == b'{"z":0}\n'


def test_torn_line_is_retried_next_run_not_lost(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    whole = encode_records([_pred("r1", 7, 100, 0), _pred("r1", 7, 101, 1)])
    first_line_end = whole.index(b"\n") + 1
    cut = first_line_end + 20  # the second record is torn mid-line
    _write(settings, "predictions", "1-a.jsonl", whole[:cut])
    one = served.ingest_served(settings, now=NOW)
    assert (one.predictions_read, one.predictions_accepted) == (1, 1)
    assert one.pending_bytes == 20
    assert one.quarantined == 0
    state = served.read_served_state(settings)
    assert state["predictions"]["files"] == {"date=2025-03-01/1-a.jsonl": first_line_end}
    _write(settings, "predictions", "1-a.jsonl", whole[cut:])
    two = served.ingest_served(settings, now=NOW)
    assert (two.predictions_read, two.predictions_accepted, two.pending_bytes) == (1, 1, 0)
    rows = _lake(served.predictions_dir(settings), PREDICTION_LOG_SCHEMA)
    assert sorted(r["item_id"] for r in rows) == ["100", "101"]


# ---- dedupe, idempotence, feedback -> events -------------------------------------------------


def test_dedupe_within_a_run_and_against_the_lake(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    p1 = _pred("r1", 7, 100, 0)
    _write(settings, "predictions", "1-a.jsonl", encode_records([p1, _pred("r1", 7, 101, 1)]))
    # another worker logged the same (request, item) again, with another score
    _write(settings, "predictions", "2-b.jsonl", encode_records([{**p1, "score": 0.1}]))
    t1 = T0 + timedelta(minutes=5)
    fbs = [_fb("r1", 100, "click", t1), _fb("r1", 100, "click", t1), _fb("r1", 100, "cart", t1)]
    _write(settings, "feedback", "1-a.jsonl", encode_records(fbs))
    one = served.ingest_served(settings, now=NOW)
    assert (one.predictions_accepted, one.feedback_accepted, one.duplicates_dropped) == (2, 2, 2)
    preds = _lake(served.predictions_dir(settings), PREDICTION_LOG_SCHEMA)
    assert {(r["item_id"], r["score"]) for r in preds} == {("100", 0.5), ("101", 0.4)}
    # the same records in a new file (a replayed log): nothing new
    _write(settings, "feedback", "3-c.jsonl", encode_records(fbs[:1]))
    two = served.ingest_served(settings, now=NOW)
    assert (two.feedback_read, two.feedback_accepted, two.duplicates_dropped) == (1, 0, 1)
    assert two.events_added == 0
    assert len(_lake(served.feedback_dir(settings), FEEDBACK_SCHEMA)) == 2


def test_rerun_adds_no_rows_and_writes_no_state(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    _write(settings, "predictions", "1-a.jsonl", encode_records([_pred("r1", 7, 100, 0)]))
    _write(settings, "feedback", "1-a.jsonl", encode_records([_fb("r1", 100, "click", T0)]))
    served.ingest_served(settings, now=NOW)
    before = {p: p.read_bytes() for p in (tmp_path / "lake").rglob("*") if p.is_file()}
    before_state = served.served_state_path(settings).read_text(), read_state(settings)
    again = served.ingest_served(settings, now=NOW)
    assert (again.files_read, again.predictions_read, again.feedback_read) == (0, 0, 0)
    after = {p: p.read_bytes() for p in (tmp_path / "lake").rglob("*") if p.is_file()}
    assert after == before
    assert (served.served_state_path(settings).read_text(), read_state(settings)) == before_state


def test_crash_before_state_write_rereads_without_duplicates(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    _write(settings, "predictions", "1-a.jsonl", encode_records([_pred("r1", 7, 100, 0)]))
    _write(settings, "feedback", "1-a.jsonl", encode_records([_fb("r1", 100, "cart", T0)]))
    served.ingest_served(settings, now=NOW)
    served.served_state_path(settings).unlink()  # as if the run died before its last write
    (settings.state_dir / "ingest_state.json").unlink()
    again = served.ingest_served(settings, now=NOW)
    assert (again.predictions_accepted, again.feedback_accepted, again.events_added) == (0, 0, 0)
    assert again.duplicates_dropped == 2
    assert read_lake_events(settings).num_rows == 1


def test_feedback_becomes_events_of_the_requests_user(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    _write(settings, "predictions", "1-a.jsonl", encode_records([_pred("req-9", 42, 100, 0)]))
    t1, t2 = T0 + timedelta(minutes=3), T0 + timedelta(minutes=9)
    fbs = [
        _fb("req-9", 100, "click", t1),
        _fb("req-9", 100, "purchase", t2),
        _fb("unknown-request", 5, "click", t1),
    ]
    _write(settings, "feedback", "1-a.jsonl", encode_records(fbs))
    summary = served.ingest_served(settings, now=NOW)
    assert summary.events_added == 2
    assert (summary.feedback_unmatched, summary.feedback_accepted) == (1, 3)
    events = sorted(read_lake_events(settings).to_pylist(), key=lambda r: r["ts"])
    assert read_lake_events(settings).schema.equals(EVENT_SCHEMA)
    assert [(e["user_id"], e["item_id"], e["event_type"], e["ts"]) for e in events] == [
        ("42", "100", "click", t1),
        ("42", "100", "purchase", t2),
    ]
    assert {(e["session_id"], e["device"]) for e in events} == {("req-9", "api")}
    assert events[0]["event_id"] == served.feedback_event_id("req-9", "100", "click", t1)
    assert watermark(settings) == t2
    assert read_state(settings)["served"] == {"predictions_rows": 1, "feedback_rows": 3}


def test_feedback_event_id_is_deterministic_and_distinguishes_keys() -> None:
    a = served.feedback_event_id("r", 1, "click", T0)
    assert a == served.feedback_event_id("r", 1, "click", T0.astimezone(UTC))
    others = {
        served.feedback_event_id("r", 2, "click", T0),
        served.feedback_event_id("r", 1, "cart", T0),
        served.feedback_event_id("r", 1, "click", T0 + timedelta(microseconds=1)),
        served.feedback_event_id("s", 1, "click", T0),
    }
    assert a not in others and len(others) == 4
    with pytest.raises(ValueError, match="naive"):
        served.feedback_event_id("r", 1, "click", T0.replace(tzinfo=None))


def test_bad_lines_are_quarantined_with_reasons(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    good = encode_records([_fb("r1", 100, "click", T0)])
    bad = encode_records([_fb("r1", 100, "hover", T0)])
    _write(settings, "feedback", "1-a.jsonl", good + b"garbage\n" + bad)
    summary = served.ingest_served(settings, now=NOW)
    assert summary.feedback_read == 3 and summary.feedback_accepted == 1
    assert summary.quarantine_reasons == {
        "feedback: event_type is not one of click|cart|purchase": 1,
        f"feedback: {served.NOT_JSON}": 1,
    }
    assert summary.quarantine_file is not None
    quarantined = pq.read_table(summary.quarantine_file)
    assert sorted(quarantined.column("reason").to_pylist()) == sorted(
        ["event_type is not one of click|cart|purchase: 'hover'", served.NOT_JSON]
    )


def test_corrupt_state_file_names_it(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    served.served_state_path(settings).parent.mkdir(parents=True)
    served.served_state_path(settings).write_text("{nope")
    with pytest.raises(served.ServedIngestError, match=r"served_state\.json"):
        served.ingest_served(settings, now=NOW)
