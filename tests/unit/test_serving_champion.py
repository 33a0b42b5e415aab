"""Loading a champion to serve: each model is checked against its own feature service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from flywheel.config import Settings
from flywheel.ranking import model_features
from flywheel.registry import model_store, register_model
from flywheel.serving.champion import load_serving_model


def _booster(path: Path, service: str) -> Path:
    columns = list(model_features(service))
    x = np.random.default_rng(1).random((200, len(columns))).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.float32)
    dtrain = xgb.DMatrix(x, label=y, feature_names=columns)
    xgb.train({"objective": "binary:logistic", "max_depth": 2}, dtrain, 3).save_model(str(path))
    return path


@pytest.mark.parametrize("service", ["ranking_v1", "ranking_v2"])
def test_a_champion_loads_with_its_own_service(tmp_path: Path, service: str) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    lineage = {"run_id": "r", "data_window": "w", "feature_service": service}
    tag = register_model(settings, _booster(tmp_path / "m.ubj", service), {"auc": 0.6}, lineage)
    model = load_serving_model(settings, tag)
    assert model.feature_service == service
    assert model.booster.num_features() == len(model_features(service))


def test_a_champion_without_a_service_label_is_known_by_its_columns(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    lineage = {"run_id": "r", "data_window": "w", "feature_service": "ranking_v1"}
    tag = register_model(settings, _booster(tmp_path / "m.ubj", "ranking_v1"), {}, lineage)
    with model_store(settings) as store:  # an older registration, without the label
        model = store.get(tag)
        model.info.labels.pop("feature_service")
        model.flush()
    with model_store(settings) as store:
        assert "feature_service" not in store.get(tag).info.labels
    assert load_serving_model(settings, tag).feature_service == "ranking_v1"
