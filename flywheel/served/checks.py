"""The served logs' contracts: lake keys, value checks of prediction and feedback records,
and their input kinds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.ingest import (
    CheckContext,
    Coerced,
    InputKind,
    check_id,
    check_integer,
    check_string,
    check_timestamp,
)
from flywheel.schemas import (
    FEEDBACK_SCHEMA,
    FEEDBACK_TYPES,
    PREDICTION_LOG_SCHEMA,
)

if TYPE_CHECKING:
    pass


#: Name of the served-log watermark under ``settings.state_dir``.
SERVED_STATE_FILE: Final = "served_state.json"
#: ``device`` of events that came from serving feedback.
FEEDBACK_DEVICE: Final = "api"
#: Dedupe keys of the lake tables.
PREDICTION_KEY: Final[tuple[str, ...]] = ("request_id", "item_id")
FEEDBACK_KEY: Final[tuple[str, ...]] = ("request_id", "item_id", "event_type", "ts")
EVENT_KEY: Final[tuple[str, ...]] = ("event_id",)
#: Quarantine reason of a log line that is not a JSON object.
NOT_JSON: Final = "not a non-empty JSON object"
_INT32_MAX: Final = 2**31 - 1


class ServedIngestError(ValueError):
    """Served logs cannot be ingested; the message names the file and what was expected."""


# ---- Column checks for the log contracts (pure) -------------------------------------------


def _float_values(col: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Any column as float64: (values, missing mask, not-a-number mask)."""
    arr = col.combine_chunks()
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        missing = np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool)
        return pc.cast(arr, pa.float64()), missing, np.zeros(len(arr), dtype=bool)
    text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    missing = _mask(pc.or_kleene(pc.is_null(text), pc.equal(text, "")))
    looks = _mask(pc.match_substring_regex(text, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"))
    values = pc.cast(_nulled(text, ~looks), pa.float64())
    return values, missing, ~missing & ~looks


def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _finite(values: pa.Array) -> np.ndarray:
    return _mask(pc.is_finite(values))


def _nulled(values: pa.Array, bad: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(bad), pa.nulls(len(values), values.type), values)


def check_score(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """A finite number (a model score may have any sign)."""
    values, missing, not_number = _float_values(col)
    infinite = ~missing & ~not_number & ~_finite(values)
    problems = [("is missing", missing), ("is not a number", not_number)]
    problems.append(("is not finite", infinite))
    return Coerced(_nulled(values, missing | not_number | infinite), problems)


def check_propensity(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """A probability in ``(0, 1]``: the chance the policy served this item in this slot."""
    values, missing, not_number = _float_values(col)
    ok = _finite(values) & _mask(pc.and_(pc.greater(values, 0.0), pc.less_equal(values, 1.0)))
    out_of_range = ~missing & ~not_number & ~ok
    problems = [("is missing", missing), ("is not a number", not_number)]
    problems.append(("is not in (0, 1]", out_of_range))
    return Coerced(_nulled(values, missing | not_number | out_of_range), problems)


def check_position(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """A slot index: an integer in ``[0, 2**31)``, as int32."""
    checked = check_integer(col, ctx)
    bad_so_far = np.logical_or.reduce([m for _, m in checked.problems])
    in_range = pc.and_(
        pc.greater_equal(checked.values, 0), pc.less_equal(checked.values, _INT32_MAX)
    )
    out = ~bad_so_far & ~_mask(in_range)
    values = pc.cast(_nulled(checked.values, bad_so_far | out), pa.int32())
    return Coerced(values, [*checked.problems, (f"is not in [0, {_INT32_MAX}]", out)])


def check_optional_json(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """Optional JSON text (the features the model saw); null stays null."""
    arr = col.combine_chunks()
    values = arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())
    return Coerced(values, [])


def check_optional_flag(col: pa.ChunkedArray, ctx: CheckContext) -> Coerced:
    """An optional boolean (``degraded``): ``true``/``false``, null stays null."""
    arr = col.combine_chunks()
    if pa.types.is_boolean(arr.type):
        return Coerced(arr, [])
    text = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(arr, pa.string())))
    present = ~_mask(pc.is_null(text))
    true, false = _mask(pc.equal(text, "true")), _mask(pc.equal(text, "false"))
    values = pa.array(true, pa.bool_(), mask=~(present & (true | false)))
    return Coerced(values, [("is not true or false", present & ~true & ~false)])


PREDICTIONS: Final = InputKind(
    name="predictions",
    schema=PREDICTION_LOG_SCHEMA,
    checks={
        "request_id": check_string,
        "ts": check_timestamp,
        "user_id": check_id,
        "item_id": check_id,
        "position": check_position,
        "score": check_score,
        "model_version": check_string,
        "propensity": check_propensity,
        "features": check_optional_json,
        "degraded": check_optional_flag,
    },
    partition_by="ts",
)

FEEDBACK: Final = InputKind(
    name="feedback",
    schema=FEEDBACK_SCHEMA,
    checks={
        "request_id": check_string,
        "item_id": check_id,
        "event_type": lambda col, ctx: check_string(col, ctx, allowed=FEEDBACK_TYPES),
        "ts": check_timestamp,
    },
    partition_by="ts",
)

KINDS: Final[dict[str, tuple[InputKind, tuple[str, ...]]]] = {
    "predictions": (PREDICTIONS, PREDICTION_KEY),
    "feedback": (FEEDBACK, FEEDBACK_KEY),
}


# ---- Reading log files from a byte offset (pure apart from the read) ----------------------
