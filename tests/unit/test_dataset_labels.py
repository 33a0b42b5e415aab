"""Impression labelling vs a brute-force reference, edges of the attribution window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from flywheel.dataset import (
    label_organic_impressions,
    label_served_impressions,
    sample_impressions,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W = timedelta(hours=1)


def _events(rows: list[tuple[int, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "ts": pd.to_datetime([T0 + timedelta(minutes=r[3]) for r in rows], utc=True),
            "session_id": [f"s{r[0]}" for r in rows],
        }
    )


def _reference(events: pd.DataFrame, closed_before: datetime) -> list[tuple[int, int, int]]:
    out = []
    for v in events.itertuples():
        if v.event_type != "view" or v.ts + W > closed_before:
            continue
        pos = any(
            e.user_id == v.user_id
            and e.item_id == v.item_id
            and e.event_type in ("cart", "purchase")
            and v.ts < e.ts <= v.ts + W
            for e in events.itertuples()
        )
        out.append((v.user_id, v.item_id, int(pos)))
    return sorted(out)


def test_window_edges() -> None:
    ev = _events(
        [
            (1, 10, "view", 0),
            (1, 10, "cart", 60),  # exactly at the end of the window: positive
            (2, 20, "view", 0),
            (2, 20, "purchase", 60.01),  # just after: negative
            (3, 30, "view", 0),
            (3, 30, "cart", 0),  # same instant: not "after"
            (4, 40, "view", 0),
            (4, 41, "cart", 10),  # other item: negative
            (5, 50, "view", 0),
            (5, 50, "click", 10),  # a click is not an organic positive
        ]
    )
    got = label_organic_impressions(ev, W, closed_before=T0 + timedelta(days=1))
    labels = dict(zip(got["user_id"], got["label"], strict=True))
    assert labels == {1: 1, 2: 0, 3: 0, 4: 0, 5: 0}


def test_open_windows_are_not_labelled() -> None:
    ev = _events([(1, 10, "view", 0), (1, 11, "view", 30)])
    got = label_organic_impressions(ev, W, closed_before=T0 + timedelta(minutes=70))
    assert got["item_id"].tolist() == [10]


def test_matches_brute_force_on_random_events() -> None:
    rng = np.random.default_rng(7)
    n = 400
    rows = [
        (
            int(rng.integers(0, 5)),
            int(rng.integers(0, 4)),
            str(rng.choice(["view", "view", "cart", "purchase", "click"])),
            float(rng.integers(0, 600)),
        )
        for _ in range(n)
    ]
    ev = _events(rows)
    closed = T0 + timedelta(minutes=500)
    got = label_organic_impressions(ev, W, closed_before=closed)
    mine = sorted(zip(got["user_id"], got["item_id"], got["label"].astype(int), strict=True))
    assert mine == _reference(ev, closed)
    assert 0 < got["label"].sum() < len(got)


def test_served_impressions_join_feedback_by_request_and_item() -> None:
    ts = pd.Timestamp(T0)
    preds = pd.DataFrame(
        {
            "request_id": ["r1", "r1", "r2"],
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["10", "sku-11", "10"],
            "ts": [ts, ts, ts + pd.Timedelta(minutes=5)],
        }
    )
    fb = pd.DataFrame(
        {
            "request_id": ["r1", "r2", "r1"],
            "item_id": ["10", "10", "sku-11"],
            "event_type": ["click", "click", "click"],
            "ts": [ts + pd.Timedelta(minutes=1), ts + pd.Timedelta(hours=2), ts - pd.Timedelta(1)],
        }
    )
    got = label_served_impressions(preds, fb, W, closed_before=T0 + timedelta(days=1))
    labels = {(r.group_id, r.item_id): r.label for r in got.itertuples()}
    # r2's click came after the window; r1/11's "feedback" predates the prediction.
    assert labels == {("r1", "10"): 1, ("r1", "sku-11"): 0, ("r2", "10"): 0}


@pytest.mark.parametrize("max_rows", [1, 7, 50])
def test_sampling_keeps_whole_groups(max_rows: int) -> None:
    imp = pd.DataFrame({"group_id": np.repeat([f"g{i}" for i in range(10)], 3), "x": range(30)})
    got = sample_impressions(imp, max_rows, seed=1)
    assert len(got) <= max(max_rows, 3)
    assert (got.groupby("group_id").size() == 3).all()
    assert got.equals(sample_impressions(imp, max_rows, seed=1))


def _served(rows: list[tuple[str, int, int, float]]) -> pd.DataFrame:
    """Prediction-log rows: (request id, user, item, minutes after T0)."""
    return pd.DataFrame(
        {
            "request_id": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "item_id": [r[2] for r in rows],
            "ts": pd.to_datetime([T0 + timedelta(minutes=r[3]) for r in rows], utc=True),
        }
    )


def _feedback(rows: list[tuple[str, int, str, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "ts": pd.to_datetime([r[3] for r in rows], utc=True),
        }
    )


def _served_reference(
    preds: pd.DataFrame, fb: pd.DataFrame, closed_before: datetime
) -> list[tuple[str, int, int, int]]:
    """Served labels one impression at a time: feedback on the same request and item in
    ``ts <= feedback.ts <= ts + W``, for impressions whose window closed."""
    out = []
    for p in preds.to_dict("records"):
        if p["ts"] + W > closed_before:
            continue
        pos = any(
            f["request_id"] == p["request_id"]
            and f["item_id"] == p["item_id"]
            and f["event_type"] in ("click", "cart", "purchase")
            and p["ts"] <= f["ts"] <= p["ts"] + W
            for f in fb.to_dict("records")
        )
        out.append((str(p["request_id"]), int(p["item_id"]), int(p["user_id"]), int(pos)))
    return sorted(out)


def test_served_window_edges() -> None:
    us = pd.Timedelta(microseconds=1)
    at = pd.Timestamp(T0)
    preds = _served([("r1", 1, item, 0) for item in (10, 11, 12, 13)])
    fb = _feedback(
        [
            ("r1", 10, "click", at + W),  # exactly at the end of the window: positive
            ("r1", 11, "cart", at + W + us),  # 1 µs after it: negative
            ("r1", 12, "purchase", at),  # at the prediction itself: positive
            ("r1", 13, "click", at - us),  # before the prediction: negative
        ]
    )
    got = label_served_impressions(preds, fb, W, closed_before=T0 + timedelta(days=1))
    labels = dict(zip(got["item_id"], got["label"], strict=True))
    assert labels == {"10": 1, "11": 0, "12": 1, "13": 0}
    # The window must have closed: at ts + W exactly it has, 1 µs earlier it has not.
    closed = label_served_impressions(preds, fb, W, closed_before=T0 + W)
    assert len(closed) == 4
    still_open = label_served_impressions(preds, fb, W, closed_before=T0 + W - us)
    assert still_open.empty


def test_served_matches_brute_force_on_random_logs() -> None:
    rng = np.random.default_rng(11)
    preds_rows = []
    for r in range(60):
        minute = float(rng.integers(0, 600))
        user = int(rng.integers(0, 8))
        for item in rng.choice(12, 3, replace=False).tolist():
            preds_rows.append((f"r{r}", user, int(item), minute))
    preds = _served(preds_rows)
    # Feedback lands on served and unserved items, before, inside, at and just past the
    # window's end, on its own request and on another one.
    offsets = [-1, 0, 1, 30, 59, 60, 61, 90]
    fb_rows = []
    for _ in range(250):
        rid, _, item, minute = preds_rows[int(rng.integers(len(preds_rows)))]
        if rng.random() < 0.2:
            item = int(rng.integers(0, 12))
        if rng.random() < 0.1:
            rid = f"r{int(rng.integers(0, 60))}"
        ts = pd.Timestamp(T0 + timedelta(minutes=minute + float(rng.choice(offsets))))
        if rng.random() < 0.15:
            ts += pd.Timedelta(microseconds=int(rng.choice([-1, 1])))
        fb_rows.append((rid, item, str(rng.choice(["click", "cart", "purchase"])), ts))
    fb = _feedback(fb_rows)
    closed = T0 + timedelta(minutes=500)
    got = label_served_impressions(preds, fb, W, closed_before=closed)
    mine = sorted(
        (str(r), int(i), int(u), int(y))
        for r, i, u, y in zip(
            got["group_id"], got["item_id"], got["user_id"], got["label"], strict=True
        )
    )
    assert mine == _served_reference(preds, fb, closed)
    assert 0 < got["label"].sum() < len(got)
