"""Labelling and the served/organic mix (flywheel.dataset): cases mutation testing found open.

Each test pins a rule whose breakage no other unit test noticed: only carts and purchases
label an organic view (a click does not), the served share is sampled reproducibly, served
impressions that fill the budget leave no room for organic ones, ties in time keep their
order, and served impressions come from the window only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from flywheel import served
from flywheel.config import Settings
from flywheel.dataset import (
    IMPRESSION_COLUMNS,
    _sample_groups,
    label_organic_impressions,
    label_served_impressions,
    mix_impressions,
    organic_impressions,
    read_views_and_positives,
    sample_impressions,
    served_impressions,
)
from flywheel.lake import commit_part, partition_name
from flywheel.predlog import LogWriter, log_dir
from flywheel.schemas import EVENT_SCHEMA

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)


def _impressions(prefix: str, groups: int, per_group: int, at: datetime = T0) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "user_id": f"u{g}",
                "item_id": f"i{i}",
                "event_timestamp": at,
                "label": int(i == 0),
                "group_id": f"{prefix}{g}",
            }
            for g in range(groups)
            for i in range(per_group)
        ]
    )


# ---- the mix ------------------------------------------------------------------------------


def test_served_sample_is_the_same_for_the_same_seed() -> None:
    served_rows, organic = _impressions("r", 200, 2), _impressions("s", 50, 1)
    first = mix_impressions(served_rows, organic, max_rows=60, seed=5, served_weight=0.5)
    again = mix_impressions(served_rows, organic, max_rows=60, seed=5, served_weight=0.5)
    assert (first["source"] == "served").sum() == 30
    pd.testing.assert_frame_equal(first, again)


def test_served_filling_the_budget_leaves_no_organic_row() -> None:
    mixed = mix_impressions(_impressions("r", 5, 2), _impressions("s", 9, 1), 10, seed=0)
    assert mixed["source"].tolist() == ["served"] * 10
    one_left = mix_impressions(_impressions("r", 3, 3), _impressions("s", 9, 1), 10, seed=0)
    assert one_left["source"].value_counts().to_dict() == {"served": 9, "organic": 1}


def test_nothing_served_nor_organic_is_an_empty_training_frame() -> None:
    empty = _impressions("r", 0, 0).reindex(columns=list(IMPRESSION_COLUMNS))
    mixed = mix_impressions(empty, empty, max_rows=10, seed=0)
    assert mixed.empty and list(mixed.columns) == [*IMPRESSION_COLUMNS, "source"]


def test_rows_at_the_same_instant_keep_served_then_organic_order() -> None:
    served_rows, organic = _impressions("r", 20, 2), _impressions("s", 40, 1)
    mixed = mix_impressions(served_rows, organic, max_rows=10**6, seed=0)
    assert mixed["group_id"].tolist() == [
        *served_rows["group_id"].tolist(),
        *organic["group_id"].tolist(),
    ]


# ---- organic labels from the lake ----------------------------------------------------------


def _event(n: int, event_type: str, ts: datetime, item: str = "i1") -> dict[str, object]:
    return {
        "event_id": f"e{n}",
        "user_id": "u1",
        "item_id": item,
        "event_type": event_type,
        "ts": ts,
        "session_id": "s1" if ts < T0 + 3 * HOUR else "s2",
        "device": "web",
    }


@pytest.fixture
def lake(tmp_path: Path) -> Settings:
    settings = Settings(workspace=tmp_path)
    events = [
        _event(1, "view", T0, item="clicked"),
        _event(2, "click", T0 + timedelta(minutes=5), item="clicked"),
        _event(3, "view", T0 + timedelta(minutes=10), item="carted"),
        _event(4, "cart", T0 + timedelta(minutes=20), item="carted"),
        _event(5, "view", T0 + 4 * HOUR, item="bought"),
        _event(6, "purchase", T0 + 4 * HOUR + timedelta(minutes=1), item="bought"),
    ]
    table = pa.Table.from_pylist(events, schema=EVENT_SCHEMA)
    commit_part(table, settings.events_dir / partition_name(T0.date()))
    return settings


def test_a_click_is_not_an_organic_positive(lake: Settings) -> None:
    got, n_views = organic_impressions(lake, T0, T0 + 6 * HOUR, HOUR, max_rows=100, seed=0)
    assert n_views == 3
    assert dict(zip(got["item_id"], got["label"], strict=True)) == {
        "clicked": 0,
        "carted": 1,
        "bought": 1,
    }


def test_sessions_stay_dictionary_encoded_from_the_lake(lake: Settings) -> None:
    views, positives = read_views_and_positives(lake, T0, T0 + 6 * HOUR, T0 + 6 * HOUR, HOUR)
    assert pa.types.is_dictionary(views.schema.field("session_id").type)
    assert sorted(positives["item_id"]) == ["bought", "carted"]
    got, _ = organic_impressions(lake, T0, T0 + 6 * HOUR, HOUR, max_rows=100, seed=0)
    assert isinstance(got["group_id"].dtype, pd.CategoricalDtype)
    assert got["group_id"].astype(str).tolist() == ["s1", "s1", "s2"]


# ---- served impressions come from the window ------------------------------------------------


def test_served_impressions_before_the_window_are_left_out(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    preds = LogWriter(log_dir(settings, "predictions"), "predictions")
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    for request, ts in (("old-1", T0 - timedelta(days=2)), ("new-1", T0)):
        preds.append(
            [
                _prediction(request, ts, item, pos, user="1")
                for pos, item in enumerate(("sku-9", "sku-1"))
            ]
        )
        feedback.append(
            [{"request_id": request, "item_id": "sku-1", "event_type": "click", "ts": ts}]
        )
    served.ingest_served(settings, now=T0 + timedelta(days=1))
    got = served_impressions(settings, T0 - timedelta(days=1), T0 + 2 * HOUR, HOUR)
    assert got["group_id"].tolist() == ["new-1", "new-1"]
    assert got["item_id"].tolist() == ["sku-9", "sku-1"]  # served order, not sorted
    assert got["label"].tolist() == [0, 1] and got["label"].dtype == np.int8
    assert got["event_timestamp"].tolist() == [T0, T0]
    assert list(got.columns) == list(IMPRESSION_COLUMNS)
    nothing = served_impressions(Settings(workspace=tmp_path / "none"), T0, T0 + HOUR, HOUR)
    assert nothing.empty and list(nothing.columns) == list(IMPRESSION_COLUMNS)


# ---- labelling edges ------------------------------------------------------------------------


def _views(n: int, at: datetime) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "item_id": "i1",
            "event_type": "view",
            "ts": pd.Timestamp(at),
            "session_id": [f"s{i}" for i in range(n)],
        }
    )


def test_a_window_closing_exactly_at_the_cut_is_labelled_and_ties_keep_order() -> None:
    events = _views(40, T0)
    got = label_organic_impressions(events, HOUR, closed_before=T0 + HOUR)
    assert got["user_id"].tolist() == [f"u{i}" for i in range(40)]
    assert got["label"].dtype == np.int8 and list(got.columns) == list(IMPRESSION_COLUMNS)
    assert label_organic_impressions(events, HOUR, closed_before=T0 + HOUR - US).empty


def test_no_views_is_no_impression() -> None:
    carts = _views(2, T0).assign(event_type="cart")
    got = label_organic_impressions(carts, HOUR, closed_before=T0 + 2 * HOUR)
    assert got.empty and list(got.columns) == list(IMPRESSION_COLUMNS)


def test_a_budget_of_one_row_or_a_window_of_one_view_still_gives_a_session(lake: Settings) -> None:
    one_row, _ = organic_impressions(lake, T0, T0 + 6 * HOUR, HOUR, max_rows=1, seed=0)
    assert len(one_row) >= 1
    single, n_views = organic_impressions(lake, T0 + 4 * HOUR, T0 + 6 * HOUR, HOUR, 100, seed=0)
    assert n_views == 1 and single["item_id"].tolist() == ["bought"]


def test_groups_are_numbered_by_first_appearance_not_by_name() -> None:
    names = ["z", "a", "m", "b", "y", "c", "x", "d"]
    imps = pd.DataFrame({"group_id": [g for g in names for _ in range(2)], "n": range(16)})
    codes = np.repeat(np.arange(len(names)), 2)
    keep = _sample_groups(codes, len(names), 6, seed=3)
    got = sample_impressions(imps, 6, seed=3)
    assert got["n"].tolist() == imps.loc[keep, "n"].tolist()


# ---- the window's end: a positive at exactly `end` counts -----------------------------------


def _prediction(
    request: str, ts: datetime, item: str, pos: int, user: str = "u1"
) -> dict[str, object]:
    return {
        "request_id": request,
        "ts": ts,
        "user_id": user,
        "item_id": item,
        "position": pos,
        "score": 0.5,
        "model_version": "m",
        "propensity": 1.0,
        "features": None,
    }


def test_served_feedback_at_exactly_the_end_counts_and_1us_later_does_not(
    tmp_path: Path,
) -> None:
    """A request whose window closes exactly at ``end`` is labelled, so a click at ``end``
    (``ts + W``) is inside its window and must be read; one 1 µs later is outside it. The
    end is midnight: that click lies in the next day's partition."""
    settings = Settings(workspace=tmp_path)
    end = datetime(2025, 3, 2, tzinfo=UTC)
    preds = LogWriter(log_dir(settings, "predictions"), "predictions")
    preds.append([_prediction("r-1", end - HOUR, item, pos) for pos, item in enumerate("ab")])
    preds.append([_prediction("r-2", end, "a", 0)])  # at `end`: the next window's
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    for item, ts in (("a", end), ("b", end + US)):
        feedback.append([{"request_id": "r-1", "item_id": item, "event_type": "click", "ts": ts}])
    served.ingest_served(settings, now=end + timedelta(days=1))
    got = served_impressions(settings, end - timedelta(days=1), end, HOUR)
    assert got[["group_id", "item_id", "label"]].values.tolist() == [
        ["r-1", "a", 1],
        ["r-1", "b", 0],
    ]
    instant = served_impressions(settings, end - timedelta(days=1), end, timedelta(0))
    assert instant["group_id"].tolist() == ["r-1", "r-1"]  # r-2 is not of [start, end)


