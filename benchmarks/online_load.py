"""Benchmark: loading a 10M-event lake's feature tables into the online store.

    python benchmarks/online_load.py --events 10000000 --out bench-out/online_load.json

Builds the features of a synthetic lake (``synth.py``) once, then materializes them into a
fresh SQLite online store twice per round, each in a fresh process with peak PSS sampled
for its whole tree, in an order rotated every round:

* ``fixed``: every view in 200k-row write batches (the code before batches were sized,
  ``feast.online_write_batch_mib`` so large that every view gets the 200k ceiling);
* ``sized``: the default budget, each view's batch sized from its row cost.

Both stores are then read back for a sample of users and items and compared value for
value (a mismatch fails the run). Targets: ``sized`` peak <= 4 GiB, and its time within
1.25x of ``fixed``'s (smaller batches pay Feast's fixed cost per batch more often).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Check, Target, finish, machine, measure
from synth import write_lake

FIXED_MIB = 10**6  # rows = min(200k, budget / row cost): 200k for every view
PEAK_TARGET_MIB = 4096
TIME_RATIO_TARGET = 1.25


def build(workspace: str) -> dict[str, Any]:
    """The feature build (no materialize), in its own process."""
    from flywheel.config import Settings
    from flywheel.features import build_features
    from flywheel.ray_runtime import shutdown_ray

    summary = build_features(Settings(workspace=Path(workspace)))
    shutdown_ray()
    return {"rows": summary.rows}


def load(workspace: str, budget_mib: int) -> dict[str, Any]:
    """Register the definitions and materialize every online view up to the lake's end."""
    import pyarrow.parquet as pq

    from flywheel import feature_store as fs
    from flywheel.config import Settings

    settings = Settings(workspace=Path(workspace), feast={"online_write_batch_mib": budget_mib})
    shutil.rmtree(settings.feast_dir, ignore_errors=True)
    fs.apply(settings)
    table = pq.read_table(settings.feature_data_dir / "user_activity.parquet")
    end = table.column("event_timestamp").to_pandas().max().to_pydatetime()
    summary = fs.materialize(settings, end=end + timedelta(seconds=1))
    return {
        "views": {v.name: v.batch_rows for v in summary.views},
        "online_db_mib": (settings.feast_dir / "online.db").stat().st_size / 2**20,
    }


def sample_online(workspace: str, n_users: int = 200) -> dict[str, Any]:
    """Online features of the first ``n_users`` users for 20 items each, as JSON rows."""
    import pyarrow.parquet as pq

    from flywheel import feature_store as fs
    from flywheel.config import Settings

    settings = Settings(workspace=Path(workspace))
    users = pq.read_table(settings.feature_data_dir / "user_activity.parquet", columns=["user_id"])
    items = pq.read_table(settings.feature_data_dir / "item_catalog.parquet", columns=["item_id"])
    store = fs.get_store(settings)
    some = sorted(set(users.column(0).to_pylist()))[:n_users]
    candidates = items.column(0).to_pylist()[:20]
    rows = []
    for user in some:
        frame = fs.online_features(store, user, candidates)
        rows.append(frame.astype(str).to_dict("list"))
    return {"rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/online_load"))
    parser.add_argument("--out", default="bench-out/online_load.json")
    args = parser.parse_args()
    started_all = time.perf_counter()

    base = args.workdir / f"e{args.events}"
    if not (base / "features").exists():
        shutil.rmtree(base, ignore_errors=True)
        write_lake(base, args.events)
        built = measure("build", build, str(base))
        print(f"build: {built.seconds:.1f} s, peak {built.peak_mib:,.0f} MiB", flush=True)
    contenders = {"fixed": FIXED_MIB, "sized": None}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            workspace = args.workdir / f"e{args.events}-{name}"
            shutil.rmtree(workspace, ignore_errors=True)
            shutil.copytree(base, workspace, symlinks=True)
            from flywheel.config import FeastSettings

            budget = contenders[name] or FeastSettings().online_write_batch_mib
            started = time.perf_counter()
            got = measure(name, load, str(workspace), budget)
            runs[name].append(
                {
                    "seconds": got.seconds,
                    "peak_mib": got.peak_mib,
                    **got.result,
                }
            )
            print(
                f"round {r + 1} {name}: {got.seconds:.1f} s, peak {got.peak_mib:,.0f} MiB, "
                f"batches {got.result['views']} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    read = {
        name: measure(f"read {name}", sample_online, str(args.workdir / f"e{args.events}-{name}"))
        for name in contenders
    }
    same = read["fixed"].result["rows"] == read["sized"].result["rows"]

    def best(name: str, key: str) -> float:
        return min(run[key] for run in runs[name])

    ratio = best("sized", "seconds") / best("fixed", "seconds")
    targets = [
        Target("sized peak MiB", best("sized", "peak_mib"), PEAK_TARGET_MIB, True),
        Target("sized / fixed time", ratio, TIME_RATIO_TARGET, True),
    ]
    checks = [Check("online values equal (200 users x 20 items)", same)]
    print(
        f"peak fixed {best('fixed', 'peak_mib'):,.0f} MiB, sized {best('sized', 'peak_mib'):,.0f} "
        f"MiB ({best('sized', 'peak_mib') / best('fixed', 'peak_mib'):.2f}x); time ratio "
        f"{ratio:.2f}x; machine {machine()}"
    )
    return finish(Path(args.out), args, started_all, targets, checks, runs=runs)


if __name__ == "__main__":
    raise SystemExit(main())
