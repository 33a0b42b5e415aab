"""The serving benchmark's figures and verdicts: levels, log accounting, targets, checks, tables.

Pure functions on the levels of one run (``serving_bench.py`` measures them); the unit
tests (``tests/unit/test_bench_verdicts.py``) build levels by hand.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
from harness import Check, Target

K = 10
N_CANDIDATES = 50
#: Run in this order for each profile: every worker count, each service, every level.
WORKERS = (1, 2)
SERVICES = ("flywheel", "naive")
LEVELS = (1, 8, 32)
P99_TARGETS_MS = {1: 12.0, 8: 40.0}
THROUGHPUT_RATIO_TARGET = 3.0
THROUGHPUT_TARGET_CONCURRENCY = 8
#: Suffix of the string-id variant of a profile, and its targets against the int-id one.
SHOP = "-shop"
STRING_ID_RPS_MIN, STRING_ID_P99_MAX = 0.9, 1.1
#: Ours against the baseline tree's service (issue #11): at these workers, c=8 throughput
#: at least this ratio, c=1 p99 at most this ratio.
BASELINE_TARGET_WORKERS = 1
BASELINE_RPS_MIN, BASELINE_P99_MAX = 2.0, 1.0


@dataclass(frozen=True)
class LogAccount:
    """The prediction log against wrk's acknowledged responses, per request id."""

    acked_requests: int
    #: Records an acknowledged request returned that the log does not hold.
    lost_records: int
    #: Records of acknowledged requests for items they did not return (or repeated).
    extra_records: int
    #: Request ids acknowledged more than once (the service must issue each once).
    repeated_ids: int
    #: Requests in the log that wrk did not acknowledge (in flight when it stopped).
    unacked_requests: int
    logged_records: int


@dataclass(frozen=True)
class Level:
    """One wrk run against one service: counts, throughput and latency (ms)."""

    profile: str
    service: str
    workers: int
    concurrency: int
    seconds: float
    requests: int
    ok: int
    errors: int
    acked: int
    rps: float
    rps_per_worker: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    log: LogAccount | None
    #: A level of the baseline tree's service (``--baseline-tree``).
    baseline: bool = False
    #: CPU (user + system) of the whole server process tree per answered request, ms:
    #: less sensitive than rps to how much of a shared machine the service got.
    cpu_ms_per_request: float = math.nan


def account_log(acks: Sequence[tuple[str, Sequence[int]]], logged: pa.Table) -> LogAccount:
    """Check the log per request id: each acknowledged request has a record per served item.

    Args:
        acks: (request id, item ids returned) per acknowledged response.
        logged: prediction-log records (``request_id``, ``item_id``) written since the
            acknowledged requests were sent.
    """
    in_log: dict[str, Counter[int]] = defaultdict(Counter)
    ids, items = logged["request_id"].to_pylist(), logged["item_id"].to_pylist()
    for request_id, item in zip(ids, items, strict=True):
        in_log[request_id][item] += 1
    lost = extra = repeated = 0
    seen: set[str] = set()
    for request_id, served in acks:
        if request_id in seen:
            repeated += 1
            continue
        seen.add(request_id)
        want, have = Counter(served), in_log.get(request_id, Counter())
        lost += sum((want - have).values())
        extra += sum((have - want).values())
    return LogAccount(
        acked_requests=len(seen), lost_records=lost, extra_records=extra, repeated_ids=repeated,
        unacked_requests=len(in_log.keys() - seen), logged_records=logged.num_rows,
    )  # fmt: skip


# ---- verdicts and report -------------------------------------------------------------------


def _level(levels: list[Level], service: str, workers: int, c: int) -> Level | None:
    found = [
        lv for lv in levels if (lv.service, lv.workers, lv.concurrency) == (service, workers, c)
    ]
    return found[0] if found else None


