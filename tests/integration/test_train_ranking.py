"""A rank:* objective through the real train path (local Ray Train, 2 workers), then evaluate.

The synthetic shards' groups are interleaved in time order, as browsing sessions are in
real shards, so each worker's row range cuts groups open and the train stage has to hand
XGBoost whole, contiguous query groups (:func:`flywheel.objective.worker_rows`). What is
measured: the rank model's test NDCG@10 and AUC against the true click probabilities'
(the oracle's) on the same rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flywheel.config import RaySettings, Settings, TrainSettings
from flywheel.evaluate import auc, evaluate, ndcg_at_k
from flywheel.objective import score_kind
from flywheel.ray_runtime import ensure_ray, shutdown_ray
from flywheel.train import inspect_shards, load_booster, predict, read_split, train_model
from tests.shards import SyntheticShards, write_shards

pytestmark = pytest.mark.integration

#: How far below the oracle the rank model's test figures may fall.
ORACLE_GAP_AUC, ORACLE_GAP_NDCG = 0.04, 0.06


@pytest.fixture(scope="module")
def ray_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(
        workspace=tmp_path_factory.mktemp("ws"),
        ray=RaySettings(num_cpus=2, num_workers=2, cpus_per_worker=0.5),
        train=TrainSettings(objective="rank:ndcg", lambdarank_pair_method="topk"),
    )
    ensure_ray(settings)
    yield settings
    shutdown_ray()


def _interleave(root: Path) -> None:
    """Rewrite each split's groups so that 40 groups of ~10 rows interleave per 400 rows."""
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        offset = 0
        for path in sorted(split_dir.glob("*.parquet")):
            table = pq.read_table(path)
            i = np.arange(offset, offset + table.num_rows)
            groups = [f"{split_dir.name}-{b}-{k}" for b, k in zip(i // 400, i % 40, strict=True)]
            index = table.schema.get_field_index("group_id")
            pq.write_table(table.set_column(index, "group_id", [groups]), path)
            offset += table.num_rows


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShards:
    made = write_shards(tmp_path_factory.mktemp("shards"), n_rows=12_000, seed=1)
    _interleave(made.root)
    return made


def test_rank_objective_trains_and_scores_through_train_model(
    ray_settings: Settings, shards: SyntheticShards, tmp_path: Path
) -> None:
    summary = train_model(ray_settings, shards.root, tmp_path / "model", seed=0)
    record = json.loads(summary.metrics_path.read_text())
    assert record["objective"] == "rank:ndcg" and record["stopped_on"] == "valid ndcg@10"
    assert record["params"]["lambdarank_pair_method"] == "topk"
    assert math.isnan(record["valid_logloss"]) and 0 < record["valid_ndcg_at_10"] <= 1
    # Data-parallel: rank 0 trained on about half the rows (its groups' rows, whole).
    assert record["worker_train_rows"] == pytest.approx(record["rows"]["train"] / 2, rel=0.2)
    booster = load_booster(summary.model_path)
    assert score_kind(booster) == "ranking"
    x, y, groups = read_split(inspect_shards(shards.root), "test")
    scores = predict(booster, x)
    assert scores.min() < 0 or scores.max() > 1  # unnormalised: no probabilities
    oracle = shards.true_prob["test"]
    assert auc(y, scores) >= auc(y, oracle) - ORACLE_GAP_AUC
    assert ndcg_at_k(y, scores, groups) >= ndcg_at_k(y, oracle, groups) - ORACLE_GAP_NDCG

    result = evaluate(summary.model_path, None, shards.root, tmp_path / "eval")
    assert math.isnan(result.challenger.logloss) and math.isnan(result.challenger.ece)
    assert result.challenger.auc == pytest.approx(auc(y, scores))
    saved = json.loads(result.metrics_path.read_text())
    assert saved["score_kinds"] == {"challenger": "ranking"}
    assert result.blessed, result.reason
