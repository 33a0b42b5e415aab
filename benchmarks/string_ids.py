"""Benchmark: what string ids cost, against the integer-id code, in the same run.

    python benchmarks/string_ids.py --events 1000000 10000000 --base /work/base
    python benchmarks/string_ids.py --events --cycle-events 10000000 --cycle-repeats 2 \
        --base /work/base

Three contenders build the features of the same synthetic lake (``synth.py``, same seed,
so the same events, users and items), each in a fresh process with peak PSS sampled for
the whole process tree (Ray included):

* ``int``: the code before ids became strings (a git worktree of that commit, ``--base``;
  ``git worktree add --detach /work/base d74add5``) on the lake with int64 ids;
* ``text``: this code on the same ids as decimal text (what ingest makes of integer ids);
* ``shop``: this code on shop-like string ids (``u1000042``, ``sku-00017``).

With ``--cycle-events N`` it also runs one whole ``flywheel cycle`` (kfp.local, all eight
stages, caching off) per contender on a simulated shop of ~N events (the simulator with
``plain``/``shop`` naming; the old code's simulator writes int64 ids), ``--cycle-repeats``
times.

Contenders run interleaved, in an order rotated every round (int, text, shop; text, shop,
int; ...), ``--repeats`` times and the median is compared, so a load change on a shared
machine hits all three. Besides wall time, each run reports the CPU seconds of its whole
process tree (Ray's workers included): on a machine shared with other jobs that figure
moves far less than wall time, so both are compared. Target: ``text`` and
``shop`` within 10% of ``int`` in time and peak memory. Before the ratios count, the
tables of ``shop`` and ``int`` are compared cell for cell (ids mapped back to numbers);
a mismatch prints FAILED and exits non-zero.
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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from harness import PeakPss  # noqa: E402

STYLES = ("int", "text", "shop")
TARGET = 1.10
TABLES = ("user_activity", "user_category", "item_activity", "item_catalog")

_CHILD = """
import json, sys, time
from pathlib import Path
from flywheel.config import Settings
from flywheel.features import build_features
from flywheel.ray_runtime import shutdown_ray
start = time.perf_counter()
summary = build_features(Settings(workspace=Path(sys.argv[1])))
seconds = time.perf_counter() - start
shutdown_ray()
print(json.dumps({"seconds": seconds, "rows": summary.rows, "phases": summary.seconds}))
"""


_CYCLE_CHILD = """
import json, sys, time
from pathlib import Path
raw, workspace, naming, n_events = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
mode = sys.argv[5]
from flywheel.simulate import make_world, simulate_events, users_for_events
if mode == "simulate" and not (Path(raw) / "simulated").exists():
    kwargs = {}
    if naming != "int":
        from flywheel.simulate import NAMINGS
        kwargs["naming"] = NAMINGS[naming]
    world = make_world(users_for_events(n_events, 14), 2000, seed=0, **kwargs)
    simulate_events(world, 14, raw, seed=0)
    (Path(raw) / "simulated").write_text("ok")
if mode == "simulate":
    print(json.dumps({}))
    sys.exit(0)
from flywheel.config import Settings
from flywheel.cycle import run_cycle
start = time.perf_counter()
summary = run_cycle(Settings(workspace=workspace), str(Path(raw) / "events"),
                    str(Path(raw) / "items.parquet"), window_days=14.0, seed=0, caching=False)
stages = {s.stage: s.seconds for s in summary.stages}
print(json.dumps({"seconds": time.perf_counter() - start, "stages": stages,
                  "statuses": [s.status for s in summary.stages]}))
"""


def run_build(code_root: Path, workspace: Path) -> dict[str, Any]:
    """Build features of ``workspace`` with the package under ``code_root``; time + peak."""
    return _run_child(code_root, [_CHILD, str(workspace)])


def run_cycle(code_root: Path, raw: Path, workspace: Path, naming: str, n: int) -> dict[str, Any]:
    """Simulate (once, in a process of its own: not in the figures), then run one cycle
    with the package under ``code_root``."""
    args = [_CYCLE_CHILD, str(raw), str(workspace), naming, str(n)]
    _run_child(code_root, [*args, "simulate"])
    return _run_child(code_root, [*args, "cycle"])


#: Processes of the contenders run so far (Ray's among them), by PID.
_EARLIER: set[int] = set()


def _wait_for_exit(timeout_s: float = 30.0) -> None:
    """Wait until every process of an earlier contender is gone: a raylet still tearing
    down would slow whichever contender runs next (other users' Ray processes on a shared
    machine are not waited for)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [pid for pid in _EARLIER if psutil.pid_exists(pid)]
        if not alive:
            return
        time.sleep(0.5)


