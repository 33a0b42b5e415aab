"""The data stages as Ray jobs on a real two-node Ray cluster on this machine.

``ray start --head --num-cpus=1`` (with the Jobs API) stands in for the KubeRay head and
``ray start --address=... --num-cpus=1`` for a worker pod: two raylets, each with one CPU,
so Ray Data has to use both. The feature build submitted through the Jobs API
(:func:`flywheel.stage_jobs.run_stage_on_cluster`, the pipeline's cluster path) writes the
same tables, cell for cell, as the in-process build of the same lake, and Ray's state API
shows that the job's tasks ran on both nodes. Only the Kubernetes part (pods, the PVC) is
missing: the workspace is a local folder both nodes see.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

# Imported under their module names (pytest's "prepend" import mode): the head's start and
# stop, and the small string-id lake of the feature-build tests.
import test_features_build as feature_tests
import test_ray_job_train as ray_job_tests

from flywheel.config import KubernetesSettings, RaySettings, Settings
from flywheel.features import build_features
from flywheel.ray_runtime import shutdown_ray
from flywheel.schemas import FEATURE_TABLES
from flywheel.stage_jobs import run_stage_on_cluster
from tests.ports import on_free_ports, raise_if_port_taken
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


def _start_worker(ray_bin: Path, head_port: int, *ports: int) -> Any:
    """A second raylet joining the head, on its own agent and manager ports."""
    flags = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port",
             "--object-manager-port")  # fmt: skip
    args = [f"{flag}={p}" for flag, p in zip(flags, ports, strict=True)]
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"fwray-worker-{ports[0]}.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(ray_bin), "start", "--block", f"--address=127.0.0.1:{head_port}",
             "--num-cpus=1", "--disable-usage-stats", *args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        )  # fmt: skip
    time.sleep(3)
    if worker.poll() is not None:
        raise_if_port_taken(log, "the Ray worker node")
        pytest.fail(f"the Ray worker node exited {worker.returncode}: {log.read_text()[-2000:]}")
    return worker


def _alive_nodes(dashboard: str) -> list[Any]:
    from ray.util.state import list_nodes

    return [n for n in list_nodes(address=dashboard) if n.state == "ALIVE"]


@pytest.fixture(scope="module")
def cluster(s3_server: S3Server) -> Iterator[str]:
    """Head + worker node; yields the Jobs API address; both stopped afterwards.

    Both nodes start with the S3 server's keys in their environment and nothing else of
    it, as the KubeRay pods get theirs from the ``flywheel-s3`` Secret: a job brings only
    the endpoint and region."""
    ray_bin = Path(sys.executable).parent / "ray"
    assert ray_bin.exists(), f"no `ray` script next to {sys.executable}: reinstall the venv"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        for name in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
        mp.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
        ports: list[int] = []

        def head_on(*p: int) -> tuple[Any, str]:
            ports[:] = p
            return ray_job_tests._start_head(ray_bin, *p, num_cpus=1)

        head, dashboard = on_free_ports(head_on, n=6)
        try:
            worker = on_free_ports(lambda *p: _start_worker(ray_bin, ports[0], *p), n=6)
            try:
                deadline = time.monotonic() + 120
                while len(_alive_nodes(dashboard)) < 2:
                    if time.monotonic() > deadline:
                        pytest.fail("the worker node did not join the head within 120 s")
                    time.sleep(1)
                yield dashboard
            finally:
                os.killpg(worker.pid, signal.SIGINT)
                try:
                    worker.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
        finally:
            ray_job_tests._stop(head)


def _tables(settings: Settings) -> dict[str, Any]:
    out = {}
    for name in FEATURE_TABLES:
        table = pq.read_table(settings.feature_data_dir / f"{name}.parquet")
        # created_timestamp is the build's own clock: the one column two builds differ in
        keep = [c for c in table.column_names if c != "created_timestamp"]
        out[name] = table.select(keep)
    return out


def _rows(table: Any) -> str:
    return json.dumps(table.to_pylist(), default=str)


def test_feature_build_as_a_ray_job_on_two_nodes_equals_the_in_process_build(
    cluster: str, tmp_path: Path
) -> None:
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_tasks

    events = feature_tests._events()
    on_cluster = Settings(
        workspace=tmp_path / "cluster",
        ray=RaySettings(batch_size=1000, data_stages="cluster"),
        k8s=KubernetesSettings(ray_jobs_address=cluster, ray_job_timeout_s=300),
    )
    feature_tests._write_lake(on_cluster, events)
    summary = run_stage_on_cluster(on_cluster, "features", python=sys.executable)
    assert summary["events_read"] == len(events)

    in_process = Settings(workspace=tmp_path / "local", ray={"num_cpus": 2, "batch_size": 1000})
    shutil.copytree(on_cluster.lake_dir, in_process.lake_dir)
    try:
        build_features(in_process)
    finally:
        shutdown_ray()
    remote, local = _tables(on_cluster), _tables(in_process)
    for name in FEATURE_TABLES:
        assert remote[name].num_rows > 0, name
        assert remote[name].schema == local[name].schema, name
        # NaN (a missing rate) equals NaN here: compare the rows as JSON text
        assert _rows(remote[name]) == _rows(local[name]), name

    # the job's tasks ran on both raylets
    job = JobSubmissionClient(cluster).get_job_info(summary["ray_job"]["job_id"])
    tasks = list_tasks(
        address=cluster,
        filters=[("job_id", "=", job.job_id)],
        limit=10_000,
        raise_on_missing_output=False,
    )
    nodes = {t.node_id for t in tasks if t.node_id}
    print(f"{len(tasks)} tasks of the feature job on {len(nodes)} nodes")
    assert len(nodes) == 2, [(t.name, t.node_id) for t in tasks]


def test_preprocess_as_a_ray_job_stages_its_input_and_brings_the_shards_back(
    cluster: str, tmp_path: Path
) -> None:
    import pandas as pd
    import test_preprocess as preprocess_tests

    from flywheel.preprocess import preprocess
    from flywheel.stage_jobs import preprocess_on_cluster

    (tmp_path / "artifact").mkdir()
    training_set = preprocess_tests._training_set(tmp_path / "artifact" / "ts.parquet")
    settings = Settings(
        workspace=tmp_path / "ws",
        ray=RaySettings(data_stages="cluster"),
        k8s=KubernetesSettings(ray_jobs_address=cluster, ray_job_timeout_s=300),
    )
    shards = tmp_path / "artifact" / "shards"
    summary = preprocess_on_cluster(settings, training_set, shards, python=sys.executable)
    assert sum(summary["rows"].values()) == 5_000
    local = tmp_path / "local-shards"
    preprocess(settings, training_set, local, engine="local")
    for name in ("train", "valid", "test"):
        a, b = preprocess_tests._split(shards, name), preprocess_tests._split(local, name)
        pd.testing.assert_frame_equal(a[sorted(a.columns)], b[sorted(b.columns)])
    # the staged copies are gone from the shared workspace; only the job's summary stays
    assert not list((settings.workspace / "jobs").glob("preprocess-*"))


def test_ingest_from_s3_as_a_ray_job_equals_the_in_process_ingest(
    cluster: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw files uploaded to the loopback S3 server and ingested by a job on the two
    nodes give the lake, catalog and quarantine an in-process ingest of the local copy
    gives; the submitting side's keys are not in the job (only endpoint and region)."""
    import test_ingest_s3 as s3_tests

    from flywheel import storage

    raw = tmp_path / "raw"
    s3_tests.write_raw(raw)
    storage.upload([raw], s3_bucket + "/in")
    uri = f"{s3_bucket}/in/raw"
    remote = Settings(
        workspace=tmp_path / "cluster",
        ray=RaySettings(batch_size=1000, data_stages="cluster"),
        k8s=KubernetesSettings(ray_jobs_address=cluster, ray_job_timeout_s=300),
    )
    recorded: list[dict[str, Any]] = []
    from flywheel import ray_jobs

    real_submit = ray_jobs.submit_when_ready

    def recording_submit(client: Any, **job: Any) -> str:
        recorded.append(job)
        return real_submit(client, **job)

    monkeypatch.setattr(ray_jobs, "submit_when_ready", recording_submit)
    args = {"events": [uri + "/events"], "items": uri + "/items.parquet"}
    summary = run_stage_on_cluster(remote, "ingest", args, python=sys.executable)
    assert summary["accepted"] == 118 and summary["quarantined"] == 2

    local = Settings(workspace=tmp_path / "local", ray={"num_cpus": 2, "batch_size": 1000})
    _ingest_in_a_fresh_process(local, raw)
    assert s3_tests.lake_rows(remote) == s3_tests.lake_rows(local)
    assert pq.read_table(remote.items_path).equals(pq.read_table(local.items_path))
    assert s3_tests.quarantine_rows(remote) == s3_tests.quarantine_rows(local)
    (job,) = recorded
    env = job["runtime_env"]["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == os.environ["AWS_ENDPOINT_URL"]
    assert not any("KEY" in name for name in env), env


def _ingest_in_a_fresh_process(settings: Settings, raw: Path) -> None:
    """The reference ingest of the local copy, in its own Python with its own local Ray.

    In the pytest process, after the whole integration tier had run Ray in it, the in-process
    ingest's Ray Data map once waited forever for its tasks (CI, 2 cores) and the next
    modules' local Ray could not start: a fresh process keeps the reference independent of
    what earlier tests left in this one, and a timeout turns a hang into a failure."""
    code = (
        "import sys; from pathlib import Path; from flywheel.config import Settings; "
        "from flywheel.ingest import ingest_events; "
        "s = Settings.model_validate_json(sys.argv[1]); raw = Path(sys.argv[2]); "
        "ingest_events(s, [raw / 'events'], items=raw / 'items.parquet')"
    )
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "RAY_", "FLYWHEEL_"))}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code, settings.model_dump_json(), str(raw)],
        env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
