"""Benchmark: the feature build with the ranking_v2 tables against the build before them.

    python benchmarks/feature_tables.py --events 10000000 --base /work/pre11 --repeats 2

``--base`` is a git worktree of the commit before the new tables
(``git worktree add --detach /work/pre11 b12f249``). Both contenders build the features of
the same synthetic lake (``synth.py``, shop-style ids, same seed), each in a fresh process
with the summed PSS and CPU seconds of its whole process tree sampled (Ray included),
interleaved (base, new, base, ...) ``--repeats`` times; medians are compared.

Checks (a failure prints FAILED and exits 1): the tables both builds write are equal cell
for cell (``user_activity``, ``item_activity``, ``item_catalog``), and ``user_category`` of
the new build is the base's plus only zero rows (the rows that close a category's window,
issue #11 item 5). Targets: peak memory of the new build under 4 GiB; the new build's wall
and CPU time are reported as ratios to the base (no target: it writes more than twice the
rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from harness import Check, PeakPss, Target, dump, machine, report_verdicts  # noqa: E402
from string_ids import _CHILD, _wait_for_exit  # noqa: E402

PEAK_TARGET_MIB = 4096.0
SHARED = ("user_activity", "item_activity", "item_catalog")


class PeakBreakdown(PeakPss):
    """:class:`PeakPss` that also keeps, for the sample with the highest sum, each
    process's PSS (MiB) by a short name: where the peak memory is."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.at_peak: dict[str, float] = {}
        self.uss_at_peak: dict[str, float] = {}
        self.started = time.monotonic()
        self.peak_at_s = 0.0

    def _sample(self) -> None:
        ps = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                procs = [ps, *ps.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            sizes: dict[str, float] = {}
            uss: dict[str, float] = {}
            for p in procs:
                try:
                    info = p.memory_full_info()
                    pss = info.pss
                    uss[_short_name(p)] = info.uss / 2**20
                    times = p.cpu_times()
                    self._cpu[p.pid] = times.user + times.system
                    name = _short_name(p)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                sizes[name] = sizes.get(name, 0.0) + pss / 2**20
            total = sum(sizes.values()) * 2**20
            if total > self.peak:
                self.peak, self.at_peak = int(total), sizes
                self.uss_at_peak = uss
                self.peak_at_s = time.monotonic() - self.started
            time.sleep(0.1)


def _short_name(proc: psutil.Process) -> str:
    cmd = " ".join(proc.cmdline())
    for marker, name in (("raylet", "raylet"), ("gcs_server", "gcs"), ("default_worker", "worker"),
                         ("dashboard", "dashboard"), ("runtime_env", "runtime_env"),
                         ("log_monitor", "log_monitor"), ("-c", "driver")):  # fmt: skip
        if marker in cmd:
            return f"{name}:{proc.pid}" if name == "worker" else name
    title = proc.name() if not cmd.startswith("ray::") else cmd.split()[0]
    return f"{title}:{proc.pid}" if title.startswith("ray::") else title


def run_build(code_root: Path, workspace: Path) -> dict[str, Any]:
    """Build the features of ``workspace`` with the package under ``code_root``."""
    _wait_for_exit()
    env = {**os.environ, "PYTHONPATH": str(code_root), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(workspace)],
        cwd=code_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    with PeakBreakdown(proc.pid) as sampled:
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"feature build under {code_root} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_mib"] = sampled.peak / 2**20
    result["cpu_s"] = sampled.cpu_seconds
    result["peak_at_s"] = round(sampled.peak_at_s, 1)
    result["at_peak_mib"] = {k: round(v) for k, v in sorted(sampled.at_peak.items())}
    result["uss_at_peak_mib"] = {k: round(v) for k, v in sorted(sampled.uss_at_peak.items())}
    return result


def _workspace(root: Path, n: int, name: str) -> Path:
    """A workspace of its own for ``name`` whose lake is the shared synthetic one."""
    lake = root / f"lake-{n}"
    if not (lake / "synth.done").exists():
        from synth import write_lake

        print(f"writing a lake of {n:,} events to {lake} ...", flush=True)
        write_lake(lake, n, ids="shop")
        (lake / "synth.done").write_text("ok\n")
    ws = root / f"{name}-{n}"
    (ws / "lake").mkdir(parents=True, exist_ok=True)
    for part in ("events", "items.parquet"):
        link = ws / "lake" / part
        if not link.exists():
            link.symlink_to(lake / "lake" / part)
    return ws


