"""Deploy decision logic against a fake serving target (no real deployment involved)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from flywheel.deploy import DeployError, rollout, smoke_test_booster


@dataclass
class FakeTarget:
    live: str | None
    bad: set[str] = field(default_factory=set)
    history: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def current(self) -> str | None:
        return self.live

    def switch(self, tag: str) -> None:
        self.calls.append(f"switch:{tag}")
        if self.live is not None:
            self.history.append(self.live)
        self.live = tag

    def smoke_test(self, tag: str) -> None:
        self.calls.append(f"smoke:{tag}")
        if tag in self.bad:
            raise ValueError("scores are NaN")

    def revert(self) -> str | None:
        self.calls.append("revert")
        self.live = self.history.pop() if self.history else None
        return self.live


def test_good_model_is_switched_and_tested() -> None:
    t = FakeTarget(live="m1")
    result = rollout(t, "m2")
    assert result.status == "deployed" and t.live == "m2"
    assert t.calls == ["switch:m2", "smoke:m2"]


def test_failed_smoke_test_reverts_to_the_previous_champion() -> None:
    t = FakeTarget(live="m1", bad={"m2"})
    with pytest.raises(DeployError, match=r"'m2' failed its smoke test.*reverted to 'm1'"):
        rollout(t, "m2")
    assert t.live == "m1"
    assert t.calls == ["switch:m2", "smoke:m2", "revert"]


def test_already_promoted_model_is_still_smoke_tested() -> None:
    t = FakeTarget(live="m2", history=["m1"], bad={"m2"})
    with pytest.raises(DeployError):
        rollout(t, "m2")
    assert t.calls == ["smoke:m2", "revert"] and t.live == "m1"


@pytest.mark.parametrize(
    ("predict", "message"),
    [
        (lambda x: np.full(len(x), np.nan), "probabilities"),
        (lambda x: np.full(len(x), 1.5), "probabilities"),
        (lambda x: np.full(len(x), 0.3), "cannot rank"),
        (lambda x: np.zeros(3), "probabilities"),
    ],
)
def test_smoke_test_rejects_broken_models(predict, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        smoke_test_booster(predict, n_features=5)


def test_smoke_test_accepts_a_ranking_model() -> None:
    smoke_test_booster(lambda x: 1 / (1 + np.exp(-x.sum(axis=1))), n_features=5)


def test_failed_cluster_deploy_puts_the_champion_pointer_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Kind profile with a fake Deployment target (no API server here): register promoted
    the new tag; its failed rollout must leave the pointer on the model still serving."""
    import xgboost as xgb

    from flywheel.config import Settings
    from flywheel.deploy import deploy
    from flywheel.ranking import MODEL_FEATURES
    from flywheel.registry import current_champion, register_model

    settings = Settings(workspace=tmp_path / "ws", profile="kind")
    x = np.random.default_rng(0).standard_normal((200, len(MODEL_FEATURES))).astype(np.float32)
    tags = []
    for seed in (1, 2):
        y = (np.random.default_rng(seed).random(len(x)) < 0.3).astype(np.float32)
        booster = xgb.train(
            {"objective": "binary:logistic", "max_depth": 2},
            xgb.DMatrix(x, label=y, feature_names=list(MODEL_FEATURES)),
            num_boost_round=3,
        )
        path = tmp_path / f"m{seed}.ubj"
        booster.save_model(str(path))
        lineage = {
            "run_id": f"run-{seed}",
            "data_window": {"start": "2025-03-01", "end": "2025-03-15"},
            "feature_service": "ranking_v1",
        }
        tags.append(register_model(settings, path, {"auc": 0.7}, lineage))
    old, new = tags
    assert current_champion(settings) == new  # register promoted it
    with pytest.raises(DeployError):
        deploy(settings, new, target=FakeTarget(live=old, bad={new}))
    assert current_champion(settings) == old

    good = FakeTarget(live=old)
    from flywheel.registry import promote

    promote(settings, new)
    assert deploy(settings, new, target=good).status == "deployed"
    assert current_champion(settings) == new and good.live == new
