"""Benchmark: the Flywheel ranking service against a naive BentoML baseline, under wrk.

    python benchmarks/serving_bench.py --out bench-out/serving.json

For each online-store profile (``sqlite``; ``redis`` on a throwaway ``redis-server``) it
builds a small fresh world in its own workspace (feature tables stamped an hour ago,
``apply``, ``materialize``, a registered booster), then for each contender starts a real
``bentoml serve`` on loopback and drives ``POST /rank`` (50 explicit candidates, k=10) with
**wrk** from a separate process at each concurrency level for ``--duration`` seconds. wrk's
Lua script cycles through ``--bodies`` pre-generated bodies (random users and candidates)
and prints its summary (requests, errors, latency percentiles) as JSON.

Contenders: ``flywheel`` (``serving/service.py``, default options, 1 and 2 workers) and
``naive`` (``benchmarks/naive_service.py``, 1 worker). After each Flywheel level the
prediction log is read back (``flywheel.predlog.read_prediction_logs``): the records it
gained must equal successful requests x k. ``lost`` counts acknowledged items missing from
the log; ``unacked`` counts logged items wrk did not count (requests still in flight when
wrk stopped, which the server finished: at most concurrency x k).
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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import dump, machine

from flywheel.config import Settings

log = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parent
K = 10
N_CANDIDATES = 50
N_USERS, N_ITEMS = 400, 600
P99_TARGETS_MS = {1: 12.0, 8: 40.0}
THROUGHPUT_RATIO_TARGET = 3.0
#: (service, workers, concurrency levels) per profile, in the order they run.
PLAN = (("flywheel", 1, (1, 8, 32)), ("flywheel", 2, (8, 32)), ("naive", 1, (1, 8, 32)))


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
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    logged_items: int | None
    lost_log_records: int | None
    unacked_logged: int | None


# ---- the world -----------------------------------------------------------------------------


def _table(frame: pd.DataFrame, name: str, rng: np.random.Generator) -> pa.Table:
    """``frame`` with random values for the contract columns it lacks, in contract order."""
    from flywheel.schemas import FEATURE_TABLES

    schema = FEATURE_TABLES[name]
    for f in schema:
        if f.name not in frame.columns:
            n = len(frame)
            ints = pa.types.is_integer(f.type)
            frame[f.name] = rng.integers(0, 60, n) if ints else rng.random(n) * 90 + 5
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def write_feature_tables(settings: Settings, now: datetime, seed: int = 0) -> None:
    """All users and items active an hour before ``now``; five categories."""
    rng = np.random.default_rng(seed)
    t = now - timedelta(hours=1)
    users, items = np.arange(N_USERS), np.arange(N_ITEMS)
    stamp = {"event_timestamp": t, "created_timestamp": t}
    frames = {
        "user_activity": pd.DataFrame(
            {"user_id": users, **stamp, "last_event_unix": t.timestamp() - rng.random(N_USERS)}
        ),
        "user_category": pd.DataFrame(
            [{"user_id": u, "category": f"c{(u + d) % 5}", **stamp} for u in users for d in (0, 1)]
        ),
        "item_activity": pd.DataFrame({"item_id": items, **stamp}),
        "item_catalog": pd.DataFrame(
            {"item_id": items, **stamp, "category": [f"c{i % 5}" for i in items]}
        ),
    }
    settings.feature_data_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        pq.write_table(_table(frame, name, rng), settings.feature_data_dir / f"{name}.parquet")


def train_booster(path: Path, seed: int = 0) -> Path:
    """A 100-tree depth-6 booster on random data: the size of a real ranking model."""
    import xgboost as xgb

    from flywheel.ranking import MODEL_FEATURES

    rng = np.random.default_rng(seed)
    x = rng.random((5000, len(MODEL_FEATURES))).astype(np.float32) * 60
    y = (x[:, :3] @ rng.random(3) + rng.normal(0, 10, len(x)) > 45).astype(int)
    matrix = xgb.DMatrix(x, y, feature_names=list(MODEL_FEATURES))
    params = {"objective": "binary:logistic", "max_depth": 6, "seed": seed, "nthread": 1}
    xgb.train(params, matrix, num_boost_round=100).save_model(str(path))
    return path


def build_world(settings: Settings) -> None:
    """Feature tables, Feast ``apply`` + ``materialize`` and a registered champion."""
    from flywheel import feature_store as fs
    from flywheel.registry import register_model

    now = datetime.now(UTC).replace(microsecond=0)
    write_feature_tables(settings, now)
    fs.apply(settings)
    fs.materialize(settings, end=now + timedelta(seconds=1))
    model = train_booster(settings.workspace / "bench-model.ubj")
    lineage = {"run_id": "bench", "data_window": "bench", "feature_service": "ranking_v1"}
    register_model(settings, model, {"auc": 0.5}, lineage)


# ---- wrk -----------------------------------------------------------------------------------

_LUA = """
local bodies = {%s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "/rank", nil, bodies[i])
end
done = function(s, lat, req)
  local e = s.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,' ..
    '"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,"p50":%%d,"p90":%%d,"p99":%%d,' ..
    '"max":%%d}\\n', s.requests, s.duration, e.connect, e.read, e.write, e.status,
    e.timeout, lat:percentile(50), lat:percentile(90), lat:percentile(99), lat.max))
