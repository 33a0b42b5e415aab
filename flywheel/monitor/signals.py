"""From a ``monitor.json`` record to the retraining policy's :class:`~flywheel.policy.Signals`.

* champion age: hours since the champion pointer last changed (``updated_at``);
* drifted inputs: the model inputs whose drift verdict is ``alert``; score PSI: the
  prediction-drift row's PSI (none when it has too few samples);
* window CTR and delayed AUC: the champion's row of the record's per-version quality;
* baseline: the same figures over the champion's first ``retrain.baseline_hours`` of
  traffic, read from the prediction and feedback logs (labels judged at ``now``).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flywheel.policy import Signals

if TYPE_CHECKING:
    from flywheel.config import Settings


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def champion_age_h(settings: Settings, now: datetime) -> float | None:
    from flywheel.registry import champion_state

    state = champion_state(settings)
    if state.champion is None:
        return None
    if not state.updated_at:
        return math.inf
    return (now - datetime.fromisoformat(state.updated_at)).total_seconds() / 3600


def baseline(settings: Settings, tag: str, now: datetime) -> tuple[int, float | None, float | None]:
    """Impressions, CTR and delayed AUC of ``tag``'s first ``baseline_hours`` of traffic."""
    from flywheel.monitor.quality import labelled_impressions, quality_row
    from flywheel.monitor.report import read_window
    from flywheel.registry import champion_state

    updated = champion_state(settings).updated_at
    since = datetime.fromisoformat(updated) - timedelta(days=1) if updated else None
    predictions, feedback = read_window(settings, since, now)
    if predictions.empty:
        return 0, None, None
    predictions = predictions.loc[predictions["model_version"] == tag]
    if predictions.empty:
        return 0, None, None
    first = predictions["ts"].min()
    predictions = predictions.loc[
        predictions["ts"] < first + timedelta(hours=settings.retrain.baseline_hours)
    ]
    attribution = timedelta(minutes=settings.monitor.attribution_minutes)
    rows = labelled_impressions(predictions, feedback, attribution, now)
    row = quality_row(tag, rows, first.to_pydatetime(), rows["ts"].max().to_pydatetime())
    return row.impressions, _finite(row.ctr.rate), _finite(row.auc)


def signals_from_record(settings: Settings, record: dict[str, Any], now: datetime) -> Signals:
    """The policy's inputs at ``now`` from a monitor record of the recent window."""
    from flywheel.registry import current_champion

    tag = current_champion(settings)
    drift = record.get("drift") or {}
    drifted = tuple(
        row["name"] for row in drift.get("features", []) if row.get("status") == "alert"
    )
    prediction = drift.get("prediction") or {}
    score_psi = (
        _finite(prediction.get("psi")) if prediction.get("status") != "insufficient" else None
    )
    mine = [
        v for v in (record.get("quality") or {}).get("versions", []) if v["model_version"] == tag
    ]
    impressions, ctr, auc = 0, None, None
    if mine:
        impressions = int(mine[0]["impressions"])
        ctr, auc = _finite(mine[0]["ctr"]["rate"]), _finite(mine[0]["auc"])
    base_n, base_ctr, base_auc = baseline(settings, tag, now) if tag else (0, None, None)
    return Signals(
        champion_age_h=champion_age_h(settings, now),
        drifted_inputs=drifted,
        score_psi=score_psi,
        impressions=impressions,
        served_ctr=ctr,
        delayed_auc=auc,
        baseline_impressions=base_n,
        baseline_ctr=base_ctr,
        baseline_auc=base_auc,
    )


def add_trigger(settings: Settings, result: Any, now: datetime) -> dict[str, Any]:
    """``flywheel monitor --decide``: decide, and add ``trigger: {fire, reasons, held,
    signals}`` to the result's record and its ``monitor.json``."""
    import json

    from flywheel.policy import decide
    from flywheel.watch import load_runs

    decision = decide(
        settings.retrain,
        signals_from_record(settings, result.record, now),
        load_runs(settings),
        now,
    )
    result.record["trigger"] = decision.as_json()
    result.json_path.write_text(json.dumps(result.record, indent=2, allow_nan=False))
    return result.record["trigger"]
