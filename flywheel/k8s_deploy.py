"""Deploy in the cluster profiles: pin the serving Deployment to a model tag, watch it roll out.

:class:`KubernetesTarget` is the :class:`flywheel.deploy.Target` of the kind and prod
profiles; :func:`flywheel.deploy.rollout` drives it (switch, smoke test, revert on failure).
The served model is pinned by the env var ``FLYWHEEL_MODEL_TAG`` of container ``serving``
of Deployment ``flywheel-serving`` (names from ``settings.k8s``). A switch patches that
env var (strategic merge patch; the Deployment's annotation ``flywheel.dev/previous-model-tag``
remembers what it replaced, so a retried deploy task can still revert) and watches the
Deployment until the rollout completes or ``rollout_timeout_s`` passes.

The Kubernetes API calls, and so the Role ``flywheel-deployer`` (``k8s/base``), are exactly
:data:`API_VERBS` on that one Deployment: ``get`` (read by name), ``patch``, ``watch`` (a
watch with ``fieldSelector=metadata.name=<name>``, which the API server authorizes against
the resource name, so no ``list`` is needed). The smoke test is plain HTTP to the Service.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: The container env var that pins the model a serving pod loads.
MODEL_TAG_ENV: Final = "FLYWHEEL_MODEL_TAG"
#: Deployment annotation holding the tag a switch replaced ("" = none was pinned).
PREVIOUS_TAG_ANNOTATION: Final = "flywheel.dev/previous-model-tag"
#: The Kubernetes API verbs this module uses on the serving Deployment (RBAC must match).
API_VERBS: Final = ("get", "patch", "watch")
#: The smoke test's request: any user, the service's default candidates.
SMOKE_REQUEST: Final = {"user_id": 0, "k": 5}
SMOKE_ATTEMPTS: Final = 5

HttpPost = Callable[[str, dict[str, Any], float], Any]


class RolloutTimeout(TimeoutError):
    """The Deployment did not finish rolling out in time; the message names it."""


class RolloutFailed(RuntimeError):
    """The Deployment controller gave up (ProgressDeadlineExceeded) or the spec is wrong."""


@dataclass(frozen=True)
class RolloutState:
    complete: bool
    stalled: bool
    detail: str


def rollout_state(deployment: Any) -> RolloutState:
    """Where a Deployment's rollout stands (a ``V1Deployment``), judged as ``kubectl rollout
    status`` judges it (``DeploymentStatusViewer``).

    Nothing in ``status`` counts until the controller has seen the latest spec
    (``status.observedGeneration >= metadata.generation``): right after a patch, the
    conditions and counts are still the previous rollout's, and a ``ProgressDeadlineExceeded``
    left by it would fail the new rollout before its ReplicaSet exists. Once seen: that
    condition means the controller gave up (stalled); otherwise the rollout is complete when
    every wanted replica is updated, no old replica is left and every updated one is
    available.
    """
    meta, spec, status = deployment.metadata, deployment.spec, deployment.status
    want = spec.replicas if spec.replicas is not None else 1
    observed = (status.observed_generation or 0) if status else 0
    updated = (status.updated_replicas or 0) if status else 0
    total = (status.replicas or 0) if status else 0
    available = (status.available_replicas or 0) if status else 0
    detail = (
        f"generation {meta.generation} (observed {observed}), {updated}/{want} updated, "
        f"{available} available, {total} total"
    )
    if observed < (meta.generation or 0):
        return RolloutState(False, False, detail)
    stalled = any(
        c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded"
        for c in ((status.conditions or []) if status else [])
    )
    complete = not stalled and updated >= want and total <= updated and available >= updated
    return RolloutState(complete, stalled, detail)


def env_patch(container: str, tag: str | None, previous: str | None) -> dict[str, Any]:
    """The strategic merge patch that pins ``container`` to ``tag`` (``None``: unpin).

    Containers and env vars merge by name, so nothing else in the pod template changes.
    """
    entry: dict[str, Any] = (
        {"name": MODEL_TAG_ENV, "value": tag}
        if tag is not None
        else {"name": MODEL_TAG_ENV, "$patch": "delete"}
    )
    return {
        "metadata": {
            "annotations": {
                PREVIOUS_TAG_ANNOTATION: previous or "",
                "kubernetes.io/change-cause": f"flywheel deploy: model {tag or '(unpinned)'}",
            }
        },
        "spec": {"template": {"spec": {"containers": [{"name": container, "env": [entry]}]}}},
    }


def default_apps_api() -> Any:
    """An ``AppsV1Api`` from the pod's ServiceAccount, else from ``~/.kube/config``."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.AppsV1Api()


