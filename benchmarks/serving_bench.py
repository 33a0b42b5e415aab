"""Benchmark: the Flywheel ranking service against a naive BentoML baseline, under wrk.

    python benchmarks/serving_bench.py --out bench-out/serving.json

For each online-store profile (``sqlite``; ``redis`` on a throwaway ``redis-server``) it
builds a small fresh world in its own workspace (``serving_world.py``), then for each worker
count (1, 2) and each service starts a real ``bentoml serve`` on loopback with that many
workers and drives ``POST /rank`` (50 explicit candidates, k=10) with **wrk** from a separate
process at each concurrency level for ``--duration`` seconds (``wrk.py``: 300 pre-made bodies
of random users and candidates). Both services run with the same worker count at every
level, one after the other, and every ratio compares the two at equal workers and
concurrency; ``rps/worker`` is the throughput per worker process.

Services: ``flywheel`` (``serving/service.py``, default options) and ``naive``
(``benchmarks/naive_service.py``). Adding a variant (another service, other settings) is a
name in ``SERVICES`` and a branch in ``service_command``.

Prediction log, per request id: wrk records the request id and item ids of every HTTP 200
it counted; after each Flywheel level the log records written since the level started are
read back (``flywheel.predlog.read_prediction_logs``) and every acknowledged request must
have one record per item it returned (``lost`` counts the missing ones). ``unacked``
counts requests in the log that wrk did not acknowledge (in flight when wrk stopped, then
answered and logged: at most the concurrency); they cannot offset a loss.

String ids (``--string-ids``): after each profile, ``<profile>-shop`` runs the Flywheel
service again on a world whose ids are shop-like strings (``u42``, ``sku-17``) and bodies
that send them, against ``<profile>`` whose clients send JSON integers (stored as their
decimal text); target: throughput at c=8 >= 0.9x and p99 at c=1 <= 1.1x the integer-id
figures, at equal workers, same run.

Checks (any failure prints FAILED and exits 1): no HTTP or socket errors, wrk's 2xx count
equals the responses it recorded, no lost prediction-log records. Targets (met / missed):
p99 <= 12 ms at c=1 and <= 40 ms at c=8, throughput >= 3x naive at c=8, each per profile
and worker count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Check, Target, dump, machine, report_verdicts
from serving_world import N_ITEMS, N_USERS, build_world
from wrk import WrkRun, rank_bodies, run_wrk, write_lua

from flywheel.config import Settings

log = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parent
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


# ---- services ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_command(
    settings: Settings, service: str, port: int, workers: int
) -> tuple[list[str], dict[str, str]]:
    """``bentoml serve`` argv and environment for the Flywheel service or the naive one."""
    from flywheel.serving import serve_command

    argv, env = serve_command(settings, port=port, workers=workers)
    if service == "naive":
        argv[argv.index("serving.service:Ranker")] = "naive_service:NaiveRanker"
        argv[argv.index("--working-dir") + 1] = str(BENCH_DIR)
        env["BENTOML_CONFIG_OVERRIDES"] = json.dumps(
            {"services": {"NaiveRanker": {"workers": workers}}}
        )
    return argv, env


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server and its workers by PID (each worker has a session of its own)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(process.pid)
        for member in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGKILL)
    process.wait(30)


@contextlib.contextmanager
def running(settings: Settings, service: str, workers: int, logfile: Path) -> Iterator[str]:
    """A started, ready service; yields its URL and kills it afterwards."""
    from flywheel.serving import wait_ready

    port = _free_port()
    argv, env = service_command(settings, service, port, workers)
    with logfile.open("ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            waited = wait_ready(url, timeout_s=120, process=process)
            log.info("%s (%d worker(s)) ready in %.1f s", service, workers, waited)
            yield url
        finally:
            stop(process)


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A throwaway, non-persistent ``redis-server`` on loopback; yields ``host:port``."""
    import redis

    port = _free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(folder)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


# ---- measuring -----------------------------------------------------------------------------


def measure_level(
    settings: Settings, profile: str, service: str, workers: int, url: str,
    script: Path, concurrency: int, duration_s: int, acks: Path,
) -> Level:  # fmt: skip
    """One wrk run; for Flywheel, the prediction-log records it added, per request id."""
    from flywheel.predlog import read_prediction_logs

    started = datetime.now(UTC)
    s: WrkRun = run_wrk(url, script, concurrency, duration_s, acks)
    account = None
    if service == "flywheel":
        time.sleep(1.0)  # requests in flight when wrk stopped finish and log (the unacked)
        account = account_log(s.acks, read_prediction_logs(settings, since=started))
    seconds = s.duration_us / 1e6
    return Level(
        profile=profile, service=service, workers=workers, concurrency=concurrency,
        seconds=round(seconds, 2), requests=s.requests, ok=s.ok, errors=s.errors,
        acked=len(s.acks), rps=round(s.ok / seconds, 1),
        rps_per_worker=round(s.ok / seconds / workers, 1), p50_ms=s.p50 / 1e3,
        p90_ms=s.p90 / 1e3, p99_ms=s.p99 / 1e3, max_ms=s.max / 1e3, log=account,
    )  # fmt: skip


def bench_service(
    settings: Settings, profile: str, service: str, workers: int, script: Path,
    duration_s: int, root: Path,
) -> list[Level]:  # fmt: skip
    """Start ``service`` with ``workers`` workers, warm it up, run every level of LEVELS."""
    logfile = root / f"{profile}-{service}-{workers}w.log"
    levels = []
    with running(settings, service, workers, logfile) as url:
        run_wrk(url, script, 2, 2, root / "warm-up.acks")  # imports, first reads, pools
        time.sleep(1.0)  # its last requests finish before the next level starts
        for c in LEVELS:
            acks = root / f"{profile}-{service}-{workers}w-c{c}.acks"
            level = measure_level(
                settings, profile, service, workers, url, script, c, duration_s, acks
            )
            log.info("%s", level)
            levels.append(level)
    return levels


