"""Benchmark: months of daily cycles; does each day's cost follow the new data (issue #14)?

    python benchmarks/steady_state.py --days 30 --events-per-day 300000 \\
        --out bench-out/steady_state.json --plot bench-out/steady_state.png

A shop (``flywheel.simulate``, sized for ``--events-per-day``) is simulated one day at a time
into ``<workdir>/raw/day-NN``. Each day, in the workspace ``inc`` (``features.build:
incremental``), each step in a fresh process through ``harness.measure`` (wall seconds
inside the process, peak PSS of its whole process tree):

* on a ``--cycle-days`` day: ``run_cycle`` over that day's raw folder (ingest, features,
  dataset, ..., deploy: all eight stages as kfp.local tasks, caching off, a 7-day training
  window); the per-stage seconds are the cycle's own;
* on the other days: the same work of the two stages that touch the whole history, as the
  stages run it: ``ingest_events`` of the day, then the features stage (``build_features``,
  ``feast apply``, the delta ``materialize``).

On a ``--full-days`` day the full Ray Data build (``rebuild_all``, what ``--full-rebuild``
runs) is measured as well, in a second workspace whose lake is the same folder (a symlink),
and every feature table of the two workspaces is compared cell for cell
(``created_timestamp`` aside). Each step's output goes to ``<workdir>/logs/day-NN.log``.
``build`` seconds are the table build alone (the path that
differs); ``features`` seconds add ``feast apply`` and the delta materialization.

A stopped run continues with ``--resume`` (the workspaces and the recorded days are kept;
the interrupted day runs again from its start: its ingest is idempotent).

Targets (issue #14), from this run: the incremental build at the last day costs at most
1.2x its day-7 cost (the features stage too); at the last day the incremental build is at
least 5x faster than the full rebuild; the whole cycle at the last cycle day at most 1.3x its
cost on day 7. Checks: the incremental tables equal the full rebuild's on every full day.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Check, Target, finish, machine, measure

FEATURES_RATIO_TARGET = 1.2
SPEEDUP_TARGET = 5.0
CYCLE_RATIO_TARGET = 1.3
WINDOW_DAYS = 7.0
#: Relative tolerance of float cells in the equality check (see ``_same``).
FLOAT_RTOL = 1e-8


def _log_to(path: Path) -> None:
    """Send this (child) process's stdout/stderr, and its children's, to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def _logged(log: str, fn: Any, *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` with this process's output going to ``log`` (kfp.local task dumps,
    Ray and Feast chatter)."""
    _log_to(Path(log))
    result: dict[str, Any] = fn(*args)
    return result


def _settings(workspace: str, build: str) -> Any:
    from flywheel.config import Settings

    return Settings(workspace=Path(workspace), features={"build": build})


def simulate_day(raw: Path, day: int, users: int, items: int, seed: int) -> int:
    """Day ``day`` (0-based) of one fixed world into ``raw/day-NN``; returns its events."""
    from flywheel.simulate import make_world, simulate_events

    out = raw / f"day-{day + 1:02d}"
    marker = out / "done"
    if marker.exists():
        return int(marker.read_text())
    shutil.rmtree(out, ignore_errors=True)
    world = make_world(users, items, seed=seed)
    summary = simulate_events(world, 1, out, seed=seed, start_day=day)
    marker.write_text(str(summary.events))
    return summary.events


def ingest_day(workspace: str, day_dir: str) -> dict[str, Any]:
    """The ingest stage's work for one day's raw folder."""
    from flywheel.ingest import ingest_events

    s = _settings(workspace, "incremental")
    result = ingest_events(s, [str(Path(day_dir) / "events")], str(Path(day_dir) / "items.parquet"))
    return {"accepted": result.accepted, "quarantined": result.quarantined}


def features_stage(workspace: str, build: str, lake_workspace: str) -> dict[str, Any]:
    """The features stage's work: build the tables, ``feast apply``, delta materialize (up
    to the lake's feature time: ``lake_workspace`` holds the lake's watermark)."""
    from flywheel import feature_store
    from flywheel.features.build import build_features
    from flywheel.lake import feature_time
    from flywheel.ray_runtime import shutdown_ray

    s = _settings(workspace, build)
    start = time.perf_counter()
    built = build_features(s)  # follows features.build
    build_s = time.perf_counter() - start
    shutdown_ray()
    began = time.perf_counter()
    feature_store.apply(s)
    apply_s = time.perf_counter() - began
    end = feature_time(_settings(lake_workspace, build))
    began = time.perf_counter()
    materialized = feature_store.materialize(s, end=end)
    materialize_s = time.perf_counter() - began
    written = sum(v.keys_written or 0 for v in materialized.views)
    return {
        "build_s": round(build_s, 2),
        "apply_s": round(apply_s, 2),
        "materialize_s": round(materialize_s, 2),
        "phases": built.seconds,
        "path": built.path,
        "partitions_recomputed": built.partitions_recomputed,
        "keys_written": written,
    }


def cycle(workspace: str, day_dir: str, seed: int) -> dict[str, Any]:
    """One ``run_cycle`` over the day's raw folder; the per-stage seconds of its run."""
    from flywheel.cycle import run_cycle
    from flywheel.evaluate import BlessingRule

    s = _settings(workspace, "incremental")
    summary = run_cycle(
        s,
        str(Path(day_dir) / "events"),
        str(Path(day_dir) / "items.parquet"),
        window_days=WINDOW_DAYS,
        seed=seed,
        caching=False,
        rule=BlessingRule(min_lift_over_popularity=None),
    )
    run_dir = s.workspace / "runs" / summary.run_id
    features = json.loads((run_dir / "features.json").read_text())["summary"]
    return {
        "cycle_s": round(summary.seconds, 2),
        "stages": {r.stage: r.seconds for r in summary.stages},
        "statuses": [r.status for r in summary.stages],
        "build_s": features.get("seconds", {}).get("total"),
        "path": features.get("path"),
    }


def _same(a: Any, b: Any) -> bool:
    """Two columns equal: exactly, floats to ``FLOAT_RTOL`` relative. The windowed price sums
    are differences of running float sums, accumulated over the whole history by the full
    build and from the cut by the incremental one, so their last bits differ, more as the
    history grows (2e-11 relative at 160k events; one cell of ``avg_price_7d`` at 1.2e-9 at
    4.3M events, which failed the 2026-12-03 run's 1e-9)."""
    import numpy as np
    import pyarrow as pa

    a, b = a.combine_chunks(), b.combine_chunks()
    if pa.types.is_list(a.type) and pa.types.is_floating(a.type.value_type):
        if not a.offsets.equals(b.offsets):
            return False
        a, b = a.flatten(), b.flatten()
    if pa.types.is_floating(a.type):
        x, y = a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False)
        return bool(np.allclose(x, y, rtol=FLOAT_RTOL, atol=0, equal_nan=True))
    return bool(a.equals(b))


def compare_tables(inc: str, full: str) -> dict[str, Any]:
    """Every feature table of the two workspaces, cell for cell (``created_timestamp``
    aside), as ``tests/integration/test_features_incremental.py`` compares them."""
    import pyarrow.parquet as pq

    from flywheel.schemas import FEATURE_TABLES

    differ = []
    for name, schema in FEATURE_TABLES.items():
        a = pq.read_table(Path(inc) / "features" / f"{name}.parquet")
        b = pq.read_table(Path(full) / "features" / f"{name}.parquet")
        columns = [c for c in schema.names if c != "created_timestamp"]
        if a.num_rows != b.num_rows or not all(_same(a[c], b[c]) for c in columns):
            differ.append(name)
    return {"differ": differ}


def _days(spec: str, last: int) -> set[int]:
    if spec == "all":
        return set(range(1, last + 1))
    return {d for d in (int(x) for x in spec.split(",") if x) if 1 <= d <= last} | {last}


def plot(days: list[dict[str, Any]], path: Path) -> None:
    """Seconds per day: incremental build and features stage, full build, cycle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = [d["day"] for d in days]
    ax.plot(x, [d["inc_build_s"] for d in days], "o-", label="incremental build")
    ax.plot(x, [d["inc_features_s"] for d in days], ".-", label="features stage (incremental)")
    full = [(d["day"], d["full_build_s"]) for d in days if d.get("full_build_s") is not None]
    if full:
        ax.plot(*zip(*full, strict=True), "s--", label="full rebuild (--full-rebuild)")
    cyc = [(d["day"], d["cycle_s"]) for d in days if d.get("cycle_s") is not None]
    if cyc:
        ax.plot(*zip(*cyc, strict=True), "^:", label="whole cycle")
    ax.set_xlabel("day")
    ax.set_ylabel("seconds")
    ax.set_title("Daily cost at a fixed daily volume")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _print_day(row: dict[str, Any]) -> None:
    parts = [f"day {row['day']:>2}: {row['events']:,} events, lake {row['lake_events']:,}"]
    if row.get("cycle_s") is not None:
        parts.append(f"cycle {row['cycle_s']:.1f} s ({row['cycle_peak_mib']:.0f} MiB)")
    parts.append(f"ingest {row['ingest_s']:.1f} s")
    parts.append(f"incr build {row['inc_build_s']:.1f} s / stage {row['inc_features_s']:.1f} s "
                 f"({row['inc_peak_mib']:.0f} MiB)")  # fmt: skip
    if row.get("full_build_s") is not None:
        parts.append(f"full build {row['full_build_s']:.1f} s / stage {row['full_features_s']:.1f}"
                     f" s ({row['full_peak_mib']:.0f} MiB), equal: {row['equal']}")  # fmt: skip
    print("; ".join(parts), flush=True)


def run_day(args: Any, day: int, root: Path, lake_events: int, users: int) -> dict[str, Any]:
    """Simulate, then measure, one day (1-based ``day``)."""
    events = simulate_day(root / "raw", day - 1, users, args.items, args.seed)
    day_dir = str(root / "raw" / f"day-{day:02d}")
    inc, full = str(root / "inc"), str(root / "full")
    row: dict[str, Any] = {"day": day, "events": events, "lake_events": lake_events + events}
    log = str(root / "logs" / f"day-{day:02d}.log")
    if day in args.cycle_set:
        m = measure(f"cycle-{day}", _logged, log, cycle, inc, day_dir, args.seed)
        stages = m.result["stages"]
        row.update(cycle_s=m.seconds, cycle_peak_mib=m.peak_mib, stages=stages,
                   ingest_s=stages.get("ingest", 0.0), inc_features_s=stages.get("features", 0.0),
                   inc_build_s=m.result["build_s"], inc_peak_mib=m.peak_mib,
                   inc_path=m.result["path"], statuses=m.result["statuses"])  # fmt: skip
    else:
        m = measure(f"ingest-{day}", _logged, log, ingest_day, inc, day_dir)
        row.update(ingest_s=m.seconds, ingest_peak_mib=m.peak_mib)
        m = measure(f"features-{day}", _logged, log, features_stage, inc, "incremental", inc)
        row.update(inc_features_s=m.seconds, inc_build_s=m.result["build_s"],
                   inc_peak_mib=m.peak_mib, inc_phases=m.result["phases"],
                   inc_path=m.result["path"], inc_apply_s=m.result["apply_s"],
                   inc_materialize_s=m.result["materialize_s"],
                   inc_keys_written=m.result["keys_written"])  # fmt: skip
    if day in args.full_set:
        m = measure(f"full-{day}", _logged, log, features_stage, full, "full", inc)
        row.update(full_features_s=m.seconds, full_build_s=m.result["build_s"],
                   full_peak_mib=m.peak_mib, full_phases=m.result["phases"])  # fmt: skip
        differ = measure(f"compare-{day}", _logged, log, compare_tables, inc, full).result["differ"]
        row.update(equal=not differ, differ=differ)
    return row


def _ratio(a: Any, b: Any) -> float:
    """``a / b``, NaN when either did not run (a stopped run, a day without that step)."""
    return float(a) / float(b) if a is not None and b not in (None, 0) else float("nan")


def _print_table(days: list[dict[str, Any]]) -> None:
    print(f"\n{'day':>3} | {'events':>9} | {'lake':>11} | {'ingest':>6} | {'incr build':>10} | "
          f"{'incr stage':>10} | {'incr MiB':>8} | {'full build':>10} | {'full MiB':>8} | "
          f"{'cycle':>6}")  # fmt: skip
    for d in days:
        full_s = f"{d['full_build_s']:>10.1f}" if "full_build_s" in d else f"{'':>10}"
        full_m = f"{d['full_peak_mib']:>8.0f}" if "full_peak_mib" in d else f"{'':>8}"
        cyc = f"{d['cycle_s']:>6.1f}" if d.get("cycle_s") is not None else f"{'':>6}"
        print(f"{d['day']:>3} | {d['events']:>9,} | {d['lake_events']:>11,} | "
              f"{d['ingest_s']:>6.1f} | {d['inc_build_s']:>10.1f} | {d['inc_features_s']:>10.1f}"
              f" | {d['inc_peak_mib']:>8.0f} | {full_s} | {full_m} | {cyc}")  # fmt: skip


def report(args: Any, days: list[dict[str, Any]], started: float) -> int:
    """The per-day table, the plot, targets and checks over the days that ran (the last of
    them stands for day ``--days`` when a run was stopped early; it says so)."""
    plot(days, args.plot)
    _print_table(days)
    by_day = {d["day"]: d for d in days}
    d7, last = by_day.get(7, {}), days[-1]
    n = last["day"]
    if n != args.days:
        print(f"\nthe run stopped after day {n} of {args.days}: the targets use day {n}")
    build_ratio = _ratio(last.get("inc_build_s"), d7.get("inc_build_s"))
    stage_ratio = _ratio(last.get("inc_features_s"), d7.get("inc_features_s"))
    # A stopped run's last day may have no full rebuild: the latest day that has one.
    compared = [d for d in days if "full_build_s" in d][-1:] or [last]
    m = compared[0]["day"]
    speedup = _ratio(compared[0].get("full_build_s"), compared[0].get("inc_build_s"))
    cycle_ratio = _ratio(last.get("cycle_s"), d7.get("cycle_s"))
    print(f"\nday {n} / day 7: incremental build {build_ratio:.2f}x, features stage "
          f"{stage_ratio:.2f}x, cycle {cycle_ratio:.2f}x; day {m} full / incremental "
          f"build {speedup:.2f}x; machine {machine()}")  # fmt: skip
    targets = [
        Target(f"incremental build day {n} / day 7", build_ratio, FEATURES_RATIO_TARGET, True, "x"),
        Target(f"features stage day {n} / day 7", stage_ratio, FEATURES_RATIO_TARGET, True, "x"),
        Target(f"full / incremental build on day {m}", speedup, SPEEDUP_TARGET, False, "x"),
        Target(f"cycle day {n} / day 7", cycle_ratio, CYCLE_RATIO_TARGET, True, "x"),
    ]
    fulls = [d for d in days if "equal" in d]
    checks = [
        Check("incremental tables equal the full rebuild's on every full day",
              bool(fulls) and all(d["equal"] for d in fulls),
              ", ".join(f"day {d['day']}: {d['differ'] or 'equal'}" for d in fulls)),
        Check("every cycle ran all eight stages",
              all(set(d["statuses"]) == {"ran"} for d in days if "statuses" in d)),
    ]  # fmt: skip
    return finish(Path(args.out), args, started, targets, checks, days=days)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events-per-day", type=int, default=300_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--full-days", default="1,7,14,21", help="days with a full rebuild "
                        "too (comma list or 'all'; the last day always)")  # fmt: skip
    parser.add_argument("--cycle-days", default="7", help="days that run the whole cycle "
                        "(comma list or 'all'; the last day always)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/steady_state"))
    parser.add_argument("--out", default="bench-out/steady_state.json")
    parser.add_argument("--plot", type=Path, default=Path("bench-out/steady_state.png"))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run: keep <workdir>'s workspaces and the days recorded in "
        "<out>.days.jsonl, and run the days after the last one (the same code should run them)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: report the days in <out>.days.jsonl (e.g. of a stopped run)",
    )
    args = parser.parse_args()
    if args.days < 7:
        parser.error("--days must be at least 7 (the targets compare against day 7)")
    args.full_set = _days(args.full_days, args.days) | {7}
    args.cycle_set = _days(args.cycle_days, args.days) | {7}
    started = time.perf_counter()
    record = Path(args.out).with_suffix(".days.jsonl")
    if args.report_only:
        days = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
        return report(args, days, started)

    from flywheel.simulate import users_for_events

    root = args.workdir
    days: list[dict[str, Any]] = []
    if args.resume and record.is_file():
        days = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
        print(f"resuming after day {days[-1]['day'] if days else 0} of {args.days}")
    else:
        for name in ("inc", "full", "logs"):
            shutil.rmtree(root / name, ignore_errors=True)
        (root / "full").mkdir(parents=True)
        os.symlink((root / "inc" / "lake").absolute(), root / "full" / "lake")
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("")
    # The simulator's weekday rhythm makes days vary about +-10% around the mean.
    users = users_for_events(int(args.events_per_day * 1.05), 1)
    lake = days[-1]["lake_events"] if days else 0
    for day in range(len(days) + 1, args.days + 1):
        row = run_day(args, day, root, lake, users)
        row["load"] = [round(x, 2) for x in os.getloadavg()]
        lake = row["lake_events"]
        days.append(row)
        with record.open("a") as fh:  # each day kept as it ends: a stopped run keeps them
            fh.write(json.dumps(row) + "\n")
        _print_day(row)
    return report(args, days, started)


if __name__ == "__main__":
    raise SystemExit(main())