def test_organic_positive_at_exactly_the_end_counts_and_1us_later_does_not(
    tmp_path: Path,
) -> None:
    """The organic rule at the same edge (``view.ts < positive.ts <= view.ts + W``), with a
    midnight end: the cart at ``end`` is in the next day's partition."""
    settings = Settings(workspace=tmp_path)
    end = datetime(2025, 3, 2, tzinfo=UTC)
    events = [
        _event(1, "view", end - HOUR, item="carted"),
        _event(2, "view", end - HOUR, item="late"),
        _event(3, "cart", end, item="carted"),
        _event(4, "cart", end + US, item="late"),
        _event(5, "view", end, item="next"),  # the next window's view
    ]
    for day in (end - HOUR, end):  # one part per day: the lake order is the list's
        part = [e for e in events if e["ts"].date() == day.date()]  # type: ignore[attr-defined]
        table = pa.Table.from_pylist(part, schema=EVENT_SCHEMA)
        commit_part(table, settings.events_dir / partition_name(day.date()))
    got, n_views = organic_impressions(settings, end - timedelta(days=1), end, HOUR, 100, seed=0)
    assert n_views == 2
    assert dict(zip(got["item_id"], got["label"], strict=True)) == {"carted": 1, "late": 0}
    views, positives = read_views_and_positives(settings, end - HOUR, end, end, HOUR)
    assert views["item_id"].to_pylist() == ["carted", "late"]
    assert positives["item_id"].tolist() == ["carted"]  # nothing after `end` is read


def test_a_slate_keeps_its_served_order_past_numpys_insertion_sort() -> None:
    """Rows of one request share a timestamp; they stay in the order the prediction log
    holds them (the service logs a slate in position order), and requests logged at the
    same instant keep theirs: the seeded sample of whole requests depends on the order of
    first appearance, which must not depend on the sort numpy picks for a CPU."""
    items = [f"sku-{n:02d}" for n in range(39, -1, -1)]  # not in sorted order
    predictions = pd.DataFrame(
        {
            "request_id": ["r-b"] * 20 + ["r-a"] * 20,
            "ts": pd.Timestamp(T0),
            "user_id": "u1",
            "item_id": items,
        }
    )
    click = {"request_id": "r-a", "item_id": "sku-00", "event_type": "click", "ts": T0 + US}
    feedback = pd.DataFrame([click])
    got = label_served_impressions(predictions, feedback, HOUR, closed_before=T0 + HOUR)
    assert got["item_id"].tolist() == items
    assert got["label"].tolist() == [0] * 39 + [1]
    assert got["group_id"].tolist() == predictions["request_id"].tolist()
