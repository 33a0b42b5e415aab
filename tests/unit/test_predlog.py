"""Prediction and feedback logs: one write per request, exact schema, torn tails skipped."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from flywheel import predlog
from flywheel.config import Settings
from flywheel.predlog import (
    LogWriter,
    PredictionLogError,
    log_dir,
    normal_traffic,
    read_feedback_logs,
    read_prediction_logs,
    scan_logs,
)
from flywheel.schemas import FEEDBACK_SCHEMA, PREDICTION_LOG_SCHEMA

T0 = datetime(2025, 3, 1, 23, 59, 59, 123456, tzinfo=UTC)


def _request(request_id: str, ts: datetime, n: int = 3) -> list[dict[str, Any]]:
    """``n`` records of one request, one per served item."""
    return [
        {
            "request_id": request_id,
            "ts": ts,
            "user_id": "u 7",
            "item_id": f"sku-{100 + i}",
            "position": i,
            "score": 0.5 / (i + 1),
            "model_version": "flywheel-ranker:abc",
            "propensity": 0.9 if i == 0 else 0.05,
            "features": json.dumps({"views_7d": i, "price": None}) if i else None,
        }
        for i in range(n)
    ]


def _as_rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: (r["request_id"], r.get("position", 0)))


def test_round_trip_gives_exactly_the_contract(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    writer = LogWriter(log_dir(settings, "predictions"), "predictions")
    # request b was ranked degraded (online store down): only its records carry the flag
    degraded = [{**r, "degraded": True} for r in _request("b", T0 + timedelta(seconds=2), n=2)]
    written = _request("a", T0) + degraded
    writer.append(written[:3])
    writer.append(written[3:])
    table = read_prediction_logs(settings)
    assert table.schema.equals(PREDICTION_LOG_SCHEMA)
    assert [f.nullable for f in table.schema] == [f.nullable for f in PREDICTION_LOG_SCHEMA]
    expected = [{"degraded": None, **r} for r in written]  # absent reads as null
    assert _as_rows(table) == sorted(expected, key=lambda r: (r["request_id"], r["position"]))
    assert normal_traffic(table)["request_id"].to_pylist() == ["a"] * 3


def test_partitions_by_utc_date_and_one_file_per_process(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    writer = LogWriter(log_dir(settings, "predictions"), "predictions")
    writer.append(_request("a", T0))  # 23:59:59 on March 1st
    writer.append(_request("b", T0 + timedelta(seconds=1)))  # March 2nd
    files = sorted(p.relative_to(log_dir(settings, "predictions")) for p in
                   log_dir(settings, "predictions").rglob("*.jsonl"))  # fmt: skip
    assert [f.parent.name for f in files] == ["date=2025-03-01", "date=2025-03-02"]
    assert all(f.name.startswith(f"{os.getpid()}-") for f in files)


def test_one_request_is_one_write_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        calls.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(predlog.os, "write", spy)
    writer = LogWriter(tmp_path / "predictions", "predictions")
    writer.append(_request("a", T0, n=10))
    assert len(calls) == 1
    assert calls[0].count(b"\n") == 10 and calls[0].endswith(b"\n")


def test_torn_final_line_is_skipped_and_counted(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    root = log_dir(settings, "predictions")
    for name in ("one", "two"):
        writer = LogWriter(root, "predictions")
        writer.append(_request(name, T0))
        writer.close()
        # a process killed mid-write: half of a further record, no newline
        with writer.path.open("ab") as fh:  # type: ignore[union-attr]
            fh.write(predlog.encode_records(_request("torn", T0, 1))[:40])
    scan = scan_logs(settings, "predictions")
    assert (scan.files, scan.torn_lines) == (2, 2)
    assert sorted(set(scan.table["request_id"].to_pylist())) == ["one", "two"]
    assert scan.table.num_rows == 6


def test_a_broken_line_before_the_end_is_an_error_naming_the_file(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    writer = LogWriter(log_dir(settings, "predictions"), "predictions")
    writer.append(_request("a", T0, 1))
    with writer.path.open("ab") as fh:  # type: ignore[union-attr]
        fh.write(b'{"request_id": "b", "ts": \n')
    writer.append(_request("c", T0, 1))
    with pytest.raises(PredictionLogError, match=str(writer.path)):
        read_prediction_logs(settings)


def test_a_record_without_a_required_field_is_an_error_naming_it(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    writer = LogWriter(log_dir(settings, "predictions"), "predictions")
    record = _request("a", T0, 1)[0]
    del record["propensity"]
    writer.append([record])
    with pytest.raises(PredictionLogError, match="propensity"):
        read_prediction_logs(settings)


def test_since_keeps_only_later_records(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    writer = LogWriter(log_dir(settings, "predictions"), "predictions")
    for i in range(4):
        writer.append(_request(f"r{i}", T0 + timedelta(hours=12 * i), 1))
    since = T0 + timedelta(hours=12)
    table = read_prediction_logs(settings, since=since)
    assert sorted(table["request_id"].to_pylist()) == ["r1", "r2", "r3"]
    with pytest.raises(ValueError, match="naive"):
        read_prediction_logs(settings, since=since.replace(tzinfo=None))


def test_feedback_round_trip(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    writer = LogWriter(log_dir(settings, "feedback"), "feedback")
    events = [
        {"request_id": "a", "item_id": "3", "event_type": kind, "ts": T0 + timedelta(seconds=i)}
        for i, kind in enumerate(["click", "cart", "purchase"])
    ]
    for event in events:
        writer.append([event])
    table = read_feedback_logs(settings)
    assert table.schema.equals(FEEDBACK_SCHEMA)
    assert sorted(table.to_pylist(), key=lambda r: r["ts"]) == events


def test_logs_from_before_string_ids_read_integers_as_their_decimal_text(
    tmp_path: Path,
) -> None:
    """A workspace upgraded in place keeps every record it accepted with integer ids."""
    settings = Settings(workspace=tmp_path)
    old = LogWriter(log_dir(settings, "predictions"), "predictions")
    old.append([{**r, "user_id": 7, "item_id": 100 + i} for i, r in enumerate(_request("a", T0))])
    new = LogWriter(log_dir(settings, "predictions"), "predictions")
    new.append(_request("b", T0))
    rows = _as_rows(read_prediction_logs(settings))
    assert [(r["request_id"], r["user_id"], r["item_id"]) for r in rows] == [
        ("a", "7", "100"), ("a", "7", "101"), ("a", "7", "102"),
        ("b", "u 7", "sku-100"), ("b", "u 7", "sku-101"), ("b", "u 7", "sku-102"),
    ]  # fmt: skip
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    feedback.append([{"request_id": "a", "item_id": 3.5, "event_type": "click", "ts": T0}])
    with pytest.raises(PredictionLogError, match="'item_id' holds double"):
        read_feedback_logs(settings)


def test_nothing_logged_reads_as_an_empty_table(tmp_path: Path) -> None:
    table = read_prediction_logs(Settings(workspace=tmp_path))
    assert table.num_rows == 0 and table.schema.equals(PREDICTION_LOG_SCHEMA)


def test_unencodable_records_are_refused_before_writing(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "p", "predictions")
    record = _request("a", T0, 1)[0]
    with pytest.raises(ValueError):
        writer.append([{**record, "score": float("nan")}])
    with pytest.raises(ValueError, match="naive"):
        writer.append([{**record, "ts": T0.replace(tzinfo=None)}])
    assert not list((tmp_path / "p").rglob("*.jsonl")) or all(
        p.stat().st_size == 0 for p in (tmp_path / "p").rglob("*.jsonl")
    )


def test_unknown_log_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="clicks"):
        log_dir(Settings(workspace=tmp_path), "clicks")  # type: ignore[arg-type]
