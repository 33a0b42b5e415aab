"""flywheel-platform: what is inside it, and a real pipeline component run in it.

The component is ``ingest`` (Ray Data inside the container), built with
``components.build(image)`` exactly as the pipeline builds it and run through
``kfp.local.DockerRunner``. The workspace is a host directory bind-mounted at
``/mnt/flywheel``, the path the cluster profiles use; what the component wrote is then read
back on the host and compared with the raw events the test wrote.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from flywheel.config import RaySettings, Settings
from tests import kuberay_pods
from tests.containers._support import (
    IMAGE_UID,
    PLATFORM_IMAGE,
    WORKSPACE_MOUNT,
    Timer,
    share_with_image_user,
    step,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, 20, 0, tzinfo=UTC)
#: Bookworm's python3 needs one wheel the host's 3.11.7 does not (see the file).
EXTRA_PINS = REPO / "images" / "constraints-bookworm.txt"


def _pins(*files: Path) -> dict[str, str]:
    pins = {}
    for file in files:
        for line in file.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, version = line.split("==", 1)
                pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def _run(client: Any, command: str, **kwargs: Any) -> str:
    """The output of ``bash -c command`` in a fresh platform container."""
    out = client.containers.run(PLATFORM_IMAGE, ["bash", "-c", command], remove=True, **kwargs)
    return str(out.decode().strip())


def test_platform_image_holds_exactly_the_lock_as_a_non_root_user(docker_client: Any) -> None:
    step("platform image: uid, workdir, python on PATH, no compilers or installers")
    assert _run(docker_client, "id -u") == str(IMAGE_UID)
    assert _run(docker_client, "pwd") == "/app"
    assert _run(docker_client, "command -v python") == "/opt/venv/bin/python"
    # KubeRay v1.7.0 runs `bash -c -- "... ray start ..."`; an operator with
    # ENABLE_LOGIN_SHELL=true runs `bash -lc`, and Debian's /etc/profile resets PATH for a
    # login shell of a non-root user, so the image puts the venv back (profile.d) for that.
    login = docker_client.containers.run(
        PLATFORM_IMAGE, ["bash", "-lc", "command -v ray"], remove=True
    )
    assert login.decode().strip() == "/opt/venv/bin/ray"
    tools = "gcc cc c++ g++ make ld as pip pip3"
    assert _run(docker_client, f"for t in {tools}; do command -v $t; done; true") == ""
    assert _run(docker_client, "python -c 'import pip' 2>&1 || true").endswith(
        "No module named 'pip'"
    )

    step("platform image: every installed distribution is pinned by the lock")
    listing = _run(
        docker_client,
        "python -c 'import importlib.metadata as m, json; "
        'print(json.dumps({d.metadata["Name"]: d.version for d in m.distributions()}))\'',
    )
    installed = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in json.loads(listing).items()}
    pins = _pins(REPO / os.environ.get("LOCK", "constraints.txt"), EXTRA_PINS)
    assert installed.pop("flywheel") == "0.1.0"
    mismatched = {n: (v, pins.get(n)) for n, v in installed.items() if pins.get(n) != v}
    assert mismatched == {}
    assert not any(n.startswith(("nvidia-cu", "nvidia-nccl", "torch")) for n in installed)
    print(f"[containers] {len(installed)} distributions, all at their locked versions")


def _raw_events(n: int) -> list[dict[str, Any]]:
    """``n`` valid events 7 hours apart (several days), and one with an unknown type."""
    rows: list[dict[str, Any]] = [
        {
            "event_id": f"e{i}",
            "user_id": i % 7,
            "item_id": 100 + i % 11,
            "event_type": ["view", "cart", "purchase", "click"][i % 4],
            "ts": (T0 + timedelta(hours=7 * i)).isoformat(),
            "session_id": f"s{i // 3}",
            "device": "web",
        }
        for i in range(n)
    ]
    rows.append({**rows[0], "event_id": "bad", "event_type": "teleport"})
    return rows


def _lake_rows(events_dir: Path) -> tuple[list[str], set[date]]:
    files = sorted(events_dir.rglob("*.parquet"))
    ids = sorted(
        i for f in files for i in pq.read_table(f, columns=["event_id"])["event_id"].to_pylist()
    )
    days = {date.fromisoformat(p.name.split("=", 1)[1]) for p in events_dir.glob("date=*")}
    return ids, days


@pytest.mark.timeout(900)
def test_ingest_component_runs_in_the_platform_image(docker_client: Any, tmp_path: Path) -> None:
    from docker.types import Mount
    from kfp import local

    import components

    workspace, pipeline_root = tmp_path / "ws", tmp_path / "kfp-root"
    rows = _raw_events(40)
    incoming = workspace / "incoming" / "events.jsonl"
    incoming.parent.mkdir(parents=True)
    incoming.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pipeline_root.mkdir()
    share_with_image_user(tmp_path)

    # The component sees the workspace where the cluster mounts the PVC. kfp.local mounts
    # pipeline_root at the same path (outputs); extra mounts go through `mounts`.
    runner = local.DockerRunner(
        mounts=[Mount(target=WORKSPACE_MOUNT, source=str(workspace), type="bind")],
        shm_size="512m",  # Ray's object store; Docker's default /dev/shm is 64 MB
    )
    local.init(runner=runner, pipeline_root=str(pipeline_root))
    settings = Settings(workspace=Path(WORKSPACE_MOUNT), ray=RaySettings(num_cpus=2))
    ingest = components.build(PLATFORM_IMAGE).ingest

    step(f"ingest component in {PLATFORM_IMAGE} via kfp.local.DockerRunner: {len(rows)} raw events")
    with Timer("ingest component, first run (container start, imports, Ray, ingest)"):
        task = ingest(
            settings_json=settings.model_dump_json(),
            events_uri=f"{WORKSPACE_MOUNT}/incoming/events.jsonl",
            items_uri="",
        )
    valid = sorted(r["event_id"] for r in rows if r["event_type"] != "teleport")
    expected_days = {datetime.fromisoformat(r["ts"]).date() for r in rows if r["event_id"] in valid}
    assert task.outputs["new_rows"] == len(valid)
    metrics = task.outputs["metrics"].metadata
    assert (metrics["rows_read"], metrics["accepted"], metrics["quarantined"]) == (41, 40, 1)

    step("the lake on the host volume holds exactly the valid events, by day, owned by uid 1000")
    ids, days = _lake_rows(workspace / "lake" / "events")
    assert ids == valid
    assert days == expected_days
    assert {p.stat().st_uid for p in (workspace / "lake").rglob("*")} == {IMAGE_UID}

    step("a second run over the same file adds nothing (dedupe state lives on the volume)")
    with Timer("ingest component, second run"):
        again = ingest(
            settings_json=settings.model_dump_json(),
            events_uri=f"{WORKSPACE_MOUNT}/incoming/events.jsonl",
            items_uri="",
        )
    assert again.outputs["new_rows"] == 0
    assert again.outputs["lake_version"] == task.outputs["lake_version"]
    assert _lake_rows(workspace / "lake" / "events")[0] == valid


def _kuberay_node(client: Any, group: dict[str, Any], head: bool, head_ip: str = "") -> Any:
    """A platform container started as KubeRay v1.7.0 starts a group's Ray container: its
    ``/bin/bash -c --`` command, the generated ``ray start`` and the manifest's env."""
    container = group["template"]["spec"]["containers"][0]
    params = kuberay_pods.start_params(group, head, head_address=head_ip)
    return client.containers.run(
        PLATFORM_IMAGE,
        [kuberay_pods.ray_start(params, head)],
        entrypoint=list(kuberay_pods.CONTAINER_COMMAND),
        environment={e["name"]: e["value"] for e in container.get("env") or []},
        detach=True,
        shm_size="1g",  # the manifests' /dev/shm emptyDir (base/kind)
    )


