"""The streamed organic path (sample sessions, then label) against label-everything-then-sample.

The reference is the in-memory path the dataset stage used before (every view of the window
labelled by :func:`label_organic_impressions`, then :func:`sample_impressions`); the
streamed path must give the very same rows, labels and groups, while holding only the
sampled views in pandas.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from flywheel.config import Settings
from flywheel.dataset import (
    label_organic_impressions,
    organic_impressions,
    sample_impressions,
)
from flywheel.lake import commit_part, partition_name, read_lake_events
from flywheel.simulate import make_world, simulate_events

ATTRIBUTION = timedelta(hours=1)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Three simulated days written to date partitions, as ingest lays them out."""
    root = tmp_path_factory.mktemp("streamed")
    world = make_world(300, 80, seed=3)
    simulate_events(world, 3, root / "raw", seed=3)
    settings = Settings(workspace=root / "ws")
    events = pa.concat_tables(
        pq.read_table(p) for p in sorted((root / "raw" / "events").glob("*.parquet"))
    )
    days = pc.strftime(events["ts"], format="%Y-%m-%d").to_pylist()
    frame = events.append_column("_day", pa.array(days))
    for day in sorted(set(days)):
        part = frame.filter(pc.equal(frame["_day"], day)).drop(["_day"])
        commit_part(part, settings.events_dir / partition_name(pd.Timestamp(day).date()))
    return settings


def _events(
    settings: Settings, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
) -> pd.DataFrame:
    """The lake's events of ``[start, end)``, read plainly (the reference's input)."""
    cols = ["user_id", "item_id", "event_type", "ts", "session_id"]
    return read_lake_events(settings, cols, start, end).to_pandas()


def _window(settings: Settings) -> tuple[pd.Timestamp, pd.Timestamp]:
    ts = _events(settings)["ts"]
    return ts.min() + timedelta(hours=5), ts.max() - timedelta(hours=3)


@pytest.mark.parametrize("max_rows", [10**9, 2_000, 150])
def test_streamed_equals_label_then_sample(lake: Settings, max_rows: int) -> None:
    start, end = _window(lake)
    events = _events(lake, start, end)
    reference = label_organic_impressions(events, ATTRIBUTION, closed_before=end)
    reference = sample_impressions(reference, max_rows, seed=7)
    got, n_views = organic_impressions(lake, start, end, ATTRIBUTION, max_rows, seed=7)
    assert n_views == int(
        ((events["event_type"] == "view") & (events["ts"] + ATTRIBUTION <= end)).sum()
    )
    assert len(got) <= max_rows and reference["label"].sum() > 0
    pd.testing.assert_frame_equal(
        got.assign(group_id=got["group_id"].astype(str)),
        reference.assign(group_id=reference["group_id"].astype(str)),
        check_dtype=False,
    )


def test_empty_window_and_zero_budget(lake: Settings) -> None:
    start, end = _window(lake)
    got, n_views = organic_impressions(lake, start, end, ATTRIBUTION, 0, seed=0)
    assert got.empty and n_views > 0
    far = end + timedelta(days=30)
    got, n_views = organic_impressions(lake, far, far + timedelta(days=1), ATTRIBUTION, 10, 0)
    assert got.empty and n_views == 0
