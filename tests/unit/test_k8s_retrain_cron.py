"""The retraining decision as CronJob ``flywheel-retrain`` (k8s/base/retrain-cron.yaml).

Offline, on the rendered base and overlays (``make k8s-tools``). The pod-security rules
(non-root, seccomp, no escalation, drop ALL, read-only root, requests and limits, no
token) are the generic per-pod tests of test_k8s_manifests.py, which walk the CronJob's
pod template too; here: that it is walked, its schedule and concurrency, its command
parsed by the real CLI, its workspace mounts, its ServiceAccount and its NetworkPolicy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer

from tests.unit.k8s_tools import (
    K8S,
    OVERLAYS,
    TARGETS,
    find,
    objects,
    pod_templates,
    quantity_bytes,
    selector_matches,
)

ALL_TARGETS = tuple(TARGETS)
KEY = "CronJob/flywheel-retrain"
PROFILE = {"base": "kind", "kind": "kind", "prod": "prod"}
SCHEDULE = {"base": "17 * * * *", "kind": "*/30 * * * *", "prod": "17 * * * *"}
KIND_SH = Path(__file__).resolve().parents[2] / "scripts" / "kind.sh"
#: How KFP 2.14.3 standalone (env/platform-agnostic, namespace kubeflow) exposes its API:
#: manifests/kustomize/base/pipeline/ml-pipeline-apiserver-service.yaml at tag 2.14.3,
#: Service ml-pipeline, selector app=ml-pipeline, port http 8888 -> targetPort 8888.
KFP_SERVICE = {"namespace": "kubeflow", "name": "ml-pipeline", "port": 8888, "target_port": 8888}
KFP_POD_LABELS = {"app": "ml-pipeline", "application-crd-id": "kubeflow-pipelines"}
DNS_POD_LABELS = {"k8s-app": "kube-dns"}  # CoreDNS on kind (and kubeadm clusters)


def _cron(target: str) -> dict[str, Any]:
    return find(target, "CronJob", "flywheel-retrain")


def _pod_spec(target: str) -> dict[str, Any]:
    return dict(_cron(target)["spec"]["jobTemplate"]["spec"]["template"]["spec"])


def _container(target: str) -> dict[str, Any]:
    [c] = _pod_spec(target)["containers"]
    assert c["name"] == "watch"
    return dict(c)


def _env(target: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(target)["env"]}


def expand(arg: str, env: dict[str, str]) -> str:
    """``$(VAR)`` as the kubelet expands it in args: from the container's env, ``$$`` an
    escaped ``$``, an unknown name left as written."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        arg,
    )


def parse_cli(argv: list[str]) -> tuple[Any, Any]:
    """Parse ``flywheel ...`` with the real CLI's (typer's click) parser, running nothing:
    (the group's context, the subcommand's). Unknown options and bad values raise."""
    from flywheel.cli import app

    group: Any = typer.main.get_command(app)
    assert argv[0] == "flywheel"
    ctx = group.make_context("flywheel", argv[1:])
    # The subcommand and its arguments, as the group would resolve them when invoked
    # (typer 0.29 vendors click 8.3, where the attribute is private).
    head = getattr(ctx, "_protected_args", None) or ctx.protected_args
    name, cmd, rest = group.resolve_command(ctx, [*head, *ctx.args])
    assert cmd is not None and name is not None
    return ctx, cmd.make_context(name, rest, parent=ctx)


