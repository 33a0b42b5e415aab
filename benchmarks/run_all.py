"""`make bench`: every benchmark, each against its baseline in the same run.

Full sizes take about an hour on a 2-core machine; ``--quick`` runs the smallest sizes only
(minutes). Results go to ``bench-out/*.json``; copy the figures into
``benchmarks/RESULTS.md`` with the machine line each script prints.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

FULL = {
    "feature_build": ["--events", "1000000", "10000000", "--check-max-events", "10000000"],
    "pit_retrieval": ["--entity-rows", "1000000"],
    "cycle_bench": ["--events", "1000000", "3000000", "10000000"],
    "serving_bench": ["--duration", "15"],
}
QUICK = {
    "feature_build": ["--events", "1000000"],
    "pit_retrieval": ["--entity-rows", "100000"],
    "cycle_bench": ["--events", "1000000"],
    "serving_bench": ["--duration", "5", "--profiles", "sqlite"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smallest sizes only")
    parser.add_argument("--only", nargs="*", help="subset of: " + ", ".join(FULL))
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    failed = []
    for name, extra in plan.items():
        if args.only and name not in args.only:
            continue
        out = Path("bench-out") / f"{name}.json"
        out.parent.mkdir(exist_ok=True)
        cmd = [sys.executable, str(HERE / f"{name}.py"), *extra, "--out", str(out)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        if subprocess.call(cmd) != 0:
            failed.append(name)
        print(f"=== {name} took {time.perf_counter() - started:.0f}s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
