"""Where the served lake tables live, reading them back, and the served-log watermark."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from flywheel import lake
from flywheel.predlog import normal_traffic
from flywheel.schemas import (
    FEEDBACK_SCHEMA,
    PREDICTION_LOG_SCHEMA,
    TS_TYPE,
)

if TYPE_CHECKING:
    import pandas as pd

    from flywheel.config import Settings
from flywheel.served.checks import SERVED_STATE_FILE, ServedIngestError


def predictions_dir(settings: Settings) -> Path:
    """The prediction-log lake table (``PREDICTION_LOG_SCHEMA``, partitioned by date)."""
    return settings.lake_dir / "predictions"


def feedback_dir(settings: Settings) -> Path:
    """The feedback lake table (``FEEDBACK_SCHEMA``, partitioned by date)."""
    return settings.lake_dir / "feedback"


def read_served_table(
    root: Path,
    schema: pa.Schema,
    columns: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pa.Table:
    """Rows of a served lake table with ``start <= ts < end`` (bounds optional, tz-aware)."""
    import pyarrow.dataset as ds

    names = list(columns or schema.names)
    files = lake.partition_files(root, start, end)
    if not files:
        return schema.empty_table().select(names)
    cond = None
    if start is not None:
        cond = ds.field("ts") >= pa.scalar(start, TS_TYPE)
    if end is not None:
        upper = ds.field("ts") < pa.scalar(end, TS_TYPE)
        cond = upper if cond is None else cond & upper
    dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
    return dataset.to_table(columns=names, filter=cond)


def read_served(
    settings: Settings, start: datetime, end: datetime, feedback_end: datetime | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions with ``start <= ts < end`` and feedback with ``start <= ts < feedback_end``
    (default ``end``), as ``label_served_impressions`` takes them: ``(request_id, ts,
    user_id, item_id)`` and ``(request_id, item_id, event_type, ts)``; both empty when
    nothing was served. Degraded predictions (ranked without the online store) are left
    out: they are not the model's normal traffic, so nothing trains on them."""
    predictions = read_served_table(
        predictions_dir(settings),
        PREDICTION_LOG_SCHEMA,
        ["request_id", "ts", "user_id", "item_id", "degraded"],
        start,
        end,
    )
    predictions = normal_traffic(predictions).drop(["degraded"])
    feedback = read_served_table(
        feedback_dir(settings), FEEDBACK_SCHEMA, None, start, feedback_end or end
    )
    return predictions.to_pandas(), feedback.to_pandas()


def request_users(settings: Settings, request_ids: Sequence[str]) -> dict[str, str]:
    """request id -> user id, from the prediction-log lake table."""
    import pyarrow.dataset as ds

    files = lake.partition_files(predictions_dir(settings))
    if not files or not request_ids:
        return {}
    dataset = ds.dataset([str(f) for f in files], schema=PREDICTION_LOG_SCHEMA, format="parquet")
    wanted = pa.array(sorted(set(request_ids)), pa.string())
    table = dataset.to_table(
        columns=["request_id", "user_id"], filter=ds.field("request_id").isin(wanted)
    )
    return dict(zip(table["request_id"].to_pylist(), table["user_id"].to_pylist(), strict=True))


# ---- State -----------------------------------------------------------------------------


def served_state_path(settings: Settings) -> Path:
    """Where the served-log watermark (bytes consumed per log file) lives."""
    return settings.state_dir / SERVED_STATE_FILE


def read_served_state(settings: Settings) -> dict[str, Any]:
    """``{"predictions": {"files": {rel path: offset}}, "feedback": {...}}`` or ``{}``.

    Raises:
        ServedIngestError: the file exists but is not a JSON object (naming it).
    """
    return lake.read_json_state(served_state_path(settings), "served state", ServedIngestError)


def advance_lake_state(
    state: dict[str, Any], events_max_ts: datetime | None, added: Mapping[str, int]
) -> dict[str, Any]:
    """The event lake's state after a served ingest (pure).

    The events watermark moves to the newest feedback event (features materialize up to
    it); ``served`` counts the rows accepted so far per table, so the lake fingerprint that
    drives pipeline caching changes exactly when served data arrived.
    """
    events = dict(state.get("events", {}))
    marks = [m for m in (events.get("watermark"), events_max_ts and events_max_ts.isoformat()) if m]
    if marks:
        events["watermark"] = max(marks, key=datetime.fromisoformat)
    served = dict(state.get("served", {}))
    for table, n in added.items():
        served[f"{table}_rows"] = int(served.get(f"{table}_rows", 0)) + int(n)
    return {**state, "events": events, "served": served, "version": 1}


# ---- Orchestration ------------------------------------------------------------------------
