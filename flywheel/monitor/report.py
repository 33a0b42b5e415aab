"""``flywheel monitor``: read the logs and the champion's training set, write the report.

Writes ``DIR/monitor.json`` (schema :data:`SCHEMA_VERSION`, README "Watching the live
model") and ``DIR/monitor.html`` (:mod:`flywheel.monitor.html`). Each part degrades on its
own: no champion/shards means no drift section (``drift.error`` says why), no feature
tables means no skew section (``skew.error``); served quality needs only the logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from flywheel.monitor.quality import Period, choose_period, labelled_impressions, served_quality

if TYPE_CHECKING:
    import pandas as pd

    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: Version of ``monitor.json``'s layout; bumped when a field changes meaning or goes.
SCHEMA_VERSION: Final = 1
JSON_NAME: Final = "monitor.json"
HTML_NAME: Final = "monitor.html"


@dataclasses.dataclass(frozen=True)
class MonitorResult:
    """What ``flywheel monitor`` wrote and found."""

    record: dict[str, Any]
    json_path: Path
    html_path: Path
    seconds: float


def _jsonable(value: Any) -> Any:
    """Dataclasses, datetimes, paths and numpy scalars as JSON values; NaN/inf as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_window(
    settings: Settings, since: datetime | None, until: datetime | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prediction and feedback records with ``since <= ts < until`` (feedback: any later).

    Feedback after ``until`` still counts for impressions served before it: an
    impression's outcome may arrive after the window. Degraded predictions (ranked
    without the online store, ``degraded`` true) are left out: served quality, drift and
    the retraining policy judge the model's normal traffic; an outage shows on the
    service's own gauges (``flywheel_online_store_up``, ``flywheel_degraded_requests_total``).
    """
    from flywheel.predlog import normal_traffic, read_feedback_logs, read_prediction_logs

    predictions = normal_traffic(read_prediction_logs(settings, since)).to_pandas()
    if until is not None and len(predictions):
        predictions = predictions.loc[predictions["ts"] < until]
    feedback = read_feedback_logs(settings, since).to_pandas()
    return predictions.reset_index(drop=True), feedback


def _drift_section(
    settings: Settings, impressions: pd.DataFrame, reference_dir: Path | None
) -> dict[str, Any]:
    from flywheel.monitor.drift import compare, feature_drift, label_drift, served_model_inputs
    from flywheel.monitor.reference import ReferenceError, load_reference
    from flywheel.registry import RegistryError
    from flywheel.train import ShardError

    try:
        ref = load_reference(settings, reference_dir)
    except (ReferenceError, RegistryError, ShardError, FileNotFoundError) as exc:
        log.warning("monitor: no drift section: %s", exc)
        return {"error": str(exc)}
    rows = impressions
    if ref.champion is not None and (impressions["model_version"] == ref.champion).any():
        rows = impressions.loc[impressions["model_version"] == ref.champion]
    t = settings.monitor
    served = served_model_inputs(rows, ref.feature_service)
    closed = rows.loc[rows["closed"], "label"].to_numpy(dtype=np.float64)
    scores = rows["score"].to_numpy(dtype=np.float64)
    prediction = compare("score", ref.scores, scores, t) if ref.scores is not None else None
    return {
        "champion": ref.champion,
        "feature_service": ref.feature_service,
        "training_set": ref.shards_dir,
        "training_rows": len(ref.labels),
        "served_rows": len(rows),
        "features": feature_drift(ref.inputs, served, t),
        "prediction": prediction,
        "label": label_drift(ref.labels, closed, t),
        "label_rates": {
            "training": float(ref.labels.mean()) if len(ref.labels) else None,
            "served": float(closed.mean()) if len(closed) else None,
        },
    }


def _skew_section(settings: Settings, impressions: pd.DataFrame) -> dict[str, Any]:
    from flywheel.feature_store import FeatureStoreError
    from flywheel.monitor.drift import logged_features
    from flywheel.monitor.skew import skew_check
    from flywheel.ranking import service_of

    if impressions.empty:
        return {"error": "no served rows in the window"}
    registry = settings.feast_dir / "registry.db"
    if settings.feast.registry is None and not registry.is_file():
        # Opening the store would create the folder and an empty registry: a read-only
        # workspace (the retrain CronJob's) must not need that to decide.
        return {"error": f"no Feast registry at {registry}: run `flywheel features` first"}
    service = service_of(logged_features(impressions.head(1000)))
    from feast.errors import FeastError

    try:
        report = skew_check(
            settings, impressions, service, feedback_users=_feedback_users(settings, impressions)
        )
    except (FeatureStoreError, FeastError) as exc:
        log.warning("monitor: no skew section: %s", exc)
        return {"error": str(exc)}
    return dataclasses.asdict(report)


def _feedback_users(settings: Settings, impressions: pd.DataFrame) -> pd.DataFrame:
    """Feedback events (``user_id``, ``ts``) from 7 days before the first served row: the
    pushes that may have moved a served user's online activity (:mod:`flywheel.monitor.skew`)."""
    import pandas as pd

    from flywheel.monitor.skew import PUSH_LOOKBACK
    from flywheel.predlog import read_feedback_logs, read_prediction_logs

    start = (impressions["ts"].min() - PUSH_LOOKBACK).to_pydatetime()
    feedback = read_feedback_logs(settings, start).select(["request_id", "ts"]).to_pandas()
    if feedback.empty:
        return pd.DataFrame({"user_id": [], "ts": []})
    requests = read_prediction_logs(settings, start).select(["request_id", "user_id"])
    users = requests.to_pandas().drop_duplicates("request_id")
    return feedback.merge(users, on="request_id", how="inner")[["user_id", "ts"]]


