"""Session features through the real service: a small replayed day of pushed shop events,
rankings and feedback; each served row's online session features (the worker's buffer)
equal the offline ones computed from the lake once the served logs are ingested, for the
same (user, item, request time)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.config import Settings
from flywheel.lake import commit_part, partition_name
from flywheel.predlog import read_prediction_logs
from flywheel.schemas import EVENT_SCHEMA
from flywheel.served import ingest_served
from flywheel.serving import FeedbackRequest, RankingService, RankRequest, ServingOptions
from flywheel.serving.api import FeedbackType
from flywheel.session_features import SESSION_FEATURES, lake_session_features
from tests.integration import test_service as service_tests


@pytest.fixture
def world(tmp_path: Path) -> Settings:
    return service_tests.served_world(Settings(workspace=tmp_path / "ws"))


def commit_events(settings: Settings, rows: list[tuple[str, str, str, datetime]]) -> None:
    by_day: dict[str, list[dict[str, object]]] = {}
    for k, (user, item, kind, ts) in enumerate(rows):
        by_day.setdefault(partition_name(ts.date()), []).append(
            {
                "event_id": f"shop-{k}",
                "user_id": user,
                "item_id": item,
                "event_type": kind,
                "ts": ts,
                "session_id": f"shop-{user}",
                "device": "web",
            }
        )
    for day, records in by_day.items():
        commit_part(pa.Table.from_pylist(records, schema=EVENT_SCHEMA), settings.events_dir / day)


def test_served_rows_get_the_same_session_features_online_and_offline(world: Settings) -> None:
    service = RankingService(world, ServingOptions(epsilon=0.0, clock="wall", seed=0))
    rng = random.Random(0)
    users = ["3", "4", "5", str(service_tests.COLD_USER)]
    items = service_tests.skus(range(0, 40))
    pushed: list[tuple[str, str, str, datetime]] = []
    requests: list[tuple[str, str, list[str]]] = []  # (request id, user, candidates)
    for step in range(120):
        user = rng.choice(users)
        if step % 3:  # the shop's own events, pushed as they happen
            event = (user, rng.choice(items[:12]), rng.choice(["view", "view", "cart"]),
                     service.clock.now())  # fmt: skip
            service.record_event(*event)
            pushed.append(event)
            continue
        candidates = rng.sample(items, 8)
        answer = service.rank(RankRequest(user_id=user, candidates=candidates, k=4))
        requests.append((answer.response.request_id, user, candidates))
        for served in answer.response.items[:2]:
            kind: FeedbackType = rng.choice(["click", "cart", "purchase"])
            service.feedback(FeedbackRequest(request_id=answer.response.request_id,
                                             item_id=served.item_id, event_type=kind))  # fmt: skip
    commit_events(world, pushed)
    ingest_served(world, now=datetime.now(UTC) + timedelta(seconds=1))  # feedback -> lake

    log = read_prediction_logs(world).to_pandas()
    at = {r: ts.to_pydatetime() for r, ts in log.groupby("request_id")["ts"].first().items()}
    rows = [(user, item, at[rid]) for rid, user, candidates in requests for item in candidates]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp"])
    # the catalog the feature tables (and so the online store) were built from
    catalog = pq.read_table(world.feature_data_dir / "item_catalog.parquet",
                            columns=["item_id", "category"])  # fmt: skip
    offline = lake_session_features(world, frame, catalog)
    online: dict[str, list[float]] = {n: [] for n in SESSION_FEATURES}
    for rid, user, candidates in requests:  # later events are in the buffer: ignored
        values = service.session_features(user, candidates, at[rid])
        for name in SESSION_FEATURES:
            online[name] += values[name].tolist()
    for name in SESSION_FEATURES:
        np.testing.assert_array_equal(np.array(online[name]), offline[name], err_msg=name)
    # the replay exercised what matters: sessions, re-views and feedback in them
    assert (offline["session_events"] > 0).mean() > 0.5
    assert (offline["session_item_views"] > 0).any() and (offline["session_carts"] > 0).any()
    fed = [e for e in service.sessions._users["3"].types if e in ("click", "purchase")]
    assert fed, "feedback reached the buffer"