def bench_profile(
    profile: str, settings: Settings, script: Path, duration_s: int, root: Path
) -> list[Level]:
    """Build the world in ``settings``, then every worker count x service x level."""
    start = time.perf_counter()
    shop = profile.endswith(SHOP)
    build_world(settings, ids="shop" if shop else "int")
    log.info("%s: world built in %.1f s", profile, time.perf_counter() - start)
    levels = []
    for workers in WORKERS:
        for service in ("flywheel",) if shop else SERVICES:
            levels += bench_service(settings, profile, service, workers, script, duration_s, root)
    return levels


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


def targets(levels: list[Level]) -> list[Target]:
    """The targets of every profile in ``levels``, from the figures of this run only."""
    out = []
    for profile in dict.fromkeys(lv.profile for lv in levels):
        mine = [lv for lv in levels if lv.profile == profile]
        if profile.endswith(SHOP):
            out += string_id_targets(levels, profile)
            continue
        for w in WORKERS:
            for c, limit in P99_TARGETS_MS.items():
                lv = _level(mine, "flywheel", w, c)
                p99 = float("nan") if lv is None else lv.p99_ms
                out.append(
                    Target(f"{profile} p99 c={c} {w}w", p99, limit, at_most=True, unit=" ms")
                )
            c = THROUGHPUT_TARGET_CONCURRENCY
            ratio = throughput_ratio(mine, w, c)
            name = f"{profile} throughput c={c} {w}w flywheel / naive {w}w"
            out.append(Target(name, ratio, THROUGHPUT_RATIO_TARGET, at_most=False, unit="x"))
    return out


def string_id_targets(levels: list[Level], profile: str) -> list[Target]:
    """The string-id profile against its integer-id twin, at equal workers."""
    twin = profile.removesuffix(SHOP)
    out = []
    for w in WORKERS:
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
            "errors", "lost", "unacked")  # fmt: skip
    print(f"\n/rank, {N_CANDIDATES} candidates, k={K}, online store: {profile}")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for lv in levels:
        lost = "-" if lv.log is None else str(lv.log.lost_records)
        unacked = "-" if lv.log is None else str(lv.log.unacked_requests)
        row = (lv.concurrency, lv.service, lv.workers, lv.requests, f"{lv.rps:.1f}",
               f"{lv.rps_per_worker:.1f}", f"{lv.p50_ms:.1f}", f"{lv.p99_ms:.1f}", lv.errors,
               lost, unacked)  # fmt: skip
        print("| " + " | ".join(map(str, row)) + " |")
    print("\nflywheel / naive throughput, same workers and concurrency:")
    for w in WORKERS:
        ratios = ", ".join(f"c={c} {throughput_ratio(levels, w, c):.2f}x" for c in LEVELS)
        print(f"  {w} worker(s): {ratios}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-out/serving.json")
    parser.add_argument("--duration", type=int, default=15, help="seconds per level")
    parser.add_argument("--bodies", type=int, default=300)
    parser.add_argument("--profiles", nargs="+", default=["sqlite", "redis"])
    parser.add_argument("--root", help="working folder (default: a temporary one, removed)")
    parser.add_argument(
        "--string-ids", action="store_true", help="also run each profile with string ids"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    root = Path(args.root or tempfile.mkdtemp(prefix="serving-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    bodies = rank_bodies(args.bodies, N_USERS, N_ITEMS, N_CANDIDATES, K)
    script = write_lua(root / "rank.lua", bodies)
    shop_bodies = rank_bodies(args.bodies, N_USERS, N_ITEMS, N_CANDIDATES, K, ids="shop")
    shop_script = write_lua(root / "rank-shop.lua", shop_bodies)
    profiles = [
        p for base in args.profiles for p in ([base, base + SHOP] if args.string_ids else [base])
    ]
    machine_before = machine()
    levels: list[Level] = []
    try:
        for profile in profiles:
            lua = shop_script if profile.endswith(SHOP) else script
            mine = run_profile(profile, root, lua, args.duration)
            print_table(profile, mine)
            levels += mine
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    print()
    goals, checked = targets(levels), checks(levels)
    verdicts = report_verdicts(goals, checked)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine_at_start": machine_before, "machine_at_end": machine(),
               "duration_s": args.duration, "k": K, "candidates": N_CANDIDATES,
               "levels": [asdict(lv) for lv in levels], "targets": goals, "checks": checked,
               "verdicts": verdicts}  # fmt: skip
    dump(args.out, payload)
    print(f"\nmachine at start: {machine_before}\nmachine at end: {machine()}\nwrote {args.out}")
    return verdicts.exit_code


def run_profile(profile: str, root: Path, script: Path, duration_s: int) -> list[Level]:
    """Run one profile in a workspace of its own (Redis: a throwaway server around it)."""
    workspace = root / f"ws-{profile}"
    store = profile.removesuffix(SHOP)
    if store == "sqlite":
        return bench_profile(profile, Settings(workspace=workspace), script, duration_s, root)
    if store != "redis":
        raise ValueError(f"profile {profile!r}; expected 'sqlite' or 'redis'")
    with redis_server(root) as address:
        feast = {"online_store": "redis", "redis_connection_string": address}
        settings = Settings.model_validate({"workspace": workspace, "feast": feast})
        return bench_profile(profile, settings, script, duration_s, root)


if __name__ == "__main__":
    raise SystemExit(main())
