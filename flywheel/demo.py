"""``flywheel demo``: the flywheel on the embedded local default, end to end.

:func:`run_demo` (``make demo``) runs the closed loop of :mod:`flywheel.loop` in a fresh
``<workspace>/demo``: simulate a shop's history, train the first model through the KFP
pipeline (kfp.local: ingest -> Ray Data features -> Feast -> point-in-time dataset -> Ray
Data preprocess -> Ray Train -> evaluate -> register -> deploy), serve it with
``bentoml serve``, send simulated traffic, let the world drift (half the users get new
tastes and, for everyone, price turns from a deterrent into an attraction,
:data:`flywheel.simulate.PREMIUM_TREND`), and retrain on the served logs cycle after cycle.
It ends with the expected CTR per simulated day of three arms measured on the same users:
the flywheel, the frozen first model and the oracle, as a table and a PNG.

:func:`run_quick_demo` (``flywheel demo --quick``) is the single-cycle smoke run: one
pipeline cycle, then rankings for sample users from Feast's *online* store scored against
the ground truth next to a random ranking and the oracle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final

import numpy as np

from flywheel import progress

if TYPE_CHECKING:
    from flywheel.config import Settings
    from flywheel.cycle import CycleSummary
    from flywheel.loop import LoopSummary

#: The demo's own workspace under the configured one, wiped at the start of every run.
DEMO_FOLDER: Final = "demo"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankingQuality:
    """Expected carts per ranking of ``k`` items, under position-based examination."""

    users: int
    k: int
    candidates: int
    model: float
    random: float
    oracle: float

    @property
    def share_of_oracle(self) -> float:
        """Where the model sits between random (0) and the oracle (1)."""
        span = self.oracle - self.random
        return (self.model - self.random) / span if span > 0 else float("nan")


@dataclass(frozen=True)
class DemoSummary:
    events: int
    cycle: CycleSummary
    quality: RankingQuality
    seconds: float


def score_rankings(
    settings: Settings,
    world_dir: str,
    n_users: int = 100,
    n_candidates: int = 100,
    k: int = 10,
    seed: int = 0,
) -> RankingQuality:
    """Rank candidates for users from online features with the champion; score vs truth.

    The score of a ranking is ``sum_pos examination(pos) * P(cart | view)`` under the
    simulator's ground truth at the time the features describe (the lake's watermark).
    """
    from flywheel import feature_store
    from flywheel.lake import feature_time
    from flywheel.ranking import model_inputs, service_with_columns
    from flywheel.registry import load_champion_booster
    from flywheel.simulate import World, examination_prob
    from flywheel.train import booster_features, predict

    champion = load_champion_booster(settings)
    if champion is None:
        raise ValueError("no champion model: run `flywheel cycle` first")
    _, booster = champion
    service = service_with_columns(booster_features(booster))  # the champion's own inputs
    world = World.load(world_dir)
    at = feature_time(settings) - timedelta(seconds=1)
    rng = np.random.default_rng(seed)
    store = feature_store.get_store(settings)
    weights = examination_prob(k)
    users = rng.choice(world.n_users, size=min(n_users, world.n_users), replace=False)
    totals = {"model": 0.0, "random": 0.0, "oracle": 0.0}
    for user in users:
        cands = rng.choice(world.n_items, size=min(n_candidates, world.n_items), replace=False)
        truth = world.cart_given_view(np.full(len(cands), user), cands, at)
        ids = world.ids  # features are keyed by the shop's ids, the ground truth by index
        feats = feature_store.online_features(
            store, ids.user_id(user), ids.item_ids(cands).to_pylist(), service, as_of=at
        )
        scores = predict(booster, model_inputs(feats, at.timestamp(), service))
        totals["model"] += float(weights @ truth[np.argsort(-scores)[:k]])
        totals["random"] += float(weights @ truth[:k])
        totals["oracle"] += float(weights @ np.sort(truth)[::-1][:k])
    n = len(users)
    return RankingQuality(
        n, k, len(cands), totals["model"] / n, totals["random"] / n, totals["oracle"] / n
    )


def demo_settings(settings: Settings) -> Settings:
    """``settings`` with the workspace moved to a fresh, empty ``<workspace>/demo``.

    The loop needs an empty workspace (no earlier champion, lake or logs); only this
    demo-owned folder is removed, never the configured workspace itself.
    """
    import shutil

    folder = settings.workspace / DEMO_FOLDER
    if folder.exists():
        log.info("demo: removing the previous demo run in %s", folder)
        shutil.rmtree(folder)
    return settings.model_copy(update={"workspace": folder})


def run_demo(
    settings: Settings,
    users: int = 2_000,
    items: int = 300,
    history_days: int = 4,
    cycles: int = 4,
    requests_per_cycle: int = 500,
    drift_day: float = 5.0,
    seed: int = 0,
) -> LoopSummary:
    """The closed-loop drift demo in a fresh ``<workspace>/demo``.

    Args are those of :func:`flywheel.loop.run_loop` (the defaults are the demo's); the
    plot is written to ``<workspace>/demo/drift.png``.

    Returns:
        The loop's summary: one row per simulated day with the three arms' expected CTR
        and the flywheel's paired gain over the frozen model.
    """
    from flywheel.loop import run_loop

    ws = demo_settings(settings)
    log.info("demo: %d users x %d items, %d history days, %d cycles, drift at day %g",
             users, items, history_days, cycles, drift_day)  # fmt: skip
    return run_loop(
        ws, users, items, history_days, cycles, requests_per_cycle, drift_day, seed,
        ws.workspace / "drift.png",
    )  # fmt: skip


def run_quick_demo(
    settings: Settings,
    users: int = 3_000,
    items: int = 400,
    days: int = 14,
    seed: int = 0,
) -> DemoSummary:
    """Simulate, run one pipeline cycle locally, and measure the champion's rankings."""
    from flywheel.cycle import run_cycle
    from flywheel.simulate import make_world, simulate_events

    started = time.perf_counter()
    raw = settings.workspace / "raw"
    progress.phase(log, "simulating %d users x %d items for %d days", users, items, days)
    world = make_world(users, items, seed=seed)
    sim = simulate_events(world, days, raw, seed=seed)
    progress.milestone(log, "simulated %d days: %s events", days, f"{sim.events:,}")
    progress.phase(log, "one cycle through kfp.local")
    cycle = run_cycle(settings, str(raw / "events"), str(raw / "items.parquet"), seed=seed)
    progress.phase(log, "ranking for sample users from the online store")
    quality = score_rankings(settings, str(raw / "world"), seed=seed)
    return DemoSummary(sim.events, cycle, quality, round(time.perf_counter() - started, 1))
