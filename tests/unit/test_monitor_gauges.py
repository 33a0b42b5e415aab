"""The monitor record as Prometheus gauges, and the Grafana dashboard that reads them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from flywheel.monitor.gauges import _HELP, monitor_gauges, render_record

ROOT = Path(__file__).resolve().parents[2]
RECORD = {
    "generated_at": "2026-12-01T00:00:00+00:00",
    "drift": {
        "features": [
            {"name": "views_7d", "psi": 0.42, "js": 0.2, "status": "alert"},
            {"name": 'odd "name"\\x', "psi": 0.01, "js": 0.0, "status": "ok"},
            {"name": "rare", "psi": None, "js": None, "status": "insufficient"},
        ],
        "prediction": {"psi": 0.3},
        "label": None,
    },
    "quality": {
        "versions": [
            {"model_version": "m:1", "impressions": 10, "ctr": {"rate": 0.3}, "auc": 0.61},
            {"model_version": "m:2", "impressions": 0, "ctr": {"rate": None}, "auc": None},
        ]
    },
    "skew": {"features": [{"feature": "views_7d", "equal_share": 0.5}]},
    "trigger": {"fire": True},
}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_record_renders_as_parseable_gauges():
    got = _samples(render_record(RECORD))
    assert got[("flywheel_feature_psi", (("feature", "views_7d"),))] == 0.42
    assert got[("flywheel_feature_psi", (("feature", 'odd "name"\\x'),))] == 0.01
    assert got[("flywheel_feature_drift_alert", (("feature", "views_7d"),))] == 1
    assert got[("flywheel_feature_drift_alert", (("feature", 'odd "name"\\x'),))] == 0
    assert ("flywheel_feature_drift_alert", (("feature", "rare"),)) not in got
    assert ("flywheel_feature_psi", (("feature", "rare"),)) not in got  # null: left out
    assert got[("flywheel_score_psi", ())] == 0.3
    assert got[("flywheel_served_ctr", (("model_version", "m:1"),))] == 0.3
    assert ("flywheel_served_ctr", (("model_version", "m:2"),)) not in got
    assert got[("flywheel_served_impressions", (("model_version", "m:2"),))] == 0
    assert got[("flywheel_feature_skew_equal_share", (("feature", "views_7d"),))] == 0.5
    assert got[("flywheel_retrain_trigger", ())] == 1
    assert got[("flywheel_monitor_generated_timestamp_seconds", ())] == 1796083200.0


def test_the_file_is_read_again_only_when_it_changed(tmp_path):
    path = tmp_path / "monitor.json"
    assert monitor_gauges(path) == ""  # absent: nothing, no error
    path.write_text(json.dumps(RECORD))
    assert "flywheel_score_psi 0.3" in monitor_gauges(path)
    path.write_text(json.dumps({**RECORD, "drift": {"prediction": {"psi": 0.9}}}))
    os.utime(path, (1, 1))
    assert "flywheel_score_psi 0.9" in monitor_gauges(path)
    path.write_text("{not json")
    os.utime(path, (2, 2))
    assert monitor_gauges(path) == ""


def test_the_dashboard_reads_only_metrics_that_exist():
    dashboard = json.loads((ROOT / "k8s" / "grafana" / "flywheel-dashboard.json").read_text())
    service = (ROOT / "serving" / "service.py").read_text()
    counters = {f"{m}_total" for m in re.findall(r'counter\(\s*"(flywheel_[a-z_]+)"', service)}
    known = set(_HELP) | counters
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"flywheel_[a-z_]+", e)}
    assert used and used <= known, used - known
    assert {"flywheel_served_ctr", "flywheel_feature_psi"} <= used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
