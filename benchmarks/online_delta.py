"""Benchmark: online writes that follow the change (delta) against the window writes.

    python benchmarks/online_delta.py --days 10 --out bench-out/online_delta.json

A lake grows a simulated day at a time (``delta_world.py``: that day's events plus late
ones stamped 1-3 days back); after each day the nine feature tables are rebuilt and
materialized into three SQLite online stores from the same tables, in the same process,
in an order rotated every day:

* ``delta``: ``materialize`` (the keys whose latest row changed since the last run);
* ``full``: ``materialize_range(full=True)``, Feast's window materialization of every
  view's whole ttl (what ``--full-reload`` did, and what every build pays without state);
* ``window``: ``materialize_range``, Feast's incremental window from the previous end
  (the path before delta writes; for reference: it never revisits a key whose latest row
  a late event corrected, so its store goes stale).

Keys written are counted at the store's ``online_write_batch`` (the same counter for all
three). Checks: ``delta``'s online values equal ``full``'s (``online_features`` for a
sample of users x items) after every day. Targets, over the days after the first (both
write everything on day 1): delta writes at most half of full's keys, takes less time in
all, and is faster on every one of those days. ``window``'s figures and its stale values
are printed, not judged.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from delta_world import World, build_day
from harness import Check, Target, finish, machine

KEYS_RATIO_TARGET = 0.5
TIME_RATIO_TARGET = 1.0
MODES = ("delta", "full", "window")


class WriteCounter:
    """Rows handed to the SQLite online store's ``online_write_batch`` (then written)."""

    def __init__(self) -> None:
        from flywheel.online_store import BatchedSqliteOnlineStore

        self.rows = 0
        write = BatchedSqliteOnlineStore.online_write_batch

        def counting(store: Any, config: Any, table: Any, data: Any, progress: Any) -> None:
            self.rows += len(data)
            write(store, config, table, data, progress)

        BatchedSqliteOnlineStore.online_write_batch = counting  # type: ignore[method-assign]


def _materialize(mode: str, settings: Any, end: datetime) -> Any:
    from flywheel import feature_store as fs

    if mode == "delta":
        return fs.materialize(settings, end=end)
    return fs.materialize_range(settings, end=end, full=mode == "full")


def _sample(settings: Any, users: list[str], items: list[str], at: datetime) -> Any:
    import pandas as pd

    from flywheel import feature_store as fs

    store = fs.get_store(settings)
    frames = [fs.online_features(store, u, items, as_of=at) for u in users]
    return pd.concat(frames, ignore_index=True).astype(str)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--events-per-day", type=int, default=40_000)
    parser.add_argument("--late-share", type=float, default=0.03)
    parser.add_argument("--sample-users", type=int, default=60)
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/online_delta"))
    parser.add_argument("--out", default="bench-out/online_delta.json")
    args = parser.parse_args()
    started_all = time.perf_counter()

    from flywheel import feature_store as fs
    from flywheel.config import Settings

    world = World(args.users, args.items, args.events_per_day, args.late_share)
    shutil.rmtree(args.workdir, ignore_errors=True)
    tables = args.workdir / "tables"
    spaces = {m: Settings(workspace=args.workdir / m) for m in MODES}
    counter = WriteCounter()
    days: list[dict[str, Any]] = []
    equal_days, stale = [], 0
    for day in range(args.days):
        t = time.perf_counter()
        end = build_day(world, day, tables)
        build_s = time.perf_counter() - t
        row: dict[str, Any] = {"day": day + 1, "build_s": round(build_s, 2)}
        order = MODES[day % 3 :] + MODES[: day % 3]
        for mode in order:
            settings = spaces[mode]
            shutil.rmtree(settings.feature_data_dir, ignore_errors=True)
            shutil.copytree(tables, settings.feature_data_dir)
            fs.apply(settings)
            before, t = counter.rows, time.perf_counter()
            summary = _materialize(mode, settings, end)
            row[f"{mode}_s"] = round(time.perf_counter() - t, 3)
            row[f"{mode}_keys"] = counter.rows - before
            if mode == "delta":
                row["delta_scanned"] = sum(v.keys_scanned or 0 for v in summary.views)
                row["delta_views"] = {v.name: v.keys_written for v in summary.views}
        import pyarrow.parquet as pq

        users = sorted(set(pq.read_table(tables / "user_activity_30d.parquet")["user_id"]
                           .to_pylist()))[: args.sample_users]  # fmt: skip
        items = [f"sku-{i}" for i in range(0, args.items, max(1, args.items // 25))]
        at = end - timedelta(seconds=1)
        want = _sample(spaces["full"], users, items, at)
        equal_days.append(bool(_sample(spaces["delta"], users, items, at).equals(want)))
        if day == args.days - 1:
            window = _sample(spaces["window"], users, items, at)
            stale = int((window != want).any(axis=1).sum())
        days.append(row)
        print(
            f"day {day + 1}: build {build_s:.1f} s; keys written delta {row['delta_keys']:,} "
            f"(of {row['delta_scanned']:,} scanned) / full {row['full_keys']:,} / window "
            f"{row['window_keys']:,}; seconds delta {row['delta_s']:.2f} / full "
            f"{row['full_s']:.2f} / window {row['window_s']:.2f}; delta = full online: "
            f"{equal_days[-1]}",
            flush=True,
        )

    later = days[1:]

    def total(key: str) -> float:
        return float(sum(d[key] for d in later))

    keys_ratio = total("delta_keys") / max(total("full_keys"), 1)
    time_ratio = total("delta_s") / max(total("full_s"), 1e-9)
    faster = sum(d["delta_s"] < d["full_s"] for d in later)
    print(
        f"\nafter day 1 ({len(later)} days): keys delta/full {keys_ratio:.3f}, "
        f"seconds delta/full {time_ratio:.3f}, delta faster on {faster} of {len(later)} days; "
        f"window: keys/full {total('window_keys') / max(total('full_keys'), 1):.3f}, seconds/"
        f"full {total('window_s') / max(total('full_s'), 1e-9):.3f}, stale sampled rows at the "
        f"end {stale} of {args.sample_users * len(items)}; machine {machine()}"
    )
    targets = [
        Target("delta / full keys written after day 1", keys_ratio, KEYS_RATIO_TARGET, True),
        Target("delta / full seconds after day 1", time_ratio, TIME_RATIO_TARGET, True),
        Target("days after day 1 with delta faster", faster, len(later), False),
    ]
    checks = [
        Check(
            "delta online values equal full's, every day",
            all(equal_days) and bool(later),
            f"{sum(equal_days)} of {len(equal_days)} days",
        ),
    ]
    return finish(Path(args.out), args, started_all, targets, checks, days=days, stale=stale)


if __name__ == "__main__":
    raise SystemExit(main())
