"""Benchmark: the Ray Data feature build against a single-process pandas baseline.

    python benchmarks/feature_build.py --events 1000000 10000000 --out bench-out/feature_build.json

For each size it writes a synthetic lake (``synth.py``), runs both builds in fresh
processes through ``harness.measure`` (wall seconds, peak PSS of the whole process tree,
Ray's raylet/GCS/workers included), checks that both produced equal tables at every size
(ranking_v1's four, the baseline's; the Ray build also writes the ranking_v2 tables, so it
does more work than the baseline: ``feature_tables.py`` measures what they cost),
and prints throughput and memory ratios against the targets: Ray throughput >= pandas at
every size, Ray peak memory <= half of pandas at 10M events. Tables that differ at any size
fail the run: every target then reads FAILED and the exit status is 1.
The Ray time includes starting Ray; the phase split is in the JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Check, Target, dump, machine, measure, report_verdicts
from pandas_features import TABLES
from synth import write_lake

MEMORY_TARGET_EVENTS = 10_000_000
THROUGHPUT_RATIO_TARGET = 1.0
MEMORY_RATIO_TARGET = 0.5


def ray_build(workspace: str) -> dict[str, Any]:
    """Contender: ``flywheel.features.build_features`` on a local Ray using every core."""
    from flywheel.config import Settings
    from flywheel.features import build_features
    from flywheel.ray_runtime import shutdown_ray

    summary = build_features(Settings(workspace=Path(workspace)))
    shutdown_ray()
    return {"rows": summary.rows, "seconds": summary.seconds, "partials": summary.partial_rows}


def pandas_build(workspace: str) -> dict[str, Any]:
    """Baseline: ``pandas_features`` in one process, written with the same contracts."""
    from pandas_features import pandas_features, write_tables

    start = time.perf_counter()
    tables = pandas_features(Path(workspace))
    compute = time.perf_counter() - start
    rows = write_tables(tables, Path(workspace) / "pandas-features")
    return {"rows": rows, "seconds": {"compute": round(compute, 3)}}


def tables_equal(workspace: Path) -> dict[str, bool]:
    """Compare both builds' tables (all but created_timestamp); floats to 1e-9 relative."""
    from flywheel.features.day_parts import in_key_order

    result = {}
    for name in TABLES:
        # the build's per-entity tables are day folders: compare both in key order
        ray_t = pq.read_table(workspace / "features" / f"{name}.parquet")
        ray_t = in_key_order(ray_t, name).drop(["created_timestamp"])
        pd_t = pq.read_table(workspace / "pandas-features" / f"{name}.parquet")
        pd_t = in_key_order(pd_t, name).drop(["created_timestamp"])
        try:
            pd.testing.assert_frame_equal(
                ray_t.to_pandas(), pd_t.to_pandas(), check_exact=False, rtol=1e-9
            )
            result[name] = True
        except AssertionError as exc:
            print(f"  {name}: tables differ: {str(exc)[:300]}")
            result[name] = False
    return result


def run_size(n: int, root: Path) -> dict[str, Any]:
    """Synthesize (or reuse) a lake of ``n`` events and measure both builds on it."""
    workspace = root / f"lake-{n}"
    marker = workspace / "synth.done"
    if not marker.exists():
        start = time.perf_counter()
        print(f"writing a lake of {n:,} events to {workspace} ...", flush=True)
        write_lake(workspace, n)
        marker.write_text(f"{time.perf_counter() - start:.1f}s\n")
    ray_m = measure(f"ray-{n}", ray_build, str(workspace))
    print(f"  ray    {ray_m.seconds:8.1f} s  {ray_m.peak_mib:8.0f} MiB", flush=True)
    pandas_m = measure(f"pandas-{n}", pandas_build, str(workspace))
    print(f"  pandas {pandas_m.seconds:8.1f} s  {pandas_m.peak_mib:8.0f} MiB", flush=True)
    equal = tables_equal(workspace)
    return {
        "events": n,
        "ray": ray_m,
        "pandas": pandas_m,
        "ray_events_per_s": n / ray_m.seconds,
        "pandas_events_per_s": n / pandas_m.seconds,
        "throughput_ratio": pandas_m.seconds / ray_m.seconds,
        "memory_ratio": ray_m.peak_mib / pandas_m.peak_mib,
        "tables_equal": equal,
    }


def targets(results: list[dict[str, Any]]) -> list[Target]:
    """Throughput at every size; memory at ``MEMORY_TARGET_EVENTS`` and above."""
    out = []
    for r in results:
        n = f"{r['events']:,} events"
        out.append(
            Target(f"throughput pandas s / Ray s at {n}", r["throughput_ratio"],
                   THROUGHPUT_RATIO_TARGET, at_most=False, unit="x")
        )  # fmt: skip
        if r["events"] >= MEMORY_TARGET_EVENTS:
            out.append(
                Target(f"peak memory Ray / pandas at {n}", r["memory_ratio"],
                       MEMORY_RATIO_TARGET, at_most=True, unit="x")
            )  # fmt: skip
    return out


def checks(results: list[dict[str, Any]]) -> list[Check]:
    """One check per size: both builds wrote the same four (ranking_v1) tables."""
    out = []
    for r in results:
        equal: dict[str, bool] = r["tables_equal"]
        differ = [name for name, same in equal.items() if not same]
        detail = f"differ: {', '.join(differ)}" if differ else f"{len(equal)} tables"
        out.append(Check(f"tables equal at {r['events']:,} events", not differ, detail))
    return out


def report(results: list[dict[str, Any]]) -> None:
    """Print one line per size with the ratios and whether both builds agree."""
    print(
        f"\n{'events':>11} | {'ray ev/s':>9} | {'pandas ev/s':>11} | {'thr ratio':>9} | "
        f"{'ray MiB':>8} | {'pandas MiB':>10} | {'mem ratio':>9} | equal"
    )
    for r in results:
        eq = str(all(r["tables_equal"].values()))
        print(
            f"{r['events']:>11,} | {r['ray_events_per_s']:>9,.0f} | "
            f"{r['pandas_events_per_s']:>11,.0f} | {r['throughput_ratio']:>9.2f} | "
            f"{r['ray'].peak_mib:>8,.0f} | {r['pandas'].peak_mib:>10,.0f} | "
            f"{r['memory_ratio']:>9.2f} | {eq:>5}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--out", type=Path, default=Path("bench-out/feature_build.json"))
    parser.add_argument("--root", type=Path, default=Path("/tmp/flywheel-bench"))
    args = parser.parse_args(argv)
    results = [run_size(n, args.root) for n in args.events]
    report(results)
    print()
    goals, checked = targets(results), checks(results)
    verdicts = report_verdicts(goals, checked)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "results": results, "targets": goals, "checks": checked,
               "verdicts": verdicts}  # fmt: skip
    dump(str(args.out), payload)
    print(f"\nmachine: {payload['machine']}\nwrote {args.out}")
    return verdicts.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
