"""Benchmark: does the off-policy gate's 95% interval cover a challenger's true value?

    python benchmarks/ope_coverage.py --seeds 20 --out bench-out/ope_coverage.json

A world of its own (not ``flywheel.simulate``): users and items with latent tastes in
``R^4`` and an item bias; a user's attraction to an item is
``sigmoid(2 u.v + b - 2)``; a slate is clicked by a **position-based model** (position ``k``
is examined with probability ``1 / (k + 1)``, then clicked with the attraction). Each
request draws a user and ``--candidates`` items of the catalogue; each policy serves
``--slots`` of them epsilon-greedy (:func:`flywheel.serving.exploration.epsilon_greedy`'s
rule, vectorised) over its own scores, with ``--epsilon`` exploration:

* the logging policy (the champion): the true logit plus noise (sd 1.0, fixed per user x
  item: a model's error);
* challenger ``better``: the true logit plus its own smaller noise (sd 0.5);
* challenger ``popular``: the item bias only plus noise (sd 0.3): no personalisation.

Per seed: a new world, ``--requests`` logged requests with their clicks, and each policy's
true value (expected clicks per slate) from ``--truth-requests`` fresh requests (the
expectation of the click model, not sampled clicks). Each challenger is estimated by
:func:`flywheel.monitor.ope.off_policy_estimates` (SNIPS and DR, ``--bootstrap``
resamples) with two logs:

* ``full``: the log holds every candidate's challenger score: ``q`` is the challenger's
  exact epsilon-greedy probability of the logged item given the logged prefix;
* ``served``: only what the prediction log holds, the served items:
  :mod:`flywheel.evaluate_ope`'s ``remaining_candidates`` / ``served_best`` /
  ``epsilon_greedy_target``, exactly as the gate computes it without a candidate log;
* ``pipeline``: the same requests written through the real serving record code and
  ``LogWriter`` (prediction, candidate and feedback logs in a scratch workspace) and read
  back by the gate's reader (``closed_slates``, ``candidate_records``, ``full_targets``;
  :mod:`ope_pipeline`): what the gate computes with ``serving.log_candidates``.

Reported per challenger, log and estimator: coverage of the true value over the seeds,
mean bias (estimate - truth), mean interval width, mean ESS. Targets: coverage >= 0.90 for
each (log, estimator) over both challengers' seeds. Checks (FAILED, exit 1): with the
logger as its own target every estimator returns the logged value; the full log's ``q``
sums to 1 over the candidates at every checked slot; the pipeline's slots, rewards and
``q`` equal the benchmark's own (``q`` to 1e-12, every slate with its candidate record);
the truth's Monte Carlo standard error is below a fifth of the mean interval width.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import Check, Target, finish
from ope_pipeline import pipeline_targets

from flywheel.evaluate_ope import epsilon_greedy_target, remaining_candidates, served_best
from flywheel.monitor.ope import LoggedSlots, logged_value, off_policy_estimates

DIM = 4
CHALLENGERS = ("better", "popular")
ESTIMATORS = ("snips", "dr")
LOGS = ("full", "served", "pipeline")
TARGET_COVERAGE = 0.90


class World:
    """Latent tastes, item biases and each policy's fixed scoring noise."""

    def __init__(self, seed: int, users: int, items: int) -> None:
        rng = np.random.default_rng(seed)
        self.u = rng.standard_normal((users, DIM)) / np.sqrt(DIM)
        self.v = rng.standard_normal((items, DIM)) / np.sqrt(DIM)
        self.b = rng.normal(0.0, 0.7, items)
        self.logit = 2.0 * self.u @ self.v.T + self.b - 2.0
        noise = {"logger": 1.0, "better": 0.5}
        self.scores = {
            name: self.logit + rng.normal(0.0, sd, self.logit.shape) for name, sd in noise.items()
        }
        self.scores["popular"] = np.broadcast_to(self.b, self.logit.shape) + rng.normal(
            0.0, 0.3, self.logit.shape
        )

    def requests(self, n: int, candidates: int, rng: np.random.Generator) -> tuple[Any, Any]:
        """``n`` requests: users and their candidate items (without repeats)."""
        users = rng.integers(0, self.u.shape[0], n)
        keys = rng.random((n, self.v.shape[0]))
        cands = np.argpartition(keys, candidates, axis=1)[:, :candidates]
        return users, cands


def attraction(world: World, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-world.logit[users[:, None], items]))


def examine(slots: int) -> np.ndarray:
    return 1.0 / (np.arange(slots) + 1.0)


