"""From a ``monitor.json`` record to the retraining policy's :class:`~flywheel.policy.Signals`.

* champion age: hours since the champion pointer last changed (``updated_at``);
* window CTR and delayed AUC: the champion's row of the record's per-version quality;
* baseline: the champion's first ``retrain.baseline_hours`` of served traffic, read from
  the prediction and feedback logs (labels judged at ``now``): its CTR and AUC, and its
  logged model inputs and scores;
* drifted inputs and score PSI: the window's served model inputs and scores against the
  baseline's, with the monitor's thresholds (``alert`` counts).

Why the trigger's drift is served-against-served while ``monitor.json`` reports
training-against-served: served candidates are not training rows (a default candidate set
of popular and new items, every user, any hour), so the training distribution differs from
what any champion serves on its first day. Measured on the simulator
(``benchmarks/trigger_delay.py``): against the training set, 33 of 49 inputs and the score
PSI were in ``alert`` on the first served day of a world that had not drifted. Against the
champion's own first day only a change in who comes and what they do moves them.
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


def _served(settings: Settings, tag: str, now: datetime) -> Any:
    """``tag``'s labelled impressions served before ``now`` (labels judged at ``now``)."""
    from flywheel.monitor.quality import labelled_impressions
    from flywheel.monitor.report import read_window

    predictions, feedback = read_window(settings, None, now)
    if predictions.empty:
        return None
    predictions = predictions.loc[predictions["model_version"] == tag]
    if predictions.empty:
        return None
    attribution = timedelta(minutes=settings.monitor.attribution_minutes)
    return labelled_impressions(predictions, feedback, attribution, now)


def baseline_rows(settings: Settings, served: Any) -> Any:
    """The first ``retrain.baseline_hours`` of ``served`` (the champion's baseline)."""
    first = served["ts"].min()
    return served.loc[served["ts"] < first + timedelta(hours=settings.retrain.baseline_hours)]


def baseline(settings: Settings, tag: str, served: Any) -> tuple[int, float | None, float | None]:
    """Impressions, CTR and delayed AUC of the first ``baseline_hours`` of ``served`` (the
    champion ``tag``'s labelled impressions, from :func:`_served`)."""
    from flywheel.monitor.quality import quality_row

    if served is None:
        return 0, None, None
    rows = baseline_rows(settings, served)
    row = quality_row(tag, rows, rows["ts"].min(), rows["ts"].max())
    return row.impressions, _finite(row.ctr.rate), _finite(row.auc)


def served_drift(
    settings: Settings, served: Any, service: str, since: datetime
) -> tuple[tuple[str, ...], float | None]:
    """Inputs in drift ``alert`` and the score PSI of ``served`` (the champion's labelled
    impressions) from ``since`` on, against its baseline (nothing when the window is the
    baseline or too small)."""
    from flywheel.monitor.drift import compare, feature_drift, served_model_inputs

    if served is None:
        return (), None
    base = baseline_rows(settings, served)
    window = served.loc[(served["ts"] >= since) & ~served.index.isin(base.index)]
    if window.empty:
        return (), None
    t = settings.monitor
    rows = feature_drift(
        served_model_inputs(base, service), served_model_inputs(window, service), t
    )
    score = compare("score", base["score"].to_numpy(), window["score"].to_numpy(), t)
    drifted = tuple(r.name for r in rows if r.status == "alert")
    return drifted, (_finite(score.psi) if score.status != "insufficient" else None)


def signals_from_record(
    settings: Settings, record: dict[str, Any], now: datetime, since: datetime | None = None
) -> Signals:
    """The policy's inputs at ``now`` from a monitor record of the window ``[since, now)``
    (default: the record's own ``window.since``, else everything)."""
    from flywheel.feature_store import feature_service_name
    from flywheel.registry import current_champion

    tag = current_champion(settings)
    drift = record.get("drift") or {}
    service = drift.get("feature_service") or feature_service_name(settings)
    window = record.get("window") or {}
    if since is None and window.get("since"):
        since = datetime.fromisoformat(window["since"])
    served = _served(settings, tag, now) if tag else None  # read and labelled once
    drifted, score_psi = served_drift(
        settings, served, service, since or datetime.min.replace(tzinfo=now.tzinfo)
    )
    mine = [
        v for v in (record.get("quality") or {}).get("versions", []) if v["model_version"] == tag
    ]
    impressions, ctr, auc = 0, None, None
    if mine:
        impressions = int(mine[0]["impressions"])
        ctr, auc = _finite(mine[0]["ctr"]["rate"]), _finite(mine[0]["auc"])
    base_n, base_ctr, base_auc = baseline(settings, tag or "", served)
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
