"""Benchmark: ``user_item_latest`` updated from the previous one vs recomputed (issue #14).

    python benchmarks/latest_incremental.py --features /tmp/ss/big2/inc/features \
        --work /tmp/latest-bench --repeats 2

On a real published feature folder (read only: only its ``user_item.parquet`` day folder and
its item catalog are read), a daily incremental build is replayed: its last day ``D`` is the
new one (the cut ``since = 24 D``, the previous build's horizon), the previous
``user_item_latest`` is the full computation over the days before ``D`` at that horizon
(set-up, written under ``--work``, not timed). Two contenders, each in a fresh process
(``harness.measure``), interleaved ``--repeats`` times, median compared:

* ``full``: :func:`flywheel.features.publish.latest_of` (every day within the 30-day ttl);
* ``incremental``: :func:`flywheel.features.latest_incr.updated_latest` (the previous table
  and the days from ``D``).

Both at the horizon of the folder's last stamp, in the key space of the folder's ids and the
catalog's items. Checks: the incremental update ran (did not decline) and both tables are
equal (ids, ``event_timestamp``, ``ui_items``, ``ui_values`` bit for bit); and the full
recomputation equals the folder's own published ``user_item_latest`` where that was built at
the same horizon (``created_timestamp`` aside). Targets: speed-up >= 2, peak memory ratio <= 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from harness import Check, Target, finish, measure  # noqa: E402

from flywheel.features import day_parts  # noqa: E402
from flywheel.features.keys import KeySpace, distinct_sorted  # noqa: E402
from flywheel.features.partials import US_PER_HOUR  # noqa: E402
from flywheel.schemas import USER_ITEM_LATEST_SCHEMA  # noqa: E402

CREATED_US = 1_700_000_000_000_000
SPEEDUP_TARGET, MEMORY_TARGET = 2.0, 1.0


def _write(parts: list[pa.Table], dest: Path) -> int:
    from flywheel.features.publish import write_atomic

    write_atomic(parts or [USER_ITEM_LATEST_SCHEMA.empty_table()], USER_ITEM_LATEST_SCHEMA, dest)
    return sum(t.num_rows for t in parts)


def run_full(folder: str, keys: KeySpace, horizon: int, out: str) -> dict[str, Any]:
    from flywheel.features.publish import latest_of

    start = time.perf_counter()
    parts = latest_of(Path(folder), keys, horizon, CREATED_US)
    seconds = time.perf_counter() - start
    return {"compute_s": seconds, "rows": _write(parts, Path(out))}


def run_incremental(
    previous: str, folder: str, keys: KeySpace, since: int, horizon: int, out: str
) -> dict[str, Any]:
    from flywheel.features.latest_incr import updated_latest

    start = time.perf_counter()
    parts = updated_latest(Path(previous), Path(folder), keys, since, horizon, since, CREATED_US)
    seconds = time.perf_counter() - start
    if parts is None:
        return {"compute_s": seconds, "rows": -1, "declined": True}
    return {"compute_s": seconds, "rows": _write(parts, Path(out)), "declined": False}


def _differs(a_path: Path, b_path: Path) -> str:
    """'' when the two packed tables are equal (created_timestamp aside), else what differs."""
    a, b = pq.read_table(a_path), pq.read_table(b_path)
    for column in ("user_id", "event_timestamp", "ui_items"):
        if not a[column].combine_chunks().equals(b[column].combine_chunks()):
            return column
    va = a["ui_values"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vb = b["ui_values"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    if va.shape != vb.shape or not np.array_equal(va.view(np.uint64), vb.view(np.uint64)):
        return "ui_values"
    return ""


def _setup(features: Path, work: Path) -> tuple[Path, Path, KeySpace, int, int, int]:
    """(user_item folder, previous table, key space, cut, horizon, rows in the days >= D)."""
    from flywheel.features.publish import latest_of

    folder = features / "user_item.parquet"
    files = day_parts.table_files(folder)
    last = day_parts.part_day(files[-1])
    since = 24 * last
    stamps = pq.read_table(files[-1], columns=["event_timestamp"])["event_timestamp"]
    horizon = int(pc.max(stamps).cast(pa.int64()).as_py()) // US_PER_HOUR
    users, items = [], []
    for path in files:
        ids = pq.read_table(path, columns=["user_id", "item_id"])
        users.append(ids["user_id"])
        items.append(ids["item_id"])
    catalog = features / "item_catalog.parquet"
    if catalog.is_file():
        items.append(pq.read_table(catalog, columns=["item_id"])["item_id"])
    keys = KeySpace(distinct_sorted(users), distinct_sorted(items))
    old = work / "old" / "user_item.parquet"
    old.mkdir(parents=True, exist_ok=True)
    for path in files[:-1]:
        link = old / path.name
        if not link.exists():
            link.symlink_to(path)
    previous = work / "previous_user_item_latest.parquet"
    rows = _write(latest_of(old, keys, since, CREATED_US), previous)
    print(f"set-up: previous user_item_latest at horizon {since}: {rows:,} users")
    return folder, previous, keys, since, horizon, pq.read_metadata(files[-1]).num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=Path("/tmp/ss/big2/inc/features"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/latest-bench"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-out/latest_incremental.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    folder, previous, keys, since, horizon, new_rows = _setup(args.features, args.work)
    files = day_parts.table_files(folder)
    in_ttl = sum(
        pq.read_metadata(p).num_rows
        for p in files
        if 24 * day_parts.part_day(p) + 24 >= horizon - 30 * 24
    )
    print(f"user_item rows within the ttl: {in_ttl:,}; in the new day: {new_rows:,}")
    full_out, incr_out = args.work / "full.parquet", args.work / "incremental.parquet"
    runs: dict[str, list[Any]] = {"full": [], "incremental": []}
    for r in range(args.repeats):
        order = ["full", "incremental"] if r % 2 == 0 else ["incremental", "full"]
        for name in order:
            if name == "full":
                m = measure(name, run_full, str(folder), keys, horizon, str(full_out))
            else:
                m = measure(
                    name,
                    run_incremental,
                    str(previous),
                    str(folder),
                    keys,
                    since,
                    horizon,
                    str(incr_out),
                )
            runs[name].append(m)
            print(
                f"round {r + 1} {name}: compute {m.result['compute_s']:.2f} s "
                f"(process {m.seconds:.2f} s), peak {m.peak_mib:,.0f} MiB, "
                f"{m.result['rows']:,} users"
            )
    med = {n: statistics.median(m.result["compute_s"] for m in ms) for n, ms in runs.items()}
    peak = {n: statistics.median(m.peak_mib for m in ms) for n, ms in runs.items()}
    speedup = med["full"] / med["incremental"] if med["incremental"] else float("nan")
    memory = peak["incremental"] / peak["full"] if peak["full"] else float("nan")
    print(f"median compute: full {med['full']:.2f} s, incremental {med['incremental']:.2f} s")
    print(f"speed-up {speedup:.2f}x; peak memory ratio {memory:.2f}")
    declined = any(m.result.get("declined") for m in runs["incremental"])
    checks = [Check("incremental update ran (did not decline)", not declined)]
    if not declined:
        diff = _differs(full_out, incr_out)
        checks.append(Check("incremental table equals full", not diff, diff or "bit for bit"))
    published = args.features / "user_item_latest.parquet"
    if published.is_file():
        diff = _differs(full_out, published)
        checks.append(
            Check("full equals the folder's published user_item_latest", not diff, diff or "")
        )
    targets = [
        Target("speed-up incremental vs full", speedup, SPEEDUP_TARGET, at_most=False, unit="x"),
        Target("peak memory incremental / full", memory, MEMORY_TARGET, at_most=True),
    ]
    sections = {
        "setup": {"since": since, "horizon": horizon, "rows_in_ttl": in_ttl, "new": new_rows},
        "median_compute_s": med,
        "peak_mib": peak,
        "runs": {n: [m.__dict__ for m in ms] for n, ms in runs.items()},
    }
    return finish(args.out, args, started, targets, checks, **sections)


if __name__ == "__main__":
    sys.exit(main())
