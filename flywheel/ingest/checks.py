"""Column checks: one raw column in, the contract type and a mask per problem out (pure).

Every check is vectorized (pyarrow compute and numpy masks, no Python loop per row) and
returns a :class:`Coerced`: the values converted (null where bad) and its problems in the
order they are reported; :func:`flywheel.ingest.validate.validate_table` turns the first
problem of each row into a quarantine reason ``"<field> <problem>: <value>"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.ids import CONTROL_CHARS, MAX_ID_CHARS


@dataclass(frozen=True)
class CheckContext:
    """What checks need besides the data: the ingest clock and the allowed future skew."""

    now: datetime
    max_future_skew_s: int = 3600


@dataclass(frozen=True)
class Coerced:
    """One column converted to its contract type (null where bad) and its problems.

    ``problems`` lists ``(problem text, boolean row mask)``; a row may match several, the
    first listed is the one reported.
    """

    values: pa.Array
    problems: list[tuple[str, np.ndarray]]


Check = Callable[[pa.ChunkedArray, CheckContext], Coerced]


def _mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean pyarrow array as a numpy mask (null counts as False)."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def as_strings(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Any column as strings (nested values JSON-encoded), nulls kept."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_string(arr.type):
        return arr
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        # ISO with the zone visible, so a quarantined naive value reads as naive.
        return pa.array(
            [None if v is None else v.isoformat() for v in arr.to_pylist()], pa.string()
        )
    try:
        return pc.cast(arr, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        values = arr.to_pylist()
        return pa.array(
            [None if v is None else json.dumps(v, default=str) for v in values], pa.string()
        )


def _present(col: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Trimmed strings and the mask of rows that are null or blank."""
    trimmed = pc.utf8_trim_whitespace(as_strings(col))
    missing = _mask(pc.or_kleene(pc.is_null(trimmed), pc.equal(trimmed, "")))
    return trimmed, missing


def _null_where(values: pa.Array, bad: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(bad), pa.nulls(len(values), values.type), values)


def check_string(
    col: pa.ChunkedArray, ctx: CheckContext, *, allowed: tuple[str, ...] | None = None
) -> Coerced:
    """Non-blank string, trimmed; with ``allowed``, lower-cased and one of those values."""
    values, missing = _present(col)
    problems = [("is missing", missing)]
    if allowed is not None:
        values = pc.utf8_lower(values)
        unknown = ~missing & ~_mask(pc.is_in(values, pa.array(allowed)))
        problems.append((f"is not one of {'|'.join(allowed)}", unknown))
    bad = np.logical_or.reduce([m for _, m in problems])
    return Coerced(_null_where(values, bad), problems)


def check_id(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """A user or item id by :mod:`flywheel.ids`' rules, as its canonical string.

    Strings are trimmed (the same whitespace as :meth:`str.strip`); integer columns, and
    integral float columns (pandas writes a nullable integer column as float, missing as
    NaN), become the integer's decimal text, so ``42``, ``42.0`` (float) and ``" 42 "`` are
    the id ``"42"``; a *string* ``"42.0"`` stays the id ``"42.0"``. Other floats, booleans
    and nested values are not ids. Then: non-blank, at most ``MAX_ID_CHARS`` characters,
    no control characters.
    """
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    n = len(arr)
    not_id = np.zeros(n, dtype=bool)
    if pa.types.is_integer(arr.type):
        text = pc.cast(arr, pa.string())
    elif pa.types.is_floating(arr.type):
        nan = _mask(pc.is_nan(arr))
        ok = _mask(pc.and_(pc.is_finite(arr), pc.equal(pc.floor(arr), arr)))
        ok &= _mask(pc.less(pc.abs(arr), 2.0**63))
        not_id = ~_mask(pc.is_null(arr)) & ~nan & ~ok
        whole = pc.cast(_null_where(arr, ~ok), pa.int64())
        text = pc.cast(whole, pa.string())
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    else:
        not_id = ~_mask(pc.is_null(arr))
        text = pa.nulls(n, pa.string())
    missing = ~not_id & _mask(pc.or_kleene(pc.is_null(text), pc.equal(text, "")))
    too_long = _mask(pc.greater(pc.utf8_length(text), MAX_ID_CHARS))
    control = _mask(pc.match_substring_regex(text, CONTROL_CHARS))
    problems = [
        ("is missing", missing),
        ("is not a string or integer id", not_id),
        (f"is longer than {MAX_ID_CHARS} characters", too_long),
        ("has control characters", control),
    ]
    bad = np.logical_or.reduce([m for _, m in problems])
    return Coerced(_null_where(text, bad), problems)


def check_integer(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """A 64-bit integer: integer columns, integral floats, or strings like ``"42"``/``"42.0"``."""
    arr = col.combine_chunks()
    if pa.types.is_integer(arr.type):
        return Coerced(pc.cast(arr, pa.int64()), [("is missing", _mask(pc.is_null(arr)))])
    if pa.types.is_floating(arr.type):
        missing = _mask(pc.is_null(arr))
        integral = _mask(pc.and_(pc.is_finite(arr), pc.equal(pc.floor(arr), arr)))
        small = _mask(pc.less(pc.abs(arr), 2.0**62))
        bad = ~missing & ~(integral & small)
        values = pc.cast(_null_where(arr, missing | bad), pa.int64())
        return Coerced(values, [("is missing", missing), ("is not an integer", bad)])
    text, missing = _present(arr)
    ok = _mask(pc.match_substring_regex(text, r"^[+-]?\d{1,18}(\.0*)?$"))
    # Arrow parses neither a "+" sign nor a fraction: both go before the cast.
    digits = pc.replace_substring_regex(text, r"^\+|\.0*$", "")
    values = pc.cast(_null_where(digits, ~ok), pa.int64())
    return Coerced(values, [("is missing", missing), ("is not an integer", ~missing & ~ok)])


def check_positive_float(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """A finite number > 0 (numeric columns or numeric strings)."""
    arr = col.combine_chunks()
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        missing = _mask(pc.is_null(arr))
        number = pc.cast(arr, pa.float64())
        not_number = np.zeros(len(arr), dtype=bool)
    else:
        text, missing = _present(arr)
        looks = _mask(pc.match_substring_regex(text, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"))
        not_number = ~missing & ~looks
        number = pc.cast(_null_where(text, ~looks), pa.float64())
    positive = _mask(pc.and_(pc.is_finite(number), pc.greater(number, 0.0)))
    not_positive = ~missing & ~not_number & ~positive
    problems = [
        ("is missing", missing),
        ("is not a number", not_number),
        ("is not a positive finite number", not_positive),
    ]
    return Coerced(_null_where(number, missing | not_number | not_positive), problems)


def check_vocabulary(
    col: pa.ChunkedArray, ctx: CheckContext, *, vocabulary: Mapping[str, str]
) -> Coerced:
    """A source word (trimmed, lower-cased) translated by ``vocabulary`` (source -> ours)."""
    text, missing = _present(col)
    words = sorted(vocabulary)
    idx = pc.index_in(pc.utf8_lower(text), value_set=pa.array(words, pa.string()))
    values = pc.take(pa.array([vocabulary[w] for w in words], pa.string()), idx)
    unknown = ~missing & _mask(pc.is_null(idx))
    problems = [("is missing", missing), (f"is not one of {'|'.join(words)}", unknown)]
    return Coerced(_null_where(values, missing | unknown), problems)
