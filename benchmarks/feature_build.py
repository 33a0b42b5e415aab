"""Benchmark: the Ray Data feature build against a single-process pandas baseline.

    python benchmarks/feature_build.py --events 1000000 10000000 --out bench-out/feature_build.json

For each size it writes a synthetic lake (``synth.py``), runs both builds in fresh
processes through ``harness.measure`` (wall seconds, peak PSS of the whole process tree,
Ray's raylet/GCS/workers included), checks that both produced equal tables (sizes up to
``--check-max-events``), and prints throughput and memory ratios against the targets:
Ray throughput >= pandas at every size, Ray peak memory <= half of pandas at 10M events.
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

from harness import dump, machine, measure
from synth import write_lake

from flywheel.schemas import FEATURE_TABLES

MEMORY_TARGET_EVENTS = 10_000_000


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
    result = {}
    for name in FEATURE_TABLES:
        ray_t = pq.read_table(workspace / "features" / f"{name}.parquet").drop(
            ["created_timestamp"]
        )
        pd_t = pq.read_table(workspace / "pandas-features" / f"{name}.parquet")
        pd_t = pd_t.drop(["created_timestamp"])
        try:
            pd.testing.assert_frame_equal(
                ray_t.to_pandas(), pd_t.to_pandas(), check_exact=False, rtol=1e-9
            )
            result[name] = True
        except AssertionError as exc:
            print(f"  {name}: tables differ: {str(exc)[:300]}")
            result[name] = False
    return result


def run_size(n: int, root: Path, check_max: int) -> dict[str, Any]:
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
    equal = tables_equal(workspace) if n <= check_max else None
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


def report(results: list[dict[str, Any]]) -> None:
    """Print one line per size with the ratios and whether each target is met."""
    print(
        f"\n{'events':>11} | {'ray ev/s':>9} | {'pandas ev/s':>11} | {'thr ratio':>9} | "
        f"{'ray MiB':>8} | {'pandas MiB':>10} | {'mem ratio':>9} | equal | targets"
    )
    for r in results:
        targets = [f"throughput {'met' if r['throughput_ratio'] >= 1 else 'MISSED'}"]
        if r["events"] >= MEMORY_TARGET_EVENTS:
            targets.append(f"memory {'met' if r['memory_ratio'] <= 0.5 else 'MISSED'}")
        eq = "n/a" if r["tables_equal"] is None else str(all(r["tables_equal"].values()))
        print(
            f"{r['events']:>11,} | {r['ray_events_per_s']:>9,.0f} | "
            f"{r['pandas_events_per_s']:>11,.0f} | {r['throughput_ratio']:>9.2f} | "
            f"{r['ray'].peak_mib:>8,.0f} | {r['pandas'].peak_mib:>10,.0f} | "
            f"{r['memory_ratio']:>9.2f} | {eq:>5} | {', '.join(targets)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--out", type=Path, default=Path("bench-out/feature_build.json"))
    parser.add_argument("--root", type=Path, default=Path("/tmp/flywheel-bench"))
    parser.add_argument("--check-max-events", type=int, default=2_000_000)
    args = parser.parse_args()
    results = [run_size(n, args.root, args.check_max_events) for n in args.events]
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    dump(str(args.out), {"machine": machine(), "results": results})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
