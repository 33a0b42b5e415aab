"""check_id: ingest's vectorized id check agrees with flywheel.ids, value for value."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from flywheel.ids import IdError, normalize_id
from flywheel.ingest import EVENTS, CheckContext, check_id, validate_table

CTX = CheckContext(now=datetime(2024, 3, 1, tzinfo=UTC))
WHITESPACE = [chr(c) for c in range(0x110000) if chr(c).isspace()]


def reference(value: object) -> str | None:
    """flywheel.ids' answer: the canonical id, or None when it is refused."""
    try:
        return normalize_id(value)
    except IdError:
        return None


def checked(arr: pa.Array) -> list[str | None]:
    result = check_id(pa.chunked_array([arr]), CTX)
    bad = np.logical_or.reduce([m for _, m in result.problems])
    values = result.values.to_pylist()
    assert [v is None for v in values] == bad.tolist()
    return values


def string_corpus() -> list[str]:
    rng = np.random.default_rng(7)
    base = ["u00042", "sku-00017", str(uuid.UUID(int=12345)), "42", "42.0", "-7", "é漢字", "a b"]
    out = [*base, "", " ", "x" * 128, "x" * 129, " " + "y" * 128 + "\t", "a\x00b", "a\x7f", "\x1b["]
    out += [f"{ws}id{ws}" for ws in WHITESPACE]  # every character str.strip() removes
    out += [f"i{ws}d" for ws in WHITESPACE]  # inside an id: controls refused, spaces kept
    out += ["".join(chr(c) for c in rng.integers(0, 0x3000, size=int(k))) for k in range(0, 40)]
    return [s for s in out if not any(0xD800 <= ord(c) < 0xE000 for c in s)]


def test_strings_agree_with_normalize_id() -> None:
    corpus = string_corpus()
    assert checked(pa.array(corpus, pa.string())) == [reference(s) for s in corpus]
    assert checked(pa.array(corpus, pa.large_string())) == [reference(s) for s in corpus]


def test_integer_columns_are_decimal_text() -> None:
    values = [0, 42, -5, 2**63 - 1, -(2**63)]
    assert checked(pa.array(values, pa.int64())) == [str(v) for v in values]
    assert checked(pa.array([7, None], pa.uint8())) == ["7", None]


def test_integral_floats_are_the_integer_other_floats_are_refused() -> None:
    arr = pa.array([42.0, -3.0, 1e15, 2.5, float("nan"), float("inf"), None, 2.0**63])
    assert checked(arr) == ["42", "-3", "1000000000000000", None, None, None, None, None]
    problems = {p: np.flatnonzero(m).tolist() for p, m in check_id(arr, CTX).problems}
    assert problems["is missing"] == [4, 6]  # NaN is how pandas writes a missing integer
    assert problems["is not a string or integer id"] == [3, 5, 7]


def test_booleans_and_nested_values_are_not_ids() -> None:
    assert checked(pa.array([True, None])) == [None, None]
    result = check_id(pa.array([[1], [2]]), CTX)
    assert dict((p, m.tolist()) for p, m in result.problems)["is not a string or integer id"] == [
        True,
        True,
    ]


def test_dictionary_column_is_decoded() -> None:
    arr = pa.array([" a ", "b", "a"]).dictionary_encode()
    assert checked(arr) == ["a", "b", "a"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("y" * 129, f"user_id is longer than 128 characters: '{'y' * 129}'"),
        ("a\tb", "user_id has control characters: 'a\\tb'"),
        ("\t \n", "user_id is missing"),
    ],
)
def test_reasons_name_the_field(value: str, reason: str) -> None:
    row = {
        "event_id": "e1",
        "user_id": value,
        "item_id": "i",
        "event_type": "view",
        "ts": "2024-02-29T10:00:00Z",
        "session_id": "s",
        "device": "web",
    }
    result = validate_table(pa.Table.from_pylist([row]), EVENTS, CTX)
    assert result.quarantine.column("reason").to_pylist() == [reason]
