"""Benchmark: when does the retrain policy fire on a simulated shop that drifts at day D?

    python benchmarks/trigger_delay.py --seeds 0 1 --out bench-out/trigger_delay.json

Per seed, two worlds from ``flywheel.simulate`` (same users, items and seed): one drifts at
``--drift-day`` (half the users' tastes shift and price starts to attract, the loop's
PREMIUM_TREND), one never drifts. For each: ``--history-days`` of organic events and a
first cycle (the champion, never retrained afterwards, so the rules see the drift for as
long as it lasts); then every day ``d``: ``bentoml serve`` on the champion (replay clock)
answers ``--requests`` simulated users who post feedback by the ground truth, the day's
organic events are simulated, ingested and built into features (materialized online, no
retraining), and ``flywheel monitor`` runs over the day's serving logs with labels as of
the day's end; :func:`flywheel.policy.decide` then decides with the default policy.

The history is a month long (``--history-days`` 31) so the shop is in steady state: on a
young shop every 7- and 30-day count grows day by day, which the drift rules rightly see as
a change against the champion's first day (measured: a 2-day history fired on the quiet
world's days 3 and 4 with 19-21 inputs in alert). The champion's age is taken in
simulated time (the pointer's own clock is the wall clock).
Reported per world and seed: the days the policy fired and why. Targets (issue #13): in
the drifting world the first firing of a drift or performance rule comes within one day
after D and none before D (false alarms = such firings before D); in the quiet world
only the schedule rule ever fires.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Check, Target, finish


def run_world(root: Path, seed: int, drift_day: float | None, args: argparse.Namespace) -> dict:
    from flywheel import feature_store
    from flywheel.config import RaySettings, Settings
    from flywheel.cycle import run_cycle
    from flywheel.evaluate import BlessingRule
    from flywheel.features import build_features
    from flywheel.ingest import ingest_events
    from flywheel.lake import feature_time
    from flywheel.loop import serve_traffic
    from flywheel.monitor import run_monitor
    from flywheel.monitor.signals import signals_from_record
    from flywheel.policy import decide
    from flywheel.simulate import PREMIUM_TREND, make_world, simulate_events

    settings = Settings(workspace=root / "ws", ray=RaySettings(num_cpus=2))
    world = make_world(
        args.users, args.items, seed=seed, drift_day=drift_day,
        drift_weights=PREMIUM_TREND if drift_day is not None else None,
    )  # fmt: skip
    raw = root / "history"
    simulate_events(world, args.history_days, raw, seed=seed)
    rule = BlessingRule(max_logloss_regression=None, min_lift_over_popularity=None)
    run_cycle(settings, str(raw / "events"), str(raw / "items.parquet"),
              window_days=float(args.history_days), seed=seed, rule=rule)  # fmt: skip
    deployed = world.start + timedelta(days=args.history_days)
    days = []
    for day in range(args.history_days, args.history_days + args.days):
        started = time.perf_counter()
        at = world.start + timedelta(days=day)
        ctr = serve_traffic(settings, world, args.requests, at, seed + day)
        day_raw = root / f"day-{day:03d}"
        simulate_events(world, 1, day_raw, start_day=day, seed=seed)
        ingest_events(settings, [day_raw / "events"])
        build_features(settings)
        feature_store.materialize(settings, end=feature_time(settings))
        end = at + timedelta(days=1)
        result = run_monitor(settings, root / "monitor" / f"day-{day:03d}", since=at, until=end,
                             now=end, skew=False)  # fmt: skip
        signals = signals_from_record(settings, result.record, end)
        signals = dataclasses.replace(
            signals, champion_age_h=(end - deployed).total_seconds() / 3600
        )
        decision = decide(settings.retrain, signals, [], end)
        days.append({
            "day": day, "served_ctr": ctr, "fire": decision.fire,
            "reasons": list(decision.reasons), "signals": decision.signals,
            "seconds": round(time.perf_counter() - started, 1),
        })  # fmt: skip
        print(f"  seed {seed} {'drift' if drift_day is not None else 'quiet'} day {day}: "
              f"CTR {ctr:.4f} fire={decision.fire} {decision.reasons}", flush=True)  # fmt: skip
    return {"seed": seed, "drift_day": drift_day, "days": days}


def _rule_days(world: dict[str, Any], kinds: tuple[str, ...]) -> list[int]:
    return [d["day"] for d in world["days"] if any(r.startswith(kinds) for r in d["reasons"])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--history-days", type=int, default=31)
    parser.add_argument("--days", type=int, default=4, help="served days after the history")
    parser.add_argument("--drift-day", type=float, default=33.0)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--root", type=Path, default=Path("/tmp/flywheel-trigger"))
    parser.add_argument("--out", type=Path, default=Path("bench-out/trigger_delay.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    import shutil

    worlds = []
    for seed in args.seeds:
        for drift in (args.drift_day, None):
            root = args.root / f"seed{seed}-{'drift' if drift is not None else 'quiet'}"
            shutil.rmtree(root, ignore_errors=True)
            worlds.append(run_world(root, seed, drift, args))
    signal_rules = ("drift:", "performance:")
    delays, false_alarms, quiet_alarms = [], 0, 0
    for w in worlds:
        fired = _rule_days(w, signal_rules)
        if w["drift_day"] is None:
            quiet_alarms += len(fired)
            continue
        before = [d for d in fired if d + 1 <= w["drift_day"]]  # the day ends before D
        false_alarms += len(before)
        after = [d for d in fired if d + 1 > w["drift_day"]]
        # a day's decision is made at its end: delay = decision time - D, in days
        delays.append((after[0] + 1 - w["drift_day"]) if after else float("inf"))
    print(json.dumps({"delays_days": delays, "false_alarms": false_alarms,
                      "quiet_world_alarms": quiet_alarms}))  # fmt: skip
    targets = [
        Target("max delay after the drift, days", max(delays), 1.0, True),
        Target("false alarms before the drift", false_alarms, 0, True),
        Target("non-schedule firings in the quiet world", quiet_alarms, 0, True),
    ]
    served = all(d["served_ctr"] > 0 for w in worlds for d in w["days"])
    checks = [Check("every day served traffic with clicks", served)]
    return finish(args.out, args, started, targets, checks, worlds=worlds)


if __name__ == "__main__":
    raise SystemExit(main())
