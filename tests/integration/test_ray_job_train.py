"""A real training Ray job: ``train_on_cluster`` against a real local Ray head.

``ray start --head`` (ray[default]: dashboard and Jobs API) stands in for the KubeRay head;
the job's driver runs ``python -m flywheel.train`` with this interpreter, joins that Ray and
trains with the same ``train_model`` as the local profile. Only the Kubernetes part (pods,
the PVC) is missing: the workspace is a local folder both sides see.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flywheel.config import KubernetesSettings, RaySettings, Settings
from flywheel.ray_jobs import train_on_cluster, wait_for_job
from flywheel.train import inspect_shards, load_booster, predict, read_split
from tests.ports import on_free_ports, raise_if_port_taken
from tests.shards import write_shards

pytestmark = pytest.mark.integration


def _start_head(
    ray_bin: Path, port: int, dashboard: int, *agent_ports: int, num_cpus: int = 2
) -> tuple[Any, str]:
    """``ray start --head --block`` on the given ports, up when a job can be submitted;
    PortTaken when the head exits saying a port was in use."""
    from ray.job_submission import JobSubmissionClient

    # Every agent port given too: a Ray started earlier in this pytest process (other
    # modules' fixtures) holds the defaults, e.g. the dashboard agent's 52365, and a head
    # whose agent cannot bind answers "No available agent to submit job" forever.
    flags = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--runtime-env-agent-port", "--metrics-export-port")  # fmt: skip
    agents = [f"{flag}={p}" for flag, p in zip(flags, agent_ports, strict=True)]
    temp = tempfile.mkdtemp(prefix="fwray", dir="/tmp")  # Ray's socket paths must stay short
    log = Path(temp) / "head.log"
    with log.open("wb") as out:
        head = subprocess.Popen(
            [str(ray_bin), "start", "--head", "--block", f"--port={port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             f"--num-cpus={num_cpus}", "--include-dashboard=true", "--disable-usage-stats",
             f"--temp-dir={temp}",             *agents],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    # Up means a job can be submitted: the Jobs API answers before its agent is ready
    # ("No available agent to submit job").
    # 180 s: under a loaded CI machine the agent has taken over a minute.
    deadline = time.monotonic() + 180
    while True:
        try:
            client = JobSubmissionClient(address)
            wait_for_job(client, client.submit_job(entrypoint="true"), 30, poll_s=0.5)
            return head, address
        except Exception:
            if head.poll() is not None:
                raise_if_port_taken(log, f"the Ray head on ports {port}/{dashboard}")
                pytest.fail(f"the Ray head exited {head.returncode}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                _stop(head)
                pytest.fail(f"the Ray head's Jobs API did not come up at {address}")
            time.sleep(1)


def _stop(head: Any) -> None:
    # `ray start --block` stops its node on Ctrl-C; the group is the one started here.
    os.killpg(head.pid, signal.SIGINT)
    try:
        head.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


@pytest.fixture(scope="module")
def ray_head(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[str]:
    """A Ray head with the Jobs API on localhost; stopped (its process group) afterwards."""
    ray_bin = Path(sys.executable).parent / "ray"
    # ray[default] is a dependency: a missing script is a broken install, not a skip.
    assert ray_bin.exists(), f"no `ray` script next to {sys.executable}: reinstall the venv"
    # Ray 2.60 turns on token auth when a token file exists; this head is private to the
    # test, so it runs without (the client side must agree).
    monkeypatch_module.setenv("RAY_AUTH_MODE", "disabled")
    head, address = on_free_ports(lambda *ports: _start_head(ray_bin, *ports), n=6)
    try:
        yield address
    finally:
        _stop(head)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_training_job_on_a_real_ray_head(ray_head: str, tmp_path: Path) -> None:
    shards = write_shards(tmp_path / "artifact" / "shards", n_rows=4_000, seed=0)
    settings = Settings(
        profile="kind",
        workspace=tmp_path / "ws",
        ray=RaySettings(address="auto", num_workers=2, cpus_per_worker=0.5),
        k8s=KubernetesSettings(ray_jobs_address=ray_head, ray_job_timeout_s=240),
    )
    started = time.monotonic()
    summary = train_on_cluster(
        settings, shards.root, tmp_path / "artifact" / "model", client=None, python=sys.executable
    )
    seconds = time.monotonic() - started
    assert summary.model_path == tmp_path / "artifact" / "model" / "model.ubj"
    assert summary.train_rows == len(shards.frames["train"])
    # The model that came back scores the valid split about as well as the job said it did
    # (the job's figure is data-parallel XGBoost's metric over worker shards: close, not equal).
    from sklearn.metrics import roc_auc_score

    x, y, _ = read_split(inspect_shards(shards.root, splits=("valid",)), "valid")
    auc = roc_auc_score(y, predict(load_booster(summary.model_path), x))
    assert auc == pytest.approx(summary.valid_auc, abs=0.01)
    assert auc > 0.6
    # The checkpoint stays on the shared workspace, under the job's folder.
    assert summary.checkpoint_path.startswith(str(settings.workspace / "jobs"))
    print(f"ray job training took {seconds:.1f}s (job reported {summary.seconds:.1f}s)")
