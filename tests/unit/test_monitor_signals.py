"""From a monitor record (and the logs of the champion's first day) to the policy's
signals, and ``monitor --decide``'s trigger (``flywheel.monitor.signals``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from flywheel.config import Settings
from flywheel.monitor import MonitorResult
from flywheel.monitor.signals import add_trigger, signals_from_record
from flywheel.predlog import LogWriter, log_dir
from flywheel.ranking import feature_set

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TAG = "flywheel-ranker:a"


def _pointer(settings: Settings, updated_at: datetime) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "champion.json").write_text(
        json.dumps({"champion": TAG, "history": [], "updated_at": updated_at.isoformat()})
    )


RAW = feature_set("ranking_v2").raw


def _serve(
    settings: Settings, at: datetime, n: int, clicked_every: int, scale: float = 1.0,
    tag: str = TAG,
) -> None:  # fmt: skip
    """``n`` requests of 5 items from ``at`` on, one a minute; raw features ~ U(0, 10) x
    ``scale`` and scores ~ U(0, 1) x ``min(scale, 1)`` (seeded by the time)."""
    predictions = LogWriter(log_dir(settings, "predictions"), "predictions")
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    rng = np.random.default_rng(int(at.timestamp()))
    for r in range(n):
        ts = at + timedelta(minutes=r)
        rid = f"{tag}-{at:%d%H}-{r}"
        predictions.append(
            [
                {"request_id": rid, "ts": ts, "user_id": "u1", "item_id": f"i{p}", "position": p,
                 "score": float(rng.uniform()) * min(scale, 1.0), "model_version": tag,
                 "propensity": 0.9, "features": json.dumps({"category": "c", **{
                     f: ts.timestamp() - float(rng.uniform(0, 36000)) * scale
                     if f.endswith("_unix") else float(rng.uniform(0, 10)) * scale
                     for f in RAW}})}
                for p in range(5)
            ]
        )  # fmt: skip
        if clicked_every and r % clicked_every == 0:
            feedback.append(
                [{"request_id": rid, "item_id": "i0", "event_type": "click",
                  "ts": ts + timedelta(minutes=1)}]
            )  # fmt: skip


RECORD = {
    "window": {"since": (T0 + timedelta(hours=30)).isoformat()},
    "drift": {"feature_service": "ranking_v2"},
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
    _serve(s, T0 + timedelta(hours=2), 40, clicked_every=4)
    _serve(s, T0 + timedelta(hours=30), 40, clicked_every=0, scale=0.2)  # after 24 h: drifted
    return s


def test_signals_read_the_record_the_logs_and_the_champions_first_day(settings):
    now = T0 + timedelta(hours=50)
    got = signals_from_record(settings, RECORD, now)
    assert got.champion_age_h == pytest.approx(50)
    assert (got.impressions, got.served_ctr, got.delayed_auc) == (2000, 0.01, 0.6)
    assert got.baseline_impressions == 400
    assert got.baseline_ctr == pytest.approx(20 / 400)
    # every raw input and the scores shrank to a fifth after the baseline: drift alerts
    assert len(got.drifted_inputs) >= 20 and "views_7d" in got.drifted_inputs
    assert got.score_psi is not None and got.score_psi > 1.0


def test_traffic_like_the_baseline_shows_no_drift(settings):
    """The second hour against the first (same distribution) inside the baseline day is the
    baseline itself; a window of baseline-like traffic after it shows no alert."""
    _serve(settings, T0 + timedelta(hours=60), 80, clicked_every=4)
    record = {**RECORD, "window": {"since": (T0 + timedelta(hours=59)).isoformat()}}
    got = signals_from_record(settings, record, T0 + timedelta(hours=62))
    assert got.drifted_inputs == ()
    assert got.score_psi is not None and got.score_psi < 0.1


def test_no_champion_traffic_gives_no_signals(settings):
    record = {"window": {"since": (T0 + timedelta(hours=100)).isoformat()}}
    got = signals_from_record(settings, record, T0 + timedelta(hours=101))
    assert got.score_psi is None and got.served_ctr is None and got.impressions == 0
    assert got.drifted_inputs == ()


def test_decide_adds_the_trigger_to_the_json(settings, tmp_path):
    path = tmp_path / "monitor.json"
    result = MonitorResult(dict(RECORD), path, tmp_path / "monitor.html", 0.0)
    trigger = add_trigger(settings, result, T0 + timedelta(hours=50))
    written = json.loads(path.read_text())["trigger"]
    assert written == trigger and trigger["fire"] is True
    assert any(r.startswith("drift: score PSI") for r in trigger["reasons"])
    # CTR 0.01 against a 0.05 baseline, both samples large enough -> performance fires too
    quiet = Settings(workspace=settings.workspace, retrain={"min_impressions": 100})
    trigger = add_trigger(quiet, result, T0 + timedelta(hours=50))
    assert any(r.startswith("performance: served CTR 0.0100") for r in trigger["reasons"])
