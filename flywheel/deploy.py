"""Switch serving to a new champion: switch, smoke-test, roll back on failure.

The decision logic (:func:`rollout`) knows nothing about where serving runs; a *target*
supplies the operations. The local profile's target moves the champion pointer that the
local service reads; the Kubernetes target of the cluster profiles
(:class:`flywheel.k8s_deploy.KubernetesTarget`) patches the serving Deployment's pinned
model tag and waits for its rollout, under the same logic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)


class DeployError(RuntimeError):
    """The new model failed its smoke test; serving was rolled back to ``previous``."""


@dataclass(frozen=True)
class DeployResult:
    status: str
    model_tag: str
    detail: str


class Target(Protocol):
    """Where serving runs: what ``rollout`` needs from it."""

    def current(self) -> str | None: ...
    def switch(self, tag: str) -> None: ...
    def smoke_test(self, tag: str) -> None: ...
    def revert(self) -> str | None: ...


def rollout(target: Target, tag: str) -> DeployResult:
    """Make ``tag`` live on ``target``, smoke-test it, and revert if either step fails.

    ``tag`` may already be current (register promotes it in the local profile): it is
    smoke-tested all the same, and a failure reverts to the champion before it. A switch
    that fails part-way (a Kubernetes rollout that never completes) is reverted too.

    Raises:
        DeployError: the switch or the smoke test failed, after reverting (the message
            names the new tag, what failed, and what serving runs now).
    """
    step = "rollout"
    try:
        if target.current() != tag:
            target.switch(tag)
        step = "smoke test"
        target.smoke_test(tag)
    except Exception as exc:
        try:
            restored = target.revert()
        except Exception as revert_exc:
            raise DeployError(
                f"model {tag!r} failed its {step} ({exc}); reverting failed too ({revert_exc})"
            ) from revert_exc
        log.error("%s of %s failed (%s); reverted to %s", step, tag, exc, restored)
        raise DeployError(
            f"model {tag!r} failed its {step} ({exc}); serving reverted to {restored!r}"
        ) from exc
    log.info("serving %s", tag)
    return DeployResult("deployed", tag, "smoke test passed")


def smoke_test_booster(predict: Callable[[np.ndarray], np.ndarray], n_features: int) -> None:
    """A model must score a small batch of plausible inputs with finite probabilities."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(16, n_features))).astype(np.float32)
    p = np.asarray(predict(x))
    if p.shape != (16,) or not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"predictions are not 16 probabilities in [0, 1]: {p[:4]}...")
    if np.ptp(p) == 0:
        raise ValueError("the model scores every input the same: it cannot rank")


@dataclass
class LocalTarget:
    """The local profile: the champion pointer, which the local service reads."""

    settings: Settings
    #: Set while a switch is under way: ``promote`` is atomic, so a switch that failed
    #: changed nothing and reverting must not roll the pointer back past it.
    _failed_switch: bool = field(default=False, init=False, repr=False)

    def current(self) -> str | None:
        from flywheel.registry import current_champion

        return current_champion(self.settings)

    def switch(self, tag: str) -> None:
        from flywheel.registry import promote

        self._failed_switch = True
        promote(self.settings, tag)
        self._failed_switch = False

    def revert(self) -> str | None:
        from flywheel.registry import RegistryError, rollback

        if self._failed_switch:
            return self.current()
        try:
            return rollback(self.settings)
        except RegistryError:  # no earlier champion: nothing to go back to
            return None

    def smoke_test(self, tag: str) -> None:
        from flywheel.registry import model_file
        from flywheel.train import booster_features, load_booster, predict

        booster = load_booster(model_file(self.settings, tag))
        smoke_test_booster(lambda x: predict(booster, x), len(booster_features(booster)))


def deploy(settings: Settings, tag: str, target: Target | None = None) -> DeployResult:
    """Deploy ``tag`` to the serving target of ``settings.profile``: the champion pointer
    (local) or the serving Deployment (kind, prod). See :func:`rollout`.

    In the cluster profiles the registry's champion pointer (moved to ``tag`` by register)
    is put back when the rollout fails: the next cycle must compare its challenger with
    the model serving actually runs, not one that never served.
    """
    if settings.profile == "local":
        return rollout(target or LocalTarget(settings), tag)
    if target is None:
        from flywheel.k8s_deploy import KubernetesTarget

        target = KubernetesTarget(settings)
    try:
        return rollout(target, tag)
    except DeployError:
        from flywheel.registry import RegistryError, current_champion, rollback

        if current_champion(settings) == tag:
            try:
                log.error("champion pointer back to %s", rollback(settings))
            except RegistryError:
                log.error("no earlier champion to put back; %s stays in the pointer", tag)
        raise
