"""Benchmark: what logging every candidate (``serving.log_candidates``) costs per request.

    python benchmarks/candidate_log_cost.py --requests 5000 --out bench-out/candidate_log_cost.json

In-process, no server: the serving request's record/write path as ``RankingService.rank``
runs it after scoring. Baseline (served only): :func:`_prediction_records` for the served
slots + one :meth:`LogWriter.append`. Contender: the same plus :func:`_candidate_record` +
one more ``append`` to the candidate log. Both write real files (a scratch directory) and
run in the same process, interleaved in ``--rounds`` rounds of ``--requests`` each; the
per-request figure is the median round's. Per feature service (``ranking_v1``: 11 raw
features, ``ranking_v2``: 41) with ``--candidates`` candidates and ``--slots`` served.

The features are synthetic but shaped like serving's: the user's own columns (user
activity) shared by every candidate; item columns differing per candidate (counts as whole
numbers, prices and rates as full-precision floats, the longest JSON); the user x item
history missing for 90% of candidates; five categories.

Reported: microseconds per request of each path, the added time and the ratio, log bytes
per request of each log. Target: the added time is at most 10% of the service's CPU per
request measured by ``serving_bench.py`` (2.9 ms with a ranking_v2 champion, RESULTS.md,
2026-12-02), i.e. <= 290 us. Checks (FAILED): the candidate log reads back (every request,
the features decoding to the columns written).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import Check, Target, finish

from flywheel.config import Settings
from flywheel.predlog import LogWriter, log_dir, read_candidate_logs
from flywheel.ranking import feature_set
from flywheel.serving.exploration import epsilon_greedy
from flywheel.serving.records import (
    _candidate_record,
    _prediction_records,
    candidate_columns,
    raw_matrix,
)

T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
SERVICE_CPU_MS = 2.9  # serving_bench.py, ranking_v2 champion, 1 worker (RESULTS.md)
TARGET_SHARE = 0.10


def features(service: str, n: int, rng: np.random.Generator) -> dict[str, Any]:
    """Serving's feature columns for ``n`` candidates of one user (see the docstring)."""
    cols: dict[str, Any] = {"item_id": [f"sku-{i:06d}" for i in rng.choice(10**6, n)],
                            "category": [f"cat-{c}" for c in rng.integers(0, 5, n)]}  # fmt: skip
    for name in feature_set(service).raw:
        item_side = name.startswith(("item_", "cat_", "price")) or name in ("cat_affinity_7d",)
        if name.startswith("ui_"):
            values = np.where(rng.random(n) < 0.9, np.nan, rng.integers(1, 5, n).astype(float))
        elif item_side and ("rate" in name or "price" in name or "trend" in name
                            or "affinity" in name):  # fmt: skip
            values = rng.uniform(0.0, 80.0, n)
        elif item_side:
            values = rng.integers(0, 500, n).astype(float)
        else:  # the user's own: one value for every candidate
            value = rng.uniform(0, 1) if "rate" in name else float(rng.integers(0, 40))
            values = np.full(n, T0.timestamp() - 3600.0 if name.endswith("_unix") else value)
        cols[name] = values
    return cols


