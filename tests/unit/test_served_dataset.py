"""The served/organic mix of a training set, and served impressions read back from the lake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from flywheel import served
from flywheel.config import Settings
from flywheel.dataset import mix_impressions, sample_impressions, served_impressions
from flywheel.predlog import LogWriter, log_dir

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


def _impressions(prefix: str, groups: int, per_group: int, minutes: int = 0) -> pd.DataFrame:
    rows = [
        {
            "user_id": g,
            "item_id": 100 + i,
            "event_timestamp": T0 + timedelta(minutes=minutes + g),
            "label": int(i == 0),
            "group_id": f"{prefix}{g}",
        }
        for g in range(groups)
        for i in range(per_group)
    ]
    return pd.DataFrame(rows)


def test_all_served_kept_and_organic_fills_the_rest() -> None:
    served_rows, organic = _impressions("r", 3, 2), _impressions("s", 20, 1, minutes=1)
    mixed = mix_impressions(served_rows, organic, max_rows=10, seed=0)
    assert (mixed["source"] == "served").sum() == 6
    assert (mixed["source"] == "organic").sum() == 4
    assert set(mixed.loc[mixed["source"] == "served", "group_id"]) == {"r0", "r1", "r2"}
    assert mixed["event_timestamp"].is_monotonic_increasing


def test_served_weight_caps_served_by_whole_requests() -> None:
    served_rows, organic = _impressions("r", 10, 3), _impressions("s", 50, 1)
    mixed = mix_impressions(served_rows, organic, max_rows=20, seed=1, served_weight=0.5)
    got = mixed.loc[mixed["source"] == "served"]
    assert 0 < len(got) <= 10 and len(got) % 3 == 0
    assert got.groupby("group_id").size().eq(3).all()
    assert len(mixed) == 20


def test_weight_zero_is_the_organic_sample_of_before() -> None:
    served_rows, organic = _impressions("r", 4, 2), _impressions("s", 30, 2)
    mixed = mix_impressions(served_rows, organic, max_rows=12, seed=3, served_weight=0.0)
    expected = sample_impressions(organic, 12, 3)
    assert set(mixed["source"]) == {"organic"}
    pd.testing.assert_frame_equal(mixed.drop(columns="source"), expected)


def test_bad_served_weight_is_refused() -> None:
    with pytest.raises(ValueError, match=r"served_weight=1\.5"):
        mix_impressions(_impressions("r", 1, 1), _impressions("s", 1, 1), 10, 0, 1.5)


def test_served_impressions_are_labelled_from_the_lake(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    preds = LogWriter(log_dir(settings, "predictions"), "predictions")
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    # c-3 was ranked degraded (online store down): logged and ingested, never trained on
    marks = {"c-3": {"degraded": True}}
    for r, ts in (("a-1", T0), ("b-2", T0 + timedelta(hours=2)), ("c-3", T0)):
        preds.append(
            [
                marks.get(r, {})
                | {
                    "request_id": r,
                    "ts": ts,
                    "user_id": f"user {r[-1]}",
                    "item_id": item,
                    "position": pos,
                    "score": 1.0 - pos,
                    "model_version": "m",
                    "propensity": 0.5,
                    "features": None,
                }
                for pos, item in enumerate(("sku-7", "sku-8"))
            ]
        )
    feedback.append([{"request_id": "a-1", "item_id": "sku-8", "event_type": "click", "ts": T0}])
    feedback.append([{"request_id": "c-3", "item_id": "sku-7", "event_type": "click", "ts": T0}])
    late = T0 + timedelta(hours=1, minutes=1)  # after the 1 h attribution window
    feedback.append([{"request_id": "a-1", "item_id": "sku-7", "event_type": "cart", "ts": late}])
    summary = served.ingest_served(settings, now=T0 + timedelta(days=1))
    assert summary.predictions_accepted == 6 and summary.quarantined == 0
    end = T0 + timedelta(hours=2, minutes=30)  # request b-2's window is still open
    got = served_impressions(settings, T0 - timedelta(days=1), end, timedelta(hours=1))
    assert got[["group_id", "item_id", "label", "user_id"]].values.tolist() == [
        ["a-1", "sku-7", 0, "user 1"],
        ["a-1", "sku-8", 1, "user 1"],
    ]
    empty = served_impressions(Settings(workspace=tmp_path / "none"), T0, end, timedelta(hours=1))
    assert empty.empty