def _run_child(code_root: Path, args: list[str]) -> dict[str, Any]:
    """Run ``python -c ARGS`` with ``code_root`` first on the path; JSON result + peak PSS."""
    _wait_for_exit()
    env = {**os.environ, "PYTHONPATH": str(code_root), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", *args],
        cwd=code_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    with PeakPss(proc.pid) as sampled:
        out, _ = proc.communicate()
    peak, cpu = sampled.peak, sampled.cpu_seconds
    _EARLIER.update(sampled.pids)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[1:]} under {code_root} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_mib"] = peak / 2**20
    result["cpu_s"] = cpu
    return result


def _as_numbers(table: pa.Table) -> pa.Table:
    """Shop-style or text ids as int64 (``u1000042`` -> 1000042), for comparing with int."""
    for name in ("user_id", "item_id"):
        if name in table.column_names and pa.types.is_string(table[name].type):
            digits = pc.replace_substring_regex(table[name], r"^[^0-9]*", "")
            idx = table.schema.get_field_index(name)
            table = table.set_column(idx, name, pc.cast(digits, pa.int64()))
    return table


def tables_equal(left: Path, right: Path) -> dict[str, bool]:
    """Each feature table of two builds equal cell for cell (ids as numbers, rows sorted;
    nullability aside: the old code's int64 id columns were written non-null)."""
    out = {}
    for name in TABLES:
        a = _as_numbers(pq.read_table(left / f"{name}.parquet").drop(["created_timestamp"]))
        b = _as_numbers(pq.read_table(right / f"{name}.parquet").drop(["created_timestamp"]))
        keys = [(c, "ascending") for c in a.column_names if c in ("user_id", "item_id")]
        keys += [(c, "ascending") for c in ("category", "event_timestamp") if c in a.column_names]
        try:  # floats to 1e-9 relative: window sums run over rows in another id order
            pd.testing.assert_frame_equal(
                a.sort_by(keys).to_pandas(), b.sort_by(keys).to_pandas(), rtol=1e-9
            )
            out[name] = True
        except AssertionError as exc:
            print(f"  {name}: tables differ: {str(exc)[:300]}")
            out[name] = False
    return out


def run_size(n: int, root: Path, base: Path, repeats: int) -> dict[str, Any]:
    from synth import write_lake

    spaces = {}
    for style in STYLES:
        ws = root / f"ids-{n}-{style}"
        if not (ws / "synth.done").exists():
            print(f"writing a lake of {n:,} events ({style} ids) to {ws} ...", flush=True)
            write_lake(ws, n, ids=style)
            (ws / "synth.done").write_text("ok\n")
        spaces[style] = ws
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in STYLES}
    for r in range(repeats):
        for style in STYLES[r % 3 :] + STYLES[: r % 3]:  # rotated: no contender always first
            code = base if style == "int" else ROOT
            m = run_build(code, spaces[style])
            runs[style].append(m)
            print(
                f"  {n:>11,} {style:>4} run {r + 1}: {m['seconds']:7.1f} s "
                f"{m['cpu_s']:7.1f} CPU-s {m['peak_mib']:7.0f} MiB",
                flush=True,
            )
    equal = tables_equal(spaces["int"] / "features", spaces["shop"] / "features")
    equal_text = tables_equal(spaces["int"] / "features", spaces["text"] / "features")
    median = {
        s: {
            "seconds": statistics.median(m["seconds"] for m in runs[s]),
            "cpu_s": statistics.median(m["cpu_s"] for m in runs[s]),
            "peak_mib": statistics.median(m["peak_mib"] for m in runs[s]),
        }
        for s in STYLES
    }
    return {"events": n, "runs": runs, "median": median, "equal": equal, "equal_text": equal_text}


