"""A ranking_v1 champion meets its first ranking_v2 challenger: two real cycles (kfp.local,
Ray, Feast, Ray Train, the BentoML store) on one small simulated shop.

The first cycle runs with ``feature_service_version=1`` (a workspace from before v2), the
second with the default (2). The v1 champion must stay scorable through its own service
with the v2 tables in place (what serving does: read the model's service, build its inputs),
the evaluation must score it on its own columns of the v2 test shard, and whichever model
is champion afterwards must be scorable through the service its lineage names.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from flywheel import feature_store as fs
from flywheel.config import Settings
from flywheel.cycle import run_cycle
from flywheel.lake import feature_time
from flywheel.ranking import model_features, model_inputs
from flywheel.registry import current_champion, model_store
from flywheel.simulate import make_world, simulate_events

# Several kfp.local cycles (~2 min): `make test-slow`, not the default `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("versions")
    world = make_world(1_000, 200, seed=5)
    simulate_events(world, days=8, out_dir=root / "raw", seed=5)
    return root / "ws", root / "raw"


def _serve(settings: Settings, tag: str) -> tuple[str, np.ndarray]:
    """Score a few candidates with ``tag`` as serving does: the model's own service, read
    online, then its inputs."""
    from flywheel.serving import OnlineFeatureReader, load_model
    from flywheel.train import predict

    model = load_model(settings, tag)
    store = fs.get_store(settings)
    at = feature_time(settings) - timedelta(seconds=1)
    frame = OnlineFeatureReader(store, model.feature_service).read("1", ["1", "2", "3", "4"], at)
    return model.feature_service, predict(model.booster, model_inputs(frame, at.timestamp()))


def _labels(settings: Settings, tag: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    import bentoml

    with model_store(settings):
        model = bentoml.models.get(tag)
    return dict(model.info.labels), dict(model.info.metadata)


def test_a_v1_champion_serves_until_a_v2_model_replaces_it(shop: tuple[Path, Path]) -> None:
    workspace, raw = shop
    events, items = str(raw / "events"), str(raw / "items.parquet")
    old = Settings(workspace=workspace, feast={"feature_service_version": 1})
    first = run_cycle(old, events, items, window_days=7, seed=0)
    assert first.blessed and first.champion_after is not None
    labels, meta = _labels(old, first.champion_after)
    assert labels["feature_service"] == "ranking_v1"
    assert meta["feature_columns"] == list(model_features("ranking_v1"))

    new = Settings(workspace=workspace)  # the default: ranking_v2
    second = run_cycle(new, events, items, window_days=7, seed=0)
    assert [s.status for s in second.stages if s.stage != "ingest"] == ["ran"] * 7
    record = json.loads((workspace / "runs" / second.run_id / "evaluate.json").read_text())[
        "summary"
    ]
    # the v1 champion was scored on its own columns of the v2 test shard
    assert record["champion"] is not None and record["champion"]["auc"] > 0.55
    assert record["champion_tag"] == first.champion_after
    # the v1 champion still serves through ranking_v1 next to the v2 tables ...
    service, scores = _serve(new, first.champion_after)
    assert service == "ranking_v1" and scores.shape == (4,) and np.isfinite(scores).all()
    # ... and so does whichever model is champion now, through its own service
    champion = current_champion(new)
    assert champion is not None
    want = "ranking_v2" if second.blessed else "ranking_v1"
    assert champion == (second.champion_after if second.blessed else first.champion_after)
    service, scores = _serve(new, champion)
    assert service == want and np.isfinite(scores).all()
    if second.blessed:
        labels, meta = _labels(new, champion)
        assert meta["feature_columns"] == list(model_features("ranking_v2"))
