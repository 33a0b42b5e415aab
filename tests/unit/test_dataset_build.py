"""The dataset stage whole (``build_dataset``, ``build_training_set``, ``lake_time_range``)
on a tiny shop built in code.

The lake is written with the lake's own writer (``commit_part``) and the served logs with
the service's ``LogWriter`` + ``ingest_served``; the feature tables are a few hand-written
rows, so every feature value a row should get is known. Feast is the real local store
(``feature_store.apply``: file registry, SQLite online store; the retrieval goes through
the project's DuckDB ASOF offline store): no server, a few seconds for the module. The
integration tier runs the same stage on Ray-built features (``test_served_loop``).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel import served
from flywheel.config import Settings
from flywheel.dataset import (
    DatasetError,
    build_dataset,
    build_training_set,
    lake_time_range,
    organic_impressions,
    sample_impressions,
    served_impressions,
)
from flywheel.lake import commit_part, partition_name
from flywheel.predlog import LogWriter, log_dir
from flywheel.schemas import EVENT_SCHEMA, FEATURE_TABLES, ITEM_SCHEMA

HOUR, MINUTE, US = timedelta(hours=1), timedelta(minutes=1), timedelta(microseconds=1)
#: The lake's last event: the default window ends 1 µs after it and starts 14 days before.
LAST = datetime(2025, 3, 20, 12, tzinfo=UTC)
END = LAST + US
START = END - timedelta(days=14)
T1 = datetime(2025, 3, 19, 10, tzinfo=UTC)  # the labelled organic views of u1 and u2
T2 = datetime(2025, 3, 18, 9, tzinfo=UTC)  # the served requests
N_REQUESTS, N_FILLERS = 30, 30
SERVED_COLUMNS = ["source", "group_id", "item_id", "event_timestamp"]


def _event(n: int, user: str, item: str, kind: str, ts: datetime, session: str) -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "user_id": user,
        "item_id": item,
        "event_type": kind,
        "ts": ts,
        "session_id": session,
        "device": "web",
    }


def _write_lake(settings: Settings, events: list[dict[str, Any]]) -> None:
    """One part file per day, in the list's order."""
    for day in sorted({e["ts"].date() for e in events}):
        part = [e for e in events if e["ts"].date() == day]
        table = pa.Table.from_pylist(part, schema=EVENT_SCHEMA)
        commit_part(table, settings.events_dir / partition_name(day))


def _organic_events() -> list[dict[str, Any]]:
    events = [
        _event(1, "u1", "a", "view", T1, "s1"),
        _event(2, "u1", "a", "cart", T1 + 59 * MINUTE, "s1"),  # within the hour: positive
        _event(3, "u1", "b", "view", T1 + 2 * MINUTE, "s1"),
        _event(4, "u1", "b", "cart", T1 + 63 * MINUTE, "s1"),  # 61 min later: negative
        _event(5, "u2", "ghost", "view", T1 + 5 * MINUTE, "s2"),  # not in the catalog
        _event(6, "u2", "a", "view", START, "s3"),  # the window's first instant: in
        _event(7, "u2", "b", "view", START - US, "s3"),  # 1 µs before it: out
        _event(8, "u3", "b", "view", LAST - 30 * MINUTE, "s4"),  # window still open at END
        _event(9, "u3", "b", "cart", LAST, "s4"),  # the lake's last event
    ]
    events += [  # sessions of one view each, for the organic sample
        _event(100 + n, f"f{n:02d}", "b", "view", T1 - HOUR - n * MINUTE, f"fs{n:02d}")
        for n in range(N_FILLERS)
    ]
    return sorted(events, key=lambda e: e["ts"])


def _log_requests(settings: Settings) -> None:
    """30 requests of items a, b in the window (a clicked for even n), one before it."""
    preds = LogWriter(log_dir(settings, "predictions"), "predictions")
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    requests = [(f"r-{n:02d}", T2 + n * MINUTE, n % 2 == 0) for n in range(N_REQUESTS)]
    requests.append(("r-old", START - timedelta(days=1), True))
    for request, ts, clicked in requests:
        preds.append(
            [
                {
                    "request_id": request,
                    "ts": ts,
                    "user_id": "u1",
                    "item_id": item,
                    "position": pos,
                    "score": 1.0 - pos / 2,
                    "model_version": "m",
                    "propensity": 0.5,
                    "features": None,
                }
                for pos, item in enumerate("ab")
            ]
        )
        if clicked:
            click = {"request_id": request, "item_id": "a", "event_type": "click", "ts": ts}
            feedback.append([{**click, "ts": ts + MINUTE}])
    served.ingest_served(settings, now=LAST + timedelta(days=1))