# ---- the CronJob itself -------------------------------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_the_pod_policies_walk_the_cronjobs_pod(target: str) -> None:
    keys = [p.key for p in pod_templates(target)]
    assert keys.count(KEY) == 1
    assert _pod_spec(target)["restartPolicy"] == "Never"


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_one_decision_at_a_time_bounded_and_kept_briefly(target: str) -> None:
    spec = _cron(target)["spec"]
    assert spec["schedule"] == SCHEDULE[target]
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] <= 3600
    assert 1 <= spec["successfulJobsHistoryLimit"] <= 5
    assert 1 <= spec["failedJobsHistoryLimit"] <= 5
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # the next schedule decides again
    # A hung decision ends before the next one is due (Forbid would skip that one).
    assert 0 < job["activeDeadlineSeconds"] <= 1800
    labels = spec["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "flywheel-retrain"


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_its_command_is_one_watch_tick_that_submits_to_the_kfp_api(target: str) -> None:
    c = _container(target)
    assert "command" not in c  # the image has no ENTRYPOINT: args are the whole command
    env = _env(target)
    argv = [expand(a, env) for a in c["args"]]
    assert not [a for a in argv if "$(" in a], argv
    top, watch = parse_cli(argv)
    assert watch.command.name == "watch"
    assert top.params["profile"] == env["FLYWHEEL_PROFILE"] == PROFILE[target]
    assert watch.params["max_ticks"] == 1
    url = urlsplit(watch.params["submit_host"])
    assert (url.scheme, url.port, url.path) == ("http", KFP_SERVICE["port"], "")
    assert url.hostname == f"{KFP_SERVICE['name']}.{KFP_SERVICE['namespace']}.svc.cluster.local"


def test_a_bad_flag_in_the_command_would_fail_the_parse() -> None:
    """The parse above can fail: a misspelled flag or a non-integer tick count."""
    with pytest.raises(Exception, match="No such option: --max-tick"):
        parse_cli(["flywheel", "watch", "--max-tick", "1"])
    with pytest.raises(typer.BadParameter):
        parse_cli(["flywheel", "watch", "--max-ticks", "one"])
    with pytest.raises(Exception, match="No such command"):
        parse_cli(["flywheel", "wacth", "--max-ticks", "1"])
    assert expand("$(A)-$$(A)-$(B)", {"A": "x"}) == "x-$(A)-$(B)"


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_the_pipeline_it_compiles_runs_its_own_image(target: str) -> None:
    image = _container(target)["image"]
    assert _env(target)["FLYWHEEL_IMAGE"] == image
    assert image.rpartition("/")[2].startswith("flywheel-platform")
    if target == "prod":
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), image


# ---- the workspace: read-only, writable only where a decision writes --------------------------


def _written_folders() -> set[str]:
    """Workspace folders ``flywheel watch`` writes, from the code that picks them."""
    from flywheel.config import Settings
    from flywheel.runlog import log_path
    from flywheel.watch import watch_dir

    ws = Path("/ws")
    s = Settings(workspace=ws)
    # monitor: cli_watch's default --out, <workspace>/monitor (test_retrain_cron_run.py
    # runs the command on a workspace writable only there and fails on any other write).
    return {
        str(watch_dir(s).relative_to(ws)),
        str(log_path(ws, "watch").parent.relative_to(ws)),
        "monitor",
    }


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_workspace_is_read_only_except_the_folders_a_decision_writes(target: str) -> None:
    spec = _pod_spec(target)
    volumes = {v["name"]: v for v in spec["volumes"]}
    claim = {"persistentVolumeClaim": {"claimName": "flywheel-workspace"}, "name": "workspace"}
    assert volumes["workspace"] == claim
    mounts = _container(target)["volumeMounts"]
    [root] = [m for m in mounts if m["mountPath"] == "/mnt/flywheel"]
    assert root == {"name": "workspace", "mountPath": "/mnt/flywheel", "readOnly": True}
    writable = {m["subPath"]: m for m in mounts if m["name"] == "workspace" and m is not root}
    assert set(writable) == _written_folders()
    for sub, m in writable.items():
        assert m["mountPath"] == f"/mnt/flywheel/{sub}" and not m.get("readOnly"), m
    [tmp] = [m for m in mounts if m["mountPath"] == "/tmp"]
    assert set(volumes[tmp["name"]]) == {"name", "emptyDir"}


def test_kind_makes_the_writable_folders_as_the_images_user_before_apply() -> None:
    """kubelet makes a missing subPath folder as root, and hostPath ignores fsGroup: the
    decision could then write nothing. kind.sh makes them owned by uid 1000 first."""
    script = KIND_SH.read_text()
    [listed] = re.findall(r'^RETRAIN_SUBPATHS="([^"]*)"', script, flags=re.MULTILINE)
    mounts = _container("kind")["volumeMounts"]
    assert set(listed.split()) == {m["subPath"] for m in mounts if "subPath" in m}
    body = re.search(r"^workspace_owned_by_image_user\(\) \{\n(.*?)^\}", script, re.M | re.S)
    assert body, "scripts/kind.sh lost workspace_owned_by_image_user"
    line = (
        'docker exec "$NODE" sh -c "cd ${WORKSPACE_DIR} && mkdir -p ${RETRAIN_SUBPATHS} && '
        "chown ${IMAGE_UID}:${IMAGE_UID} ${RETRAIN_SUBPATHS}"
    )
    assert line in body.group(1)
    deploy = re.search(r"^deploy\(\) \{\n(.*?)^\}", script, re.M | re.S)
    assert deploy
    text = deploy.group(1)
    assert 0 <= text.index("\n  workspace_owned_by_image_user\n") < text.index("kc apply -k")


