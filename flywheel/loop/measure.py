"""Measuring the three arms offline: expected CTR under the ground truth and the paired gain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flywheel.config import Settings
    from flywheel.serving import LoadedModel
    from flywheel.simulate import World

from flywheel.loop.results import SLATE_K, GainInterval, LoopError


def expected_ctr(click_prob: np.ndarray, order: np.ndarray, k: int) -> float:
    """Expected clicks per impression of the slate ``order[:k]`` (indices into
    ``click_prob``) when position ``p`` is examined with ``1 / log2(p + 2)``."""
    from flywheel.simulate import examination_prob

    top = np.asarray(order)[:k]
    return float(examination_prob(top.size) @ click_prob[top]) / max(top.size, 1)


def paired_gain(diff: np.ndarray, level: float = 0.95) -> GainInterval:
    """Student-t confidence interval of the mean of paired differences ``diff``.

    Each entry is one user's expected CTR under one arm minus under another, measured on
    the same candidates at the same moment. Expected CTR comes from the true click
    probabilities, not from sampled clicks, so the only randomness left is which users
    were drawn: the interval is over users, for the models as trained.
    """
    from scipy import stats

    d = np.asarray(diff, dtype=np.float64)
    n = d.size
    if n < 2:
        raise LoopError(f"paired_gain needs at least 2 users, got {n}")
    mean = float(d.mean())
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return GainInterval(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class ArmScores:
    """Expected CTR per arm over the same users and candidates: means and, in
    ``per_user``, one ``(flywheel, frozen, oracle)`` row per user."""

    flywheel: float
    frozen: float
    oracle: float
    per_user: np.ndarray

    @property
    def diff(self) -> np.ndarray:
        """Flywheel minus frozen expected CTR, one entry per user."""
        return self.per_user[:, 0] - self.per_user[:, 1]

    @cached_property
    def gain(self) -> GainInterval:
        """Flywheel minus frozen, paired by user, with its 95% interval."""
        return paired_gain(self.diff)


def measure_arms(
    settings: Settings,
    world: World,
    champion: LoadedModel,
    frozen: LoadedModel,
    users: np.ndarray,
    candidates: list[str],
    at: datetime,
    k: int = SLATE_K,
) -> ArmScores:
    """Rank ``candidates`` for each user with each arm and score against the truth at ``at``.

    Features are read from the online store as of ``at`` (what serving would see); the
    oracle ranks by the true click probability, so by the rearrangement inequality it is
    an upper bound for any ranking of the same candidates.
    """
    from flywheel import feature_store
    from flywheel.ranking import model_inputs
    from flywheel.serving import OnlineFeatureReader
    from flywheel.train import predict

    store = feature_store.get_store(settings)
    readers: dict[str, OnlineFeatureReader] = {}
    # The service's features are keyed by the shop's ids, the ground truth by index.
    cand_ids = [str(c) for c in candidates]
    cands = np.asarray(world.ids.item_indices(cand_ids), dtype=np.int64)
    per_user = np.zeros((len(users), 3))
    for i, user in enumerate(users.tolist()):
        truth = world.click_prob(user, cands, at)
        ranks, inputs = [], {}
        for model in (champion, frozen):
            service = model.feature_service
            if service not in inputs:  # both arms usually read the same feature service
                reader = readers.setdefault(service, OnlineFeatureReader(store, service))
                frame = reader.read(world.ids.user_id(user), cand_ids, at)
                inputs[service] = model_inputs(frame, at.timestamp(), service)
            ranks.append(np.argsort(-predict(model.booster, inputs[service]), kind="stable"))
        ranks.append(np.argsort(-truth, kind="stable"))
        per_user[i] = [expected_ctr(truth, order, k) for order in ranks]
    mean = per_user.mean(axis=0) if len(users) else np.zeros(3)
    per_user.flags.writeable = False
    return ArmScores(float(mean[0]), float(mean[1]), float(mean[2]), per_user)
