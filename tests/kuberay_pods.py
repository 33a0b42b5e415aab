"""What the KubeRay operator v1.7.0 makes of a RayCluster group: its start command and probes.

A transcription of ``ray-operator/controllers/ray/common/pod.go`` and ``utils/util.go`` at
tag v1.7.0 (``setMissingRayStartParams``, ``generateRayStartCommand``, ``convertParamMap``,
``GetContainerCommand``, ``initLivenessAndReadinessProbe``), for the parts our manifests
reach: no GPUs, no RayService, no auth/TLS. The unit tests read the manifests through it
offline; ``make test-containers`` starts the platform image exactly as it says and probes
it as the kubelet would.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

#: ``utils.DefaultDashboardAgentListenPort``: the dashboard agent, where the probes go.
DEFAULT_AGENT_PORT = 52365
#: ``utils.RayNodeHealthPath``: the unified health endpoint of Ray >= 2.53.
NODE_HEALTH_PATH = "/api/healthz"
#: ``supportsUnifiedHealthCheck``: from this Ray version on, kubelet ``httpGet`` probes.
UNIFIED_HEALTH_MIN = (2, 53, 0)
DEFAULT_METRICS_PORT = 8080
GCS_PORT = 6379
#: ``GetContainerCommand`` without ``ENABLE_LOGIN_SHELL=true``: not a login shell.
CONTAINER_COMMAND = ("/bin/bash", "-c", "--")
#: Boolean flags ``convertParamMap`` passes as ``--flag=false`` (others: ``--flag`` or nothing).
_EXPLICIT_BOOLEANS = ("log-color", "include-dashboard", "include-log-monitor")


@dataclass(frozen=True)
class Probe:
    """A container probe: ``kind`` is ``httpGet`` or ``exec``."""

    kind: str
    port: int | None = None
    path: str | None = None
    command: tuple[str, ...] = ()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _cpu_units(quantity: str | int) -> int:
    """``resource.Quantity.Value()`` of a CPU quantity: whole CPUs, rounded up."""
    text = str(quantity)
    return math.ceil(int(text[:-1]) / 1000) if text.endswith("m") else math.ceil(float(text))


def _memory_bytes(quantity: str | int) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6}
    units.update({"G": 10**9, "T": 10**12})
    text = str(quantity)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def start_params(
    group: dict[str, Any], head: bool, head_address: str = "flywheel-ray-head-svc"
) -> dict[str, str]:
    """The complete ``rayStartParams`` the operator passes to ``ray start`` for a group."""
    params = {k: str(v) for k, v in (group.get("rayStartParams") or {}).items()}
    if head:
        params.setdefault("dashboard-host", "0.0.0.0")
    else:
        params.setdefault("address", f"{head_address}:{GCS_PORT}")
    params.setdefault("metrics-export-port", str(DEFAULT_METRICS_PORT))
    params["block"] = "true"
    params.setdefault("dashboard-agent-listen-port", str(DEFAULT_AGENT_PORT))
    resources = group["template"]["spec"]["containers"][0].get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    cpu = limits.get("cpu") or requests.get("cpu")
    if cpu is not None and "num-cpus" not in params:
        params["num-cpus"] = str(_cpu_units(cpu))
    if limits.get("memory") is not None and "memory" not in params:
        params["memory"] = str(_memory_bytes(limits["memory"]))
    return params


def ray_start(params: dict[str, str], head: bool) -> str:
    """The generated container argument: ``ulimit ...; ray start [--head] --flags``."""
    flags = []
    for key in sorted(params):
        value = params[key]
        if value.lower() in ("true", "false") and key not in _EXPLICIT_BOOLEANS:
            if value.lower() == "true":
                flags.append(f"--{key}")
        else:
            flags.append(f"--{key}={value}")
    start = " ".join(["ray", "start", *(["--head"] if head else []), *flags])
    return f"ulimit -n ${{RAY_START_ULIMIT_OPEN_FILES:-65536}}; {start}"


def probes(ray_cluster: dict[str, Any], group: dict[str, Any]) -> dict[str, Probe]:
    """``livenessProbe`` and ``readinessProbe`` of a group's Ray container, as the operator
    leaves them: a probe the manifest sets is kept, a missing one is generated."""
    container = group["template"]["spec"]["containers"][0]
    params = group.get("rayStartParams") or {}
    port = int(params.get("dashboard-agent-listen-port", DEFAULT_AGENT_PORT))
    unified = _version(str(ray_cluster["spec"].get("rayVersion", ""))) >= UNIFIED_HEALTH_MIN
    out = {}
    for name in ("livenessProbe", "readinessProbe"):
        given = container.get(name)
        if given and "httpGet" in given:
            out[name] = Probe("httpGet", int(given["httpGet"]["port"]), given["httpGet"]["path"])
        elif given:
            out[name] = Probe("exec", command=tuple(given["exec"]["command"]))
        elif unified:
            out[name] = Probe("httpGet", port, NODE_HEALTH_PATH)
        else:  # older Ray: wget commands run in the container (not modelled further)
            out[name] = Probe("exec", command=("bash", "-c", "wget ..."))
    return out


def groups(ray_cluster: dict[str, Any]) -> list[tuple[str, bool, dict[str, Any]]]:
    """``(name, is_head, group spec)`` for the head and every worker group."""
    spec = ray_cluster["spec"]
    return [("head", True, spec["headGroupSpec"])] + [
        (g["groupName"], False, g) for g in spec.get("workerGroupSpecs") or []
    ]
