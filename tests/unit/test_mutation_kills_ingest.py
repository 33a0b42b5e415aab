"""Ingest's column checks and table validation: cases mutation testing found unpinned.

``check_integer`` (the served ``position``) had no test of its integer and float branches,
``check_positive_float`` none at the boundary ``0 < x < 1`` or with an upper-case exponent,
and the problem words, which become quarantine reasons, were unchecked for several checks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from flywheel.ingest import EVENTS, CheckContext, validate_table
from flywheel.ingest.checks import (
    as_strings,
    check_integer,
    check_positive_float,
    check_vocabulary,
)
from flywheel.ingest.validate import reason_key, rows_as_json

NOW = datetime(2024, 3, 1, tzinfo=UTC)
CTX = CheckContext(now=NOW)


def _problems(result) -> dict[str, list[bool]]:  # type: ignore[no-untyped-def]
    return {name: mask.tolist() for name, mask in result.problems}


def test_integer_columns_become_int64_with_nulls_missing() -> None:
    got = check_integer(pa.chunked_array([pa.array([1, None, -5], pa.int32())]), CTX)
    assert got.values.type == pa.int64() and got.values.to_pylist() == [1, None, -5]
    assert _problems(got) == {"is missing": [False, True, False]}


def test_float_columns_accept_only_integral_values_below_2_to_the_62() -> None:
    values = [42.0, None, 2.5, float("inf"), float("nan"), 2.0**62, -3.0, 2.0**61]
    got = check_integer(pa.chunked_array([pa.array(values, pa.float64())]), CTX)
    assert got.values.type == pa.int64()
    assert got.values.to_pylist() == [42, None, None, None, None, None, -3, 2**61]
    assert _problems(got) == {
        "is missing": [False, True, False, False, False, False, False, False],
        "is not an integer": [False, False, True, True, True, True, False, False],
    }


def test_integer_strings_may_carry_a_zero_fraction() -> None:
    text = ["42", "42.0", " 7 ", "", None, "4.5", "x", "+3", "-0", "5.000"]
    got = check_integer(pa.chunked_array([pa.array(text)]), CTX)
    assert got.values.to_pylist() == [42, 42, 7, None, None, None, None, 3, 0, 5]
    missing = [False, False, False, True, True, False, False, False, False, False]
    not_int = [False, False, False, False, False, True, True, False, False, False]
    assert _problems(got) == {"is missing": missing, "is not an integer": not_int}


def test_positive_floats_between_zero_and_one_and_upper_case_exponents() -> None:
    text = ["0.5", "1E3", "2e-1", "0", "-1.5", "abc", " "]
    got = check_positive_float(pa.chunked_array([pa.array(text)]), CTX)
    assert got.values.to_pylist() == [0.5, 1000.0, 0.2, None, None, None, None]
    assert _problems(got) == {
        "is missing": [False, False, False, False, False, False, True],
        "is not a number": [False, False, False, False, False, True, False],
        "is not a positive finite number": [False, False, False, True, True, False, False],
    }
    numeric = check_positive_float(pa.chunked_array([pa.array([0.25, -1.0, None])]), CTX)
    assert numeric.values.to_pylist() == [0.25, None, None]


def test_vocabulary_problems_are_named() -> None:
    got = check_vocabulary(
        pa.chunked_array([pa.array(["View", "", "zap"])]), CTX, vocabulary={"view": "view"}
    )
    assert got.values.to_pylist() == ["view", None, None]
    assert _problems(got) == {
        "is missing": [False, True, False],
        "is not one of view": [False, False, True],
    }


def test_as_strings_gives_one_array_and_iso_times() -> None:
    chunked = pa.chunked_array([pa.array(["a"]), pa.array(["b"])])
    flat = as_strings(chunked)
    assert isinstance(flat, pa.Array) and flat.to_pylist() == ["a", "b"]
    plus2 = timezone(timedelta(hours=2))
    aware = pa.array([datetime(2024, 3, 1, 12, tzinfo=plus2)], pa.timestamp("us", tz="+02:00"))
    naive = pa.array([datetime(2024, 3, 1, 12)], pa.timestamp("us"))
    assert as_strings(aware).to_pylist() == ["2024-03-01T12:00:00+02:00"]
    assert as_strings(naive).to_pylist() == ["2024-03-01T12:00:00"]


def test_reason_key_keeps_a_value_with_a_colon_out() -> None:
    assert reason_key("user_id has control characters: 'a: b'") == "user_id has control characters"
    assert reason_key("event_id is missing") == "event_id is missing"


def test_quarantined_rows_keep_non_ascii_text() -> None:
    raw = pa.table({"user_id": ["é漢字"], "n": [1]})
    assert rows_as_json(raw, np.array([0])) == ['{"user_id": "é漢字", "n": "1"}']


def test_a_table_missing_a_column_is_quarantined_whole() -> None:
    raw = pa.table({"event_id": ["e1", "e2"], "extra": ["x", "y"]})
    got = validate_table(raw, EVENTS, CTX)
    assert got.valid.num_rows == 0 and got.valid.schema == EVENTS.schema
    assert got.valid_index.dtype == np.int64 and got.valid_index.size == 0
    assert got.dropped_columns == ("extra",)
    assert got.reasons == {"missing column 'user_id'": 2}
    assert got.quarantine["source_file"].to_pylist() == ["<memory>", "<memory>"]
    assert got.quarantine["quarantined_at"].to_pylist() == [NOW, NOW]
    named = validate_table(raw, EVENTS, CTX, source="in.csv")
    assert named.quarantine["source_file"].to_pylist() == ["in.csv", "in.csv"]
    empty = validate_table(raw.slice(0, 0), EVENTS, CTX)
    assert empty.reasons == {} and empty.quarantine.num_rows == 0


def test_as_strings_json_encodes_nested_values_and_keeps_nulls() -> None:
    nested = pa.array([[1, 2], None])
    assert as_strings(nested).to_pylist() == ["[1, 2]", None]
    stamped = pa.array([{"at": datetime(2024, 3, 1, tzinfo=UTC)}, None])
    assert as_strings(stamped).to_pylist() == ['{"at": "2024-03-01 00:00:00+00:00"}', None]
    times = pa.array([datetime(2024, 3, 1, tzinfo=UTC), None], pa.timestamp("us", tz="UTC"))
    got = as_strings(times)
    assert got.type == pa.string() and got.to_pylist() == ["2024-03-01T00:00:00+00:00", None]