end
"""


def write_lua(path: Path, n_bodies: int, seed: int = 1) -> Path:
    """A wrk script cycling through ``n_bodies`` rank bodies with random users/candidates."""
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n_bodies):
        body = {
            "user_id": int(rng.integers(0, N_USERS)),
            "candidates": rng.choice(N_ITEMS, N_CANDIDATES, replace=False).tolist(),
            "k": K,
        }
        bodies.append(json.dumps(json.dumps(body, separators=(",", ":"))))
    path.write_text(_LUA % ",\n".join(bodies))
    return path


def run_wrk(url: str, script: Path, concurrency: int, duration_s: int) -> dict[str, Any]:
    """Run wrk (one thread, ``concurrency`` connections); its summary as a dict (us)."""
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--timeout", "10s"]
    argv += ["-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return dict(json.loads(line.removeprefix("WRKJSON ")))
    raise RuntimeError(f"wrk printed no summary (rc {done.returncode}): {done.stderr[-500:]}")


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


def logged_items(settings: Settings) -> int:
    """Prediction-log records written so far in ``settings``' workspace."""
    from flywheel.predlog import read_prediction_logs

    return int(read_prediction_logs(settings).num_rows)


def measure_level(
    settings: Settings, profile: str, service: str, workers: int, url: str, **wrk: Any
) -> Level:
    """One wrk run; for Flywheel, the prediction-log records it added against wrk's count."""
    before = logged_items(settings) if service == "flywheel" else 0
    s = run_wrk(url, **wrk)
    errors = s["connect"] + s["read"] + s["write"] + s["status"] + s["timeout"]
    ok = s["requests"] - s["status"]
    logged = lost = unacked = None
    if service == "flywheel":
        time.sleep(1.0)  # let requests in flight when wrk stopped finish and log
        logged = logged_items(settings) - before
        lost, unacked = max(0, ok * K - logged), max(0, logged - ok * K)
    seconds = s["duration_us"] / 1e6
    return Level(
        profile=profile, service=service, workers=workers, concurrency=wrk["concurrency"],
        seconds=round(seconds, 2), requests=s["requests"], ok=ok, errors=errors,
        rps=round(ok / seconds, 1), p50_ms=s["p50"] / 1e3, p90_ms=s["p90"] / 1e3,
        p99_ms=s["p99"] / 1e3, max_ms=s["max"] / 1e3, logged_items=logged,
        lost_log_records=lost, unacked_logged=unacked,
    )  # fmt: skip


def bench_profile(
    profile: str, settings: Settings, script: Path, duration_s: int, root: Path
) -> list[Level]:
    """Build the world in ``settings``, then every (service, workers, concurrency) of PLAN."""
    start = time.perf_counter()
    build_world(settings)
    log.info("%s: world built in %.1f s", profile, time.perf_counter() - start)
    levels = []
    for service, workers, concurrencies in PLAN:
        logfile = root / f"{profile}-{service}-{workers}w.log"
        with running(settings, service, workers, logfile) as url:
            run_wrk(url, script, 2, 2)  # warm-up: imports, first reads, connection pools
            time.sleep(1.0)  # its last requests finish before the log is counted
            for c in concurrencies:
                level = measure_level(
                    settings, profile, service, workers, url,
                    script=script, concurrency=c, duration_s=duration_s,
                )  # fmt: skip
                log.info("%s", level)
                levels.append(level)
    return levels


