"""Switch serving to a new champion: switch, smoke-test, roll back on failure.

The decision logic (:func:`rollout`) knows nothing about where serving runs; a *target*
supplies three operations. The local profile's target moves the champion pointer that the
local service reads; the Kubernetes target (cluster profiles) will patch the serving
Deployment and wait for its rollout, reusing the same logic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
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
    """Make ``tag`` live on ``target``, smoke-test it, and revert if the test fails.

    ``tag`` may already be current (register promotes it in the local profile): it is
    smoke-tested all the same, and a failure reverts to the champion before it.

    Raises:
        DeployError: the smoke test failed (after reverting; the message names both tags).
    """
    if target.current() != tag:
        target.switch(tag)
    try:
        target.smoke_test(tag)
    except Exception as exc:
        restored = target.revert()
        log.error("smoke test of %s failed (%s); reverted to %s", tag, exc, restored)
        raise DeployError(
            f"model {tag!r} failed its smoke test ({exc}); serving reverted to {restored!r}"
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

    def current(self) -> str | None:
        from flywheel.registry import current_champion

        return current_champion(self.settings)

    def switch(self, tag: str) -> None:
        from flywheel.registry import promote

        promote(self.settings, tag)

    def revert(self) -> str | None:
        from flywheel.registry import RegistryError, rollback

        try:
            return rollback(self.settings)
        except RegistryError:  # no earlier champion: nothing to go back to
            return None

    def smoke_test(self, tag: str) -> None:
        from flywheel.ranking import MODEL_FEATURES
        from flywheel.registry import model_file
        from flywheel.train import load_booster, predict

        booster = load_booster(model_file(self.settings, tag))
        smoke_test_booster(lambda x: predict(booster, x), len(MODEL_FEATURES))


def deploy(settings: Settings, tag: str) -> DeployResult:
    """Deploy ``tag`` to the serving target of ``settings.profile``."""
    if settings.profile != "local":
        raise NotImplementedError(
            f"deploy for profile {settings.profile!r} arrives with the Kubernetes issue; "
            "only 'local' is available"
        )
    return rollout(LocalTarget(settings), tag)