def _ip(container: Any) -> str:
    container.reload()
    settings = container.attrs["NetworkSettings"]
    return str(settings.get("IPAddress") or settings["Networks"]["bridge"]["IPAddress"])


def _kubelet_get(ip: str, probe: kuberay_pods.Probe) -> tuple[int | None, str]:
    """What the kubelet's ``httpGet`` probe sees: a GET to the pod IP (here the container's,
    from the host), 1 s timeout (KubeRay's); success is a status of 200-399."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{probe.port}{probe.path}", timeout=1) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # refused, timed out: no answer yet
        return None, str(exc)


def _wait_healthy(container: Any, probe: kuberay_pods.Probe, what: str) -> str:
    ip, answer = _ip(container), (None, "")
    with Timer(f"{what}: start until GET :{probe.port}{probe.path} answers 200"):
        for _ in range(120):
            answer = _kubelet_get(ip, probe)
            if answer[0] is not None and 200 <= answer[0] < 400:
                return answer[1]
            time.sleep(0.5)
    pytest.fail(
        f"{what}: probe {probe} got {answer} for 60 s:\n{container.logs().decode()[-3000:]}"
    )


@pytest.mark.timeout(300)
def test_platform_image_runs_ray_nodes_that_pass_kuberays_probes(docker_client: Any) -> None:
    """Head and worker as KubeRay v1.7.0 runs them for k8s/base's RayCluster (Ray 2.60 >=
    2.53: kubelet ``httpGet :52365/api/healthz`` probes), then a job on both."""
    ray = yaml.safe_load((REPO / "k8s" / "base" / "raycluster.yaml").read_text())
    (_, _, head_group), (_, _, worker_group) = kuberay_pods.groups(ray)
    head_probe = kuberay_pods.probes(ray, head_group)["readinessProbe"]
    worker_probe = kuberay_pods.probes(ray, worker_group)["readinessProbe"]
    assert head_probe == worker_probe == kuberay_pods.Probe("httpGet", 52365, "/api/healthz")
    step("platform image as a KubeRay head and worker: `/bin/bash -c -- ray start ...`")
    head = _kuberay_node(docker_client, head_group, head=True)
    worker = None
    try:
        body = _wait_healthy(head, head_probe, "ray head")
        assert "raylet: success" in body and "gcs: success" in body, body
        worker = _kuberay_node(docker_client, worker_group, head=False, head_ip=_ip(head))
        body = _wait_healthy(worker, worker_probe, "ray worker")
        assert "raylet: success" in body and "gcs: success (no local gcs)" in body, body
        job = (
            "ray job submit --address http://localhost:8265 -- python -c "
            '\'import flywheel, ray; ray.init(); print("cpus", ray.cluster_resources()["CPU"])\''
        )
        with Timer("ray job submit through the Jobs API (flywheel importable in the job)"):
            for _ in range(30):  # the worker's CPU shows once the GCS has its heartbeat
                result = head.exec_run(["bash", "-c", job])
                if result.exit_code != 0 or "cpus 2.0" in result.output.decode():
                    break
                time.sleep(1)
        assert result.exit_code == 0, result.output.decode()[-3000:]
        assert "cpus 2.0" in result.output.decode()  # head 1 + worker 1 (num-cpus from limits)
    finally:
        for container in (worker, head):
            if container is not None:
                container.remove(force=True)