# ---- ServiceAccount and RBAC --------------------------------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_its_service_account_has_no_token_and_no_binding(target: str) -> None:
    spec = _pod_spec(target)
    assert spec["serviceAccountName"] == "flywheel-retrain"
    assert spec["automountServiceAccountToken"] is False
    sa = find(target, "ServiceAccount", "flywheel-retrain")
    assert sa["automountServiceAccountToken"] is False
    bindings = [o for o in objects(target) if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert bindings  # the deployer's binding exists: the scan below looks at something
    for b in bindings:
        for subject in b.get("subjects") or []:
            assert subject.get("name") != "flywheel-retrain", b["metadata"]["name"]
            # a group binding would reach it too: all accounts of the namespace, or all
            assert subject.get("name") not in (
                "system:serviceaccounts",
                "system:serviceaccounts:flywheel",
                "system:authenticated",
            ), b["metadata"]["name"]


# ---- NetworkPolicy ------------------------------------------------------------------------------


def _policies_selecting(target: str, labels: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {
        p["metadata"]["name"]: p
        for p in objects(target)
        if p["kind"] == "NetworkPolicy"
        and p["metadata"]["namespace"] == "flywheel"
        and (
            p["spec"]["podSelector"] == {}
            or selector_matches(p["spec"]["podSelector"].get("matchLabels") or {}, labels)
        )
    }


def _allows(peer: dict[str, Any], namespace: str, labels: dict[str, str]) -> bool:
    """Whether one ``to`` peer admits a pod with these labels in that namespace (the
    namespace carrying its automatic ``kubernetes.io/metadata.name`` label)."""
    ns_sel = (peer.get("namespaceSelector") or {}).get("matchLabels")
    pod_sel = (peer.get("podSelector") or {}).get("matchLabels")
    ns_ok = selector_matches(ns_sel or {}, {"kubernetes.io/metadata.name": namespace})
    return ns_ok and "ipBlock" not in peer and selector_matches(pod_sel or {}, labels)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_network_policy_lets_it_reach_only_the_kfp_api_and_dns(target: str) -> None:
    labels = pod_templates(target)[[p.key for p in pod_templates(target)].index(KEY)].labels
    selecting = _policies_selecting(target, labels)
    assert set(selecting) == {"default-deny-ingress", "flywheel-retrain"}
    policy = selecting["flywheel-retrain"]["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert not policy.get("ingress")  # takes no traffic
    # No other policy opens egress for these pods (NetworkPolicies add up).
    assert all("Egress" not in p["spec"]["policyTypes"] for n, p in selecting.items()
               if n != "flywheel-retrain")  # fmt: skip
    kfp, dns = policy["egress"]
    assert [_allows(peer, "kubeflow", KFP_POD_LABELS) for peer in kfp["to"]] == [True]
    assert kfp["ports"] == [{"port": KFP_SERVICE["target_port"], "protocol": "TCP"}]
    assert [_allows(peer, "kube-system", DNS_POD_LABELS) for peer in dns["to"]] == [True]
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
    # And nothing else: not our namespace's pods (Redis, Ray, serving), not other KFP pods.
    for peer in (*kfp["to"], *dns["to"]):
        assert not _allows(peer, "flywheel", {"app.kubernetes.io/name": "redis"})
        assert not _allows(peer, "kubeflow", {"app": "minio"})
        assert not _allows(peer, "kube-system", KFP_POD_LABELS)


def test_the_peer_check_can_fail() -> None:
    assert not _allows({"namespaceSelector": {}}, "kubeflow", KFP_POD_LABELS)  # no selector
    assert not _allows({"ipBlock": {"cidr": "0.0.0.0/0"}}, "kubeflow", KFP_POD_LABELS)
    anywhere = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}}
    assert not _allows(anywhere, "kubeflow", KFP_POD_LABELS)  # every pod of kubeflow: refused


# ---- footprint ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_footprint_row_states_its_requests_and_limits(overlay: str) -> None:
    res = _container(overlay)["resources"]
    cpu, mem = res["requests"]["cpu"], quantity_bytes(res["requests"]["memory"]) / 2**30
    lim_cpu, lim_mem = res["limits"]["cpu"], quantity_bytes(res["limits"]["memory"]) / 2**30
    readme = (K8S / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith("| retrain CronJob")]
    assert f"requests {cpu}/{mem:g}Gi, limits {lim_cpu}/{lim_mem:g}Gi" in row, row
