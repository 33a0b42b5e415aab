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
name in ``SERVICES`` and a branch in ``service_command``; another commit's code is
``--baseline-tree`` (below).

``cpu ms/req``: CPU seconds (user + system) of the whole server process tree during a level
(and the second after it, while in-flight requests finish) per answered request, from
psutil: on a shared machine it moves less than rps, which depends on the share of the
cores the service got.

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

Another commit's service (``--baseline-tree PATH``, e.g. a git worktree of the code before
an issue; ``--baseline-label``, default the folder's name): right after this tree's Flywheel
service at each worker count, that tree's Flywheel service runs the same levels, on a world
of its own built by its own code in a workspace of its own (``baseline_tree.py``: ids typed
by its schemas, its ``serving/`` as working dir; Redis: a server of its own). Its prediction
log is checked like ours. Targets (issue #11): ours / baseline throughput at c=8 >= 2.0x and
p99 at c=1 <= 1.0x the baseline's, with 1 worker, per profile; the other worker counts'
ratios are printed.

Checks (any failure prints FAILED and exits 1): no HTTP or socket errors, wrk's 2xx count
equals the responses it recorded, no lost prediction-log records. Targets (met / missed):
p99 <= 12 ms at c=1 and <= 40 ms at c=8, throughput >= 3x naive at c=8, each per profile
and worker count; the baseline targets above when a baseline tree is given.
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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_tree import build_tree_world, check_tree, tree_serve_command
from harness import dump, machine, report_verdicts
from serving_verdicts import (
    LEVELS,
    N_CANDIDATES,
    SERVICES,
    SHOP,
    WORKERS,
    K,
    Level,
    LogAccount,
    account_log,
    baseline_ratios,
    checks,
    print_table,
    targets,
    throughput_ratio,
)
from serving_world import N_ITEMS, N_USERS, build_world
from wrk import WrkRun, rank_bodies, run_wrk, write_lua

from flywheel.config import Settings

log = logging.getLogger(__name__)

#: The figures and verdicts live in serving_verdicts.py; these are re-exported.
__all__ = [
    "Level",
    "LogAccount",
    "account_log",
    "baseline_ratios",
    "checks",
    "main",
    "targets",
    "throughput_ratio",
]
BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Contender:
    """A service to measure: ours (``flywheel``), ``naive``, or another tree's Flywheel
    service (``tree`` set), with the Settings (``spec``, as JSON) of the world it serves."""

    name: str
    spec: dict[str, Any]
    tree: Path | None = None
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", Settings.model_validate(self.spec))

    @property
    def logs(self) -> bool:
        """Whether it writes a prediction log to check (every Flywheel service does)."""
        return self.name != "naive"


# ---- services ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_command(
    contender: Contender, port: int, workers: int, logfile: Path
) -> tuple[list[str], dict[str, str]]:
    """``bentoml serve`` argv and environment for ``contender``."""
    from flywheel.serving import serve_command

    if contender.tree is not None:
        return tree_serve_command(contender.tree, contender.spec, port, workers, logfile)
    argv, env = serve_command(contender.settings, port=port, workers=workers)
    if contender.name == "naive":
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
def running(
    contender: Contender, workers: int, logfile: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A started, ready service; yields its URL and process, and kills it afterwards."""
    from flywheel.serving import wait_ready

    port = _free_port()
    argv, env = service_command(contender, port, workers, logfile)
    cwd = contender.tree  # another tree's service runs from its own folder
    with logfile.open("ab") as out:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            waited = wait_ready(url, timeout_s=120, process=process)
            log.info("%s (%d worker(s)) ready in %.1f s", contender.name, workers, waited)
            yield url, process
        finally:
            stop(process)


def service_cpu_s(process: subprocess.Popen[bytes]) -> float:
    """CPU seconds (user + system) used so far by the server and all its processes."""
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(process.pid)
        for member in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                cpu = member.cpu_times()
                total += cpu.user + cpu.system
    return total


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
    contender: Contender, profile: str, workers: int, server: tuple[str, subprocess.Popen[bytes]],
    script: Path, concurrency: int, duration_s: int, acks: Path,
) -> Level:  # fmt: skip
    """One wrk run; the server's CPU per answered request; for Flywheel, the
    prediction-log records it added, per request id."""
    from flywheel.predlog import read_prediction_logs

    url, process = server
    started, cpu_before = datetime.now(UTC), service_cpu_s(process)
    s: WrkRun = run_wrk(url, script, concurrency, duration_s, acks)
    time.sleep(1.0)  # requests in flight when wrk stopped finish and log (the unacked)
    cpu_ms = (service_cpu_s(process) - cpu_before) * 1e3 / max(s.ok, 1)
    account = None
    if contender.logs:
        logged = read_prediction_logs(contender.settings, since=started)
        account = account_log(s.acks, logged)
    seconds = s.duration_us / 1e6
    return Level(
        profile=profile, service=contender.name, workers=workers, concurrency=concurrency,
        seconds=round(seconds, 2), requests=s.requests, ok=s.ok, errors=s.errors,
        acked=len(s.acks), rps=round(s.ok / seconds, 1),
        rps_per_worker=round(s.ok / seconds / workers, 1), p50_ms=s.p50 / 1e3,
        p90_ms=s.p90 / 1e3, p99_ms=s.p99 / 1e3, max_ms=s.max / 1e3, log=account,
        baseline=contender.tree is not None, cpu_ms_per_request=round(cpu_ms, 2),
    )  # fmt: skip


def bench_service(
    contender: Contender, profile: str, workers: int, script: Path, duration_s: int, root: Path
) -> list[Level]:
    """Start ``contender`` with ``workers`` workers, warm it up, run every level of LEVELS."""
    name = f"{profile}-{contender.name}-{workers}w"
    levels = []
    with running(contender, workers, root / f"{name}.log") as server:
        run_wrk(server[0], script, 2, 2, root / "warm-up.acks")  # imports, first reads, pools
        time.sleep(1.0)  # its last requests finish before the next level starts
        for c in LEVELS:
            acks = root / f"{name}-c{c}.acks"
            level = measure_level(contender, profile, workers, server, script, c, duration_s, acks)
            log.info("%s", level)
            levels.append(level)
    return levels


def bench_profile(
    profile: str, contenders: Sequence[Contender], script: Path, duration_s: int, root: Path,
    workers: Sequence[int] = WORKERS,
) -> list[Level]:  # fmt: skip
    """Build each contender's world (ours once for ours and naive), then every worker count
    x contender x level, the contenders in the order given."""
    built: set[str] = set()
    ids = "shop" if profile.endswith(SHOP) else "int"
    for contender in contenders:
        workspace = str(contender.settings.workspace)
        if workspace in built:
            continue
        start = time.perf_counter()
        if contender.tree is None:
            build_world(contender.settings, ids=ids)
        else:
            build_tree_world(contender.tree, contender.spec, root / f"{profile}-world.log", ids)
        built.add(workspace)
        log.info("%s: %s world built in %.1f s", profile, contender.name,
                 time.perf_counter() - start)  # fmt: skip
    levels = []
    for w in workers:
        for contender in contenders:
            levels += bench_service(contender, profile, w, script, duration_s, root)
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-out/serving.json")
    parser.add_argument("--duration", type=int, default=15, help="seconds per level")
    parser.add_argument("--bodies", type=int, default=300)
    parser.add_argument("--profiles", nargs="+", default=["sqlite", "redis"])
    parser.add_argument("--workers", nargs="+", type=int, default=list(WORKERS))
    parser.add_argument("--services", nargs="+", choices=SERVICES, default=list(SERVICES))
    parser.add_argument("--root", help="working folder (default: a temporary one, removed)")
    parser.add_argument(
        "--string-ids", action="store_true", help="also run each profile with string ids"
    )
    parser.add_argument(
        "--baseline-tree", type=Path, help="another worktree whose service runs after ours"
    )
    parser.add_argument("--baseline-label", help="its name in the tables (default: folder name)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    baseline = None
    if args.baseline_tree is not None:
        tree = check_tree(args.baseline_tree)
        label = args.baseline_label or tree.name
        if label in SERVICES:
            raise SystemExit(f"--baseline-label {label!r} is a service name; pick another")
        baseline = (tree, label)
    root = Path(args.root or tempfile.mkdtemp(prefix="serving-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    bodies = rank_bodies(args.bodies, N_USERS, N_ITEMS, N_CANDIDATES, K)
    script = write_lua(root / "rank.lua", bodies)
    shop_bodies = rank_bodies(args.bodies, N_USERS, N_ITEMS, N_CANDIDATES, K, ids="shop")
    shop_script = write_lua(root / "rank-shop.lua", shop_bodies)
    profiles = [
        p for base in args.profiles for p in ([base, base + SHOP] if args.string_ids else [base])
    ]
    plan = Plan(args.duration, tuple(args.workers), tuple(args.services), baseline)
    machine_before = machine()
    levels: list[Level] = []
    try:
        for profile in profiles:
            lua = shop_script if profile.endswith(SHOP) else script
            mine = run_profile(profile, root, lua, plan)
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
               "baseline_tree": str(baseline[0]) if baseline else None,
               "levels": [asdict(lv) for lv in levels], "targets": goals, "checks": checked,
               "verdicts": verdicts}  # fmt: skip
    dump(args.out, payload)
    print(f"\nmachine at start: {machine_before}\nmachine at end: {machine()}\nwrote {args.out}")
    return verdicts.exit_code


@dataclass(frozen=True)
class Plan:
    """What every profile runs: seconds per level, worker counts, services, baseline tree."""

    duration_s: int
    workers: tuple[int, ...] = WORKERS
    services: tuple[str, ...] = SERVICES
    #: (worktree, label) of the baseline tree's service, or None.
    baseline: tuple[Path, str] | None = None


def run_profile(profile: str, root: Path, script: Path, plan: Plan) -> list[Level]:
    """Run one profile: each world in a workspace of its own (Redis: a throwaway server
    per world). The baseline tree runs right after ours, not in string-id profiles."""
    store = profile.removesuffix(SHOP)
    if store not in ("sqlite", "redis"):
        raise ValueError(f"profile {profile!r}; expected 'sqlite' or 'redis'")
    shop = profile.endswith(SHOP)
    with contextlib.ExitStack() as stack:

        def spec(workspace: Path) -> dict[str, Any]:
            if store == "sqlite":
                return {"workspace": str(workspace)}
            address = stack.enter_context(redis_server(root))
            feast = {"online_store": "redis", "redis_connection_string": address}
            return {"workspace": str(workspace), "feast": feast}

        ours = spec(root / f"ws-{profile}")
        contenders = [Contender("flywheel", ours)]
        if plan.baseline is not None and not shop:
            tree, label = plan.baseline
            contenders.append(Contender(label, spec(root / f"ws-{profile}-{label}"), tree))
        if "naive" in plan.services and not shop:
            contenders.append(Contender("naive", ours))
        if "flywheel" not in plan.services:
            contenders.pop(0)
        return bench_profile(profile, contenders, script, plan.duration_s, root, plan.workers)


if __name__ == "__main__":
    raise SystemExit(main())