def run_path(
    root: Path, service: str, args: argparse.Namespace, with_candidates: bool, seed: int
) -> tuple[float, int, int]:
    """Seconds per request, prediction-log bytes and candidate-log bytes over ``requests``."""
    rng = np.random.default_rng(seed)
    raw = feature_set(service).raw
    requests = [(features(service, args.candidates, rng), rng.random(args.candidates))
                for _ in range(50)]  # fmt: skip
    settings = Settings(workspace=root)
    predictions = LogWriter(log_dir(settings, "predictions"), "predictions")
    candidates = LogWriter(log_dir(settings, "candidates"), "candidates")
    sizes = [0, 0]
    started = time.perf_counter()
    for n in range(args.requests):
        cols, scores = requests[n % len(requests)]
        slate = epsilon_greedy(scores, args.slots, 0.1, rng)
        rid, at = f"req-{n}", T0 + timedelta(milliseconds=n)
        # as RankingService.rank: one raw matrix for both records when candidates are logged
        matrix = raw_matrix(cols, raw) if with_candidates else None
        sizes[0] += predictions.append(
            _prediction_records(rid, at, "user-1", "m:1", cols, scores, slate, raw=raw,
                                matrix=matrix)
        )  # fmt: skip
        if with_candidates:
            record = _candidate_record(rid, at, "user-1", "m:1", cols, scores, slate, 0.1,
                                       raw=raw, matrix=matrix)  # fmt: skip
            sizes[1] += candidates.append([record])
    seconds = time.perf_counter() - started
    predictions.close()
    candidates.close()
    return seconds / args.requests, sizes[0], sizes[1]


def reads_back(root: Path, service: str, args: argparse.Namespace, seed: int) -> bool:
    """The candidate log of one contender round holds every request, and its first record
    decodes to the columns written, bit for bit."""
    table = read_candidate_logs(Settings(workspace=root))
    if table.num_rows != args.requests:
        return False
    first = table.slice(0, 1).to_pylist()[0]
    written = features(service, args.candidates, np.random.default_rng(seed))
    back = candidate_columns(first)
    same = all(
        np.array_equal(back[n], written[n], equal_nan=True) for n in feature_set(service).raw
    )
    return (
        same
        and first["item_ids"] == written["item_id"]
        and first["candidates"] == len(back["category"])
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=50, help="serving's default set")
    parser.add_argument("--slots", type=int, default=10, help="serving's default k")
    parser.add_argument("--out", type=Path, default=Path("bench-out/candidate_log_cost.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    table: dict[str, dict[str, float]] = {}
    readable = True
    with tempfile.TemporaryDirectory(prefix="cand-cost-") as tmp:
        for service in ("ranking_v1", "ranking_v2"):
            times: dict[bool, list[float]] = {False: [], True: []}
            sizes: dict[bool, tuple[int, int]] = {}
            for r in range(args.rounds):
                for with_candidates in (False, True):
                    root = Path(tmp) / f"{service}-{r}-{with_candidates}"
                    s, pred, cand = run_path(root, service, args, with_candidates, seed=r)
                    times[with_candidates].append(s)
                    sizes[with_candidates] = (pred, cand)
                    if with_candidates:
                        readable &= reads_back(root, service, args, seed=r)
            base, cont = statistics.median(times[False]), statistics.median(times[True])
            table[service] = {
                "served_only_us": base * 1e6,
                "with_candidates_us": cont * 1e6,
                "added_us": (cont - base) * 1e6,
                "ratio": cont / base,
                "prediction_bytes_per_request": sizes[True][0] / args.requests,
                "candidate_bytes_per_request": sizes[True][1] / args.requests,
            }
            row = table[service]
            row["bytes_ratio"] = (
                row["prediction_bytes_per_request"] + row["candidate_bytes_per_request"]
            ) / row["prediction_bytes_per_request"]
            print(f"{service}: served only {row['served_only_us']:.0f} us, with candidates "
                  f"{row['with_candidates_us']:.0f} us (+{row['added_us']:.0f} us, "
                  f"{row['ratio']:.2f}x); bytes/request: predictions "
                  f"{row['prediction_bytes_per_request']:.0f}, candidates "
                  f"{row['candidate_bytes_per_request']:.0f} ({row['bytes_ratio']:.2f}x "
                  "the served log)", flush=True)  # fmt: skip
    limit = TARGET_SHARE * SERVICE_CPU_MS * 1000
    targets = [
        Target(f"added time {service}", row["added_us"], limit, at_most=True, unit=" us")
        for service, row in table.items()
    ]
    checks = [Check("the candidate log reads back", readable)]
    return finish(args.out, args, started, targets, checks, table=table)


if __name__ == "__main__":
    raise SystemExit(main())
