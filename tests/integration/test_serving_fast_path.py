"""The fast serving path against the per-request online path, on a real Feast SQLite store.

The reference is what serving did before item-side views were held in memory: every view
read from the online store on every request (``OnlineFeatureReader`` without a cache),
``ranking.model_inputs`` on a DataFrame and ``train.predict`` (a DMatrix). The fast path
(``RankingService`` with its defaults: item views in memory, columns as arrays,
``inplace_predict``) must rank the same items with the same scores for the same store
contents, and see changed item rows within its staleness bounds: at the next registry
check after a materialization, at the next full re-read after a write that bypasses the
registry, at once after its own pushes.

The world is ``test_service``'s (imported under the name pytest gives it), built afresh
here in a workspace of this module, since these tests rewrite item rows.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

# pytest's default "prepend" import mode imports test files of this folder as top-level
# modules (see test_service_fuzz.py).
import test_service as service_tests

from flywheel import feature_store as fs
from flywheel.config import Settings
from flywheel.ranking import model_inputs
from flywheel.registry import current_champion, model_file
from flywheel.serving import (
    ItemSideViews,
    OnlineFeatureReader,
    RankingService,
    RankRequest,
    ServingOptions,
)
from flywheel.train import load_booster, predict

pytestmark = pytest.mark.integration

NOW, H, skus = service_tests.NOW, service_tests.H, service_tests.skus
#: Active, new (no activity row), not in the catalog at all.
CANDIDATES = [*service_tests.skus(range(0, 120, 3)), "sku-999", "unknown item"]
USERS = ["3", "17", str(service_tests.COLD_USER)]


@pytest.fixture
def world(tmp_path: Any) -> Settings:
    return service_tests.served_world(Settings(workspace=tmp_path / "ws"))


def reference(settings: Settings, user: str, items: list[str], at: datetime, k: int) -> Any:
    """The per-request path: (served items, their scores), best first, ties in order."""
    store = fs.get_store(settings)
    champion_service = service_tests.LINEAGE["feature_service"]  # the champion's own
    frame = OnlineFeatureReader(store, champion_service).read(user, items, at)
    booster = load_booster(model_file(settings, current_champion(settings) or ""))
    scores = predict(booster, model_inputs(frame, at.timestamp(), champion_service))
    best = np.argsort(-scores, kind="stable")[:k]
    return [items[i] for i in best], [float(scores[i]) for i in best]


def served(service: RankingService, user: str, items: list[str], k: int = 12) -> Any:
    """(served items, scores, the request's time) from the fast path, without exploration."""
    outcome = service.rank(RankRequest(user_id=user, candidates=items, k=k))
    at = service.clock.now()  # the wall clock here; the booster ignores recency
    items_out = [e.item_id for e in outcome.response.items]
    return items_out, [e.score for e in outcome.response.items], at


def _greedy(settings: Settings, **options: Any) -> RankingService:
    return RankingService(settings, ServingOptions(epsilon=0.0, **options))


def _item_reads(service: RankingService) -> int:
    return sum(v.reads for v in service.item_views.views.values())


def test_fast_path_ranks_as_the_per_request_path(world: Settings) -> None:
    service = _greedy(world)
    assert set(service.item_views.views) == {"item_catalog", "item_activity"}  # item-side
    for user in USERS:
        for _ in range(2):  # the first read fills the item views, the second is served from them
            items, scores, at = served(service, user, CANDIDATES)
            want_items, want_scores = reference(world, user, CANDIDATES, at, 12)
            assert items == want_items
            assert scores == want_scores  # the same numbers, not just close
    reads = _item_reads(service)
    served(service, "5", CANDIDATES[::-1])
    assert _item_reads(service) == reads  # nothing item-side was read again


def test_cached_reader_answers_what_feast_answers(world: Settings) -> None:
    store = fs.get_store(world)
    name = fs.feature_service_name(world)
    cached = OnlineFeatureReader(store, name, ItemSideViews(store))
    for user, at in [("3", NOW), (str(service_tests.COLD_USER), NOW), ("3", NOW + 8 * 24 * H)]:
        for _ in range(2):
            ours = cached.read(user, CANDIDATES, at)
            theirs = fs.online_features(store, user, CANDIDATES, as_of=at)
            assert list(ours.columns) == list(theirs.columns)
            for key in ("user_id", "item_id", "category"):
                assert ours[key].tolist() == theirs[key].tolist(), key
            numeric = [c for c in theirs.columns if c not in ("user_id", "item_id", "category")]
            np.testing.assert_array_equal(
                ours[numeric].to_numpy(np.float64),
                theirs[numeric].to_numpy(np.float64, na_value=np.nan),
            )


def _new_item_activity(settings: Settings, stamp: datetime, scale: float) -> pd.DataFrame:
    """Every active item's activity again, stamped ``stamp``, with other counts."""
    old = pd.read_parquet(settings.feature_data_dir / "item_activity.parquet")
    new = old.copy()
    for column in new.columns:
        if column.startswith("item_") and column != "item_id":
            new[column] = (new[column] * scale + 7).astype(new[column].dtype)
    new["event_timestamp"] = new["created_timestamp"] = pd.Timestamp(stamp)
    return new


def test_a_materialization_is_served_at_the_next_registry_check(world: Settings) -> None:
    fresh = _greedy(world, item_cache_check_s=0.0)  # checks the registry on every request
    stale = _greedy(world, item_cache_check_s=3600.0)
    user = "3"
    before = served(fresh, user, CANDIDATES)[:2]
    assert served(stale, user, CANDIDATES)[:2] == before
    stamp = max(datetime.now(UTC) - timedelta(seconds=1), NOW + timedelta(seconds=2))
    table = _new_item_activity(world, stamp, scale=3.0)
    path = world.feature_data_dir / "item_activity.parquet"
    if path.is_dir():  # a built table is a day folder; a fixture's is one file
        shutil.rmtree(path)
    else:
        path.unlink()
    table.to_parquet(path, index=False)
    fs.materialize(world, end=stamp + timedelta(seconds=1))

    items, scores, at = served(fresh, user, CANDIDATES)
    assert (items, scores) == reference(world, user, CANDIDATES, at, 12)
    assert (items, scores) != before  # the new item rows changed the ranking
    # Within its check interval the other worker still serves what it holds: the bound.
    assert served(stale, user, CANDIDATES)[:2] == before


def test_rows_written_behind_the_registry_are_reread_after_max_age(world: Settings) -> None:
    service = _greedy(world, item_cache_check_s=0.0, item_cache_max_age_s=60.0)
    start, offset = time.monotonic(), [0.0]
    service.item_views.clock = lambda: start + offset[0]  # seconds since the views were made
    user = "3"
    before = served(service, user, CANDIDATES)[:2]
    stamp = max(datetime.now(UTC) - timedelta(seconds=1), NOW + timedelta(seconds=2))
    store = fs.get_store(world)
    # A writer that bypasses materialization (the registry does not change).
    store.write_to_online_store("item_activity", _new_item_activity(world, stamp, scale=5.0))
    offset[0] = 30.0
    assert served(service, user, CANDIDATES)[:2] == before  # younger than max age: held
    offset[0] = 61.0
    items, scores, at = served(service, user, CANDIDATES)
    assert (items, scores) == reference(world, user, CANDIDATES, at, 12) != before


def test_own_writes_are_forgotten_at_once(world: Settings) -> None:
    service = _greedy(world, item_cache_check_s=3600.0)
    served(service, "3", CANDIDATES)
    reads = _item_reads(service)
    service.item_views.written("item_activity", [(service_tests.sku(0),)])
    served(service, "3", CANDIDATES)
    assert _item_reads(service) == reads + 1  # that one key, read again in one batch
    served(service, "3", CANDIDATES)
    assert _item_reads(service) == reads + 1


def test_no_cache_when_max_age_is_zero(world: Settings) -> None:
    service = _greedy(world, item_cache_max_age_s=0.0)
    items, scores, at = served(service, "17", CANDIDATES)
    assert not service.item_views.views  # every view read per request
    assert (items, scores) == reference(world, "17", CANDIDATES, at, 12)


def test_candidate_logging_follows_its_settings(world: Settings) -> None:
    """``serving.log_candidates`` off writes no candidate log; a sample rate logs that
    share of requests (its own draws: the slates stay those of the seed)."""
    from flywheel.config import ServingSettings
    from flywheel.predlog import read_candidate_logs, read_prediction_logs

    off = world.model_copy(update={"serving": ServingSettings(log_candidates=False)})
    service = _greedy(off)
    for user in USERS:
        served(service, user, CANDIDATES)
    assert read_candidate_logs(world).num_rows == 0
    assert read_prediction_logs(world).num_rows == 12 * len(USERS)

    half = world.model_copy(update={"serving": ServingSettings(candidate_sample_rate=0.5)})
    service = RankingService(half, ServingOptions(epsilon=0.1, seed=3))
    plain = RankingService(world, ServingOptions(epsilon=0.1, seed=3))
    for n in range(60):
        user = USERS[n % len(USERS)]
        a = service.rank(RankRequest(user_id=user, candidates=CANDIDATES, k=5)).response
        b = plain.rank(RankRequest(user_id=user, candidates=CANDIDATES, k=5)).response
        assert [e.item_id for e in a.items] == [e.item_id for e in b.items]
    logged = read_candidate_logs(world).num_rows - 60  # ``plain`` logs every request
    assert 15 <= logged <= 45, logged
