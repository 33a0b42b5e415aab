"""Benchmark: one full Flywheel cycle (kfp.local) against a bare pandas + xgboost script.

    python benchmarks/cycle_bench.py --events 1000000 3000000 10000000 --out bench-out/cycle.json

For each size it simulates a shop once (``flywheel.simulate``, 14 days, same seed) under
``<root>/cycle-<n>/raw`` and runs, each in a fresh process through ``harness.measure``
(wall seconds, peak PSS of the whole process tree: kfp.local tasks, Ray workers, raylet):

* **flywheel**: ``flywheel.cycle.run_cycle`` on a fresh workspace (caching off), all eight
  stages as kfp.local subprocesses; per-stage seconds from ``runs/<run id>/<stage>.json``.
  ``kfp+startup`` is the cycle's wall time minus the stages' own seconds: process starts,
  imports, Settings parsing and kfp.local's bookkeeping between stages.
* **bare**: ``bare_cycle.bare_cycle``, the same work in one process with pandas + xgboost.

Fixed overhead per cycle is measured first as the full cycle time on a tiny shop
(``--overhead-events``, ~20k events), where no stage has data worth the name; the JSON also
holds the intercept of a least-squares line of cycle seconds against events.
Each contender's output goes to ``<root>/cycle-<n>/<contender>.log``.

Checks (any failure prints FAILED and exits 1): every stage of every Flywheel cycle ran
(caching is off) and, at each measured size, both contenders reach the same test AUC
(within ``AUC_TOLERANCE``: they do the same work; the tiny overhead shop's test set is too
small for its AUC to mean anything). Targets, from this run only: fixed overhead <= 60 s;
at 10M events (sizes >= 90 % of it) the cycle at <= 1.5x the bare script and peak memory
<= 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_cycle import bare_cycle
from harness import Check, Measurement, Target, dump, machine, measure, report_verdicts

STAGES = ("ingest", "features", "dataset", "preprocess", "train", "evaluate", "register", "deploy")
OVERHEAD_TARGET_S = 60.0
RATIO_TARGET = 1.5
MEMORY_TARGET_MIB = 4 * 1024
TARGET_EVENTS = 10_000_000
DAYS = 14
#: Largest test-AUC gap between the cycle and the bare script that still counts as equal.
AUC_TOLERANCE = 0.01


def _log_to(path: str) -> None:
    """Send this process's stdout/stderr (and its children's) to ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def simulate(raw: Path, n_events: int, n_items: int, seed: int) -> dict[str, Any]:
    """Simulate ``DAYS`` days of a shop sized for ~``n_events`` events, once per folder."""
    from flywheel.simulate import make_world, simulate_events, users_for_events

    marker = raw / "simulated.json"
    if marker.exists():
        return dict(json.loads(marker.read_text()))
    shutil.rmtree(raw, ignore_errors=True)
    world = make_world(users_for_events(n_events, DAYS), n_items, seed=seed)
    sim = simulate_events(world, DAYS, raw, seed=seed)
    info = {"events": sim.events, "users": sim.users, "items": sim.items, "sim_s": sim.seconds}
    marker.write_text(json.dumps(info))
    return info


def flywheel_cycle(raw: str, workspace: str, log: str, seed: int) -> dict[str, Any]:
    """Contender: one ``run_cycle`` over the raw events on a fresh workspace."""
    _log_to(log)
    from flywheel.config import Settings
    from flywheel.cycle import run_cycle
    from flywheel.evaluate import BlessingRule

    settings = Settings(workspace=Path(workspace))
    summary = run_cycle(
        settings,
        str(Path(raw) / "events"),
        str(Path(raw) / "items.parquet"),
        window_days=float(DAYS),
        seed=seed,
        caching=False,
        # Timing all eight stages needs a blessed first model: the popularity check, which
        # the tiny overhead shop's first model need not pass, is reported, not applied.
        rule=BlessingRule(min_lift_over_popularity=None),
    )
    run_dir = Path(workspace) / "runs" / summary.run_id
    evaluation = json.loads((run_dir / "evaluate.json").read_text())["summary"]
    dataset = json.loads((run_dir / "dataset.json").read_text())["summary"]
    stages = {s.stage: s.seconds for s in summary.stages}
    return {
        "run_id": summary.run_id,
        "cycle_s": summary.seconds,
        "stages": stages,
        "kfp_startup_s": round(summary.seconds - sum(stages.values()), 2),
        "statuses": [s.status for s in summary.stages],
        "impressions": dataset["impressions"],
        "test_auc": evaluation["challenger"]["auc"],
        "popularity_auc": evaluation["popularity"]["auc"],
        "test_rows": evaluation["test_rows"],
    }


def bare(raw: str, workspace: str, log: str, seed: int) -> dict[str, Any]:
    """Baseline: ``bare_cycle`` in this fresh process."""
    _log_to(log)
    return bare_cycle(raw, workspace, window_days=float(DAYS), seed=seed)


def run_size(n: int, root: Path, n_items: int, seed: int) -> dict[str, Any]:
    """Simulate (or reuse) the shop for ``n`` events and measure both contenders on it."""
    base = root / f"cycle-{n}"
    start = time.perf_counter()
    info = simulate(base / "raw", n, n_items, seed)
    print(f"{n:,} target events: {info['events']:,} simulated "
          f"({time.perf_counter() - start:.0f}s)", flush=True)  # fmt: skip
    result: dict[str, Any] = {"target_events": n, **info}
    for name, fn in (("flywheel", flywheel_cycle), ("bare", bare)):
        ws = base / name
        shutil.rmtree(ws, ignore_errors=True)
        ws.mkdir(parents=True)
        m = measure(f"{name}-{n}", fn, str(base / "raw"), str(ws), str(base / f"{name}.log"), seed)
        print(f"  {name:8} {m.seconds:7.1f} s  {m.peak_mib:7.0f} MiB  "
              f"test AUC {m.result['test_auc']:.4f}", flush=True)  # fmt: skip
        result[name] = m
    result["ratio"] = result["flywheel"].seconds / result["bare"].seconds
    return result