def throughput_ratio(levels: list[Level], workers: int, c: int) -> float:
    """Flywheel's rps over naive's at the same workers and concurrency (NaN if missing)."""
    fly, naive = _level(levels, "flywheel", workers, c), _level(levels, "naive", workers, c)
    if fly is None or naive is None or naive.rps <= 0:
        return float("nan")
    return fly.rps / naive.rps


def _workers(levels: list[Level]) -> list[int]:
    return sorted({lv.workers for lv in levels})


def baseline_ratios(levels: list[Level], workers: int) -> tuple[float, float]:
    """Ours over the baseline tree's service at ``workers``: (rps at c=8, p99 at c=1); NaN
    where a level is missing."""
    base = [lv for lv in levels if lv.baseline]
    name = base[0].service if base else ""
    c = THROUGHPUT_TARGET_CONCURRENCY
    fly, old = _level(levels, "flywheel", workers, c), _level(base, name, workers, c)
    rps = float("nan") if fly is None or old is None or old.rps <= 0 else fly.rps / old.rps
    fly, old = _level(levels, "flywheel", workers, 1), _level(base, name, workers, 1)
    p99 = float("nan") if fly is None or old is None or old.p99_ms <= 0 else fly.p99_ms / old.p99_ms
    return rps, p99


def baseline_targets(levels: list[Level], profile: str) -> list[Target]:
    """Issue #11's targets against the baseline tree, at BASELINE_TARGET_WORKERS."""
    base = [lv for lv in levels if lv.baseline]
    if not base:
        return []
    w, name = BASELINE_TARGET_WORKERS, base[0].service
    rps, p99 = baseline_ratios(levels, w)
    c = THROUGHPUT_TARGET_CONCURRENCY
    return [
        Target(f"{profile} throughput c={c} {w}w flywheel / {name}", rps, BASELINE_RPS_MIN,
               at_most=False, unit="x"),
        Target(f"{profile} p99 c=1 {w}w flywheel / {name}", p99, BASELINE_P99_MAX,
               at_most=True, unit="x"),
    ]  # fmt: skip


def targets(levels: list[Level]) -> list[Target]:
    """The targets of every profile in ``levels``, from the figures of this run only."""
    out = []
    for profile in dict.fromkeys(lv.profile for lv in levels):
        mine = [lv for lv in levels if lv.profile == profile]
        if profile.endswith(SHOP):
            out += string_id_targets(levels, profile)
            continue
        out += baseline_targets(mine, profile)
        for w in _workers(mine):
            for c, limit in P99_TARGETS_MS.items():
                lv = _level(mine, "flywheel", w, c)
                p99 = float("nan") if lv is None else lv.p99_ms
                out.append(
                    Target(f"{profile} p99 c={c} {w}w", p99, limit, at_most=True, unit=" ms")
                )
            c = THROUGHPUT_TARGET_CONCURRENCY
            if _level(mine, "naive", w, c) is None:
                continue  # naive not run (--services)
            ratio = throughput_ratio(mine, w, c)
            name = f"{profile} throughput c={c} {w}w flywheel / naive {w}w"
            out.append(Target(name, ratio, THROUGHPUT_RATIO_TARGET, at_most=False, unit="x"))
    return out


def string_id_targets(levels: list[Level], profile: str) -> list[Target]:
    """The string-id profile against its integer-id twin, at equal workers."""
    twin = profile.removesuffix(SHOP)
    out = []
    for w in _workers([lv for lv in levels if lv.profile == profile]):
        c = THROUGHPUT_TARGET_CONCURRENCY
        a = _level([lv for lv in levels if lv.profile == profile], "flywheel", w, c)
        b = _level([lv for lv in levels if lv.profile == twin], "flywheel", w, c)
        ratio = float("nan") if a is None or b is None or b.rps <= 0 else a.rps / b.rps
        name = f"{profile} throughput c={c} {w}w / {twin}"
        out.append(Target(name, ratio, STRING_ID_RPS_MIN, at_most=False, unit="x"))
        a = _level([lv for lv in levels if lv.profile == profile], "flywheel", w, 1)
        b = _level([lv for lv in levels if lv.profile == twin], "flywheel", w, 1)
        ratio = float("nan") if a is None or b is None or b.p99_ms <= 0 else a.p99_ms / b.p99_ms
        out.append(
            Target(f"{profile} p99 c=1 {w}w / {twin}", ratio, STRING_ID_P99_MAX, at_most=True,
                   unit="x")
        )  # fmt: skip
    return out