class KubernetesTarget:
    """The serving Deployment as a deploy target (see the module docstring).

    Args:
        settings: ``settings.k8s`` names the Deployment, container, Service URL, timeout.
        apps_api: a ``kubernetes.client.AppsV1Api`` (default: :func:`default_apps_api`).
        http: ``post(url, json_body, timeout_s) -> json`` for the smoke test.
        sleep: pause between smoke-test attempts.
    """

    def __init__(
        self,
        settings: Settings,
        apps_api: Any = None,
        http: HttpPost | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.k8s = settings.k8s
        self.apps = apps_api if apps_api is not None else default_apps_api()
        if http is None:
            from flywheel.simulate.traffic import post_json

            http = post_json
        self.http: HttpPost = http
        self.sleep = sleep

    @property
    def name(self) -> str:
        return f"{self.k8s.namespace}/{self.k8s.serving_deployment}"

    def _read(self) -> Any:
        return self.apps.read_namespaced_deployment(self.k8s.serving_deployment, self.k8s.namespace)

    def _pinned(self, deployment: Any) -> str | None:
        for c in deployment.spec.template.spec.containers:
            if c.name == self.k8s.serving_container:
                return next((e.value for e in c.env or [] if e.name == MODEL_TAG_ENV), None)
        names = [c.name for c in deployment.spec.template.spec.containers]
        raise RolloutFailed(
            f"deployment {self.name} has no container {self.k8s.serving_container!r} "
            f"(settings.k8s.serving_container); it has {names}"
        )

    def current(self) -> str | None:
        """The tag pinned on the serving container, ``None`` if none is."""
        return self._pinned(self._read())

    def switch(self, tag: str) -> None:
        """Pin ``tag`` and wait for the rollout (raises RolloutTimeout / RolloutFailed)."""
        previous = self.current()
        self._patch(tag, previous)
        log.info("deployment %s: %s -> %s, waiting for the rollout", self.name, previous, tag)
        self.wait_for_rollout()

    def revert(self) -> str | None:
        """Pin the tag the last switch replaced again and wait; return it.

        Returns the current tag unchanged when no switch is on record (the annotation is
        absent), since then there is nothing known to go back to.
        """
        deployment = self._read()
        annotations = deployment.metadata.annotations or {}
        if PREVIOUS_TAG_ANNOTATION not in annotations:
            return self._pinned(deployment)
        previous = annotations[PREVIOUS_TAG_ANNOTATION] or None
        self._patch(previous, self._pinned(deployment))
        log.warning("deployment %s: reverting to %s", self.name, previous)
        self.wait_for_rollout()
        return previous

    def _patch(self, tag: str | None, previous: str | None) -> None:
        self.apps.patch_namespaced_deployment(
            self.k8s.serving_deployment,
            self.k8s.namespace,
            env_patch(self.k8s.serving_container, tag, previous),
        )

    def smoke_test(self, tag: str) -> None:
        """``POST /rank`` must answer with ``model_version == tag`` and some items.

        Retried a few times: just after a rollout the Service may still route a request
        to a terminating old pod.
        """
        url = f"{self.k8s.serving_url.rstrip('/')}/rank"
        problem = ""
        for attempt in range(SMOKE_ATTEMPTS):
            if attempt:
                self.sleep(2.0)
            try:
                answer = self.http(url, dict(SMOKE_REQUEST), 10.0) or {}  # None: empty body
            except Exception as exc:  # connection refused, 503, ...: try again
                problem = f"POST {url} failed: {exc}"
                continue
            served = answer.get("model_version")
            if served == tag and answer.get("items"):
                return
            problem = f"POST {url} answered model_version={served!r} with " + (
                f"{len(answer.get('items') or [])} items; expected {tag!r} and at least one"
            )
        raise RuntimeError(f"{problem} (after {SMOKE_ATTEMPTS} attempts)")

    def wait_for_rollout(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Watch the Deployment until its rollout completes.

        Raises:
            RolloutTimeout: not complete after ``settings.k8s.rollout_timeout_s``.
            RolloutFailed: the controller reports ProgressDeadlineExceeded.
        """
        timeout = self.k8s.rollout_timeout_s
        deadline = clock() + timeout
        deployment = self._read()
        while True:
            state = rollout_state(deployment)
            if state.complete:
                log.info("deployment %s rolled out: %s", self.name, state.detail)
                return
            if state.stalled:
                raise RolloutFailed(
                    f"deployment {self.name} exceeded its progress deadline: {state.detail}"
                )
            remaining = deadline - clock()
            if remaining <= 0:
                raise RolloutTimeout(
                    f"deployment {self.name} did not finish rolling out within {timeout:g} s "
                    f"(settings.k8s.rollout_timeout_s): {state.detail}"
                )
            deployment = self._watch_until_done(deployment, remaining, deadline, clock)

    def _watch_until_done(
        self, deployment: Any, remaining: float, deadline: float, clock: Callable[[], float]
    ) -> Any:
        """Follow the Deployment's changes until its rollout completes or stalls, the
        deadline passes or the server ends the watch; return its last known state."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        stream = watch.Watch()
        try:
            for event in stream.stream(
                self.apps.list_namespaced_deployment,
                self.k8s.namespace,
                field_selector=f"metadata.name={self.k8s.serving_deployment}",
                resource_version=deployment.metadata.resource_version,
                timeout_seconds=max(1, math.ceil(remaining)),
            ):
                if event["type"] in ("ADDED", "MODIFIED"):
                    deployment = event["object"]
                    state = rollout_state(deployment)
                    if state.complete or state.stalled or clock() >= deadline:
                        stream.stop()
        except ApiException as exc:
            if exc.status != 410:  # 410 Gone: our resourceVersion is too old; re-read
                raise
            return self._read()
        return deployment
