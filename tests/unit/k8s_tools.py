"""Helpers for the offline manifest checks: find the tool venv, render, walk pod templates.

The tools (kubectl, checkov, kubernetes-validate, jsonschema) live in their own venv
``.venv-k8s`` (``make k8s-tools``), or wherever ``FLYWHEEL_K8S_TOOLS`` points (a ``bin``
directory). A missing tool is an error that says how to install it, never a skip.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
CRD_DIR = K8S / "crds" / "kuberay-v1.7.0"
KIND_CLUSTER = K8S / "kind-cluster.yaml"
#: Kustomize targets checked: the base and every overlay, by the name the tests use.
TARGETS: dict[str, Path] = {
    "base": K8S / "base",
    "kind": K8S / "overlays" / "kind",
    "prod": K8S / "overlays" / "prod",
}
OVERLAYS = ("kind", "prod")
#: Kubernetes versions every built-in object must validate against: the supported floor
#: and the version of kind's node image (k8s/kind-cluster.yaml).
K8S_VERSIONS = ("1.30", "1.32")


class ToolsMissingError(RuntimeError):
    """The tool venv (or one tool in it) is not installed."""


def tools_dir() -> Path:
    """The ``bin`` directory of the tool venv (``$FLYWHEEL_K8S_TOOLS`` overrides it)."""
    override = os.environ.get("FLYWHEEL_K8S_TOOLS")
    return Path(override) if override else REPO / ".venv-k8s" / "bin"


def tool(name: str) -> Path:
    """Path of one tool (kubectl, checkov, python); ToolsMissingError names the fix."""
    path = tools_dir() / name
    if not path.exists():
        raise ToolsMissingError(
            f"{name} not found in {tools_dir()} (the Kubernetes tool venv): run "
            "`make k8s-tools` (or point FLYWHEEL_K8S_TOOLS at a bin/ directory that has "
            "kubectl, checkov and a python with kubernetes-validate and jsonschema)"
        )
    return path


def _run(args: list[str], what: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


@functools.cache
def render(target: str) -> str:
    """``kubectl kustomize`` of one of TARGETS, as YAML text."""
    return _run([str(tool("kubectl")), "kustomize", str(TARGETS[target])], f"render {target}")


@functools.cache
def objects(target: str) -> tuple[dict[str, Any], ...]:
    """The rendered objects of one target."""
    return tuple(doc for doc in yaml.safe_load_all(render(target)) if doc)


def schema_check(rendered: Path) -> list[dict[str, Any]]:
    """Run k8s_validate.py in the tool venv over a rendered file: one result per object."""
    script = Path(__file__).with_name("k8s_validate.py")
    out = _run(
        [str(tool("python")), str(script), str(rendered), str(CRD_DIR), *K8S_VERSIONS],
        f"schema validation of {rendered.name}",
    )
    results: list[dict[str, Any]] = json.loads(out)
    return results


def checkov(rendered: Path, config: Path) -> dict[str, Any]:
    """checkov's JSON report for one rendered file (kubernetes framework, config applied)."""
    proc = subprocess.run(
        [
            *(str(tool("checkov")), "--file", str(rendered), "--config-file", str(config)),
            *("--framework", "kubernetes", "--output", "json", "--quiet"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    if proc.returncode not in (0, 1):  # 1 means "some check failed": the report says which
        raise RuntimeError(f"checkov crashed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    kube = [r for r in reports if r.get("check_type") == "kubernetes"]
    if len(kube) != 1:
        raise RuntimeError(f"checkov gave no kubernetes report for {rendered}: {proc.stdout[:500]}")
    return kube[0]


def ref(obj: dict[str, Any]) -> str:
    """``Kind/name`` of an object, for messages and ids."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


@dataclass(frozen=True)
class PodTemplate:
    """One pod template found in a rendered target."""

    target: str
    owner: dict[str, Any] = field(repr=False)
    #: ``Kind/name`` of the owner, plus the Ray group (``head`` or the worker group name).
    key: str
    metadata: dict[str, Any] = field(repr=False)
    spec: dict[str, Any] = field(repr=False)

    @property
    def namespace(self) -> str:
        return str(self.owner["metadata"].get("namespace", ""))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.metadata.get("labels") or {})

    def containers(self) -> Iterator[dict[str, Any]]:
        """Init containers, then containers."""
        yield from self.spec.get("initContainers") or []
        yield from self.spec.get("containers") or []


#: Kinds whose pod templates the walker knows how to find; every other kind must have none.
_WORKLOAD_TEMPLATES = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
#: Every kind the manifests may contain. A new kind fails the tests until it is added here
#: (and, if it carries pods, to the walker), so no pod template can escape the policies.
KNOWN_KINDS = frozenset(
    {
        *_WORKLOAD_TEMPLATES,
        "RayCluster",
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ConfigMap",
    }
)


def pod_templates(target: str) -> list[PodTemplate]:
    """Every pod template in a rendered target (workloads and RayCluster groups)."""
    found: list[PodTemplate] = []
    for obj in objects(target):
        kind = obj["kind"]
        if kind in _WORKLOAD_TEMPLATES:
            tpl = obj
            for key in _WORKLOAD_TEMPLATES[kind]:
                tpl = tpl[key]
            found.append(PodTemplate(target, obj, ref(obj), tpl.get("metadata") or {}, tpl["spec"]))
        elif kind == "RayCluster":
            groups = [("head", obj["spec"]["headGroupSpec"])] + [
                (g["groupName"], g) for g in obj["spec"].get("workerGroupSpecs") or []
            ]
            for name, group in groups:
                tpl = group["template"]
                found.append(
                    PodTemplate(
                        target, obj, f"{ref(obj)}/{name}", tpl.get("metadata") or {}, tpl["spec"]
                    )
                )
    return found


def find(target: str, kind: str, name: str, namespace: str = "flywheel") -> dict[str, Any]:
    """The one object of that kind, name and namespace; AssertionError if absent."""
    hits = [
        o
        for o in objects(target)
        if o["kind"] == kind
        and o["metadata"]["name"] == name
        and o["metadata"].get("namespace", "") == namespace
    ]
    assert len(hits) == 1, f"{target}: expected one {kind} {namespace}/{name}, found {len(hits)}"
    return hits[0]


_QUANTITY = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6}
_QUANTITY.update({"G": 10**9, "T": 10**12})


def quantity_bytes(quantity: str | int) -> int:
    """Bytes in a Kubernetes memory quantity (``"1Gi"``, ``"512Mi"``, ``"2G"``, ``1024``)."""
    text = str(quantity)
    number = text.rstrip("KMGTik")
    suffix = text[len(number) :]
    if suffix not in _QUANTITY or not number:
        raise ValueError(f"memory quantity {text!r}: expected a number with Ki/Mi/Gi/Ti/k/M/G/T")
    return int(float(number) * _QUANTITY[suffix])


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a non-empty matchLabels-style selector selects these labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