def intercept(results: list[dict[str, Any]]) -> float | None:
    """Intercept (s) of a least-squares line of flywheel cycle seconds vs events."""
    if len(results) < 2:
        return None
    x = np.array([r["events"] for r in results], dtype=float)
    y = np.array([r["flywheel"].seconds for r in results])
    return float(np.polyfit(x, y, 1)[1])


def _m(r: dict[str, Any], name: str) -> Measurement:
    m: Measurement = r[name]
    return m


def report(results: list[dict[str, Any]]) -> None:
    """Print the comparison table and the per-stage tables."""
    print(f"\n{'events':>11} | {'flywheel s':>10} | {'bare s':>7} | {'ratio':>5} | "
          f"{'fw MiB':>7} | {'bare MiB':>8} | {'fw AUC':>6} | {'bare AUC':>8}")  # fmt: skip
    for r in results:
        fw, bb = _m(r, "flywheel"), _m(r, "bare")
        print(f"{r['events']:>11,} | {fw.seconds:>10.1f} | {bb.seconds:>7.1f} | "
              f"{r['ratio']:>5.2f} | {fw.peak_mib:>7,.0f} | {bb.peak_mib:>8,.0f} | "
              f"{fw.result['test_auc']:>6.4f} | {bb.result['test_auc']:>8.4f}")  # fmt: skip
    cols = [*STAGES, "kfp+startup"]
    print(f"\nflywheel seconds per stage\n{'events':>11} | " + " | ".join(f"{c:>10}" for c in cols))
    for r in results:
        rec = _m(r, "flywheel").result
        vals = [rec["stages"].get(s, 0.0) for s in STAGES] + [rec["kfp_startup_s"]]
        print(f"{r['events']:>11,} | " + " | ".join(f"{v:>10.1f}" for v in vals))
    print("\nbare seconds per step")
    for r in results:
        print(f"{r['events']:>11,} | {_m(r, 'bare').result['seconds']}")


def targets(results: list[dict[str, Any]], overhead: dict[str, Any] | None) -> list[Target]:
    """Fixed overhead (when measured); ratio and memory at sizes near ``TARGET_EVENTS``."""
    out = []
    if overhead is not None:
        s = _m(overhead, "flywheel").seconds
        name = f"fixed overhead (cycle on {overhead['events']:,} events)"
        out.append(Target(name, s, OVERHEAD_TARGET_S, at_most=True, unit=" s"))
    big = [r for r in results if r["events"] >= 0.9 * TARGET_EVENTS]
    for r in big:
        at = f"at {r['events']:,} events"
        out.append(Target(f"cycle s / bare s {at}", r["ratio"], RATIO_TARGET, at_most=True))
        peak = _m(r, "flywheel").peak_mib
        out.append(Target(f"peak memory {at}", peak, MEMORY_TARGET_MIB, at_most=True, unit=" MiB"))
    if not big:
        print(f"no run at {TARGET_EVENTS:,} events: ratio and memory targets not measured")
    return out


def checks(results: list[dict[str, Any]], overhead: dict[str, Any] | None) -> list[Check]:
    """Every stage ran; the cycle's test AUC equals the bare script's within the tolerance."""
    out = []
    for r in ([overhead] if overhead else []) + results:
        at = f"at {r['events']:,} events"
        statuses = _m(r, "flywheel").result["statuses"]
        ran = len(statuses) == len(STAGES) and all(st == "ran" for st in statuses)
        out.append(Check(f"every stage ran {at}", ran, ", ".join(statuses)))
    for r in results:
        fw, bb = _m(r, "flywheel").result, _m(r, "bare").result
        at = f"at {r['events']:,} events"
        gap = abs(fw["test_auc"] - bb["test_auc"])
        detail = f"{fw['test_auc']:.4f} vs {bb['test_auc']:.4f}"
        out.append(Check(f"same test AUC {at} (+-{AUC_TOLERANCE})", gap <= AUC_TOLERANCE, detail))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--out", type=Path, default=Path("bench-out/cycle.json"))
    parser.add_argument("--root", type=Path, default=Path("bench-out"))
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overhead-events", type=int, default=20_000, help="0: skip")
    args = parser.parse_args(argv)
    overhead = None
    if args.overhead_events:
        overhead = run_size(args.overhead_events, args.root, min(args.items, 300), args.seed)
    results = []
    for n in args.events:
        results.append(run_size(n, args.root, args.items, args.seed))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fit = intercept(([overhead] if overhead else []) + results)
        payload: dict[str, Any] = {
            "machine": machine(),
            "overhead": overhead,
            "results": results,
            "intercept_s": fit,
        }
        dump(str(args.out), payload)  # after every size: a crash later keeps what ran
    report(results)
    print(f"\nintercept of cycle s vs events: {fit}\n")
    goals, checked = targets(results, overhead), checks(results, overhead)
    verdicts = report_verdicts(goals, checked)
    payload |= {"targets": goals, "checks": checked, "verdicts": verdicts}
    dump(str(args.out), payload)
    print(f"\nmachine: {payload['machine']}\nwrote {args.out}")
    return verdicts.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