def cycle_size(n: int, root: Path, base: Path, repeats: int = 1) -> dict[str, Any]:
    """``repeats`` cycles per contender on a simulated shop of ~``n`` events, the order
    rotated every round as for the builds; medians per contender."""
    import shutil

    rounds: dict[str, list[dict[str, Any]]] = {style: [] for style in STYLES}
    for r in range(repeats):
        for style in STYLES[r % len(STYLES) :] + STYLES[: r % len(STYLES)]:
            raw, ws = root / f"cycle-{n}-{style}" / "raw", root / f"cycle-{n}-{style}" / "ws"
            shutil.rmtree(ws, ignore_errors=True)
            naming = {"int": "int", "text": "plain", "shop": "shop"}[style]
            m = run_cycle(base if style == "int" else ROOT, raw, ws, naming, n)
            rounds[style].append(m)
            print(f"  cycle {n:>11,} {style:>4} round {r + 1}: {m['seconds']:7.1f} s "
                  f"{m['cpu_s']:7.1f} CPU-s {m['peak_mib']:7.0f} MiB "
                  f"{m['statuses']}", flush=True)  # fmt: skip
    runs = {
        style: {
            **{k: statistics.median(m[k] for m in ms) for k in ("seconds", "cpu_s", "peak_mib")},
            "statuses": sorted({s for m in ms for s in m["statuses"]}),
        }
        for style, ms in rounds.items()
    }
    return {"events": n, "repeats": repeats, "cycle": runs, "rounds": rounds}


def cycle_verdicts(result: dict[str, Any]) -> list[str]:
    runs, lines = result["cycle"], []
    for style in ("text", "shop"):
        for what in ("seconds", "cpu_s", "peak_mib"):
            ratio = runs[style][what] / runs["int"][what]
            ok = all(s in ("ran", "skipped") for s in runs[style]["statuses"])
            verdict = ("met" if ratio <= TARGET else "MISSED") if ok else "FAILED"
            lines.append(
                f"cycle {result['events']:>11,} | {style:>4} vs int | {what:>8} | "
                f"{runs[style][what]:9.1f} vs {runs['int'][what]:9.1f} | {ratio:5.3f}x | "
                f"<= {TARGET:.2f}x {verdict}"
            )
    return lines


def verdicts(result: dict[str, Any]) -> list[str]:
    """One line per (style, measure): ratio to ``int`` and met / MISSED / FAILED."""
    med, lines = result["median"], []
    ok = all(result["equal"].values()) and all(result["equal_text"].values())
    for style in ("text", "shop"):
        for what in ("seconds", "cpu_s", "peak_mib"):
            ratio = med[style][what] / med["int"][what]
            verdict = "FAILED" if not ok else ("met" if ratio <= TARGET else "MISSED")
            lines.append(
                f"{result['events']:>11,} | {style:>4} vs int | {what:>8} | "
                f"{med[style][what]:9.1f} vs {med['int'][what]:9.1f} | {ratio:5.3f}x | "
                f"<= {TARGET:.2f}x {verdict}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--base", type=Path, required=True, help="worktree of the int-id code")
    parser.add_argument("--root", type=Path, default=Path("/tmp/flywheel-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-out/string_ids.json"))
    parser.add_argument("--cycle-events", type=int, nargs="*", default=[])
    parser.add_argument("--cycle-repeats", type=int, default=1)
    args = parser.parse_args()
    if not (args.base / "flywheel" / "features").is_dir():
        parser.error(f"--base {args.base} is not a checkout of flywheel")
    results = [run_size(n, args.root, args.base, args.repeats) for n in args.events]
    cycles = [cycle_size(n, args.root, args.base, args.cycle_repeats) for n in args.cycle_events]
    print()
    failed = False
    for c in cycles:
        lines = cycle_verdicts(c)
        failed |= any(line.endswith("FAILED") for line in lines)
        print("\n".join(lines))
    for r in results:
        if not (all(r["equal"].values()) and all(r["equal_text"].values())):
            failed = True
            print(
                f"FAILED: tables differ at {r['events']:,} events: {r['equal']} {r['equal_text']}"
            )
        for line in verdicts(r):
            print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": " ".join(os.uname()), "results": results, "cycles": cycles}, indent=2
        )
    )
    print(f"\nwrote {args.out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