# ---- report --------------------------------------------------------------------------------


def verdicts(levels: list[Level]) -> list[str]:
    """The targets, each as measured / target (p99: <= 1 meets; throughput: >= 1 meets)."""
    fly = {(lv.workers, lv.concurrency): lv for lv in levels if lv.service == "flywheel"}
    naive = {lv.concurrency: lv for lv in levels if lv.service == "naive"}
    out = []
    for (workers, c), lv in sorted(fly.items()):
        if c in P99_TARGETS_MS:
            ratio = lv.p99_ms / P99_TARGETS_MS[c]
            out.append(
                f"p99 c={c} {workers}w: {lv.p99_ms:.1f} ms / {P99_TARGETS_MS[c]:.0f} ms = "
                f"{ratio:.2f} ({'met' if ratio <= 1 else 'MISSED'})"
            )
        if c in naive and naive[c].rps > 0:
            ratio = lv.rps / naive[c].rps
            verdict = "" if c != 8 else (" met" if ratio >= THROUGHPUT_RATIO_TARGET else " MISSED")
            out.append(
                f"throughput c={c} {workers}w vs naive: {ratio:.2f}x "
                f"(target {THROUGHPUT_RATIO_TARGET:.0f}x at c=8){verdict}"
            )
    lost = sum(lv.lost_log_records or 0 for lv in levels)
    out.append(f"lost prediction-log records: {lost} (target 0: {'met' if not lost else 'MISSED'})")
    return out


def print_table(profile: str, levels: list[Level]) -> None:
    """One table per profile, then the target ratios."""
    head = ("c", "service", "w", "requests", "rps", "p50 ms", "p99 ms", "errors", "lost",
            "unacked")  # fmt: skip
    print(f"\n/rank, {N_CANDIDATES} candidates, k={K}, online store: {profile}")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for lv in levels:
        lost = "-" if lv.lost_log_records is None else str(lv.lost_log_records)
        unacked = "-" if lv.unacked_logged is None else str(lv.unacked_logged)
        row = (lv.concurrency, lv.service, lv.workers, lv.requests, f"{lv.rps:.0f}",
               f"{lv.p50_ms:.1f}", f"{lv.p99_ms:.1f}", lv.errors, lost, unacked)  # fmt: skip
        print("| " + " | ".join(map(str, row)) + " |")
    for line in verdicts(levels):
        print("  " + line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-out/serving.json")
    parser.add_argument("--duration", type=int, default=15, help="seconds per level")
    parser.add_argument("--bodies", type=int, default=300)
    parser.add_argument("--profiles", nargs="+", default=["sqlite", "redis"])
    parser.add_argument("--root", help="working folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    root = Path(args.root or tempfile.mkdtemp(prefix="serving-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    script = write_lua(root / "rank.lua", args.bodies)
    results: dict[str, list[Level]] = {}
    try:
        for profile in args.profiles:
            results[profile] = run_profile(profile, root, script, args.duration)
            print_table(profile, results[profile])
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "duration_s": args.duration, "k": K,
               "candidates": N_CANDIDATES, "levels": [asdict(lv) for p in results.values()
                                                      for lv in p],
               "verdicts": {p: verdicts(lv) for p, lv in results.items()}}  # fmt: skip
    dump(args.out, payload)
    print(f"\nmachine: {payload['machine']}\nwrote {args.out}")
    return 0


def run_profile(profile: str, root: Path, script: Path, duration_s: int) -> list[Level]:
    """Run one profile in a workspace of its own (Redis: a throwaway server around it)."""
    workspace = root / f"ws-{profile}"
    if profile == "sqlite":
        return bench_profile(profile, Settings(workspace=workspace), script, duration_s, root)
    if profile != "redis":
        raise ValueError(f"profile {profile!r}; expected 'sqlite' or 'redis'")
    with redis_server(root) as address:
        feast = {"online_store": "redis", "redis_connection_string": address}
        settings = Settings.model_validate({"workspace": workspace, "feast": feast})
        return bench_profile(profile, settings, script, duration_s, root)


if __name__ == "__main__":
    raise SystemExit(main())
