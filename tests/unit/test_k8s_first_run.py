"""What the first run on a cluster needs beyond valid manifests (issue #12, "defects found").

Offline, like ``test_k8s_manifests.py``: the rendered manifests (``kubectl kustomize`` from
the tool venv), the real BentoML's own path for its Prometheus files, KubeRay v1.7.0's pod
generation as transcribed in ``tests/kuberay_pods.py``, and ``scripts/kind.sh``. No
Kubernetes API is involved; the one stand-in is the ``kind version`` output fed to the
script's version check (the kind binary is not installed here).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import kuberay_pods
from tests.unit.k8s_tools import K8S, KIND_CLUSTER, TARGETS, find, objects, pod_templates

REPO = Path(__file__).resolve().parents[2]
KIND_SH = REPO / "scripts" / "kind.sh"
ALL_TARGETS = tuple(TARGETS)
PROFILE = {"base": "kind", "kind": "kind", "prod": "prod"}


@pytest.fixture(autouse=True)
def _no_bentoml_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLYWHEEL_* and AWS_* are cleared by tests/conftest.py; BentoML reads its own."""
    for name in list(os.environ):
        if name.startswith("BENTOML_"):
            monkeypatch.delenv(name)


def _serving(target: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = find(target, "Deployment", "flywheel-serving")["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "serving"]
    return pod, container


# ---- 4. the HPA owns the replica count ----------------------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_deployments_an_hpa_scales_leave_replicas_to_it(target: str) -> None:
    """A manifest that sets ``spec.replicas`` resets the HPA's count at every apply."""
    scaled = {
        (h["metadata"]["namespace"], h["spec"]["scaleTargetRef"]["name"])
        for h in objects(target)
        if h["kind"] == "HorizontalPodAutoscaler"
        and h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    }
    assert ("flywheel", "flywheel-serving") in scaled
    for obj in objects(target):
        if obj["kind"] == "Deployment":
            key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
            if key in scaled:
                assert "replicas" not in obj["spec"], f"{target}: {key} sets replicas"


# ---- 2. one Prometheus multiprocess folder per serving pod ------------------------------------


def _bentoml_metrics_subdir(tmp_path: Path) -> Path:
    """Where the installed BentoML keeps its Prometheus files, relative to BENTOML_HOME."""
    home = tmp_path / "home"
    code = (
        "from bentoml._internal.configuration.containers import BentoMLContainer as C; "
        "print(C.prometheus_multiproc_dir.get())"
    )
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip()).relative_to(home)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_each_serving_pod_has_its_own_bentoml_metrics_folder(target: str, tmp_path: Path) -> None:
    """BentoML's folder under the BENTOML_HOME ``flywheel serve`` gives ``bentoml serve``
    in that pod must be an emptyDir of the pod, never the shared workspace volume."""
    from flywheel.config import load_settings
    from flywheel.serving import serve_command

    pod, container = _serving(target)
    pod_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    _, env = serve_command(load_settings(profile=PROFILE[target]), environ=pod_env)
    assert env["BENTOML_HOME"] == pod_env["BENTOML_HOME"]  # the pod and its bentoml agree
    folder = str(Path(env["BENTOML_HOME"]) / _bentoml_metrics_subdir(tmp_path))
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert folder in mounts, f"{target}: nothing mounted at {folder}"
    assert not mounts[folder].get("subPath")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes[mounts[folder]["name"]]) == {"name", "emptyDir"}, volumes


def test_bentoml_empties_its_metrics_folder_when_it_starts(tmp_path: Path) -> None:
    """Why a shared folder breaks: each ``bentoml serve`` start deletes what is there."""
    from bentoml.serving import ensure_prometheus_dir

    folder = tmp_path / "prometheus_multiproc_dir"
    folder.mkdir()
    (folder / "counter_7.db").write_bytes(b"another pod's counters")
    assert ensure_prometheus_dir(str(folder)) == str(folder)
    assert list(folder.iterdir()) == []


def _kind_sh_settings() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=(\S+)", KIND_SH.read_text(), flags=re.MULTILINE))


def _kind_sh_function(name: str) -> str:
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}", KIND_SH.read_text(), re.MULTILINE | re.DOTALL)
    assert match, f"scripts/kind.sh has no function {name}"
    return match.group(0)


def test_kind_makes_the_metrics_mountpoint_as_the_images_user_before_apply() -> None:
    """The container runtime creates a missing mountpoint as root, inside the hostPath
    workspace: ``bentoml/`` would then be root's and the register step could not write
    ``bentoml/models``. kind.sh makes both, owned by the images' user, first."""
    _, container = _serving("kind")
    workspace = next(m for m in container["volumeMounts"] if m["name"] == "workspace")
    nested = [
        m["mountPath"]
        for m in container["volumeMounts"]
        if m["mountPath"].startswith(workspace["mountPath"] + "/")
    ]
    settings = _kind_sh_settings()
    assert nested == [f"{workspace['mountPath']}/{settings['METRICS_MOUNTPOINT']}"]
    body = _kind_sh_function("workspace_owned_by_image_user")
    assert "mkdir -p ${WORKSPACE_DIR} ${mnt}" in body
    assert "chown ${IMAGE_UID}:${IMAGE_UID} ${WORKSPACE_DIR} ${mnt%/*} ${mnt}" in body
    assert 'local mnt="${WORKSPACE_DIR}/${METRICS_MOUNTPOINT}"' in body


