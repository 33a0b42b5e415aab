"""The latest ``monitor.json`` as Prometheus gauges, for the service's ``/metrics``.

``flywheel monitor`` (locally, or the cluster's CronJob) writes
``<workspace>/monitor/monitor.json``; each serving worker renders it on a scrape, re-reading
the file only when its modification time changed. The gauges say what the monitor last saw,
labelled as Prometheus expects, so a cluster's Prometheus/Grafana can alarm on them
(``k8s/grafana/flywheel-dashboard.json``):

=====================================================  ==============================
``flywheel_monitor_generated_timestamp_seconds``       when the record was written
``flywheel_feature_psi{feature}``                      PSI per model input
``flywheel_feature_js_distance{feature}``              Jensen-Shannon distance
``flywheel_feature_drift_alert{feature}``              1 when its status is ``alert``
``flywheel_score_psi``, ``flywheel_label_psi``          prediction and label drift
``flywheel_served_ctr{model_version}``                 served CTR in the window
``flywheel_served_impressions{model_version}``         impressions in the window
``flywheel_served_auc{model_version}``                 delayed-label AUC
``flywheel_feature_skew_equal_share{feature}``         share of rows equal offline/online
``flywheel_retrain_trigger``                           1 when ``--decide`` fired
=====================================================  ==============================

A figure the record lacks (no drift section, NaN) is left out rather than exported as 0.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

_cache: dict[str, tuple[float, str]] = {}


def _escape(text: str) -> str:
    """A label value as the text format needs it (backslash, quote, newline escaped)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(name: str, value: Any, labels: dict[str, str] | None = None) -> str | None:
    if not isinstance(value, int | float):
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    if labels:
        inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {value!r}"
    return f"{name} {value!r}"


_HELP = {
    "flywheel_monitor_generated_timestamp_seconds": "When flywheel monitor wrote its record",
    "flywheel_feature_psi": "PSI of a model input, training vs served",
    "flywheel_feature_js_distance": "Jensen-Shannon distance of a model input",
    "flywheel_feature_drift_alert": "1 when a model input's drift status is alert",
    "flywheel_score_psi": "PSI of the served scores against the champion's training scores",
    "flywheel_label_psi": "PSI of the delayed labels against the training labels",
    "flywheel_served_ctr": "Served CTR per model version in the monitor's window",
    "flywheel_served_impressions": "Impressions per model version in the monitor's window",
    "flywheel_served_auc": "Delayed-label AUC of the served scores per model version",
    "flywheel_feature_skew_equal_share": "Share of sampled rows equal online and offline",
    "flywheel_retrain_trigger": "1 when the retrain policy fired (monitor --decide)",
}


def render_record(record: dict[str, Any]) -> str:
    """The Prometheus text exposition of one monitor record."""
    samples: dict[str, list[str]] = {name: [] for name in _HELP}

    def add(name: str, value: Any, **labels: str) -> None:
        line = _sample(name, value, labels)
        if line is not None:
            samples[name].append(line)

    generated = record.get("generated_at")
    if generated:
        add(
            "flywheel_monitor_generated_timestamp_seconds",
            datetime.fromisoformat(generated).timestamp(),
        )
    drift = record.get("drift") or {}
    for row in drift.get("features", []):
        add("flywheel_feature_psi", row.get("psi"), feature=row["name"])
        add("flywheel_feature_js_distance", row.get("js"), feature=row["name"])
        if row.get("status") != "insufficient":
            add(
                "flywheel_feature_drift_alert",
                int(row.get("status") == "alert"),
                feature=row["name"],
            )
    for key, name in (("prediction", "flywheel_score_psi"), ("label", "flywheel_label_psi")):
        if drift.get(key):
            add(name, drift[key].get("psi"))
    for v in (record.get("quality") or {}).get("versions", []):
        version = v["model_version"]
        add("flywheel_served_ctr", (v.get("ctr") or {}).get("rate"), model_version=version)
        add("flywheel_served_impressions", v.get("impressions"), model_version=version)
        add("flywheel_served_auc", v.get("auc"), model_version=version)
    for row in (record.get("skew") or {}).get("features", []):
        add("flywheel_feature_skew_equal_share", row.get("equal_share"), feature=row["feature"])
    if "trigger" in record:
        add("flywheel_retrain_trigger", int(bool(record["trigger"].get("fire"))))
    out = []
    for name, lines in samples.items():
        if lines:
            out += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge", *lines]
    return "\n".join(out) + ("\n" if out else "")


def monitor_gauges(path: Path) -> str:
    """:func:`render_record` of the file at ``path``, cached by modification time; "" when
    the file is absent or unreadable (the service's other metrics still render)."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return ""
    key = str(path)
    cached = _cache.get(key)
    if cached and cached[0] == mtime:
        return cached[1]
    try:
        text = render_record(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        text = ""
    _cache[key] = (mtime, text)
    return text
