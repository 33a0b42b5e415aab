"""Offline checks of k8s/: rendering, schemas, pod security, RBAC, wiring, checkov.

Every rule of issue #5 is a test that fails when a manifest breaks it. The tools come from
the tool venv (``make k8s-tools``); without it these tests fail and say so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.k8s_tools import (
    KIND_CLUSTER,
    KNOWN_KINDS,
    OVERLAYS,
    TARGETS,
    PodTemplate,
    checkov,
    find,
    objects,
    pod_templates,
    quantity_bytes,
    render,
    schema_check,
    selector_matches,
)

ALL_TARGETS = tuple(TARGETS)
NAMESPACES = {"flywheel", "kubeflow"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding"}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")

#: Containers allowed a writable root filesystem: "target:Kind/name[/group]:container" ->
#: why. Empty: every container writes only to mounted volumes (/tmp is an emptyDir).
WRITABLE_ROOT_ALLOWED: dict[str, str] = {}
#: Pod templates allowed a ServiceAccount token, "target:Kind/name[/group]" -> why.
TOKEN_ALLOWED: dict[str, str] = {
    "prod:RayCluster/flywheel-ray/head": "the autoscaler sidecar scales worker pods via the API",
}
#: FLYWHEEL_PROFILE each target's pods run with.
PROFILE = {"base": "kind", "kind": "kind", "prod": "prod"}
#: Serving HPA bounds per target (min, max).
HPA_BOUNDS = {"base": (1, 3), "kind": (1, 2), "prod": (3, 12)}
#: The user both images run as (``USER 1000:1000`` in images/*.Dockerfile).
IMAGE_UID = 1000
#: Size of the Ray pods' memory-backed /dev/shm (the object store) per target.
RAY_SHM = {"base": "1Gi", "kind": "1Gi", "prod": "8Gi"}
#: Ray's default object store is this share of the memory it sees: /dev/shm must hold it.
RAY_OBJECT_STORE_SHARE = 0.3
IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
KIND_SH = Path(__file__).resolve().parents[2] / "scripts" / "kind.sh"


def _pod_params() -> list[Any]:
    """One param per pod template of every target; a render failure becomes one failing param."""
    try:
        return [
            pytest.param(pod, id=f"{pod.target}:{pod.key}")
            for target in ALL_TARGETS
            for pod in pod_templates(target)
        ]
    except Exception as exc:  # reported by the test, so a broken render is never a skip
        return [pytest.param(exc, id="render-failed")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pod" in metafunc.fixturenames:
        metafunc.parametrize("pod", _pod_params())


def _pod(param: PodTemplate | Exception) -> PodTemplate:
    if isinstance(param, Exception):
        raise param
    return param


def _pod_id(pod: PodTemplate) -> str:
    return f"{pod.target}:{pod.key}"


def _all_pods() -> list[PodTemplate]:
    return [pod for target in ALL_TARGETS for pod in pod_templates(target)]


# ---- rendering and schemas ------------------------------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_renders_and_holds_only_known_kinds(target: str) -> None:
    objs = objects(target)
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "Deployment", "Service", "RayCluster"} <= kinds
    assert kinds <= KNOWN_KINDS, f"unknown kinds {kinds - KNOWN_KINDS}: teach k8s_tools"


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_namespaced_objects_name_a_flywheel_namespace(target: str) -> None:
    for obj in objects(target):
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED:
            assert ns is None, f"{obj['kind']}/{obj['metadata']['name']} is cluster-scoped"
        else:
            assert ns in NAMESPACES, f"{obj['kind']}/{obj['metadata']['name']} in {ns!r}"


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_objects_validate_against_schemas(target: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{target}.yaml"
    rendered.write_text(render(target))
    results = schema_check(rendered)
    assert len(results) == len(objects(target))
    errors = {r["ref"]: r["errors"] for r in results if r["errors"]}
    assert errors == {}
    for result in results:
        ray = result["ref"].startswith(("RayCluster/", "RayJob/"))
        expected = ["crd:ray.io/v1"] if ray else ["kubernetes:1.30", "kubernetes:1.32"]
        assert result["checked_by"] == expected, result["ref"]


def test_namespace_enforces_restricted_pod_security() -> None:
    for target in ALL_TARGETS:
        labels = find(target, "Namespace", "flywheel", namespace="")["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# ---- pod security and hygiene, one case per pod template --------------------------------------


def test_pod_templates_found() -> None:
    keys = {pod.key for pod in _all_pods()}
    assert {
        "Deployment/flywheel-serving",
        "Deployment/redis",
        "RayCluster/flywheel-ray/head",
        "RayCluster/flywheel-ray/cpu",
    } <= keys


def _effective(pod: PodTemplate, container: dict[str, Any], key: str) -> Any:
    """A securityContext field as the kubelet sees it: the container's, else the pod's."""
    own = (container.get("securityContext") or {}).get(key)
    return own if own is not None else (pod.spec.get("securityContext") or {}).get(key)


def test_pod_runs_as_non_root_with_runtime_default_seccomp(pod: Any) -> None:
    pod = _pod(pod)
    for c in pod.containers():
        assert _effective(pod, c, "runAsNonRoot") is True, c["name"]
        assert _effective(pod, c, "runAsUser") != 0, c["name"]
        assert (_effective(pod, c, "seccompProfile") or {}).get("type") == "RuntimeDefault"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.spec.get(key), key


def test_containers_are_locked_down(pod: Any) -> None:
    pod = _pod(pod)
    for c in pod.containers():
        sc = c.get("securityContext") or {}
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert not sc.get("privileged"), c["name"]
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
        assert not sc.get("capabilities", {}).get("add"), c["name"]
        allowed = f"{_pod_id(pod)}:{c['name']}" in WRITABLE_ROOT_ALLOWED
        assert sc.get("readOnlyRootFilesystem") is True or allowed, c["name"]


def test_writable_root_allow_list_is_justified_and_current() -> None:
    live = {f"{_pod_id(p)}:{c['name']}" for p in _all_pods() for c in p.containers()}
    for entry, why in WRITABLE_ROOT_ALLOWED.items():
        assert entry in live and len(why) > 10, entry


def test_containers_request_and_limit_cpu_and_memory(pod: Any) -> None:
    pod = _pod(pod)
    for c in pod.containers():
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res.get(kind) or {}), f"{c['name']} {kind}"


def test_images_are_tagged_never_latest(pod: Any) -> None:
    pod = _pod(pod)
    for c in pod.containers():
        image = c["image"]
        if DIGEST.search(image):
            continue
        tag = image.rpartition("/")[2].partition(":")[2]
        assert tag and tag != "latest", f"{c['name']}: {image} needs a version tag or digest"


def test_volume_mounts_have_volumes_and_claims_exist(pod: Any) -> None:
    pod = _pod(pod)
    volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
    for c in pod.containers():
        for mount in c.get("volumeMounts") or []:
            assert mount["name"] in volumes, f"{c['name']} mounts unknown {mount['name']}"
    claims = {
        o["metadata"]["name"]
        for o in objects(pod.target)
        if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["namespace"] == pod.namespace
    }
    for name, volume in volumes.items():
        sources = set(volume) - {"name"}
        assert len(sources) == 1, f"volume {name} has sources {sources}"
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims, name


def test_service_account_token_only_where_the_api_is_called(pod: Any) -> None:
    pod = _pod(pod)
    accounts = {
        o["metadata"]["name"]
        for o in objects(pod.target)
        if o["kind"] == "ServiceAccount" and o["metadata"]["namespace"] == pod.namespace
    }
    assert pod.spec.get("serviceAccountName") in accounts
    if _pod_id(pod) not in TOKEN_ALLOWED:
        assert pod.spec.get("automountServiceAccountToken") is False


def test_pods_run_the_target_profile(pod: Any) -> None:
    pod = _pod(pod)
    if pod.key == "Deployment/redis":
        pytest.skip("Deployment/redis runs the upstream redis image, not flywheel code")
    for c in pod.spec["containers"]:
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        assert env.get("FLYWHEEL_PROFILE") == PROFILE[pod.target], c["name"]


# ---- serving -----------------------------------------------------------------------------------


def _serving(target: str) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = find(target, "Deployment", "flywheel-serving")
    spec = deployment["spec"]["template"]["spec"]
    [container] = [c for c in spec["containers"] if c["name"] == "serving"]
    return deployment, container


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_serving_probes_rollout_and_prestop(target: str) -> None:
    deployment, c = _serving(target)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 3000}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    for probe in ("readinessProbe", "livenessProbe"):
        assert ports.get(c[probe]["httpGet"]["port"], c[probe]["httpGet"]["port"]) == 3000
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert str(strategy["rollingUpdate"]["maxUnavailable"]) in ("0", "0%")
    pre_stop = c["lifecycle"]["preStop"]
    assert pre_stop.get("sleep", {}).get("seconds", 0) > 0 or "exec" in pre_stop
    env = {e["name"] for e in c["env"]}
    assert "FLYWHEEL_MODEL_TAG" in env
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "flywheel-serving"


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_hpa_and_pdb_select_the_serving_pods_only(target: str) -> None:
    hpa = find(target, "HorizontalPodAutoscaler", "flywheel-serving")
    target_ref = hpa["spec"]["scaleTargetRef"]
    assert (target_ref["kind"], target_ref["name"]) == ("Deployment", "flywheel-serving")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == HPA_BOUNDS[target]
    pdb = find(target, "PodDisruptionBudget", "flywheel-serving")
    selector = pdb["spec"]["selector"]["matchLabels"]
    selected = [p.key for p in pod_templates(target) if selector_matches(selector, p.labels)]
    assert selected == ["Deployment/flywheel-serving"]
    # At least one pod stays up, and where there are several a drain can still evict one.
    min_replicas = HPA_BOUNDS[target][0]
    assert 1 <= pdb["spec"]["minAvailable"] <= max(1, min_replicas - 1)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_service_selectors_and_target_ports_match_pods(target: str) -> None:
    services = [o for o in objects(target) if o["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} >= {"flywheel-serving", "redis"}
    for svc in services:
        pods = [
            p
            for p in pod_templates(target)
            if p.namespace == svc["metadata"]["namespace"]
            and selector_matches(svc["spec"].get("selector") or {}, p.labels)
        ]
        assert pods, f"Service {svc['metadata']['name']} selects no pod template"
        for port in svc["spec"]["ports"]:
            for pod in pods:
                names = {
                    p.get("name"): p["containerPort"]
                    for c in pod.spec["containers"]
                    for p in c.get("ports") or []
                }
                tp = port.get("targetPort", port["port"])
                assert tp in names or tp in names.values(), f"{svc['metadata']['name']}:{tp}"
    port = find(target, "Service", "flywheel-serving")["spec"]["ports"][0]["port"]
    assert port == 3000
    assert find(target, "Service", "redis")["spec"]["ports"][0]["port"] == 6379


# ---- RBAC --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_deployer_role_is_exactly_get_patch_watch_on_serving(target: str) -> None:
    role = find(target, "Role", "flywheel-deployer")
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": ["flywheel-serving"],
            "verbs": ["get", "patch", "watch"],
        }
    ]
    binding = find(target, "RoleBinding", "flywheel-deployer")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "flywheel-deployer",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}
    ]


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_no_role_grants_secrets_or_wildcards(target: str) -> None:
    roles = [o for o in objects(target) if o["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role.get("rules") or []:
            name = role["metadata"]["name"]
            assert "secrets" not in rule.get("resources", []), name
            assert "*" not in rule.get("resources", []), name
            assert "*" not in rule.get("verbs", []), name
            assert "*" not in rule.get("apiGroups", []), name


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_service_accounts_do_not_automount_tokens(target: str) -> None:
    for sa in (o for o in objects(target) if o["kind"] == "ServiceAccount"):
        assert sa.get("automountServiceAccountToken") is False, sa["metadata"]["name"]


# ---- storage and Ray ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_workspace_claims_in_both_namespaces_share_one_store(target: str) -> None:
    claims = [find(target, "PersistentVolumeClaim", "flywheel-workspace", ns) for ns in NAMESPACES]
    for claim in claims:
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    if target == "base":
        # The overlays supply the volumes: the base binds its claims to names it leaves
        # to them and defines no PersistentVolume of its own.
        assert [o for o in objects(target) if o["kind"] == "PersistentVolume"] == []
        assert all(claim["spec"].get("volumeName") for claim in claims)
        return
    stores = set()
    for claim in claims:
        pv = find(target, "PersistentVolume", claim["spec"]["volumeName"], namespace="")
        assert pv["spec"]["claimRef"] == {
            "namespace": claim["metadata"]["namespace"],
            "name": "flywheel-workspace",
        }
        assert pv["spec"]["storageClassName"] == claim["spec"]["storageClassName"]
        assert pv["spec"]["accessModes"] == ["ReadWriteMany"]
        source = {k: v for k, v in pv["spec"].items() if k in ("hostPath", "nfs")}
        stores.add(yaml.safe_dump(source))
    assert len(stores) == 1, "the two workspace PVs must point at the same storage"


def test_workspace_mounted_at_mnt_flywheel_with_writable_tmp_where_needed() -> None:
    for pod in _all_pods():
        if pod.key == "Deployment/redis":
            continue
        volumes = {v["name"]: v for v in pod.spec["volumes"]}
        for c in pod.spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            claim = volumes[mounts["/mnt/flywheel"]]["persistentVolumeClaim"]["claimName"]
            assert claim == "flywheel-workspace", _pod_id(pod)
            assert "emptyDir" in volumes[mounts["/tmp"]], _pod_id(pod)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_raycluster_matches_the_contract(target: str) -> None:
    ray = find(target, "RayCluster", "flywheel-ray")
    spec = ray["spec"]
    assert spec["rayVersion"] == "2.60.0"
    assert [g["groupName"] for g in spec["workerGroupSpecs"]] == ["cpu"]
    pods = [p for p in pod_templates(target) if p.key.startswith("RayCluster/flywheel-ray/")]
    for pod in pods:
        image = pod.spec["containers"][0]["image"]
        assert image.rpartition("/")[2].startswith("flywheel-platform"), image
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in head["ports"]} >= {8265, 10001}
    worker = spec["workerGroupSpecs"][0]
    cpu = [p["containers"][0]["resources"]["limits"]["cpu"] for p in (pods[0].spec, pods[1].spec)]
    if target == "prod":
        assert spec["enableInTreeAutoscaling"] is True
        assert worker["maxReplicas"] > worker["minReplicas"]
        assert spec["autoscalerOptions"]["securityContext"]["allowPrivilegeEscalation"] is False
    else:
        assert spec["enableInTreeAutoscaling"] is False
        assert cpu == ["1", "1"]
        assert worker["replicas"] == worker["maxReplicas"] == 1


# ---- what the images need to run (images/README.md) -------------------------------------------


def _flywheel_image(container: dict[str, Any]) -> bool:
    return (
        container["image"].rpartition("/")[2].startswith(("flywheel-platform", "flywheel-serving"))
    )


def _mounts_workspace(pod: PodTemplate) -> bool:
    return any(
        (v.get("persistentVolumeClaim") or {}).get("claimName") == "flywheel-workspace"
        for v in pod.spec.get("volumes") or []
    )


def _dockerfile_instruction(name: str, instruction: str) -> list[str]:
    """The JSON (exec) form of an instruction in images/<name>.Dockerfile: the reference."""
    for line in (IMAGES_DIR / f"{name}.Dockerfile").read_text().splitlines():
        if line.startswith(f"{instruction} ["):
            return list(yaml.safe_load(line.partition(" ")[2]))
    raise AssertionError(f"images/{name}.Dockerfile has no exec-form {instruction}")


def _dockerfile_user(name: str) -> tuple[str, str, str]:
    """``(user, ":", group)`` of the last USER in images/<name>.Dockerfile."""
    users = [
        line.split()[1]
        for line in (IMAGES_DIR / f"{name}.Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert users, f"images/{name}.Dockerfile sets no USER"
    return users[-1].partition(":")


def test_workspace_pods_run_as_the_images_user_with_fs_group(pod: Any) -> None:
    pod = _pod(pod)
    if not (_mounts_workspace(pod) or any(_flywheel_image(c) for c in pod.containers())):
        pytest.skip(f"{_pod_id(pod)} neither mounts the workspace nor runs a flywheel image")
    user, _, group = _dockerfile_user("platform")
    assert (user, group) == (str(IMAGE_UID), str(IMAGE_UID))
    pod_sc = pod.spec.get("securityContext") or {}
    assert pod_sc.get("fsGroup") == IMAGE_UID, _pod_id(pod)
    assert pod_sc.get("fsGroupChangePolicy") == "OnRootMismatch", _pod_id(pod)
    for c in pod.containers():
        assert _effective(pod, c, "runAsUser") == IMAGE_UID, c["name"]
        assert _effective(pod, c, "runAsGroup") == IMAGE_UID, c["name"]


def test_flywheel_containers_write_only_tmp_and_workspace(pod: Any) -> None:
    pod = _pod(pod)
    volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
    for c in (c for c in pod.containers() if _flywheel_image(c)):
        assert (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is True, c["name"]
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
        assert "/tmp" in mounts, f"{c['name']}: BentoML, Ray and Python write /tmp"
        assert set(volumes[mounts["/tmp"]]) == {"name", "emptyDir"}, c["name"]
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        assert env.get("HOME") == "/tmp", f"{c['name']}: caches under $HOME need a writable HOME"


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_ray_pods_mount_a_memory_dev_shm_sized_per_overlay(target: str) -> None:
    pods = [p for p in pod_templates(target) if p.key.startswith("RayCluster/")]
    assert len(pods) == 2
    for pod in pods:
        volumes = {v["name"]: v for v in pod.spec["volumes"]}
        c = pod.spec["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm.get("medium") == "Memory", _pod_id(pod)
        assert shm.get("sizeLimit") == RAY_SHM[target], _pod_id(pod)
        # The store must fit, and memory-backed files count against the pod's memory limit.
        memory = quantity_bytes(c["resources"]["limits"]["memory"])
        size = quantity_bytes(shm["sizeLimit"])
        assert RAY_OBJECT_STORE_SHARE * memory <= size <= memory, _pod_id(pod)
        assert "emptyDir" in volumes[mounts["/tmp"]], _pod_id(pod)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_serving_overrides_args_never_command(target: str) -> None:
    deployment, serving = _serving(target)
    entrypoint = _dockerfile_instruction("serving", "ENTRYPOINT")
    assert entrypoint[:2] == ["/usr/bin/tini", "-g"], entrypoint
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        assert "command" not in c, f"{c['name']}: `command` would replace tini as PID 1"
    args = serving.get("args", _dockerfile_instruction("serving", "CMD"))
    assert args[:2] == ["flywheel", "serve"], args
    assert args[args.index("--port") + 1] == str(serving["ports"][0]["containerPort"])


def test_ray_containers_find_ray_under_kuberays_shell(pod: Any) -> None:
    pod = _pod(pod)
    if not pod.key.startswith("RayCluster/"):
        pytest.skip(f"{_pod_id(pod)} is not a Ray pod: KubeRay does not start it")
    for c in pod.spec["containers"]:
        # KubeRay v1.7.0 generates `/bin/bash -c -- "ulimit ...; ray start ..."` when both
        # are unset (`-lc`, a login shell, only with the operator's ENABLE_LOGIN_SHELL=true).
        assert "command" not in c and "args" not in c, c["name"]
        assert not c.get("envFrom"), f"{c['name']}: envFrom could override PATH unseen"
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        path = env.get("PATH", "/opt/venv/bin")
        assert path.split(":")[0] == "/opt/venv/bin", f"{c['name']}: PATH={path}"
        # The image's PATH serves `bash -c`; should the operator run a login shell, Debian's
        # /etc/profile resets PATH, and BASH_ENV, read after it, puts the venv back.
        assert env.get("BASH_ENV") == "/opt/venv/bin/activate", c["name"]


def test_kind_deploy_gives_the_hostpath_workspace_to_the_images_user() -> None:
    script = KIND_SH.read_text()
    settings = dict(re.findall(r"^([A-Z_]+)=(\S+)", script, flags=re.MULTILINE))
    assert settings["IMAGE_UID"] == str(IMAGE_UID)
    hostpaths = {
        o["spec"]["hostPath"]["path"] for o in objects("kind") if o["kind"] == "PersistentVolume"
    }
    assert hostpaths == {settings["WORKSPACE_DIR"]}
    funcs = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^(\w+)\(\) \{\n(.*?)^\}", script, flags=re.MULTILINE | re.DOTALL)
    }
    chowners = [
        name
        for name, body in funcs.items()
        if re.search(
            r"docker exec \S+ .*chown \$\{IMAGE_UID\}:\$\{IMAGE_UID\} \$\{WORKSPACE_DIR\}", body
        )
    ]
    assert chowners, "no function chowns ${WORKSPACE_DIR} on the node"
    deploy = funcs["deploy"]
    calls = [deploy.find(f"\n  {name}\n") for name in chowners]
    first_call = min((i for i in calls if i >= 0), default=-1)
    assert 0 <= first_call < deploy.index("kc apply -k k8s/overlays/kind"), (
        "deploy must chown the hostPath workspace before applying the overlay"
    )


# ---- overlays ----------------------------------------------------------------------------------


def test_kind_nodeports_match_cluster_port_mappings() -> None:
    cluster = yaml.safe_load(KIND_CLUSTER.read_text())
    [node] = cluster["nodes"]
    mapped = {m["containerPort"]: m["hostPort"] for m in node["extraPortMappings"]}
    node_ports = {
        p["nodePort"]
        for o in objects("kind")
        if o["kind"] == "Service" and o["spec"].get("type") == "NodePort"
        for p in o["spec"]["ports"]
    }
    assert node_ports == set(mapped)
    serving = find("kind", "Service", "flywheel-serving")["spec"]["ports"][0]
    assert mapped[serving["nodePort"]] == 3000
    assert DIGEST.search(node["image"]) and ":v1.3" in node["image"]


def test_prod_pins_every_image_by_digest() -> None:
    images = [c["image"] for p in pod_templates("prod") for c in p.containers()]
    ray = find("prod", "RayCluster", "flywheel-ray")["spec"]
    images += [ray["autoscalerOptions"]["image"]] if "image" in ray["autoscalerOptions"] else []
    assert len(images) >= 4
    for image in images:
        assert DIGEST.search(image), f"{image} is not pinned by digest"


def test_prod_scales_and_persists() -> None:
    serving, _ = _serving("prod")
    # The HPA owns the count (test_k8s_first_run.py): at least 3 serving pods from its minimum.
    assert "replicas" not in serving["spec"]
    assert find("prod", "HorizontalPodAutoscaler", "flywheel-serving")["spec"]["minReplicas"] == 3
    redis = find("prod", "Deployment", "redis")["spec"]["template"]["spec"]
    args = redis["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    [data] = [v for v in redis["volumes"] if v["name"] == "data"]
    assert data["persistentVolumeClaim"]["claimName"] == "redis-data"
    base_args = find("base", "Deployment", "redis")["spec"]["template"]["spec"]["containers"][0]
    assert base_args["args"][base_args["args"].index("--appendonly") + 1] == "no"


# ---- checkov -----------------------------------------------------------------------------------


_SKIP_LINE = re.compile(r"^\s*-\s*(CKV2?_K8S_\d+)\s*(#\s*(.*))?$")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_skips_are_each_justified(overlay: str) -> None:
    config = TARGETS[overlay] / ".checkov.yaml"
    skips = yaml.safe_load(config.read_text()).get("skip-check") or []
    justified = {}
    for line in config.read_text().splitlines():
        match = _SKIP_LINE.match(line)
        if match:
            justified[match.group(1)] = (match.group(3) or "").strip()
    assert sorted(justified) == sorted(skips)
    for check, why in justified.items():
        assert len(why) > 20, f"{config}: skip of {check} has no justification"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_passes_on_rendered_overlay(overlay: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render(overlay))
    report = checkov(rendered, TARGETS[overlay] / ".checkov.yaml")
    failed = [
        f"{f['check_id']} {f['resource']}: {f['check_name']}"
        for f in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert report["summary"]["passed"] > 100
    workloads = {"Deployment", "Service", "Role", "NetworkPolicy"}
    assert report["summary"]["resource_count"] >= sum(
        o["kind"] in workloads for o in objects(overlay)
    )
