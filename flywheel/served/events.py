"""Feedback records as events of the event lake (deterministic ids, the request's user)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from flywheel.schemas import (
    EVENT_SCHEMA,
)

if TYPE_CHECKING:
    pass
from flywheel.served.checks import FEEDBACK_DEVICE


def feedback_event_id(request_id: str, item_id: str, event_type: str, ts: datetime) -> str:
    """A deterministic event id for one feedback record: ``fb-`` + 32 hex of its key."""
    micros = round(ts.astimezone(UTC).timestamp() * 1_000_000) if ts.tzinfo else None
    if micros is None:
        raise ValueError(f"ts={ts.isoformat()} is naive; feedback timestamps are tz-aware")
    # An integer id's decimal text: the same event id as before ids became strings.
    blob = f"{request_id}\x1f{item_id}\x1f{event_type}\x1f{micros}".encode()
    return "fb-" + hashlib.sha256(blob).hexdigest()[:32]


def feedback_events(feedback: pa.Table, users: Mapping[str, str]) -> tuple[pa.Table, int]:
    """Feedback records (``FEEDBACK_SCHEMA``) -> events (``EVENT_SCHEMA``).

    Args:
        feedback: validated feedback rows.
        users: request id -> the user it served (from the prediction log).

    Returns:
        The events (user of the request, ``session_id`` = request id, device ``"api"``)
        and how many feedback rows had a request unknown to ``users`` (no event made).
    """
    rows = [r for r in feedback.to_pylist() if r["request_id"] in users]
    table = pa.Table.from_pylist(
        [
            {
                "event_id": feedback_event_id(
                    r["request_id"], r["item_id"], r["event_type"], r["ts"]
                ),
                "user_id": users[r["request_id"]],
                "item_id": r["item_id"],
                "event_type": r["event_type"],
                "ts": r["ts"],
                "session_id": r["request_id"],
                "device": FEEDBACK_DEVICE,
            }
            for r in rows
        ],
        schema=EVENT_SCHEMA,
    )
    return table, feedback.num_rows - len(rows)


# ---- Lake tables of served data ---------------------------------------------------------
