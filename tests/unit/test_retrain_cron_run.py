"""The retrain CronJob's container command, run here as the pod would run it.

The args and env come from the rendered kind overlay (``make k8s-tools``), ``$(VAR)``
expanded as the kubelet does; the real ``flywheel`` CLI runs in a subprocess on a
workspace that is read-only except the folders the pod mounts writable
(``readonly_workspace.py`` enforces that). Two things differ from the pod, both at a
boundary that cannot run here: the workspace is a temporary folder (``FLYWHEEL_WORKSPACE``
instead of the PVC at /mnt/flywheel), and the KFP API server is a stand-in HTTP server
on localhost answering the four calls ``kfp.Client`` makes for one run (healthz, find
the experiment, create it, create the run) and recording them; ``kfp.Client`` itself and
the compiled package it sends are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flywheel.config import Settings
from flywheel.predlog import LogWriter, log_dir
from tests.unit.k8s_tools import find
from tests.unit.test_k8s_retrain_cron import expand

ROOT = Path(__file__).resolve().parents[2]
GUARD = Path(__file__).with_name("readonly_workspace.py")


class _KfpStandIn(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, Any]]

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path.partition("?")[0], None))
        self._reply({"multi_user": False} if self.path.endswith("/healthz") else {})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        path = self.path.partition("?")[0]
        self.calls.append(("POST", path, body))
        if path.endswith("/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif path.endswith("/runs"):
            self._reply({"run_id": "run-1", "experiment_id": body["experiment_id"]})
        else:
            self.send_error(404)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kfp_api() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    calls: list[tuple[str, str, Any]] = []
    handler = type("Handler", (_KfpStandIn,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()


def _served_logs(workspace: Path, now: datetime) -> None:
    """A few hours of served requests inside the decision's 24 h window."""
    writer = LogWriter(log_dir(Settings(workspace=workspace), "predictions"), "predictions")
    for n in range(120):
        ts = now - timedelta(hours=4) + timedelta(minutes=2 * n)
        writer.append(
            [
                {"request_id": f"r{n}", "ts": ts, "user_id": f"u{n % 5}", "item_id": f"i{p}",
                 "position": p, "score": 0.5, "model_version": "flywheel-ranker:abc",
                 "propensity": 0.9, "features": json.dumps({"category": "c1"})}
                for p in range(3)
            ]
        )  # fmt: skip


def _run_pod_command(
    workspace: Path, home: Path, kfp_url: str, writable: list[str]
) -> subprocess.CompletedProcess[str]:
    [c] = find("kind", "CronJob", "flywheel-retrain")["spec"]["jobTemplate"]["spec"]["template"][
        "spec"
    ]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    env |= {"KFP_API_URL": kfp_url, "HOME": str(home)}  # the two boundaries
    argv = [expand(a, env) for a in c["args"]]
    assert argv[0] == "flywheel"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "KFP_"))}
    return subprocess.run(
        [sys.executable, str(GUARD), str(workspace), " ".join(writable), *argv[1:]],
        env={**clean, **env, "FLYWHEEL_WORKSPACE": str(workspace), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _pod_writable() -> list[str]:
    [c] = find("kind", "CronJob", "flywheel-retrain")["spec"]["jobTemplate"]["spec"]["template"][
        "spec"
    ]["containers"]
    return [m["subPath"] for m in c["volumeMounts"] if "subPath" in m]


def test_one_decision_on_a_read_only_workspace_creates_a_kfp_run(
    tmp_path: Path, kfp_api: tuple[str, list[tuple[str, str, Any]]]
) -> None:
    url, calls = kfp_api
    ws = tmp_path / "ws"
    _served_logs(ws, datetime.now(UTC))
    writable = _pod_writable()
    for sub in writable:  # kubelet's subPath folders (kind.sh makes them first)
        (ws / sub).mkdir()
    # Serving logs exist only once a pipeline run deployed a model, and that run's features
    # step had applied the Feast registry (feast/registry.db): the skew check opens the
    # store, and Feast would write an empty registry where there is none. No feature
    # tables: the skew section says so (its own tests cover the check).
    from flywheel import feature_store

    feature_store.apply(Settings(workspace=ws))
    proc = _run_pod_command(ws, tmp_path / "home", url, writable)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # What `kubectl logs` shows: the decision with its reason, and the run it created.
    assert "retrain: schedule: no champion yet" in proc.stdout
    assert f"created KFP run run-1: {url}/#/runs/details/run-1" in proc.stdout
    assert [(m, p) for m, p, _ in calls] == [
        ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/runs"),
    ]
    run = calls[-1][2]
    spec = run["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "flywheel-continuous-training"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"flywheel-platform:0.1.0"}  # the CronJob's own image (FLYWHEEL_IMAGE)
    settings = json.loads(spec["root"]["inputDefinitions"]["parameters"]["settings_json"][
        "defaultValue"])  # fmt: skip
    assert settings["profile"] == "kind"
    # The monitor read the served logs and wrote its record; the decision was logged.
    record = json.loads((ws / "monitor" / "monitor.json").read_text())
    assert record["totals"]["requests"] == 120
    [decision] = [
        json.loads(x) for x in (ws / "watch" / "decisions.jsonl").read_text().splitlines()
    ]
    assert decision["fire"] and decision["cycle"] == "ok"
    assert (ws / "watch" / "runs.json").is_file()
    assert sorted(p.name for p in ws.iterdir()) == sorted([*writable, "feast", "serving"])


def test_a_write_outside_the_writable_folders_fails_the_decision(
    tmp_path: Path, kfp_api: tuple[str, list[tuple[str, str, Any]]]
) -> None:
    """The guard bites: without ``watch/`` writable the decision log cannot be written."""
    url, calls = kfp_api
    ws = tmp_path / "ws"
    ws.mkdir()
    writable = [s for s in _pod_writable() if s != "watch"]
    proc = _run_pod_command(ws, tmp_path / "home", url, writable)
    assert proc.returncode != 0
    assert "Read-only file system (readonly_workspace.py)" in proc.stdout + proc.stderr
    assert not (ws / "watch").exists() and calls == []