def _feature_row(schema: pa.Schema, ts: datetime, **values: Any) -> dict[str, Any]:
    """A contract row: the given values, 0 for every other number."""
    row: dict[str, Any] = {"event_timestamp": ts, "created_timestamp": ts}
    for f in schema:
        row.setdefault(f.name, values.get(f.name, 0 if pa.types.is_integer(f.type) else 0.0))
    return row


def _write_features(settings: Settings) -> None:
    before, after = T1 - HOUR, T1 + 30 * MINUTE
    rows = {
        "user_activity": [
            _feature_row(FEATURE_TABLES["user_activity"], before, user_id="u1", views_7d=3),
            _feature_row(FEATURE_TABLES["user_activity"], after, user_id="u1", views_7d=7),
        ],
        "user_category": [
            _feature_row(
                FEATURE_TABLES["user_category"], before, user_id="u1", category=c, cat_views_7d=n
            )
            for c, n in (("c1", 5), ("c2", 2))
        ],
        "item_activity": [
            _feature_row(FEATURE_TABLES["item_activity"], before, item_id=i, item_views_7d=n)
            for i, n in (("a", 11), ("b", 13))
        ],
        "item_catalog": [
            _feature_row(
                FEATURE_TABLES["item_catalog"],
                START - timedelta(days=30),
                item_id=i,
                category=c,
                price=p,
            )
            for i, c, p in (("a", "c1", 1.5), ("b", "c2", 2.5))
        ],
    }
    settings.feature_data_dir.mkdir(parents=True, exist_ok=True)
    # ranking_v2's tables empty: the training set then carries their features as nulls
    for name, part in {**{n: [] for n in FEATURE_TABLES}, **rows}.items():
        table = pa.Table.from_pylist(part, schema=FEATURE_TABLES[name])
        pq.write_table(table, settings.feature_data_dir / f"{name}.parquet")


def _write_catalog(settings: Settings) -> None:
    made = START - timedelta(days=30)
    items = [
        {"item_id": i, "category": c, "price": p, "created_ts": made}
        for i, c, p in (("a", "c1", 1.5), ("b", "c2", 2.5))
    ]
    settings.items_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(items, schema=ITEM_SCHEMA), settings.items_path)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    from flywheel import feature_store

    settings = Settings(workspace=tmp_path_factory.mktemp("shop"))
    _write_lake(settings, _organic_events())
    _log_requests(settings)
    _write_catalog(settings)
    _write_features(settings)
    feature_store.apply(settings)
    return settings


def _row(frame: pd.DataFrame, user: str, item: str, ts: datetime) -> pd.Series:
    hit = frame.loc[(frame["user_id"] == user) & (frame["item_id"] == item)]
    hit = hit.loc[hit["event_timestamp"] == pd.Timestamp(ts)]
    assert len(hit) == 1, (user, item, ts)
    return hit.iloc[0]


