"""The closed loop on a small simulated shop: logs written as the service writes them,
ingested twice, then a training set mixing served and organic impressions (real Ray
ingest, Ray Data features, Feast point-in-time join). The shop names users and items as a
shop does (``u000042``, ``sku-00017``), and the logs carry those strings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel import feature_store, served
from flywheel.config import RaySettings, Settings
from flywheel.dataset import build_dataset
from flywheel.features import build_features
from flywheel.ingest import ingest_events
from flywheel.lake import partition_files, read_lake_events
from flywheel.predlog import LogWriter, log_dir
from flywheel.schemas import FEEDBACK_SCHEMA, PREDICTION_LOG_SCHEMA
from flywheel.simulate import SHOP, make_world, simulate_events

pytestmark = pytest.mark.integration

N_REQUESTS, K = 40, 4


def _table(root: Path, schema: pa.Schema) -> pa.Table:
    return pa.concat_tables([pq.read_table(f, schema=schema) for f in partition_files(root)])


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 3-day shop in the lake plus served logs from two 'workers' on day 2."""
    root = tmp_path_factory.mktemp("loop")
    world = make_world(300, 60, seed=5, naming=SHOP)
    simulate_events(world, days=3, out_dir=root / "raw", seed=5)
    settings = Settings(workspace=root / "ws", ray=RaySettings(num_cpus=2))
    ingest_events(settings, [root / "raw" / "events"], items=root / "raw" / "items.parquet")
    rng = np.random.default_rng(0)
    workers = [LogWriter(log_dir(settings, "predictions"), "predictions") for _ in range(2)]
    fb_writer = LogWriter(log_dir(settings, "feedback"), "feedback")
    clicked: set[tuple[str, str]] = set()
    for n in range(N_REQUESTS):
        ts = world.start + timedelta(days=1, hours=8, minutes=7 * n)
        user = world.ids.user_id(int(rng.integers(0, 300)))
        items = world.ids.item_ids(rng.choice(60, size=K, replace=False)).to_pylist()
        request = f"{n:032x}-{user}"
        workers[n % 2].append(
            [
                {
                    "request_id": request,
                    "ts": ts,
                    "user_id": user,
                    "item_id": item,
                    "position": pos,
                    "score": 1.0 / (pos + 1),
                    "model_version": "flywheel-ranker:test",
                    "propensity": 0.9 if pos == 0 else 0.1 / K,
                    "features": '{"views_7d": 1}',
                }
                for pos, item in enumerate(items)
            ]
        )
        if n % 3 == 0:  # the top item is clicked, then bought
            for event_type, minutes in (("click", 2), ("purchase", 10)):
                at = ts + timedelta(minutes=minutes)
                fb_writer.append(
                    [
                        {
                            "request_id": request,
                            "item_id": items[0],
                            "event_type": event_type,
                            "ts": at,
                        }
                    ]
                )
            clicked.add((request, items[0]))
    first = served.ingest_served(settings)
    second = served.ingest_served(settings)
    return {"settings": settings, "first": first, "second": second, "clicked": clicked}


def test_logs_land_in_the_lake_once(loop: dict[str, Any]) -> None:
    settings, first, second = loop["settings"], loop["first"], loop["second"]
    n_fb = 2 * len(loop["clicked"])
    assert (first.predictions_accepted, first.feedback_accepted) == (N_REQUESTS * K, n_fb)
    assert (first.quarantined, first.feedback_unmatched, first.events_added) == (0, 0, n_fb)
    assert (second.files_read, second.predictions_accepted, second.events_added) == (0, 0, 0)
    predictions = _table(served.predictions_dir(settings), PREDICTION_LOG_SCHEMA)
    assert predictions.num_rows == N_REQUESTS * K
    pairs = set(
        zip(predictions["request_id"].to_pylist(), predictions["item_id"].to_pylist(), strict=True)
    )
    assert len(pairs) == N_REQUESTS * K
    feedback = _table(served.feedback_dir(settings), FEEDBACK_SCHEMA)
    assert (
        set(zip(feedback["request_id"].to_pylist(), feedback["item_id"].to_pylist(), strict=True))
        == loop["clicked"]
    )


def test_feedback_is_in_the_event_lake_as_the_requests_user(loop: dict[str, Any]) -> None:
    events = read_lake_events(loop["settings"]).to_pandas()
    api = events.loc[events["device"] == "api"]
    assert len(api) == 2 * len(loop["clicked"])
    assert set(zip(api["session_id"], api["item_id"], strict=True)) == loop["clicked"]
    users = api["session_id"].str.rsplit("-", n=1).str[1]
    assert api["user_id"].tolist() == users.tolist()
    assert users.str.fullmatch(r"u\d{6}").all()  # the shop's user ids, as the requests had them
    assert sorted(api["event_type"].unique()) == ["click", "purchase"]


def test_dataset_mixes_served_and_organic(loop: dict[str, Any], tmp_path: Path) -> None:
    settings = loop["settings"]
    build_features(settings)
    feature_store.apply(settings)
    out = tmp_path / "train.parquet"
    summary = build_dataset(settings, out, window_days=3, max_rows=5_000, seed=0)
    frame = pq.read_table(out).to_pandas()
    got = frame.loc[frame["source"] == "served"]
    assert summary.served_impressions == len(got) == N_REQUESTS * K
    assert summary.organic_impressions == len(frame) - len(got) > 0
    positives = set(
        zip(
            got.loc[got["label"] == 1, "group_id"],
            got.loc[got["label"] == 1, "item_id"],
            strict=True,
        )
    )
    assert positives == loop["clicked"]
    assert got["views_7d"].notna().any()  # point-in-time features joined onto served rows
    organic_only = build_dataset(
        settings, tmp_path / "organic.parquet", window_days=3, max_rows=5_000, served_weight=0.0
    )
    assert organic_only.served_impressions == 0