def _frame(path: Path) -> pd.DataFrame:
    """A table in key order (a day folder reads day by day; a base tree's file is sorted)."""
    from flywheel.features.day_parts import in_key_order

    table = pq.read_table(path)
    table = in_key_order(table, path.name.removesuffix(".parquet"))
    return table.drop(["created_timestamp"]).to_pandas()


def compare(base: Path, new: Path) -> list[Check]:
    """The tables both write are equal; new user_category = base's plus zero rows only."""
    from flywheel.features.day_parts import in_key_order

    checks = []
    for name in SHARED:
        left, right = _frame(base / f"{name}.parquet"), _frame(new / f"{name}.parquet")
        try:
            pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-9)
            checks.append(Check(f"{name} equal to the base build's", True, f"{len(left):,} rows"))
        except AssertionError as exc:
            checks.append(Check(f"{name} equal to the base build's", False, str(exc)[:200]))
    old = in_key_order(pq.read_table(base / "user_category.parquet"), "user_category")
    cats = in_key_order(pq.read_table(new / "user_category.parquet"), "user_category")
    old, cats = old.drop(["created_timestamp"]), cats.drop(["created_timestamp"])
    nonzero = cats.filter(pc.greater(cats["cat_views_7d"], 0))
    zero = cats.num_rows - nonzero.num_rows
    same = nonzero.num_rows == old.num_rows and nonzero.equals(old)
    detail = f"{old.num_rows:,} base rows + {zero:,} closing zero rows"
    checks.append(Check("user_category = base rows + zero rows", same, detail))
    return checks


def run(n: int, root: Path, base: Path, repeats: int, skip_base: bool = False) -> dict[str, Any]:
    spaces = {"base": _workspace(root, n, "base"), "new": _workspace(root, n, "new")}
    codes = {"base": base, "new": ROOT}
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "new": []}
    for r in range(repeats):
        for name in ("new",) if skip_base else ("base", "new"):
            m = run_build(codes[name], spaces[name])
            runs[name].append(m)
            print(
                f"  {n:>11,} {name:>4} run {r + 1}: {m['seconds']:7.1f} s "
                f"{m['cpu_s']:7.1f} CPU-s {m['peak_mib']:7.0f} MiB  phases {m['phases']}\n"
                f"      peak at {m['peak_at_s']} s: PSS {m['at_peak_mib']}\n"
                f"      USS {m['uss_at_peak_mib']}",
                flush=True,
            )
    if skip_base:  # iterating on the new build: the base tables of an earlier run
        runs["base"] = runs["new"]
    median = {
        name: {k: statistics.median(m[k] for m in ms) for k in ("seconds", "cpu_s", "peak_mib")}
        for name, ms in runs.items()
    }
    return {
        "events": n,
        "runs": runs,
        "median": median,
        "rows": {name: ms[-1]["rows"] for name, ms in runs.items()},
        "checks": compare(spaces["base"] / "features", spaces["new"] / "features"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--base", type=Path, required=True, help="worktree of the old code")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/tmp/flywheel-bench-v2"))
    parser.add_argument("--out", type=Path, default=Path("bench-out/feature_tables.json"))
    parser.add_argument(
        "--skip-base", action="store_true",
        help="run only the new build (checks against the base tables of an earlier run; "
        "no ratios)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = run(args.events, args.root, args.base, args.repeats, args.skip_base)
    med = result["median"]
    print(f"\n{'':>5} | {'wall s':>7} | {'CPU s':>7} | {'peak MiB':>8}")
    for name in ("base", "new"):
        m = med[name]
        print(f"{name:>5} | {m['seconds']:7.1f} | {m['cpu_s']:7.1f} | {m['peak_mib']:8.0f}")
    ratios = {k: med["new"][k] / med["base"][k] for k in ("seconds", "cpu_s", "peak_mib")}
    print("new / base: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    for name in ("base", "new"):
        print(f"rows {name}: {result['rows'][name]}")
    goals = [Target(f"new build peak MiB at {args.events:,} events", med["new"]["peak_mib"],
                    PEAK_TARGET_MIB, at_most=True, unit=" MiB")]  # fmt: skip
    verdicts = report_verdicts(goals, result["checks"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "result": result, "ratios": ratios, "targets": goals,
               "verdicts": verdicts, "seconds": time.perf_counter() - started}  # fmt: skip
    dump(str(args.out), payload)
    print(f"\nmachine: {payload['machine']}\nwrote {args.out}")
    return verdicts.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