# ---- 5. KubeRay v1.7.0: start command and probes ----------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_ray_pods_are_probed_by_kubelet_http_on_the_dashboard_agent(target: str) -> None:
    """Ray 2.60 >= 2.53: KubeRay v1.7.0 generates ``httpGet :52365/api/healthz`` for both
    probes of every group (no probe of ours replaces it), and the dashboard agent is
    started on that port."""
    ray = find(target, "RayCluster", "flywheel-ray")
    assert kuberay_pods._version(ray["spec"]["rayVersion"]) >= kuberay_pods.UNIFIED_HEALTH_MIN
    for name, head, group in kuberay_pods.groups(ray):
        container = group["template"]["spec"]["containers"][0]
        assert "livenessProbe" not in container and "readinessProbe" not in container, name
        expected = kuberay_pods.Probe("httpGet", 52365, "/api/healthz")
        assert kuberay_pods.probes(ray, group) == {
            "livenessProbe": expected,
            "readinessProbe": expected,
        }, name
        params = kuberay_pods.start_params(group, head)
        assert params["dashboard-agent-listen-port"] == "52365", name
        others = {p["containerPort"] for p in container.get("ports") or []}
        assert 52365 not in others, f"{name}: another port of the pod is 52365"


def test_kuberay_start_command_for_the_base_head_and_worker() -> None:
    """The transcription against the command KubeRay v1.7.0 writes for our base groups."""
    ray = yaml.safe_load((K8S / "base" / "raycluster.yaml").read_text())
    (_, _, head), (_, _, worker) = kuberay_pods.groups(ray)
    ulimit = "ulimit -n ${RAY_START_ULIMIT_OPEN_FILES:-65536}; "
    assert kuberay_pods.ray_start(kuberay_pods.start_params(head, True), True) == ulimit + (
        "ray start --head --block --dashboard-agent-listen-port=52365 "
        "--dashboard-host=0.0.0.0 --memory=2147483648 --metrics-export-port=8080 --num-cpus=1"
    )
    assert kuberay_pods.ray_start(kuberay_pods.start_params(worker, False, "h"), False) == (
        ulimit + "ray start --address=h:6379 --block --dashboard-agent-listen-port=52365 "
        "--memory=2147483648 --metrics-export-port=8080 --num-cpus=1"
    )
    assert kuberay_pods.CONTAINER_COMMAND == ("/bin/bash", "-c", "--")  # not a login shell


# ---- 5. kind pinned, and the cluster's footprint ----------------------------------------------


def _check_kind_version(reported: str) -> subprocess.CompletedProcess[str]:
    """kind.sh's check_kind_version, with ``kind version`` answering ``reported``."""
    settings = _kind_sh_settings()
    script = "\n".join(
        [
            f"KIND_VERSION={settings['KIND_VERSION']}",
            "die() { printf '%s\\n' \"$*\" >&2; exit 1; }",
            f"kind() {{ echo '{reported}'; }}",
            _kind_sh_function("check_kind_version"),
            "check_kind_version && echo accepted",
        ]
    )
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)


def test_kind_itself_is_pinned_to_the_release_of_the_node_image() -> None:
    version = _kind_sh_settings()["KIND_VERSION"]
    assert version == "0.27.0"
    assert f"kind v{version}" in KIND_CLUSTER.read_text()  # the node image's release
    assert f"kind v{version}" in (K8S / "README.md").read_text()
    ok = _check_kind_version(f"kind v{version} go1.23.6 linux/amd64")
    assert (ok.returncode, ok.stdout.strip()) == (0, "accepted"), ok.stderr
    for other in ("0.28.0", "0.26.0", "0.27.1"):
        refused = _check_kind_version(f"kind v{other} go1.24.0 linux/amd64")
        assert refused.returncode == 1, other
        assert f"kind v{other} found" in refused.stderr
        assert f"pinned to kind v{version}" in refused.stderr


def _cpu(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _pod_requests(spec: dict[str, Any]) -> tuple[float, float]:
    """CPU and GiB a pod asks the scheduler for: its containers' requests summed, or its
    largest init container's, whichever is more (per resource)."""
    from tests.unit.k8s_tools import quantity_bytes

    def one(c: dict[str, Any]) -> tuple[float, float]:
        req = (c.get("resources") or {}).get("requests") or {}
        return _cpu(str(req.get("cpu", "0"))), quantity_bytes(req.get("memory", 0)) / 2**30

    main = [one(c) for c in spec["containers"]]
    init = [one(c) for c in spec.get("initContainers") or []] or [(0.0, 0.0)]
    return (
        max(sum(c for c, _ in main), max(c for c, _ in init)),
        max(sum(m for _, m in main), max(m for _, m in init)),
    )


def test_the_documented_footprint_is_what_the_kind_overlay_requests() -> None:
    """At the HPA's minimum and the Ray groups' replicas; k8s/README.md states the sum."""
    hpa_min = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
        for h in objects("kind")
        if h["kind"] == "HorizontalPodAutoscaler"
    }
    cpu = memory = 0.0
    for pod in pod_templates("kind"):
        owner = pod.owner
        if owner["kind"] == "CronJob":  # only while a decision runs: its own row, see
            continue  # test_k8s_retrain_cron.py
        if owner["kind"] == "Deployment":
            name = owner["metadata"]["name"]
            count = hpa_min.get(name, owner["spec"].get("replicas", 1))
        else:  # RayCluster: the head once, a worker group its replicas
            groups = {
                f"RayCluster/{owner['metadata']['name']}/{n}": (h, g)
                for n, h, g in kuberay_pods.groups(owner)
            }
            head, group = groups[pod.key]
            count = 1 if head else group.get("replicas", 1)
        c, m = _pod_requests(pod.spec)
        cpu, memory = cpu + count * c, memory + count * m
    assert (round(cpu, 2), round(memory, 2)) == (2.35, 4.75)
    readme = (K8S / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith("| Flywheel, `overlays/kind`")]
    assert f"| {cpu:.2f} CPU | {memory:.2f} GiB |" in row, row