def _alerts(record: dict[str, Any]) -> list[str]:
    alerts = []
    drift = record.get("drift") or {}
    for row in [*drift.get("features", []), drift.get("prediction"), drift.get("label")]:
        if row and row["status"] in ("warn", "alert"):
            alerts.append(f"drift {row['status']}: {row['name']} (PSI {row['psi'] or 0:.3f})")
    for row in (record.get("skew") or {}).get("features", []):
        if row["status"] == "skewed":
            alerts.append(f"skew: {row['feature']} equal in {row['equal_share']:.1%} of rows")
    return alerts


def run_monitor(
    settings: Settings,
    out_dir: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    period: Period | None = None,
    reference: Path | None = None,
    skew: bool = True,
) -> MonitorResult:
    """Served quality, drift and skew of the window ``[since, until)`` -> JSON + HTML.

    Args:
        settings: the workspace (logs, registry, feature store) and ``monitor`` thresholds.
        out_dir: where ``monitor.json`` and ``monitor.html`` go (created).
        since, until: tz-aware window bounds (default: all logs).
        now: when attribution windows are judged closed (default ``until``, else the
            wall clock).
        period: ``hour`` / ``day`` (default: hours for windows up to two days).
        reference: the champion's shards directory (default: found from its lineage).
        skew: whether to run the skew check (it reads the offline store through Feast).

    Raises:
        NoServingLogsError: nothing served in the window.
    """
    from flywheel.monitor.html import render_page
    from flywheel.report import NoServingLogsError

    started = time.perf_counter()
    for name, bound in (("since", since), ("until", until), ("now", now)):
        if bound is not None and bound.tzinfo is None:
            raise ValueError(f"{name}={bound.isoformat()} is naive; pass a tz-aware time")
    predictions, feedback = read_window(settings, since, until)
    if predictions.empty:
        raise NoServingLogsError(
            "no prediction logs in the window under "
            f"{settings.workspace / 'serving' / 'predictions'}: serve first"
        )
    as_of = now or until or datetime.now(UTC)
    attribution = timedelta(minutes=settings.monitor.attribution_minutes)
    impressions = labelled_impressions(predictions, feedback, attribution, as_of)
    first, last = impressions["ts"].min().to_pydatetime(), impressions["ts"].max().to_pydatetime()
    chosen = period or choose_period(first, last)
    versions, periods = served_quality(impressions, chosen)
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC),
        "window": {
            "since": since,
            "until": until,
            "first_served": first,
            "last_served": last,
            "labels_as_of": as_of,
            "attribution_minutes": settings.monitor.attribution_minutes,
            "period": chosen,
        },
        "totals": {
            "requests": int(impressions["request_id"].nunique()),
            "impressions": len(impressions),
            "duplicate_predictions": len(predictions) - len(impressions),
            "feedback_events": len(feedback),
            "closed_impressions": int(impressions["closed"].sum()),
        },
        "quality": {"versions": versions, "periods": periods},
        "drift": _drift_section(settings, impressions, reference),
        "skew": _skew_section(settings, impressions) if skew else {"error": "skipped"},
        "thresholds": settings.monitor.model_dump(),
    }
    record = _jsonable(record)
    record["alerts"] = _alerts(record)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / JSON_NAME, out_dir / HTML_NAME
    json_path.write_text(json.dumps(record, indent=2, allow_nan=False))
    html_path.write_text(render_page(record))
    log.info("monitor: wrote %s and %s", json_path, html_path)
    return MonitorResult(record, json_path, html_path, time.perf_counter() - started)