def serve(
    scores: np.ndarray, slots: int, eps: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-greedy slates for each row of ``scores`` ([n, C]): candidate columns in served
    order and each slot's propensity given the slots above it."""
    n, c = scores.shape
    taken = np.zeros((n, c), dtype=bool)
    chosen = np.empty((n, slots), dtype=np.int64)
    prop = np.empty((n, slots))
    rows = np.arange(n)
    for k in range(slots):
        m = c - k
        best = np.argmax(np.where(taken, -np.inf, scores), axis=1)
        uniform = np.argmax(np.where(taken, -1.0, rng.random((n, c))), axis=1)
        pick = np.where(rng.random(n) < eps, uniform, best)
        chosen[:, k] = pick
        prop[:, k] = eps / m + np.where(pick == best, 1.0 - eps, 0.0)
        taken[rows, pick] = True
    return chosen, prop


def full_targets(target: np.ndarray, chosen: np.ndarray, eps: float) -> tuple[Any, float]:
    """Exact ``q`` of the logged items given the logged prefixes ([n, K]), and the largest
    deviation from 1 of the summed ``q`` over all candidates at a slot."""
    n, c = target.shape
    slots = chosen.shape[1]
    taken = np.zeros((n, c), dtype=bool)
    rows = np.arange(n)
    q = np.empty((n, slots))
    worst = 0.0
    for k in range(slots):
        m = c - k
        best = np.argmax(np.where(taken, -np.inf, target), axis=1)
        q[:, k] = eps / m + np.where(chosen[:, k] == best, 1.0 - eps, 0.0)
        total = (~taken).sum(axis=1) * eps / m + (1.0 - eps)
        worst = max(worst, float(np.max(np.abs(total - 1.0))))
        taken[rows, chosen[:, k]] = True
    return q, worst


def true_value(world: World, policy: str, args: argparse.Namespace, seed: int) -> tuple[Any, Any]:
    """Mean expected clicks per slate of ``policy`` and its Monte Carlo standard error."""
    rng = np.random.default_rng(10_000 + seed)
    users, cands = world.requests(args.truth_requests, args.candidates, rng)
    chosen, _ = serve(world.scores[policy][users[:, None], cands], args.slots, args.epsilon, rng)
    items = np.take_along_axis(cands, chosen, axis=1)
    per = (attraction(world, users, items) * examine(args.slots)).sum(axis=1)
    return float(per.mean()), float(per.std(ddof=1) / np.sqrt(len(per)))


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    world = World(seed, args.users, args.items)
    rng = np.random.default_rng(seed)
    users, cands = world.requests(args.requests, args.candidates, rng)
    chosen, prop = serve(
        world.scores["logger"][users[:, None], cands], args.slots, args.epsilon, rng
    )
    items = np.take_along_axis(cands, chosen, axis=1)
    clicks = rng.random(items.shape) < attraction(world, users, items) * examine(args.slots)
    n, k = items.shape
    slate = np.repeat(np.arange(n), k)
    position = np.tile(np.arange(k), n)
    p, r = prop.ravel(), clicks.ravel().astype(np.float64)
    on_policy = off_policy_estimates(LoggedSlots(slate, position, p, r, p), n_boot=20, seed=seed)
    logged = logged_value(LoggedSlots(slate, position, p, r, p))
    out: dict[str, Any] = {
        "seed": seed,
        "on_policy_gap": max(abs(e.value - logged) for e in on_policy.values()),
        "truth": {},
        "estimates": {},
    }
    pipe = pipeline_targets(world, users, cands, chosen, prop, clicks, CHALLENGERS, args.epsilon)
    out["pipeline_same_slots"] = bool(
        np.array_equal(pipe["request"], slate) and np.array_equal(pipe["position"], position)
        and np.array_equal(pipe["reward"], r) and np.array_equal(pipe["propensity"], p)
    )  # fmt: skip
    out["pipeline_full_share"] = pipe["full_share"]
    out["log_bytes"] = pipe["bytes"]
    truth_logger, se_logger = true_value(world, "logger", args, seed)
    out["truth"]["logger"] = {"value": truth_logger, "se": se_logger, "logged": logged}
    q_sum_gap, q_pipe_gap = 0.0, 0.0
    for name in CHALLENGERS:
        truth, se = true_value(world, name, args, seed)
        out["truth"][name] = {"value": truth, "se": se}
        target = world.scores[name][users[:, None], cands]
        q_full, gap = full_targets(target, chosen, args.epsilon)
        q_sum_gap = max(q_sum_gap, gap)
        served_scores = np.take_along_axis(target, chosen, axis=1).ravel()
        best = served_best(slate, position, served_scores)
        q_served = epsilon_greedy_target(best, remaining_candidates(p, args.epsilon), args.epsilon)
        q_pipe = pipe["q"][name]
        q_pipe_gap = max(q_pipe_gap, float(np.max(np.abs(q_pipe - q_full.ravel()))))
        for log, q in (("full", q_full.ravel()), ("served", q_served), ("pipeline", q_pipe)):
            slots = LoggedSlots(slate, position, p, r, q)
            est = off_policy_estimates(slots, n_boot=args.bootstrap, seed=seed)
            out["estimates"][f"{name}/{log}"] = {
                e: {"value": est[e].value, "low": est[e].low, "high": est[e].high,
                    "ess": est[e].effective_sample_size, "truth": truth}
                for e in ESTIMATORS
            }  # fmt: skip
    out["q_sum_gap"] = q_sum_gap
    out["q_pipeline_gap"] = q_pipe_gap
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per ``challenger/log/estimator`` and pooled ``log/estimator``: coverage, bias, width."""
    table: dict[str, dict[str, float]] = {}
    groups: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        for key, per in run["estimates"].items():
            name, log = key.split("/")
            for e, est in per.items():
                groups.setdefault(f"{name}/{log}/{e}", []).append(est)
                groups.setdefault(f"all/{log}/{e}", []).append(est)
    for key, ests in groups.items():
        cover = [e["low"] <= e["truth"] <= e["high"] for e in ests]
        table[key] = {
            "n": len(ests),
            "coverage": float(np.mean(cover)),
            "bias": float(np.mean([e["value"] - e["truth"] for e in ests])),
            "width": float(np.mean([e["high"] - e["low"] for e in ests])),
            "ess": float(np.mean([e["ess"] for e in ests])),
            "truth": float(np.mean([e["truth"] for e in ests])),
        }
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=50, help="serving's default set")
    parser.add_argument("--slots", type=int, default=10, help="serving's default k")
    parser.add_argument("--epsilon", type=float, default=0.1, help="serving's default")
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--truth-requests", type=int, default=50_000)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench-out/ope_coverage.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        t = time.perf_counter()
        runs.append(run_seed(seed, args))
        truth = runs[-1]["truth"]
        print(f"seed {seed}: truth logger {truth['logger']['value']:.4f} better "
              f"{truth['better']['value']:.4f} popular {truth['popular']['value']:.4f} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)  # fmt: skip
    table = summarise(runs)
    print(f"\n{'challenger/log/estimator':28} {'cover':>6} {'bias':>8} {'width':>7} {'ESS':>8}")
    for key in sorted(table):
        row = table[key]
        print(f"{key:28} {row['coverage']:6.2f} {row['bias']:+8.4f} {row['width']:7.4f} "
              f"{row['ess']:8.0f}")  # fmt: skip
    requests = args.requests * len(runs)
    per_request = {k: sum(run["log_bytes"][k] for run in runs) / requests
                   for k in ("predictions", "candidates")}  # fmt: skip
    print(
        f"\nlog bytes per request: predictions {per_request['predictions']:.0f}, candidates "
        f"{per_request['candidates']:.0f} (benchmark's {len(CHALLENGERS)} raw columns)"
    )
    widths = min(row["width"] for row in table.values())
    worst_se = max(t["se"] for run in runs for t in run["truth"].values())
    targets = [
        Target(f"coverage {log} {e}", table[f"all/{log}/{e}"]["coverage"], TARGET_COVERAGE,
               at_most=False)
        for log in LOGS for e in ESTIMATORS
    ]  # fmt: skip
    checks = [
        Check("logger as its own target gives the logged value",
              max(run["on_policy_gap"] for run in runs) < 1e-9),
        Check("full-log q sums to 1 over the candidates",
              max(run["q_sum_gap"] for run in runs) < 1e-9),
        Check("pipeline: same slots, rewards and propensities as the arrays",
              all(run["pipeline_same_slots"] for run in runs)),
        Check("pipeline: every slate re-ranked from its candidate record",
              min(run["pipeline_full_share"] for run in runs) == 1.0),
        Check("pipeline q equals the full log's q",
              max(run["q_pipeline_gap"] for run in runs) < 1e-12,
              f"largest gap {max(run['q_pipeline_gap'] for run in runs):.2e}"),
        Check("truth MC error < width / 5", worst_se < widths / 5,
              f"largest SE {worst_se:.5f}, narrowest mean width {widths:.4f}"),
    ]  # fmt: skip
    return finish(args.out, args, started, targets, checks, table=table,
                  log_bytes_per_request=per_request, runs=runs)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
