"""From a monitor record (and the logs of the champion's first day) to the policy's
signals, and ``monitor --decide``'s trigger (``flywheel.monitor.signals``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from flywheel.config import Settings
from flywheel.monitor import MonitorResult
from flywheel.monitor.signals import add_trigger, signals_from_record
from flywheel.predlog import LogWriter, log_dir

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TAG = "flywheel-ranker:a"


def _pointer(settings: Settings, updated_at: datetime) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "champion.json").write_text(
        json.dumps({"champion": TAG, "history": [], "updated_at": updated_at.isoformat()})
    )


def _serve(settings: Settings, at: datetime, n: int, clicked_every: int, tag: str = TAG) -> None:
    predictions = LogWriter(log_dir(settings, "predictions"), "predictions")
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    for r in range(n):
        ts = at + timedelta(minutes=r)
        rid = f"{tag}-{at:%d%H}-{r}"
        predictions.append(
            [
                {"request_id": rid, "ts": ts, "user_id": "u1", "item_id": f"i{p}", "position": p,
                 "score": 0.9 - 0.1 * p, "model_version": tag, "propensity": 0.9,
                 "features": "{}"}
                for p in range(5)
            ]
        )  # fmt: skip
        if clicked_every and r % clicked_every == 0:
            feedback.append(
                [{"request_id": rid, "item_id": "i0", "event_type": "click",
                  "ts": ts + timedelta(minutes=1)}]
            )  # fmt: skip


RECORD = {
    "drift": {
        "features": [
            {"name": "views_7d", "status": "alert", "psi": 0.5},
            {"name": "price", "status": "warn", "psi": 0.15},
        ],
        "prediction": {"name": "score", "status": "alert", "psi": 0.4},
    },
    "quality": {
        "versions": [
            {"model_version": "flywheel-ranker:old", "impressions": 9, "ctr": {"rate": 0.5},
             "auc": 0.9},
            {"model_version": TAG, "impressions": 2000, "ctr": {"rate": 0.01}, "auc": 0.6},
        ]
    },
}  # fmt: skip


@pytest.fixture
def settings(tmp_path):
    s = Settings(workspace=tmp_path)
    _pointer(s, T0)
    _serve(s, T0 + timedelta(hours=1), 40, clicked_every=4)  # baseline: 10 clicks / 200
    _serve(s, T0 + timedelta(hours=30), 40, clicked_every=0)  # after the baseline's 24 h
    return s


def test_signals_read_the_record_and_the_champions_first_day(settings):
    now = T0 + timedelta(hours=50)
    got = signals_from_record(settings, RECORD, now)
    assert got.champion_age_h == pytest.approx(50)
    assert got.drifted_inputs == ("views_7d",)  # warn is not a drift alarm
    assert got.score_psi == 0.4
    assert (got.impressions, got.served_ctr, got.delayed_auc) == (2000, 0.01, 0.6)
    assert got.baseline_impressions == 200
    assert got.baseline_ctr == pytest.approx(10 / 200)


def test_insufficient_prediction_drift_and_no_champion_traffic(settings):
    record = {"drift": {"prediction": {"status": "insufficient", "psi": 3.0}}}
    got = signals_from_record(settings, record, T0 + timedelta(hours=2))
    assert got.score_psi is None and got.served_ctr is None and got.impressions == 0


def test_decide_adds_the_trigger_to_the_json(settings, tmp_path):
    path = tmp_path / "monitor.json"
    result = MonitorResult(dict(RECORD), path, tmp_path / "monitor.html", 0.0)
    trigger = add_trigger(settings, result, T0 + timedelta(hours=50))
    written = json.loads(path.read_text())["trigger"]
    assert written == trigger and trigger["fire"] is True
    assert any(r.startswith("drift: score PSI 0.400") for r in trigger["reasons"])
    # CTR 0.01 against a 0.05 baseline, both samples large enough -> performance fires too
    quiet = Settings(workspace=settings.workspace, retrain={"min_impressions": 100})
    trigger = add_trigger(quiet, result, T0 + timedelta(hours=50))
    assert any(r.startswith("performance: served CTR 0.0100") for r in trigger["reasons"])
