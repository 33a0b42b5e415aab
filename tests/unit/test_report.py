"""`flywheel report` on hand-built serving logs: references are counted by hand here."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flywheel.config import Settings
from flywheel.predlog import LogWriter, log_dir
from flywheel.report import NoServingLogsError, model_report, served_impressions
from flywheel.serving import epsilon_greedy

T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
V1, V2 = "flywheel-ranker:aaa", "flywheel-ranker:bbb"
EPS = 0.2


def _propensities(explored: list[bool], m0: int) -> list[float]:
    """What epsilon-greedy logs for these choices, ``m0`` candidates at the first slot."""
    out = []
    for slot, exp in enumerate(explored):
        m = m0 - slot
        out.append(EPS / m if exp else 1 - EPS + EPS / m)
    return out


def _request(rid: str, ts: datetime, version: str, slate: list[tuple[int, float, bool]]) -> Any:
    """Records of one request: ``slate`` is (item, score, explored) per position."""
    props = _propensities([e for *_, e in slate], m0=8)
    return [
        {"request_id": rid, "ts": ts, "user_id": 1, "item_id": item, "position": pos,
         "score": score, "model_version": version, "propensity": p, "features": None}
        for pos, ((item, score, _), p) in enumerate(zip(slate, props, strict=True))
    ]  # fmt: skip


REQUESTS = [
    ("r1", T0, V1, [(10, 0.05, False), (11, 0.15, True), (12, 0.35, False)]),
    ("r2", T0 + timedelta(minutes=1), V1, [(10, 0.08, False), (13, 0.95, False)]),
    ("r3", T0 + timedelta(hours=2), V2, [(20, 0.62, False), (21, 0.66, True), (22, 0.12, True)]),
    ("r4", T0 + timedelta(hours=3), V2, [(20, 1.0, False)]),
]
FEEDBACK = [
    ("r1", 11, "click"),
    ("r1", 11, "purchase"),  # the same impression: engaged once
    ("r1", 12, "cart"),  # a cart counts as engaged
    ("r2", 13, "click"),
    ("r3", 21, "purchase"),
    ("r4", 20, "click"),
    ("r9", 10, "click"),  # names no served impression
    ("r2", 99, "click"),  # a request that was served, an item that was not
]


def _write_logs(settings: Settings, duplicate: bool = True) -> None:
    writer = LogWriter(log_dir(settings, "predictions"), "predictions")
    for rid, ts, version, slate in REQUESTS:
        writer.append(_request(rid, ts, version, slate))
    if duplicate:  # a retried write of r1's first record must not count twice
        writer.append(_request("r1", T0, V1, REQUESTS[0][3])[:1])
    writer.close()
    fb = LogWriter(log_dir(settings, "feedback"), "feedback")
    for i, (rid, item, kind) in enumerate(FEEDBACK):
        ts = T0 + timedelta(hours=4, seconds=i)
        fb.append([{"request_id": rid, "item_id": item, "event_type": kind, "ts": ts}])
    fb.close()


def _ece_by_hand(rows: list[tuple[float, int]]) -> float:
    """ECE over bins [0,.1),...,[.9,1] written out without numpy."""
    bins: dict[int, list[tuple[float, int]]] = {}
    for p, y in rows:
        bins.setdefault(min(int(p * 10), 9), []).append((p, y))
    total = 0.0
    for members in bins.values():
        mean_p = sum(p for p, _ in members) / len(members)
        rate = sum(y for _, y in members) / len(members)
        total += len(members) / len(rows) * abs(mean_p - rate)
    return total


def test_ctr_explored_share_and_counts_per_version(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    _write_logs(settings)
    report = model_report(settings, None)
    assert [v.model_version for v in report.versions] == [V1, V2]  # first served first
    v1, v2 = report.versions
    # V1: 5 impressions (r1: 10, 11, 12; r2: 10, 13), engaged r1/11, r1/12, r2/13.
    assert (v1.requests, v1.impressions, v1.engaged) == (2, 5, 3)
    assert v1.ctr == pytest.approx(3 / 5)
    assert v1.explored_share == pytest.approx(1 / 5)
    # V2: 4 impressions, engaged r3/21 and r4/20; explored r3/21 and r3/22.
    assert (v2.requests, v2.impressions, v2.engaged) == (2, 4, 2)
    assert v2.ctr == pytest.approx(2 / 4)
    assert v2.explored_share == pytest.approx(2 / 4)
    assert (v1.first_ts, v1.last_ts) == (T0, T0 + timedelta(minutes=1))
    assert (v2.first_ts, v2.last_ts) == (T0 + timedelta(hours=2), T0 + timedelta(hours=3))
    assert (report.requests, report.impressions) == (4, 9)
    assert report.feedback_events == len(FEEDBACK)
    assert report.unmatched_feedback == 2 and report.duplicate_predictions == 1
    assert report.png is None


def test_ece_and_calibration_bins_match_a_hand_computation(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    _write_logs(settings)
    v1, v2 = model_report(settings, None).versions
    v1_rows = [(0.05, 0), (0.15, 1), (0.35, 1), (0.08, 0), (0.95, 1)]
    v2_rows = [(0.62, 0), (0.66, 1), (0.12, 0), (1.0, 1)]
    assert v1.ece == pytest.approx(_ece_by_hand(v1_rows))
    assert v2.ece == pytest.approx(_ece_by_hand(v2_rows))
    # The 0.0-0.1 bin of V1 holds 0.05 and 0.08, neither engaged.
    first = v1.calibration[0]
    assert (first.lower, first.upper, first.count) == (0.0, 0.1, 2)
    assert first.mean_score == pytest.approx(0.065) and first.engaged_rate == 0.0
    # A score of exactly 1.0 falls in the last bin, with 0.62 and 0.66 in [0.6, 0.7).
    assert [b.count for b in v2.calibration] == [0, 1, 0, 0, 0, 0, 2, 0, 0, 1]
    assert v2.calibration[6].engaged_rate == pytest.approx(0.5)


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.3, 0.5])
def test_explored_flag_equals_the_policys_own_choice(eps: float) -> None:
    """Slates drawn by serving's epsilon-greedy policy: the report's propensity threshold
    recovers exactly the slots the policy explored, whenever ``eps <= 0.5``."""
    rng = np.random.default_rng(int(eps * 100))
    rows, truth = [], []
    for r in range(300):
        n = int(rng.integers(1, 40))
        slate = epsilon_greedy(rng.random(n), int(rng.integers(1, 11)), eps, rng)
        for pos, (i, p) in enumerate(zip(slate.indices, slate.propensities, strict=True)):
            rows.append({"request_id": f"r{r}", "item_id": int(i), "position": pos,
                         "propensity": float(p), "score": 0.5, "model_version": V1})  # fmt: skip
        truth += slate.explored.tolist()
    predictions = pd.DataFrame(rows)
    feedback = pd.DataFrame({"request_id": [], "item_id": [], "event_type": []})
    got = served_impressions(predictions, feedback)
    assert got["explored"].tolist() == truth
    assert 0 < sum(truth) < len(truth)


def test_png_has_the_two_panels_size(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    _write_logs(settings)
    out = tmp_path / "plots" / "report.png"
    report = model_report(settings, out)
    data = out.read_bytes()
    assert report.png == out and data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR: the figure is 11 x 4.5 in
    assert (width, height) == (1100, 450)


def test_since_keeps_only_later_requests(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    _write_logs(settings)
    report = model_report(settings, None, since=T0 + timedelta(hours=1))
    assert [v.model_version for v in report.versions] == [V2]
    assert report.impressions == 4
    # The feedback on V1's impressions (r1 x3, r2 x2) and r9 now match nothing served.
    assert report.unmatched_feedback == 6


def test_no_logs_says_serve_first(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    with pytest.raises(NoServingLogsError, match="serve first") as info:
        model_report(settings, tmp_path / "r.png")
    assert str(log_dir(settings, "predictions")) in str(info.value)
    assert not (tmp_path / "r.png").exists()
    fb = LogWriter(log_dir(settings, "feedback"), "feedback")
    fb.append([{"request_id": "r1", "item_id": 1, "event_type": "click", "ts": T0}])
    fb.close()
    with pytest.raises(NoServingLogsError, match="serve first"):
        model_report(settings, None)  # feedback alone is still nothing to report on
