"""Training through a real local Ray Train run (2 workers x 0.5 CPU), then evaluate + register.

What is measured: the AUC on the held-out test split of the model trained on 14k rows,
against the AUC of the true click probabilities on the same rows (the oracle, the best any
model can do). The model must come within 0.03 of it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from flywheel.config import RaySettings, Settings
from flywheel.evaluate import evaluate
from flywheel.ranking import MODEL_FEATURES
from flywheel.ray_runtime import ensure_ray, shutdown_ray
from flywheel.registry import load_champion_booster, register_model
from flywheel.train import ShardError, TrainSummary, load_booster, predict, train_model
from tests.shards import SyntheticShards, write_shards, write_split

pytestmark = pytest.mark.integration

ORACLE_GAP = 0.03
log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def ray_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(
        workspace=tmp_path_factory.mktemp("ws"),
        ray=RaySettings(num_cpus=2, num_workers=2, cpus_per_worker=0.5),
    )
    ensure_ray(settings)
    yield settings
    shutdown_ray()


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShards:
    return write_shards(tmp_path_factory.mktemp("shards"), n_rows=20_000, seed=0)


@pytest.fixture(scope="module")
def trained(
    ray_settings: Settings, shards: SyntheticShards, tmp_path_factory: pytest.TempPathFactory
) -> TrainSummary:
    summary = train_model(ray_settings, shards.root, tmp_path_factory.mktemp("model"), seed=0)
    record = json.loads(summary.metrics_path.read_text())
    log.warning("train timings (s): %s", {k: round(v, 2) for k, v in record["seconds"].items()})
    return summary


def _xy(shards: SyntheticShards, split: str) -> tuple[np.ndarray, np.ndarray]:
    frame = shards.frames[split]
    return frame[list(MODEL_FEATURES)].to_numpy(np.float32), frame["label"].to_numpy()


def test_model_comes_close_to_the_oracle(trained: TrainSummary, shards: SyntheticShards) -> None:
    x, y = _xy(shards, "test")
    model_auc = roc_auc_score(y, predict(load_booster(trained.model_path), x))
    oracle_auc = roc_auc_score(y, shards.true_prob["test"])
    assert model_auc >= oracle_auc - ORACLE_GAP, (model_auc, oracle_auc)
    assert model_auc <= oracle_auc + 0.01  # nothing beats the truth by more than noise


def test_metrics_file_and_checkpoint(trained: TrainSummary, shards: SyntheticShards) -> None:
    record = json.loads(trained.metrics_path.read_text())
    assert record["rows"] == {"train": len(shards.frames["train"]), "valid": 3000}
    assert record["feature_columns"] == list(MODEL_FEATURES)
    assert 0 <= record["best_iteration"] < record["num_boosted_rounds"]
    # Data-parallel: each of the 2 workers saw about half the training rows.
    assert record["worker_train_rows"] == pytest.approx(len(shards.frames["train"]) / 2, rel=0.2)
    # The reported valid AUC agrees with one computed here from the saved model.
    x, y = _xy(shards, "valid")
    p = predict(load_booster(trained.model_path), x)
    assert record["valid_auc"] == pytest.approx(roc_auc_score(y, p), abs=2e-3)
    checkpoint_model = Path(trained.checkpoint_path) / "model.ubj"
    assert checkpoint_model.read_bytes() == trained.model_path.read_bytes()


def test_params_override_the_defaults(
    ray_settings: Settings, shards: SyntheticShards, tmp_path: Path
) -> None:
    params = {"num_boost_round": 4, "max_depth": 2}
    summary = train_model(ray_settings, shards.root, tmp_path, params=params, seed=1)
    record = json.loads(summary.metrics_path.read_text())
    assert record["num_boosted_rounds"] == 4 and record["params"]["max_depth"] == 2
    assert record["params"]["seed"] == 1
    dump = load_booster(summary.model_path).get_dump()
    assert len(dump) <= 4
    assert all(tree.count("\t\t\t") == 0 for tree in dump)  # depth <= 2: no 3rd-level node


def test_trained_model_evaluates_and_registers(
    trained: TrainSummary, shards: SyntheticShards, ray_settings: Settings, tmp_path: Path
) -> None:
    verdict = evaluate(trained.model_path, None, shards.root, tmp_path / "eval")
    assert verdict.blessed, verdict.reason
    settings = Settings(workspace=tmp_path / "ws")
    lineage = {"run_id": "it-1", "data_window": "2025-03", "feature_service": "ranking_v1"}
    tag = register_model(settings, trained.model_path, {"auc": verdict.challenger.auc}, lineage)
    champion = load_champion_booster(settings)
    assert champion is not None and champion[0] == tag
    x, _ = _xy(shards, "test")
    np.testing.assert_allclose(
        predict(champion[1], x), predict(load_booster(trained.model_path), x)
    )


def _copy(shards: SyntheticShards, dest: Path) -> Path:
    shutil.copytree(shards.root, dest)
    return dest


def test_a_corrupt_shard_is_named(
    shards: SyntheticShards, ray_settings: Settings, tmp_path: Path
) -> None:
    root = _copy(shards, tmp_path / "s")
    bad = root / "train" / "part-001.parquet"
    bad.write_bytes(bad.read_bytes()[:100])  # a truncated upload
    with pytest.raises(ShardError, match=r"part-001\.parquet is not readable Parquet"):
        train_model(ray_settings, root, tmp_path / "out")


def test_contract_violations_are_refused(
    shards: SyntheticShards, ray_settings: Settings, tmp_path: Path
) -> None:
    root = _copy(shards, tmp_path / "s")
    meta = json.loads((root / "metadata.json").read_text())
    (root / "metadata.json").write_text(
        json.dumps({**meta, "feature_columns": [*MODEL_FEATURES[:-1], "surprise"]})
    )
    with pytest.raises(ShardError, match=r"missing \['price_ratio'\], unexpected \['surprise'\]"):
        train_model(ray_settings, root, tmp_path / "out")

    root = _copy(shards, tmp_path / "one-class")
    for f in (root / "valid").iterdir():
        f.unlink()
    write_split(root / "valid", shards.frames["valid"].assign(label=np.int8(1)), 1)
    with pytest.raises(ShardError, match="split 'valid': label has one class"):
        train_model(ray_settings, root, tmp_path / "out")

    root = _copy(shards, tmp_path / "empty")
    for f in (root / "valid").iterdir():
        f.unlink()
    with pytest.raises(ShardError, match="split 'valid' has no Parquet files"):
        train_model(ray_settings, root, tmp_path / "out")
