"""The BentoML model store in the workspace and the champion pointer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from flywheel import registry
from flywheel.config import Settings
from flywheel.ranking import MODEL_FEATURES
from flywheel.registry import (
    RegistryError,
    champion_state,
    current_champion,
    load_champion_booster,
    model_file,
    model_store,
    promote,
    register_model,
    rollback,
)

LINEAGE = {
    "run_id": "run-42",
    "data_window": {"start": "2025-03-01T00:00:00+00:00", "end": "2025-03-15T00:00:00+00:00"},
    "feature_service": "ranking_v1",
}
X = np.random.default_rng(0).standard_normal((300, len(MODEL_FEATURES))).astype(np.float32)


def _booster_file(path: Path, seed: int) -> Path:
    y = (np.random.default_rng(seed).random(len(X)) < 0.3).astype(np.float32)
    dtrain = xgb.DMatrix(X, label=y, feature_names=list(MODEL_FEATURES))
    params = {"objective": "binary:logistic", "max_depth": 2, "seed": seed}
    xgb.train(params, dtrain, num_boost_round=5).save_model(str(path))
    return path


def _scores(path_or_booster: Path | xgb.Booster) -> np.ndarray:
    booster = path_or_booster
    if isinstance(booster, Path):
        booster = xgb.Booster(model_file=str(booster))
    return booster.predict(xgb.DMatrix(X, feature_names=list(MODEL_FEATURES)))


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(workspace=tmp_path / "ws")


def test_second_model_becomes_champion_and_rollback_restores_first(
    settings: Settings, tmp_path: Path
) -> None:
    assert current_champion(settings) is None and load_champion_booster(settings) is None
    first_file, second_file = (
        _booster_file(tmp_path / "a.ubj", 1),
        _booster_file(tmp_path / "b.ubj", 2),
    )
    first = register_model(settings, first_file, {"auc": 0.7}, LINEAGE)
    second = register_model(settings, second_file, {"auc": 0.8}, LINEAGE)
    assert first != second and first.startswith("flywheel-ranker:")
    assert current_champion(settings) == second
    assert champion_state(settings).history == (first,)
    tag, booster = load_champion_booster(settings)  # type: ignore[misc]
    assert tag == second
    np.testing.assert_allclose(_scores(booster), _scores(second_file))

    assert rollback(settings) == first
    assert current_champion(settings) == first
    tag, booster = load_champion_booster(settings)  # type: ignore[misc]
    np.testing.assert_allclose(_scores(booster), _scores(first_file))
    # The demoted model stays in the store and can be promoted again.
    assert model_file(settings, second).is_file()
    promote(settings, second)
    assert current_champion(settings) == second
    assert champion_state(settings).history == (first,)


def test_labels_and_metadata_round_trip(settings: Settings, tmp_path: Path) -> None:
    import bentoml

    metrics = {"auc": 0.8123456789, "logloss": 0.45, "ece": 0.012, "ndcg_at_10": 0.6}
    tag = register_model(settings, _booster_file(tmp_path / "m.ubj", 3), metrics, LINEAGE)
    with model_store(settings):
        info = bentoml.models.get(tag).info
    assert info.labels == {
        "pipeline_run_id": "run-42",
        "feature_service": "ranking_v1",
        "data_window_start": "2025-03-01T00:00:00+00:00",
        "data_window_end": "2025-03-15T00:00:00+00:00",
        "auc": "0.812346",
        "logloss": "0.45",
        "ece": "0.012",
        "ndcg_at_10": "0.6",
    }
    assert info.metadata["metrics"] == metrics
    assert info.metadata["lineage"] == LINEAGE
    assert info.metadata["feature_columns"] == list(MODEL_FEATURES)


def test_a_failure_during_save_leaves_the_pointer_untouched(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = register_model(settings, _booster_file(tmp_path / "a.ubj", 1), {"auc": 0.7}, LINEAGE)
    pointer = settings.state_dir / "champion.json"
    before = pointer.read_bytes()
    second_file = _booster_file(tmp_path / "b.ubj", 2)

    def broken_save(self: xgb.Booster, fname: str) -> None:
        Path(fname).write_bytes(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(xgb.Booster, "save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        register_model(settings, second_file, {"auc": 0.9}, LINEAGE)
    assert pointer.read_bytes() == before
    with model_store(settings) as store:
        assert [str(m.tag) for m in store.list()] == [first]


def test_an_interrupted_pointer_write_keeps_the_old_pointer(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = register_model(settings, _booster_file(tmp_path / "a.ubj", 1), {"auc": 0.7}, LINEAGE)

    def crash(src: str, dst: str) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(registry.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        register_model(settings, _booster_file(tmp_path / "b.ubj", 2), {"auc": 0.8}, LINEAGE)
    monkeypatch.undo()
    assert current_champion(settings) == first
    assert sorted(p.name for p in settings.state_dir.iterdir()) == ["champion.json"]


def test_refusals_name_the_problem(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no such model"):
        promote(settings, "flywheel-ranker:doesnotexist")
    assert not (settings.state_dir / "champion.json").exists()
    with pytest.raises(RegistryError, match="lineage lacks \\['feature_service'\\]"):
        register_model(
            settings,
            _booster_file(tmp_path / "a.ubj", 1),
            {"auc": 0.7},
            {"run_id": "r", "data_window": "w"},
        )
    # the lineage's feature service must be the one the booster's columns come from
    v2 = {**LINEAGE, "feature_service": "ranking_v2"}
    with pytest.raises(RegistryError, match=r"21 input columns, not the 49 of .* ranking_v2"):
        register_model(settings, _booster_file(tmp_path / "a.ubj", 1), {"auc": 0.7}, v2)
    with pytest.raises(RegistryError, match="'ranking_v7' is unknown"):
        register_model(
            settings,
            _booster_file(tmp_path / "a.ubj", 1),
            {"auc": 0.7},
            {**LINEAGE, "feature_service": "ranking_v7"},
        )
    assert current_champion(settings) is None
    register_model(settings, _booster_file(tmp_path / "b.ubj", 1), {"auc": 0.7}, LINEAGE)
    with pytest.raises(RegistryError, match="cannot roll back"):
        rollback(settings)


def test_rollback_skips_a_previous_champion_deleted_from_the_store(
    settings: Settings, tmp_path: Path
) -> None:
    tags = [
        register_model(settings, _booster_file(tmp_path / f"{i}.ubj", i), {"auc": 0.7}, LINEAGE)
        for i in range(3)
    ]
    with model_store(settings) as store:
        store.delete(tags[1])
    assert rollback(settings) == tags[0]
    pointer = json.loads((settings.state_dir / "champion.json").read_text())
    assert pointer["champion"] == tags[0] and pointer["history"] == []


def test_workspaces_do_not_share_a_store_and_nothing_leaks(tmp_path: Path) -> None:
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer

    a, b = Settings(workspace=tmp_path / "a"), Settings(workspace=tmp_path / "b")
    track_before = os.environ.get("BENTOML_DO_NOT_TRACK")
    override_before = BentoMLContainer.model_store._override
    tag = register_model(a, _booster_file(tmp_path / "m.ubj", 1), {"auc": 0.7}, LINEAGE)
    with model_store(b):
        assert bentoml.models.list() == []
    with model_store(a):
        assert [str(m.tag) for m in bentoml.models.list()] == [tag]
    assert current_champion(b) is None
    assert (tmp_path / "a" / "bentoml" / "models" / "flywheel-ranker").is_dir()
    assert os.environ.get("BENTOML_DO_NOT_TRACK") == track_before
    # Outside the block BentoML's container is back to its own (unresolved) default store.
    assert BentoMLContainer.model_store._override is override_before
