"""Feedback -> the user's online activity row (pushed so user features move at once)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import pyarrow as pa

from flywheel.schemas import USER_ACTIVITY_SCHEMA

#: The view feedback updates.
ACTIVITY_VIEW: Final = "user_activity"
#: ``user_activity`` columns that are not feature values.
_ACTIVITY_KEYS: Final = ("user_id", "event_timestamp", "created_timestamp")
#: The windowed counts one feedback event adds to (views are not feedback events).
_COUNTS_BY_EVENT: Final[dict[str, tuple[str, ...]]] = {
    "click": ("clicks_7d",),
    "cart": ("carts_24h", "carts_7d"),
    "purchase": ("purchases_7d",),
}
#: Every ``user_activity`` value a feedback push can change (the counts, the rates computed
#: from them, the last event time): the skew check (:mod:`flywheel.monitor.skew`) compares
#: these only on rows whose user posted no feedback before the request.
PUSHED_FEATURES: Final = (
    *sorted({name for names in _COUNTS_BY_EVENT.values() for name in names}),
    "cart_rate_7d",
    "conversion_rate_7d",
    "last_event_unix",
)


def activity_after_feedback(
    user_id: str,
    current: Mapping[str, Any] | None,
    current_ts: datetime | None,
    event_type: str,
    at: datetime,
) -> dict[str, Any]:
    """The ``user_activity`` row to push after one feedback event.

    Counts the event in the windows it belongs to (a click in ``clicks_7d``, a cart in
    ``carts_24h`` and ``carts_7d``, a purchase in ``purchases_7d``), recomputes the rates
    from ``views_7d`` as the feature build does, sets ``last_event_unix`` to ``at`` and
    keeps every other value. A user with no fresh row starts from zeros.

    Args:
        current: the user's online ``user_activity`` values, or ``None``.
        current_ts: their event time; the new row is stamped after it (Redis keeps only
            strictly newer rows).
        at: when the feedback happened (the serving clock).

    Returns:
        One row in the ``USER_ACTIVITY_SCHEMA`` shape (tz-aware timestamps).
    """
    if event_type not in _COUNTS_BY_EVENT:
        raise ValueError(f"event_type={event_type!r}; expected one of {list(_COUNTS_BY_EVENT)}")
    row: dict[str, Any] = {"user_id": str(user_id)}
    for f in USER_ACTIVITY_SCHEMA:
        if f.name in _ACTIVITY_KEYS:
            continue
        value = (current or {}).get(f.name)
        row[f.name] = 0.0 if value is None else value
        if pa.types.is_integer(f.type):
            row[f.name] = int(row[f.name])
    for name in _COUNTS_BY_EVENT[event_type]:
        row[name] += 1
    views = row["views_7d"]
    row["cart_rate_7d"] = row["carts_7d"] / views if views else 0.0
    row["conversion_rate_7d"] = row["purchases_7d"] / views if views else 0.0
    row["last_event_unix"] = at.timestamp()
    stamp = at if current_ts is None else max(at, current_ts + timedelta(microseconds=1))
    row["event_timestamp"] = stamp
    row["created_timestamp"] = stamp
    return row
