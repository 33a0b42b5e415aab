"""`make bench`: every benchmark, each against its baseline in the same run.

Full sizes take about an hour on a 2-core machine; ``--quick`` runs the smallest sizes only
(minutes). Results go to ``bench-out/<run>.json``; copy the figures into
``benchmarks/RESULTS.md`` with the machine line each script prints. Each script prints its
own verdicts and exits 1 when a correctness check failed (``FAILED``); this exits 1 when
any did, naming them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

#: (run name, script, arguments). Dask needs ~5 GB per 100k entity rows, so the PIT target
#: against it is measured at 200k; 1M compares with Feast's stock DuckDB store only.
FULL = (
    ("feature_build", "feature_build", ["--events", "1000000", "10000000"]),
    ("pit_retrieval-200k", "pit_retrieval", ["--entity-rows", "200000"]),
    (
        "pit_retrieval-1m",
        "pit_retrieval",
        ["--entity-rows", "1000000", "--stores", "duckdb-asof,duckdb"],
    ),
    ("cycle_bench", "cycle_bench", ["--events", "1000000", "3000000", "10000000"]),
    ("serving_bench", "serving_bench", ["--duration", "15"]),
    ("shop_quality", "shop_quality", ["--world", "both"]),
    ("objectives", "objectives", ["--world", "both", "--fresh"]),
)
QUICK = (
    ("feature_build", "feature_build", ["--events", "1000000"]),
    ("pit_retrieval", "pit_retrieval", ["--entity-rows", "100000"]),
    ("cycle_bench", "cycle_bench", ["--events", "1000000"]),
    ("serving_bench", "serving_bench", ["--duration", "5", "--profiles", "sqlite"]),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smallest sizes only")
    parser.add_argument("--only", nargs="*", help="subset of: " + ", ".join(s for _, s, _ in FULL))
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    failed = []
    for name, script, extra in plan:
        if args.only and script not in args.only:
            continue
        out = Path("bench-out") / f"{name}.json"
        out.parent.mkdir(exist_ok=True)
        cmd = [sys.executable, str(HERE / f"{script}.py"), *extra, "--out", str(out)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.call(cmd)
        if code != 0:
            failed.append(f"{name} (exit {code})")
        print(f"=== {name} took {time.perf_counter() - started:.0f}s, exit {code}", flush=True)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