def test_the_default_window_labels_and_joins_every_impression(
    shop: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defaults: the window is the 14 days up to 1 µs past the lake's last event, nothing
    is sampled, served and organic impressions both enter with their labels, and each row
    has its features as of its own time (the item's category keys user x category)."""
    out = tmp_path / "deep" / "train.parquet"
    began = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="flywheel.dataset"):
        summary = build_dataset(shop, out)
    elapsed = time.perf_counter() - began
    frame = pq.read_table(out).to_pandas()
    n_served, n_organic = 2 * N_REQUESTS, N_FILLERS + 4  # u1's a and b, ghost, START's view
    positives = N_REQUESTS // 2 + 1
    assert (summary.window_start, summary.window_end) == (START.isoformat(), END.isoformat())
    assert (summary.impressions, summary.served_impressions, summary.organic_impressions) == (
        n_served + n_organic,
        n_served,
        n_organic,
    )
    assert summary.positives == positives == int(frame["label"].sum())
    assert summary.positive_rate == round(positives / (n_served + n_organic), 4) == 0.1702
    assert summary.sampled_from == n_served + n_organic  # u3's view: its window is open
    assert isinstance(summary.seconds, float) and 0 <= summary.seconds <= elapsed + 0.01
    assert len(frame) == summary.impressions
    assert (frame["source"] == "served").sum() == n_served
    assert pq.read_schema(out).names == list(frame.columns)  # no index column written
    assert set(frame["group_id"]) >= {"s1", "s2", "s3", "r-00", "r-29"}
    assert "r-old" not in set(frame["group_id"]) and "s4" not in set(frame["group_id"])

    a, b = _row(frame, "u1", "a", T1), _row(frame, "u1", "b", T1 + 2 * MINUTE)
    assert (a["label"], b["label"]) == (1, 0)
    assert (a["views_7d"], a["cat_views_7d"], a["item_views_7d"], a["price"]) == (3, 5, 11, 1.5)
    assert (b["views_7d"], b["cat_views_7d"], b["item_views_7d"], b["price"]) == (3, 2, 13, 2.5)
    assert (a["category"], b["category"]) == ("c1", "c2")
    ghost = _row(frame, "u2", "ghost", T1 + 5 * MINUTE)
    assert ghost["category"] == "unknown" and np.isnan(ghost["price"])
    assert _row(frame, "u2", "a", START)["label"] == 0
    assert not ((frame["item_id"] == "b") & (frame["user_id"] == "u2")).any()  # START - 1 µs
    clicked = frame.loc[(frame["source"] == "served") & (frame["label"] == 1)]
    assert sorted(clicked["group_id"]) == [f"r-{n:02d}" for n in range(0, N_REQUESTS, 2)]
    assert set(clicked["item_id"]) == {"a"}
    assert "1 impressions of items missing from the catalog get category 'unknown'" in [
        r.getMessage() for r in caplog.records
    ]


def test_a_capped_training_set_is_the_seeded_sample_of_each_source(
    shop: Settings, tmp_path: Path
) -> None:
    """max_rows=40, half for served: 10 whole requests of the 30, then 20 organic rows of
    whole sessions; by default with seed 0, as the parts' own samplers give them."""
    out = tmp_path / "capped.parquet"
    summary = build_dataset(shop, out, max_rows=40, served_weight=0.5)
    frame = pq.read_table(out).to_pandas()
    everything = served_impressions(shop, START, END, HOUR)

    def reference(seed: int) -> set[tuple[Any, ...]]:
        kept = sample_impressions(everything, 20, seed)
        organic, _ = organic_impressions(shop, START, END, HOUR, 40 - len(kept), seed)
        parts = [kept.assign(source="served"), organic.assign(source="organic")]
        both = pd.concat(parts, ignore_index=True)
        both["group_id"] = both["group_id"].astype(str)
        return set(both[SERVED_COLUMNS].itertuples(index=False, name=None))

    got = set(frame[SERVED_COLUMNS].itertuples(index=False, name=None))
    assert got == reference(0) != reference(1)  # the seed decides the sample
    assert (summary.served_impressions, summary.organic_impressions) == (20, 20)
    assert summary.impressions == len(frame) == 40
    assert summary.sampled_from == 2 * N_REQUESTS + N_FILLERS + 4  # before sampling


def test_a_window_without_impressions_or_with_one_class_is_refused(shop: Settings) -> None:
    """Refused before any feature is joined, naming the window and what is wrong."""
    quiet = START - timedelta(days=3)
    with pytest.raises(DatasetError, match="no labelled impressions between"):
        build_dataset(shop, Path("never.parquet"), window_days=1, end=quiet)
    one = START + timedelta(hours=6)  # [START, START + 6 h): u2's view at START, a negative
    assert len(organic_impressions(shop, START, one, HOUR, 100, seed=0)[0]) == 1
    with pytest.raises(
        DatasetError, match=r"has only label=0: a model needs positives and negatives"
    ):
        build_dataset(shop, Path("never.parquet"), window_days=0.25, end=one)


def test_a_missing_catalog_and_an_empty_lake_are_named(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    with pytest.raises(DatasetError, match=r"event lake at '.*events' is empty: run `flywheel"):
        build_dataset(settings, tmp_path / "x.parquet")
    _write_lake(settings, _organic_events())
    with pytest.raises(
        DatasetError,
        match=r"item catalog '.*items\.parquet' is missing: ingest one with "
        r"`flywheel ingest --items FILE`",
    ):
        build_dataset(settings, tmp_path / "x.parquet")
    with pytest.raises(
        DatasetError, match=r"^no labelled impressions in the training window: nothing to train on$"
    ):
        build_training_set(settings, pd.DataFrame(), pd.DataFrame())


def test_the_lake_time_range_is_the_first_days_earliest_and_the_last_days_latest_event(
    tmp_path: Path,
) -> None:
    """Days of one, two and one part files, the edges anywhere in their files."""
    settings = Settings(workspace=tmp_path)
    day = datetime(2025, 3, 1, tzinfo=UTC)
    layout = [  # (day, event times in hours) per part file
        (0, [5.0, 3.0]),
        (1, [1.0, 23.0]),
        (1, [0.5, 12.0]),
        (2, [8.0, 20.0, 2.0]),
    ]
    for n, (d, hours) in enumerate(layout):
        events = [
            _event(10 * n + k, "u", "i", "view", day + timedelta(days=d, hours=h), "s")
            for k, h in enumerate(hours)
        ]
        table = pa.Table.from_pylist(events, schema=EVENT_SCHEMA)
        commit_part(table, settings.events_dir / partition_name((day + timedelta(days=d)).date()))
    lo, hi = lake_time_range(settings)
    assert (lo, hi) == (day + timedelta(hours=3), day + timedelta(days=2, hours=20))
