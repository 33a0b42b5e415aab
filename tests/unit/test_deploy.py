"""Deploy decision logic against a fake serving target, and the real local target
(the champion pointer and the registered booster) end to end."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from flywheel.config import Settings
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


def _register(settings: Settings, tmp_path: Path, seed: int, constant: bool = False) -> str:
    """Train a tiny real booster and register it (register promotes it to champion).

    ``constant``: every label the same, so no split gains anything and the booster scores
    every input alike: a model that cannot rank.
    """
    import xgboost as xgb

    from flywheel.ranking import MODEL_FEATURES
    from flywheel.registry import register_model

    x = np.random.default_rng(0).standard_normal((200, len(MODEL_FEATURES))).astype(np.float32)
    y = (np.random.default_rng(seed).random(len(x)) < 0.3).astype(np.float32)
    if constant:
        y[:] = 1.0
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
    return register_model(settings, path, {"auc": 0.7}, lineage)


def test_local_deploy_of_a_model_that_cannot_rank_restores_the_champion(
    tmp_path: Path,
) -> None:
    """The real LocalTarget: its smoke test scores the registered booster, and a failure
    moves the champion pointer back to the model before."""
    from flywheel.deploy import LocalTarget, deploy
    from flywheel.registry import champion_state, current_champion

    settings = Settings(workspace=tmp_path / "ws")
    old = _register(settings, tmp_path, seed=1)
    assert deploy(settings, old).status == "deployed"
    bad = _register(settings, tmp_path, seed=2, constant=True)
    assert current_champion(settings) == bad  # register promoted it
    with pytest.raises(
        DeployError, match=re.escape(repr(bad)) + " failed its smoke test.*cannot rank"
    ):
        deploy(settings, bad)
    assert current_champion(settings) == old
    assert bad not in champion_state(settings).history
    with pytest.raises(ValueError, match="cannot rank"):
        LocalTarget(settings).smoke_test(bad)
    LocalTarget(settings).smoke_test(old)  # the same check passes a model that ranks


def test_failed_cluster_deploy_puts_the_champion_pointer_back(tmp_path: Path) -> None:
    """Kind profile with a fake Deployment target (no API server here): register promoted
    the new tag; its failed rollout must leave the pointer on the model still serving."""
    from flywheel.config import Settings
    from flywheel.deploy import deploy
    from flywheel.registry import current_champion

    settings = Settings(workspace=tmp_path / "ws", profile="kind")
    old, new = (_register(settings, tmp_path, seed) for seed in (1, 2))
    assert current_champion(settings) == new  # register promoted it
    with pytest.raises(DeployError):
        deploy(settings, new, target=FakeTarget(live=old, bad={new}))
    assert current_champion(settings) == old

    good = FakeTarget(live=old)
    from flywheel.registry import promote

    promote(settings, new)
    assert deploy(settings, new, target=good).status == "deployed"
    assert current_champion(settings) == new and good.live == new


def test_a_revert_that_fails_too_is_named_with_both_errors() -> None:
    class Stuck(FakeTarget):
        def revert(self) -> str | None:
            raise OSError("pointer is read-only")

    with pytest.raises(DeployError) as info:
        rollout(Stuck(live="m1", bad={"m2"}), "m2")
    assert str(info.value) == (
        "model 'm2' failed its smoke test (scores are NaN); "
        "reverting failed too (pointer is read-only)"
    )
    assert isinstance(info.value.__cause__, OSError)


def test_local_switch_moves_the_pointer_and_a_failed_smoke_test_moves_it_back(
    tmp_path: Path,
) -> None:
    """The real LocalTarget switching (the tag is not yet champion): promote, smoke-test,
    and on failure roll the pointer back to the model before the switch."""
    from flywheel.deploy import LocalTarget
    from flywheel.registry import champion_state, current_champion, promote

    settings = Settings(workspace=tmp_path / "ws")
    old = _register(settings, tmp_path, seed=1)
    good = _register(settings, tmp_path, seed=3)
    bad = _register(settings, tmp_path, seed=2, constant=True)
    promote(settings, old)  # serving went back to old: good and bad are registered, not live
    assert rollout(LocalTarget(settings), good).status == "deployed"
    assert current_champion(settings) == good
    assert champion_state(settings).history[-1] == old
    with pytest.raises(DeployError, match=re.escape(repr(bad)) + " failed its smoke test.*rank"):
        rollout(LocalTarget(settings), bad)
    assert current_champion(settings) == good


def test_a_local_switch_that_fails_changes_nothing_and_reverts_nothing(tmp_path: Path) -> None:
    """promote refused the tag (not in the store): the pointer is as it was, and the revert
    must not roll it back past the champion that is still serving."""
    from flywheel.deploy import LocalTarget
    from flywheel.registry import champion_state

    settings = Settings(workspace=tmp_path / "ws")
    _register(settings, tmp_path, seed=1)
    live = _register(settings, tmp_path, seed=3)
    before = champion_state(settings)
    missing = "flywheel-ranker:nosuchmodel"
    with pytest.raises(
        DeployError,
        match=rf"'{missing}' failed its rollout \(cannot promote .*\); "
        + re.escape(f"serving reverted to {live!r}"),
    ):
        rollout(LocalTarget(settings), missing)
    after = champion_state(settings)
    assert (after.champion, after.history) == (before.champion, before.history)
