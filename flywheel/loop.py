"""The closed-loop drift experiment: does the flywheel recover when tastes shift?

One run (:func:`run_loop`):

1. a world whose tastes shift for ``drift_share`` of the users at ``drift_day``;
   ``history_days`` of organic events; a first cycle trains model A (the *frozen* arm);
2. each loop cycle is one simulated day ``d = history_days + c``. At the start of ``d``
   (the lake's feature time, which is where serving's replay clock starts):

   * **measure** three arms offline, on the same users, the same candidates (serving's
     default candidate set) and the same moment: the flywheel's current champion, the
     frozen model A, and the oracle (true click probabilities). Rankings come from Feast's
     online store through :class:`flywheel.serving.OnlineFeatureReader` and
     ``ranking.model_inputs``, as serving computes them, without exploration; the score is
     the expected CTR under the ground truth with position-based examination
     (``sum_p examination(p) * P(click) / k``, the quantity ``run_traffic`` samples);
   * **serve** the champion for real (``bentoml serve``, replay clock, exploration on):
     simulated users send ``requests_per_cycle`` requests and post feedback, so the
     prediction and feedback logs the next cycle ingests are the ones serving wrote;
   * **advance** one day: simulate day ``d``'s organic events and run a cycle on them
     (ingest + served logs, features, training, blessing, deploy).

Measuring offline keeps the comparison deterministic and noise-free (no sampled clicks,
no exploration), while the served traffic is real; its sampled CTR is reported beside.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

if TYPE_CHECKING:
    from flywheel.config import Settings
    from flywheel.evaluate import BlessingRule
    from flywheel.serving import LoadedModel
    from flywheel.simulate import World

log = logging.getLogger(__name__)

#: Slate length served and scored.
SLATE_K: Final = 10
#: Arms in the order they are plotted.
ARMS: Final = ("flywheel", "frozen", "oracle")


class LoopError(ValueError):
    """A loop parameter is out of range; the message names it."""


@dataclass(frozen=True)
class LoopRow:
    """One loop cycle: the arms measured at the start of ``day``, then serving and retrain.

    ``champion`` is the model the flywheel arm was measured with (and served during
    ``day``); ``served_ctr`` is the sampled CTR of that traffic (with exploration);
    ``blessed`` and ``next_champion`` are the outcome of the cycle run on that day's data;
    ``served_ingested`` counts the prediction-log rows that cycle ingested. The final row
    (``cycle == cycles``) measures the last retrain only: no traffic, no cycle run
    (``served_ctr``, ``blessed``, ``next_champion``, ``run_id`` are ``None``).
    """

    cycle: int
    day: int
    after_drift: bool
    flywheel_ctr: float
    frozen_ctr: float
    oracle_ctr: float
    champion: str
    served_ctr: float | None
    blessed: bool | None
    next_champion: str | None
    served_ingested: int
    run_id: str | None
    seconds: float


@dataclass(frozen=True)
class LoopSummary:
    """What :func:`run_loop` measured; ``rows`` in cycle order."""

    rows: tuple[LoopRow, ...]
    frozen_model: str
    drift_day: float | None
    history_events: int
    plot_path: str
    seconds: float

    @property
    def mean_gain_after_drift(self) -> float:
        """Mean flywheel CTR minus frozen CTR over the cycles measured after the drift."""
        after = [r.flywheel_ctr - r.frozen_ctr for r in self.rows if r.after_drift]
        return float(np.mean(after)) if after else float("nan")


def expected_ctr(click_prob: np.ndarray, order: np.ndarray, k: int) -> float:
    """Expected clicks per impression of the slate ``order[:k]`` (indices into
    ``click_prob``) when position ``p`` is examined with ``1 / log2(p + 2)``."""
    from flywheel.simulate import examination_prob

    top = np.asarray(order)[:k]
    return float(examination_prob(top.size) @ click_prob[top]) / max(top.size, 1)


@dataclass(frozen=True)
class ArmScores:
    """Mean expected CTR per arm over the same users and candidates."""

    flywheel: float
    frozen: float
    oracle: float


def measure_arms(
    settings: Settings,
    world: World,
    champion: LoadedModel,
    frozen: LoadedModel,
    users: np.ndarray,
    candidates: list[int],
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
    cands = np.asarray(candidates, dtype=np.int64)
    totals = np.zeros(3)
    for user in users.tolist():
        truth = world.click_prob(user, cands, at)
        ranks = []
        for model in (champion, frozen):
            service = model.feature_service
            reader = readers.setdefault(service, OnlineFeatureReader(store, service))
            x = model_inputs(reader.read(user, candidates, at), at.timestamp())
            ranks.append(np.argsort(-predict(model.booster, x), kind="stable"))
        ranks.append(np.argsort(-truth, kind="stable"))
        totals += [expected_ctr(truth, order, k) for order in ranks]
    mean = totals / max(len(users), 1)
    return ArmScores(float(mean[0]), float(mean[1]), float(mean[2]))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_traffic(
    settings: Settings, world: World, n_requests: int, at: datetime, seed: int
) -> float:
    """Start ``bentoml serve`` on the champion (replay clock from the lake's feature time),
    play ``n_requests`` simulated users against it with feedback, stop it; return the
    served (sampled) CTR. The service writes the prediction and feedback logs."""
    from flywheel.serving import ServingOptions, start_server, wait_ready
    from flywheel.simulate import http_feedback, http_ranker, run_traffic

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    options = ServingOptions(clock="lake", seed=seed)
    process = start_server(settings, port=port, options=options)
    try:
        wait_ready(url, timeout_s=120.0, process=process)
        traffic = run_traffic(
            world, http_ranker(url), n_requests, seed=seed, at=at, k=SLATE_K,
            feedback=http_feedback(url),
        )  # fmt: skip
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.info("loop: served %d requests, CTR %.4f", traffic.requests, traffic.ctr)
    return traffic.ctr


def _served_ingested(settings: Settings, run_id: str) -> int:
    """Prediction-log rows the ingest stage of ``run_id`` accepted (0 if not recorded)."""
    path = settings.workspace / "runs" / run_id / "ingest.json"
    if not path.exists():
        return 0
    served = json.loads(path.read_text())["summary"].get("served", {})
    return int(served.get("predictions_accepted", 0))


def sample_users(world: World, n: int, seed: int) -> np.ndarray:
    """``n`` distinct users drawn in proportion to activity (who actually shows up)."""
    rng = np.random.default_rng([seed, 0x100F])
    size = min(n, world.n_users)
    return rng.choice(world.n_users, size, replace=False, p=world.activity / world.activity.sum())


def plot_loop(rows: tuple[LoopRow, ...], drift_day: float | None, out_png: Path) -> Path:
    """Line plot of the expected CTR per simulated day for the three arms, drift marked."""
    from flywheel.evaluate import _new_figure

    fig = _new_figure()
    fig.set_size_inches(6.5, 4.5)
    ax = fig.add_subplot()
    days = [r.day for r in rows]
    for arm, style in zip(ARMS, ("o-", "s--", "^:"), strict=True):
        ax.plot(days, [getattr(r, f"{arm}_ctr") for r in rows], style, label=arm)
    if drift_day is not None:
        ax.axvline(drift_day, color="grey", linestyle="-.", label="drift")
    ax.set_xlabel("simulated day (arms measured at its start)")
    ax.set_ylabel("expected CTR (clicks per impression)")
    ax.set_title("Flywheel vs frozen model vs oracle under drift")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    return out_png


def _validate(history_days: int, cycles: int, requests_per_cycle: int, eval_users: int) -> None:
    if history_days < 2:
        raise LoopError(f"history_days={history_days}; expected at least 2")
    if cycles < 1:
        raise LoopError(f"cycles={cycles}; expected at least 1")
    if requests_per_cycle < 1 or eval_users < 1:
        raise LoopError(
            f"requests_per_cycle={requests_per_cycle}, eval_users={eval_users}; expected >= 1"
        )


def _measure(
    settings: Settings, world: World, frozen: LoadedModel, cycle: int, day: int, seed: int,
    eval_users: int,
) -> tuple[LoadedModel, ArmScores]:  # fmt: skip
    """The champion now serving, and the three arms measured at the start of ``day``."""
    from flywheel.registry import current_champion
    from flywheel.serving import default_candidates, load_model

    at = world.start + timedelta(days=day)
    tag = current_champion(settings)
    if tag is None:
        raise LoopError(f"cycle {cycle}: no champion to serve; the first cycle blessed nothing")
    champion = frozen if tag == frozen.tag else load_model(settings, tag)
    candidates = default_candidates(settings, at)
    users = sample_users(world, eval_users, seed + cycle)
    arms = measure_arms(settings, world, champion, frozen, users, candidates, at)
    log.info("loop cycle %d (day %d): flywheel %.4f, frozen %.4f, oracle %.4f",
             cycle, day, arms.flywheel, arms.frozen, arms.oracle)  # fmt: skip
    return champion, arms


def _one_cycle(
    settings: Settings,
    world: World,
    frozen: LoadedModel,
    cycle: int,
    day: int,
    opts: _LoopOptions,
) -> LoopRow:
    """Measure the arms at the start of ``day``; unless this is the final measurement,
    serve the day's traffic and retrain on the day's events and served logs."""
    from flywheel.cycle import run_cycle
    from flywheel.simulate import simulate_events

    started = time.perf_counter()
    at = world.start + timedelta(days=day)
    champion, arms = _measure(settings, world, frozen, cycle, day, opts.seed, opts.eval_users)
    served_ctr, result = None, None
    if cycle < opts.cycles:
        served_ctr = serve_traffic(settings, world, opts.requests, at, opts.seed + cycle)
        raw = settings.workspace / "loop" / f"day-{day:03d}"
        simulate_events(world, 1, raw, start_day=day, seed=opts.seed)
        result = run_cycle(
            settings, str(raw / "events"), window_days=opts.window_days, seed=opts.seed,
            rule=opts.rule,
        )  # fmt: skip
    drift = world.drift_at
    return LoopRow(
        cycle=cycle,
        day=day,
        after_drift=drift is not None and at >= drift,
        flywheel_ctr=arms.flywheel,
        frozen_ctr=arms.frozen,
        oracle_ctr=arms.oracle,
        champion=champion.tag,
        served_ctr=served_ctr,
        blessed=result.blessed if result else None,
        next_champion=result.champion_after if result else None,
        served_ingested=_served_ingested(settings, result.run_id) if result else 0,
        run_id=result.run_id if result else None,
        seconds=round(time.perf_counter() - started, 1),
    )


@dataclass(frozen=True)
class _LoopOptions:
    cycles: int
    requests: int
    eval_users: int
    window_days: float
    seed: int
    rule: BlessingRule


def run_loop(
    settings: Settings,
    users: int = 2_000,
    items: int = 300,
    history_days: int = 10,
    cycles: int = 5,
    requests_per_cycle: int = 1_000,
    drift_day: float | None = 11.0,
    seed: int = 0,
    out_png: Path | None = None,
    *,
    drift_share: float = 0.5,
    window_days: float = 7.0,
    eval_users: int = 300,
    rule: BlessingRule | None = None,
) -> LoopSummary:
    """Run the closed-loop drift experiment (see the module docstring).

    Args:
        settings: the workspace the loop fills (lake, features, models, logs, runs).
        users, items: size of the simulated shop.
        history_days: days simulated before the first cycle (model A, the frozen arm).
        cycles: loop cycles, one simulated day each (days ``history_days + c``): measure,
            serve, retrain; one more measurement follows the last retrain.
        requests_per_cycle: simulated requests served by ``bentoml serve`` per cycle.
        drift_day: days after the simulation start when ``drift_share`` of the users get
            new tastes (``None``: no drift).
        out_png: the plot (default ``<workspace>/loop/loop.png``).
        window_days: training window of every cycle (short windows adapt faster).
        eval_users: users (drawn by activity) each arm is measured on per cycle.
        rule: blessing rule of the loop's cycles (default: any AUC gain, no logloss check).

    Returns:
        A :class:`LoopSummary` with ``cycles + 1`` :class:`LoopRow` and the plot path.

    Raises:
        LoopError: a parameter is out of range, or the first cycle blessed no model.
        CycleError: a pipeline stage failed (from :func:`flywheel.cycle.run_cycle`).
    """
    from flywheel.cycle import run_cycle
    from flywheel.evaluate import BlessingRule
    from flywheel.serving import load_model
    from flywheel.simulate import make_world, simulate_events

    _validate(history_days, cycles, requests_per_cycle, eval_users)
    started = time.perf_counter()
    world = make_world(users, items, seed=seed, drift_day=drift_day, drift_share=drift_share)
    raw = settings.workspace / "loop" / "history"
    sim = simulate_events(world, history_days, raw, seed=seed)
    log.info("loop: %d history events; first cycle trains the frozen model", sim.events)
    opts = _LoopOptions(
        cycles, requests_per_cycle, eval_users, float(window_days), seed,
        rule or BlessingRule(max_logloss_regression=None),
    )  # fmt: skip
    first = run_cycle(
        settings, str(raw / "events"), str(raw / "items.parquet"), window_days=opts.window_days,
        seed=seed, rule=opts.rule,
    )  # fmt: skip
    if first.champion_after is None:
        raise LoopError(f"the first cycle ({first.run_id}) blessed no model: nothing to serve")
    frozen = load_model(settings, first.champion_after)
    rows = tuple(
        _one_cycle(settings, world, frozen, c, history_days + c, opts) for c in range(cycles + 1)
    )
    png = plot_loop(rows, drift_day, out_png or settings.workspace / "loop" / "loop.png")
    return LoopSummary(
        rows, frozen.tag, drift_day, sim.events, str(png), round(time.perf_counter() - started, 1)
    )
