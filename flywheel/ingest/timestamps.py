"""The timestamp check: ISO strings with a zone, tz-aware columns, epoch numbers; to UTC.

By default a timestamp must carry its zone (an offset, ``Z``, a trailing ``UTC``/``GMT``, or
a tz-aware column): a naive one is quarantined rather than guessed, since a wrong guess
shifts events by hours. A source mapping may declare the zone its naive times are in, or
that its timestamps are epoch seconds or milliseconds (:mod:`flywheel.ingest.mapping`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.ingest.checks import CheckContext, Coerced, _mask, _null_where, _present
from flywheel.schemas import TS_TYPE

EpochUnit = Literal["s", "ms"]
_US_PER: dict[str, int] = {"s": 1_000_000, "ms": 1_000}
_EPOCH_WORDS = {"s": "seconds", "ms": "milliseconds"}
#: Epoch values beyond this many µs (about year 5138) are refused rather than overflowed.
_MAX_US = 1e17

_AWARE_ISO = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)$"
_NAIVE_ISO = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$"
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)$"


def _localize(naive: pa.Array, zone: str) -> tuple[pa.Array, np.ndarray]:
    """Naive wall-clock times (strings or a naive timestamp column) read in ``zone``, as UTC.

    Returns the values and the mask of rows that parsed but do not exist or are ambiguous
    in ``zone`` (DST changes); those, and strings that do not parse, are null.
    """
    import pandas as pd

    if pa.types.is_string(naive.type):
        parsed = pd.to_datetime(naive.to_pandas(), format="ISO8601", errors="coerce")
    else:
        parsed = pd.Series(naive.to_pandas()).astype("datetime64[us]")
    local = parsed.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    lost = (parsed.notna() & local.isna()).to_numpy(dtype=bool)
    return pc.cast(pa.Array.from_pandas(local.dt.tz_convert("UTC")), TS_TYPE, safe=False), lost


def _parse_strings(
    text: pa.Array, zone: str | None
) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    """ISO strings to UTC: (values, naive mask, unparseable mask, not-in-zone mask)."""
    import pandas as pd

    text = pc.replace_substring_regex(text, r"\s*(UTC|GMT)$", "Z")
    aware = _mask(pc.match_substring_regex(text, _AWARE_ISO))
    naive = _mask(pc.match_substring_regex(text, _NAIVE_ISO))
    parsed = pd.to_datetime(
        _null_where(text, ~aware).to_pandas(), format="ISO8601", utc=True, errors="coerce"
    )
    values = pc.cast(pa.Array.from_pandas(parsed), TS_TYPE, safe=False)
    unparseable = ~aware & ~naive | (aware & _mask(pc.is_null(values)))
    not_in_zone = np.zeros(len(text), dtype=bool)
    if zone is not None and naive.any():
        local, not_in_zone = _localize(_null_where(text, ~naive), zone)
        unparseable |= naive & ~not_in_zone & _mask(pc.is_null(local))
        values = pc.if_else(pa.array(naive), local, values)
        naive = np.zeros(len(text), dtype=bool)
    return values, naive, unparseable, not_in_zone


def _epoch(arr: pa.Array, unit: EpochUnit) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Epoch numbers (numeric column or numeric strings): (values, missing, not a number)."""
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        missing = _mask(pc.is_null(arr))
        number = pc.cast(arr, pa.float64())
    else:
        text, missing = _present(arr)
        looks = _mask(pc.match_substring_regex(text, _NUMBER))
        number = pc.cast(_null_where(text, ~looks), pa.float64())
    us = pc.round(pc.multiply(number, float(_US_PER[unit])))
    ok = _mask(pc.and_(pc.is_finite(us), pc.less(pc.abs(us), _MAX_US)))
    values = pc.cast(pc.cast(_null_where(us, ~ok), pa.int64()), TS_TYPE)
    return values, missing, ~missing & ~ok


def check_timestamp(
    col: pa.ChunkedArray,
    ctx: CheckContext,
    *,
    future: bool = True,
    zone: str | None = None,
    epoch: EpochUnit | None = None,
) -> Coerced:
    """An instant, converted to UTC; with ``future``, at most the skew past ``now``.

    Args:
        col: the raw column: ISO strings, a timestamp column, or (with ``epoch``) numbers.
        ctx: the ingest clock and allowed skew.
        future: refuse instants more than ``ctx.max_future_skew_s`` after ``ctx.now``.
        zone: an IANA zone naive times are read in (default: naive times are refused).
        epoch: the values are epoch seconds (``"s"``) or milliseconds (``"ms"``), UTC.
    """
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    missing = _mask(pc.is_null(arr))
    naive = unparseable = not_in_zone = not_epoch = np.zeros(n, dtype=bool)
    if epoch is not None:
        values, missing, not_epoch = _epoch(arr, epoch)
    elif pa.types.is_timestamp(arr.type) and arr.type.tz is not None:
        values = pc.cast(arr, TS_TYPE, safe=False)
    elif (pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type)) and zone is not None:
        values, not_in_zone = _localize(pc.cast(arr, pa.timestamp("us")), zone)
    elif pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        naive, values = ~missing, pa.nulls(n, TS_TYPE)
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text, missing = _present(arr)
        values, naive, unparseable, not_in_zone = _parse_strings(text, zone)
        naive, unparseable = naive & ~missing, unparseable & ~missing
    else:
        unparseable, values = ~missing, pa.nulls(n, TS_TYPE)
    problems = [
        ("is missing", missing),
        ("has no timezone", naive),
        ("is not an ISO-8601 timestamp", unparseable),
        (f"does not exist or is ambiguous in {zone}", not_in_zone),
    ]
    if epoch is not None:
        problems = [problems[0], (f"is not epoch {_EPOCH_WORDS[epoch]}", not_epoch)]
    if future:
        limit = pa.scalar(ctx.now + timedelta(seconds=ctx.max_future_skew_s), TS_TYPE)
        problems.append(
            (
                f"is more than {ctx.max_future_skew_s} s in the future",
                _mask(pc.greater(values, limit)),
            )
        )
    bad = np.logical_or.reduce([m for _, m in problems])
    return Coerced(_null_where(values, bad), problems)