def _where(lv: Level) -> str:
    return f"{lv.service} {lv.workers}w c={lv.concurrency}"


def checks(levels: list[Level]) -> list[Check]:
    """Errors, wrk's count against its acknowledgements, and the prediction log, per profile."""
    out = []
    for profile in dict.fromkeys(lv.profile for lv in levels):
        mine = [lv for lv in levels if lv.profile == profile]
        bad = [f"{_where(lv)}: {lv.errors}" for lv in mine if lv.errors]
        out.append(Check(f"{profile}: no HTTP or socket errors", not bad, "; ".join(bad)))
        bad = [f"{_where(lv)}: {lv.ok} vs {lv.acked}" for lv in mine if lv.ok != lv.acked]
        out.append(
            Check(f"{profile}: wrk's 2xx count = responses recorded", not bad, "; ".join(bad))
        )
        accounts = [lv.log for lv in mine if lv.log is not None]
        lost = sum(a.lost_records for a in accounts)
        extra = sum(a.extra_records for a in accounts)
        repeated = sum(a.repeated_ids for a in accounts)
        detail = (
            f"{sum(a.acked_requests for a in accounts):,} acknowledged requests at "
            f"{len(accounts)} levels: {lost} records lost, {extra} extra, {repeated} ids "
            f"repeated; {sum(a.unacked_requests for a in accounts)} unacknowledged requests logged"
        )
        passed = bool(accounts) and lost == extra == repeated == 0
        out.append(
            Check(f"{profile}: every acknowledged request logged, all items", passed, detail)
        )
    return out


def print_table(profile: str, levels: list[Level]) -> None:
    """One table per profile, then the throughput ratios at equal workers."""
    head = ("c", "service", "workers", "requests", "rps", "rps/worker", "p50 ms", "p99 ms",
            "cpu ms/req", "errors", "lost", "unacked")  # fmt: skip
    print(f"\n/rank, {N_CANDIDATES} candidates, k={K}, online store: {profile}")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for lv in levels:
        lost = "-" if lv.log is None else str(lv.log.lost_records)
        unacked = "-" if lv.log is None else str(lv.log.unacked_requests)
        row = (lv.concurrency, lv.service, lv.workers, lv.requests, f"{lv.rps:.1f}",
               f"{lv.rps_per_worker:.1f}", f"{lv.p50_ms:.1f}", f"{lv.p99_ms:.1f}",
               f"{lv.cpu_ms_per_request:.2f}", lv.errors, lost, unacked)  # fmt: skip
        print("| " + " | ".join(map(str, row)) + " |")
    if any(lv.service == "naive" for lv in levels):
        print("\nflywheel / naive throughput, same workers and concurrency:")
        for w in _workers(levels):
            ratios = ", ".join(f"c={c} {throughput_ratio(levels, w, c):.2f}x" for c in LEVELS)
            print(f"  {w} worker(s): {ratios}")
    base = [lv for lv in levels if lv.baseline]
    if base:
        print(f"\nflywheel / {base[0].service}, same workers:")
        for w in _workers(levels):
            rps, p99 = baseline_ratios(levels, w)
            c = THROUGHPUT_TARGET_CONCURRENCY
            fly, old = _level(levels, "flywheel", w, c), _level(base, base[0].service, w, c)
            cpu = math.nan if fly is None or old is None else (
                old.cpu_ms_per_request / fly.cpu_ms_per_request)  # fmt: skip
            print(f"  {w} worker(s): throughput c={c} {rps:.2f}x, p99 c=1 {p99:.2f}x; "
                  f"server CPU per request at c={c}: baseline / ours {cpu:.2f}x")  # fmt: skip
