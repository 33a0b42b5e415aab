"""Cluster deploy decision logic against a FAKE Kubernetes API boundary.

No Kubernetes API server can run here, so ``FakeAppsV1Api`` stands in for
``kubernetes.client.AppsV1Api``: it keeps one Deployment as JSON with its change history by
``resourceVersion``, applies strategic merge patches to container env vars by name, bumps
``metadata.generation`` when the pod template changes, and plays the Deployment controller
while it is watched. Its watch checks each request as the API server and RBAC would
receive it (namespace, the ``metadata.name`` field selector, ``resourceVersion``,
``timeoutSeconds``) and streams typed events (``ADDED``, ``MODIFIED``, ``DELETED``,
``ERROR``, with 410 Gone for a compacted version) in the server's wire format (JSON lines),
which the real ``kubernetes.watch.Watch`` parses into ``V1Deployment`` objects. Time is a
``FakeClock`` the server advances (a watch stays open until its timeoutSeconds) where a
test needs it. What is tested is our logic (patch, wait, smoke test, revert) and which API
verbs and watch requests it needs; not a real API server, controller or RBAC evaluation.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from flywheel.config import KubernetesSettings, Settings
from flywheel.deploy import DeployError, rollout
from flywheel.k8s_deploy import (
    API_VERBS,
    MODEL_TAG_ENV,
    KubernetesTarget,
    RolloutFailed,
    RolloutTimeout,
    rollout_state,
)

NAME, NS, CONTAINER = "flywheel-serving", "flywheel", "serving"


def _deployment(tag: str | None, replicas: int = 2) -> dict[str, Any]:
    env = [{"name": "FLYWHEEL_PROFILE", "value": "kind"}]
    if tag is not None:
        env.append({"name": MODEL_TAG_ENV, "value": tag})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NS, "generation": 3, "resourceVersion": "100"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {
                    "containers": [
                        {"name": "log-shipper", "image": "busybox"},
                        {"name": CONTAINER, "image": "flywheel-serving:0.1.0", "env": env},
                    ]
                },
            },
        },
        "status": {
            "observedGeneration": 3,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
        },
    }


def _to_model(obj: dict[str, Any]) -> Any:
    from kubernetes import client

    return client.ApiClient().deserialize(SimpleNamespace(data=json.dumps(obj)), "V1Deployment")


#: What an API server does with a watch that has no timeoutSeconds: it ends it after its
#: ``--min-request-timeout`` (1800 s by default) or up to twice that.
SERVER_WATCH_TIMEOUT_S = 1800
#: Without a fake clock, an idle watch ends after this much real time instead of its
#: timeoutSeconds: a server may end a watch early at any time, and the code must re-watch.
IDLE_S = 0.02


class FakeClock:
    """Seconds on a clock the fake API server advances as its watches stream and block."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _WatchResponse:
    """What ``list_namespaced_deployment(watch=True, _preload_content=False)`` returns: the
    server's event stream as JSON lines, produced as the cluster changes during the watch.

    ``request["ended"]`` says how the watch ended: ``"timeout"`` (it stayed open until its
    timeoutSeconds), ``"stopped"`` (the client closed it first), ``"expired"`` (410 Gone).
    """

    def __init__(self, api: FakeAppsV1Api, request: dict[str, Any], since: int | None) -> None:
        self.api, self.request, self.since = api, request, since

    def stream(self, amt: Any = None, decode_content: bool = False) -> Any:
        api, request = self.api, self.request
        started = api.clock() if api.clock else 0.0
        limit = request["timeout_seconds"] or SERVER_WATCH_TIMEOUT_S
        if self.since is not None and self.since < api.compacted:
            request["ended"] = "expired"
            yield _line("ERROR", _status_object(410, "Expired", self.since, api.compacted))
            return
        if api.error is not None:  # the server fails the watch (etcd down, ...)
            (code, reason), api.error = api.error, None
            request["ended"] = "error"
            yield _line("ERROR", {"kind": "Status", "code": code, "reason": reason, "message": ""})
            return
        seen = self.since
        if seen is None:  # no resourceVersion: the current state as a synthetic ADDED
            seen = api.rv
            yield _line("ADDED", api.dep)
        for at, change in api.timeline.pop(0) if api.timeline else api.controller_steps():
            if at >= limit:
                break
            if api.clock:
                api.clock.now = max(api.clock.now, started + at)
            change()
            for rv, kind, obj in api.history:
                if rv > seen:
                    seen = rv
                    yield _line(kind, obj)
        if api.clock:  # nothing more happens: the server holds the watch open until its timeout
            api.clock.now = max(api.clock.now, started + limit)
        else:
            time.sleep(min(limit, IDLE_S))
        request["ended"] = "timeout"

    def close(self) -> None:
        self.request.setdefault("ended", "stopped")

    def release_conn(self) -> None: ...


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _status_object(code: int, reason: str, asked: int, oldest: int) -> dict[str, Any]:
    message = f"too old resource version: {asked} ({oldest})"
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeAppsV1Api:
    """One Deployment, its patches, and a controller that rolls out healthy tags.

    Like an API server it keeps the Deployment's change history by ``resourceVersion``
    (``history``; ``compact()`` forgets it, as etcd compaction does), answers a watch with
    the changes after the version asked for (none asked: the current state as ``ADDED``)
    or with an ``ERROR`` event (410 Gone for a compacted version, ``error`` for any other),
    and checks each watch request as the server would receive it: the namespace and the
    ``metadata.name`` field selector RBAC requires, ``watch``, ``resourceVersion`` and
    ``timeoutSeconds`` (recorded in ``watches``). The controller makes its rollout steps
    while a watch is open, one every ``step_s`` seconds of ``clock`` (a :class:`FakeClock`;
    without one, at once in real time); ``timeline`` replaces them, for the next watches,
    with scripted ``(seconds after the watch began, change)`` lists.

    Args:
        stuck: tags whose new pod never becomes ready (the rollout hangs).
        stalls: tags whose rollout the controller gives up on (ProgressDeadlineExceeded).
    """

    def __init__(
        self,
        tag: str | None,
        stuck: set[str] | None = None,
        stalls: set[str] | None = None,
        clock: FakeClock | None = None,
        step_s: float = 0.0,
    ) -> None:
        self.dep = _deployment(tag)
        self.stuck, self.stalls = stuck or set(), stalls or set()
        self.clock, self.step_s = clock, step_s
        self.calls: list[tuple[str, str]] = []
        self.watches: list[dict[str, Any]] = []
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.compacted = 0  # versions below this are gone from the history
        self.timeline: list[list[tuple[float, Any]]] = []
        self.before_watch: list[Any] = []  # changes made between the client's read and its watch
        self.error: tuple[int, str] | None = None

    @property
    def rv(self) -> int:
        return int(self.dep["metadata"]["resourceVersion"])

    def _tag(self) -> str | None:
        container = self.dep["spec"]["template"]["spec"]["containers"][1]
        return next((e["value"] for e in container["env"] if e["name"] == MODEL_TAG_ENV), None)

    def _write(self, kind: str = "MODIFIED") -> None:
        """Store the Deployment as a new version, as the API server does on every change."""
        self.dep["metadata"]["resourceVersion"] = str(self.rv + 1)
        self.history.append((self.rv, kind, copy.deepcopy(self.dep)))

    def compact(self) -> None:
        """Forget the history up to the current version (etcd compaction)."""
        self.compacted = self.rv

    def recreate(self, tag: str) -> None:
        """Delete the Deployment and create it again, already rolled out with ``tag``."""
        self._write("DELETED")
        rv = self.rv
        self.dep = _deployment(tag)
        self.dep["metadata"]["generation"] = self.dep["status"]["observedGeneration"] = 1
        self.dep["metadata"]["resourceVersion"] = str(rv)
        self._write("ADDED")

    def read_namespaced_deployment(self, name: str, namespace: str) -> Any:
        self.calls.append(("get", f"{namespace}/{name}"))
        assert (name, namespace) == (NAME, NS)
        return _to_model(self.dep)

    def patch_namespaced_deployment(self, name: str, namespace: str, body: Any) -> Any:
        self.calls.append(("patch", f"{namespace}/{name}"))
        assert (name, namespace) == (NAME, NS) and isinstance(body, dict)  # strategic merge
        before = copy.deepcopy(self.dep["spec"]["template"])
        self.dep["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
        containers = self.dep["spec"]["template"]["spec"]["containers"]
        for patch in body["spec"]["template"]["spec"]["containers"]:
            target = next(c for c in containers if c["name"] == patch["name"])
            for entry in patch["env"]:
                env = [e for e in target.get("env", []) if e["name"] != entry["name"]]
                if entry.get("$patch") != "delete":
                    env.append(entry)
                target["env"] = env
        if self.dep["spec"]["template"] != before:
            self.dep["metadata"]["generation"] += 1
        self._write()
        return _to_model(self.dep)

    def _progress(self) -> list[dict[str, Any]]:
        """The controller's next steps toward the current spec, as status snapshots."""
        meta, status, want = self.dep["metadata"], self.dep["status"], self.dep["spec"]["replicas"]
        if status["observedGeneration"] == meta["generation"] and status["updatedReplicas"] == want:
            return []
        surge = {
            "observedGeneration": meta["generation"],
            "replicas": want + 1,
            "updatedReplicas": 1,
            "availableReplicas": want,
        }
        if self._tag() in self.stuck:  # the new pod never becomes ready
            return [] if status == surge else [surge]
        if self._tag() in self.stalls:  # ... and the controller gives up on it
            reason = "ProgressDeadlineExceeded"
            gave_up = {
                **surge,
                "conditions": [{"type": "Progressing", "status": "False", "reason": reason}],
            }
            return [] if status == gave_up else [surge, gave_up]
        done = {
            "observedGeneration": meta["generation"],
            "replicas": want,
            "updatedReplicas": want,
            "availableReplicas": want,
        }
        return [surge, done]

    def _set_status(self, status: dict[str, Any]) -> None:
        self.dep["status"] = status
        self._write()

    def controller_steps(self) -> list[tuple[float, Any]]:
        """The controller's changes during a watch, ``step_s`` apart."""
        return [
            ((n + 1) * self.step_s, lambda s=status: self._set_status(s))
            for n, status in enumerate(self._progress())
        ]

    def list_namespaced_deployment(self, namespace: str, **kwargs: Any) -> Any:
        """Only a watch is allowed (the Role grants no ``list``): checked as the server and
        RBAC would check the request, then answered as a stream of events.

        :return: V1DeploymentList
        """
        from kubernetes.client.exceptions import ApiException, ApiValueError

        verb = "watch" if kwargs.get("watch") else "list"
        self.calls.append((verb, f"{namespace}/{kwargs.get('field_selector')}"))
        if namespace is None:  # what the generated client says before sending anything
            raise ApiValueError(
                "Missing the required parameter `namespace` when calling "
                "`list_namespaced_deployment`"
            )
        selector = kwargs.get("field_selector")
        if verb != "watch" or namespace != NS or selector != f"metadata.name={NAME}":
            raise ApiException(status=403, reason=f"Forbidden: {verb} {namespace}/{selector}")
        assert kwargs.get("_preload_content") is False  # a stream, not a parsed list
        timeout = kwargs.get("timeout_seconds")
        if timeout is not None and (not isinstance(timeout, int) or timeout < 1):
            raise ApiException(status=400, reason=f"BadRequest: timeoutSeconds={timeout!r}")
        asked = kwargs.get("resource_version")
        request = {
            "namespace": namespace,
            "field_selector": selector,
            "resource_version": asked,
            "timeout_seconds": timeout,
        }
        self.watches.append(request)
        while self.before_watch:
            self.before_watch.pop(0)()
        return _WatchResponse(self, request, int(asked) if asked is not None else None)


class FakeService:
    """The serving Service: answers /rank with whatever tag the Deployment pins."""

    def __init__(self, api: FakeAppsV1Api, broken: set[str] | None = None) -> None:
        self.api, self.broken = api, broken or set()
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, url: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        self.calls.append((url, body))
        tag = self.api._tag()
        items = [] if tag in self.broken else [{"item_id": 7, "score": 0.3}]
        return {"request_id": "r", "model_version": tag, "items": items}


def _target(api: FakeAppsV1Api, http: Any, timeout_s: float = 2.0) -> KubernetesTarget:
    settings = Settings(profile="kind", k8s=KubernetesSettings(rollout_timeout_s=timeout_s))
    return KubernetesTarget(settings, apps_api=api, http=http, sleep=lambda _: None)


def test_good_model_is_pinned_rolled_out_and_smoke_tested() -> None:
    api = FakeAppsV1Api("m:1")
    service = FakeService(api)
    result = rollout(_target(api, service), "m:2")
    assert result.status == "deployed" and api._tag() == "m:2"
    assert api.dep["metadata"]["generation"] == 4  # one template change, one rollout
    assert rollout_state(_to_model(api.dep)).complete
    assert api.dep["metadata"]["annotations"]["flywheel.dev/previous-model-tag"] == "m:1"
    # the other container and env vars were left alone by the merge patch
    containers = api.dep["spec"]["template"]["spec"]["containers"]
    assert containers[0] == {"name": "log-shipper", "image": "busybox"}
    assert {"name": "FLYWHEEL_PROFILE", "value": "kind"} in containers[1]["env"]
    url, body = service.calls[0]
    assert url == "http://flywheel-serving.flywheel.svc.cluster.local:3000/rank"
    assert body["user_id"] == 0


def test_rollout_that_never_completes_times_out_and_reverts() -> None:
    api = FakeAppsV1Api("m:1", stuck={"m:2"})
    service = FakeService(api)
    with pytest.raises(DeployError) as info:
        rollout(_target(api, service, timeout_s=0.5), "m:2")
    message = str(info.value)
    assert "rollout" in message and "flywheel/flywheel-serving" in message
    assert "within 0.5 s" in message and "reverted to 'm:1'" in message
    assert api._tag() == "m:1" and rollout_state(_to_model(api.dep)).complete
    # In order (repeats collapsed): pin m:2, watch until the deadline, pin m:1 back, watch.
    steps = [verb for verb, _ in itertools.groupby(v for v, _ in api.calls)]
    assert steps == ["get", "patch", "get", "watch", "get", "patch", "get", "watch"]
    assert service.calls == []  # never smoke-tested a model that did not roll out


def test_failed_smoke_test_reverts_to_the_previous_tag() -> None:
    api = FakeAppsV1Api("m:1")
    service = FakeService(api, broken={"m:2"})
    with pytest.raises(DeployError, match=r"'m:2' failed its smoke test.*0 items"):
        rollout(_target(api, service), "m:2")
    assert api._tag() == "m:1"
    assert len(service.calls) == 5  # retried before giving up


def test_first_deploy_failing_unpins_again() -> None:
    api = FakeAppsV1Api(None)
    with pytest.raises(DeployError, match="reverted to None"):
        rollout(_target(api, FakeService(api, broken={"m:1"})), "m:1")
    env = api.dep["spec"]["template"]["spec"]["containers"][1]["env"]
    assert [e["name"] for e in env] == ["FLYWHEEL_PROFILE"]


def test_smoke_test_waits_out_an_old_pod_still_answering() -> None:
    api = FakeAppsV1Api("m:1")
    answers = iter(["m:1", "m:1", "m:2"])
    events: list[str] = []

    def http(url: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        served = next(answers)
        events.append(f"post:{served}")
        return {"model_version": served, "items": [{"item_id": 1, "score": 0.1}]}

    settings = Settings(profile="kind")
    target = KubernetesTarget(
        settings, apps_api=api, http=http, sleep=lambda s: events.append(f"sleep:{s:g}")
    )
    target.smoke_test("m:2")  # passes: the new model answered on the third attempt
    assert events == ["post:m:1", "sleep:2", "post:m:1", "sleep:2", "post:m:2"]
    with pytest.raises(RuntimeError, match=r"model_version='m:1'.*expected 'm:2'"):
        _target(api, lambda *_: {"model_version": "m:1", "items": [{"item_id": 1}]}).smoke_test(
            "m:2"
        )


def test_missing_container_is_named() -> None:
    api = FakeAppsV1Api("m:1")
    settings = Settings(profile="kind", k8s=KubernetesSettings(serving_container="ranker"))
    target = KubernetesTarget(settings, apps_api=api, http=FakeService(api))
    with pytest.raises(RolloutFailed, match=r"no container 'ranker'.*\['log-shipper', 'serving'\]"):
        target.current()


def test_rollout_state_follows_kubectl_rollout_status() -> None:
    def state(
        gen: int,
        observed: int,
        want: int,
        total: int,
        updated: int,
        available: int,
        conditions: list[dict[str, str]] | None = None,
    ) -> Any:
        dep = _deployment("m:1", replicas=want)
        dep["metadata"]["generation"] = gen
        dep["status"] = {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": conditions or [],
        }
        return rollout_state(_to_model(dep))

    assert state(4, 4, 2, 2, 2, 2).complete
    assert not state(4, 3, 2, 2, 2, 2).complete  # controller has not seen the new spec
    assert not state(4, 4, 2, 3, 2, 2).complete  # an old pod is still there
    assert not state(4, 4, 2, 2, 2, 1).complete  # not all available
    deadline = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
    assert state(4, 4, 2, 3, 1, 2, deadline).stalled
    # The condition counts first once the spec is seen, even with the counts all there.
    assert (
        state(4, 4, 2, 2, 2, 2, deadline).stalled and not state(4, 4, 2, 2, 2, 2, deadline).complete
    )
    # Not seen yet: the condition (and the counts) are the previous rollout's, stale.
    stale = state(5, 4, 2, 3, 1, 2, deadline)
    assert not stale.stalled and not stale.complete
    assert not state(5, 4, 2, 2, 2, 2).complete
    # The HPA scaled down during the rollout: 3 updated pods for 2 wanted is done (kubectl
    # too: no old pod left, every updated one available); the surplus goes by scale-down.
    assert state(4, 4, 2, 3, 3, 3).complete
    assert not state(4, 4, 3, 3, 2, 3).complete  # one wanted replica is not updated yet


def _deadline_exceeded(api: FakeAppsV1Api) -> None:
    """What an earlier rollout that the controller gave up on leaves in the status."""
    api.dep["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]


def test_a_deploy_over_an_old_deadline_condition_waits_for_its_own_rollout() -> None:
    """Right after the patch the controller has not seen generation 4: the status still
    carries the earlier rollout's ProgressDeadlineExceeded. Judged before
    observedGeneration catches up, that stale condition failed the deploy at once."""
    api = FakeAppsV1Api("m:1")
    _deadline_exceeded(api)
    seen: list[tuple[int, int, bool]] = []
    read = api.read_namespaced_deployment

    def read_and_note(name: str, namespace: str) -> Any:
        dep = read(name, namespace)
        stale = any(c.reason == "ProgressDeadlineExceeded" for c in dep.status.conditions or [])
        seen.append((dep.metadata.generation, dep.status.observed_generation, stale))
        return dep

    api.read_namespaced_deployment = read_and_note  # type: ignore[method-assign]
    result = rollout(_target(api, FakeService(api)), "m:2")
    assert result.status == "deployed" and api._tag() == "m:2"
    assert (4, 3, True) in seen  # the wait did start on the stale condition
    assert rollout_state(_to_model(api.dep)).complete


def test_the_revert_after_a_stalled_rollout_waits_for_its_own_rollout() -> None:
    """m:2 stalls (ProgressDeadlineExceeded); the revert patches m:1 back while that
    condition is still in the status, and must wait for the controller, not fail on it."""
    api = FakeAppsV1Api("m:1", stalls={"m:2"})
    with pytest.raises(DeployError) as info:
        rollout(_target(api, FakeService(api)), "m:2")
    message = str(info.value)
    assert "exceeded its progress deadline" in message and "reverted to 'm:1'" in message
    assert "reverting failed" not in message
    assert api._tag() == "m:1" and rollout_state(_to_model(api.dep)).complete


# ---- the watch: what it asks the server, which events it follows, when it stops -------------


def _clocked(timeout_s: float, **fake: Any) -> tuple[FakeAppsV1Api, KubernetesTarget, FakeClock]:
    """A fake API on a fake clock, with ``m:2`` pinned (not yet rolled out)."""
    clock = FakeClock()
    api = FakeAppsV1Api("m:1", clock=clock, **fake)
    target = _target(api, FakeService(api), timeout_s=timeout_s)
    target._patch("m:2", "m:1")
    return api, target, clock


def test_the_watch_is_narrowed_resumed_from_the_read_and_bounded_by_the_time_left() -> None:
    """In the namespace, on the one Deployment (the field selector RBAC's resourceNames
    needs), from the version just read (no change between read and watch is missed or
    replayed), and for the time left rounded up to a whole second (here 0.5 s: 1 s)."""
    api, target, clock = _clocked(0.5, stuck={"m:2"})
    read = api.dep["metadata"]["resourceVersion"]
    with pytest.raises(RolloutTimeout, match=r"within 0\.5 s"):
        target.wait_for_rollout(clock=clock)
    assert api.watches == [
        {
            "namespace": NS,
            "field_selector": f"metadata.name={NAME}",
            "resource_version": read,
            "timeout_seconds": 1,
            "ended": "timeout",
        }
    ]
    assert clock.now == 1.0  # held open for its second; then the deadline had passed


def test_the_watch_ends_as_soon_as_the_rollout_completes() -> None:
    api, target, clock = _clocked(60.0, step_s=1.0)
    target.wait_for_rollout(clock=clock)
    assert api._tag() == "m:2" and rollout_state(_to_model(api.dep)).complete
    assert [w["ended"] for w in api.watches] == ["stopped"]
    assert clock.now == 2.0  # the second controller step, not the 60 s timeout


def test_a_stalled_rollout_fails_when_the_controller_gives_up() -> None:
    api, target, clock = _clocked(60.0, stalls={"m:2"}, step_s=1.0)
    with pytest.raises(RolloutFailed, match="exceeded its progress deadline"):
        target.wait_for_rollout(clock=clock)
    assert [w["ended"] for w in api.watches] == ["stopped"] and clock.now == 2.0


def test_an_event_at_the_deadline_ends_the_watch_there() -> None:
    """Time left 1.5 s: a 2 s watch; the controller's step at exactly 1.5 s ends it, the
    server would otherwise hold it open for the half second past the deadline."""
    api, target, clock = _clocked(1.5, stuck={"m:2"}, step_s=1.5)
    with pytest.raises(RolloutTimeout, match=r"within 1\.5 s"):
        target.wait_for_rollout(clock=clock)
    assert [(w["timeout_seconds"], w["ended"]) for w in api.watches] == [(2, "stopped")]
    assert clock.now == 1.5


def test_a_deployment_created_again_is_followed_through_its_added_event() -> None:
    """Deleted and applied again (already rolled out with m:2): ``DELETED`` carries the old
    object and is not a rollout state; the ``ADDED`` object is, and it is complete."""
    api, target, clock = _clocked(30.0)
    api.timeline.append([(2.0, lambda: api.recreate("m:2"))])
    target.wait_for_rollout(clock=clock)
    assert [kind for _, kind, _ in api.history][-2:] == ["DELETED", "ADDED"]
    assert [w["ended"] for w in api.watches] == ["stopped"] and clock.now == 2.0


def test_an_expired_resource_version_is_read_again_and_watched_from_there() -> None:
    """The controller moved on and etcd compacted the version just read: the watch answers
    410 Gone; the Deployment is read again and the next watch starts from that version."""
    api, target, clock = _clocked(30.0)
    read = api.dep["metadata"]["resourceVersion"]
    surge = api._progress()[0]

    def surge_then_compact() -> None:
        api._set_status(surge)
        api.compact()

    api.before_watch.append(surge_then_compact)
    target.wait_for_rollout(clock=clock)
    assert [(w["resource_version"], w["ended"]) for w in api.watches] == [
        (read, "expired"),
        (str(int(read) + 1), "stopped"),
    ]
    assert [verb for verb, _ in api.calls] == ["patch", "get", "watch", "get", "watch"]
    assert rollout_state(_to_model(api.dep)).complete and clock.now == 0.0


def test_any_other_watch_error_is_raised() -> None:
    from kubernetes.client.exceptions import ApiException

    api, target, clock = _clocked(30.0)
    api.error = (500, "InternalError")  # once: a retry would succeed
    with pytest.raises(ApiException) as info:
        target.wait_for_rollout(clock=clock)
    assert info.value.status == 500 and [w["ended"] for w in api.watches] == ["error"]


def _role_verbs() -> dict[str, Any]:
    """The Role of the rendered k8s/base (kubectl from the tool venv, as the manifest tests)."""
    from tests.unit.k8s_tools import render

    for doc in yaml.safe_load_all(render("base")):
        if doc and doc["kind"] == "Role" and doc["metadata"]["name"] == "flywheel-deployer":
            return doc
    raise AssertionError("k8s/base renders no Role flywheel-deployer")


def test_rbac_grants_exactly_the_verbs_the_code_calls() -> None:
    api = FakeAppsV1Api("m:1", stuck={"m:3"})
    for tag, broken in (("m:2", set()), ("m:3", set()), ("m:4", {"m:4"})):
        with contextlib.suppress(DeployError):
            rollout(_target(api, FakeService(api, broken), timeout_s=0.3), tag)
    used = {verb for verb, _ in api.calls}
    assert used == set(API_VERBS)
    assert {where for _, where in api.calls} == {
        f"{NS}/{NAME}",
        f"{NS}/metadata.name={NAME}",  # watches are narrowed to the one Deployment
    }
    role = _role_verbs()
    assert role["metadata"]["namespace"] == NS
    rules = [r for r in role["rules"] if "deployments" in r["resources"]]
    assert len(rules) == 1 and rules[0]["apiGroups"] == ["apps"]
    assert rules[0]["resourceNames"] == [NAME]
    assert sorted(rules[0]["verbs"]) == sorted(API_VERBS)


# ---- the serving side of the pin: a pod serves exactly FLYWHEEL_MODEL_TAG ------------------


def _point_to(settings: Settings, tag: str) -> None:
    from flywheel.registry import POINTER_FILENAME

    path = settings.state_dir / POINTER_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"champion": tag, "history": [], "updated_at": "x"}))


def test_pinned_tag_is_served_instead_of_the_pointer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flywheel.serving import PINNED_TAG_ENV, ChampionWatcher, LoadedModel

    assert PINNED_TAG_ENV == MODEL_TAG_ENV  # the deploy step and serving agree on the name
    settings = Settings(workspace=tmp_path)
    _point_to(settings, "m:1")
    loads: list[str] = []
    available = {"m:1"}

    def loader(_: Settings, tag: str) -> LoadedModel:
        if tag not in available:
            raise FileNotFoundError(f"{tag} not in the store")
        loads.append(tag)
        return LoadedModel(tag, booster=None, feature_service="ranking_v1")  # type: ignore[arg-type]

    monkeypatch.setenv(MODEL_TAG_ENV, "m:2")
    watcher = ChampionWatcher(settings, check_s=0.0, loader=loader)
    assert watcher.current() is None  # m:2 cannot load yet: not ready, and no fallback to m:1
    available.add("m:2")
    assert watcher.current().tag == "m:2"  # type: ignore[union-attr]
    _point_to(settings, "m:3")
    available.add("m:3")
    assert watcher.current().tag == "m:2"  # type: ignore[union-attr]
    assert loads == ["m:2"]  # loaded once, the pointer never followed


def test_serve_command_passes_the_pin_to_bentoml() -> None:
    from flywheel.serving import serve_command

    _, env = serve_command(
        Settings(), environ={MODEL_TAG_ENV: "m:9", "FLYWHEEL_CONFIG": "/x.yaml", "PATH": "/bin"}
    )
    assert env[MODEL_TAG_ENV] == "m:9" and "FLYWHEEL_CONFIG" not in env


def test_smoke_test_posts_with_the_traffic_client_and_retries_an_empty_answer() -> None:
    from flywheel.simulate.traffic import post_json

    api = FakeAppsV1Api("m:1")
    settings = Settings(profile="kind")
    assert KubernetesTarget(settings, apps_api=api).http is post_json
    calls = []

    def empty(url: str, body: dict[str, Any], timeout_s: float) -> None:
        calls.append(url)  # post_json's answer to an empty body

    with pytest.raises(RuntimeError, match=r"model_version=None with 0 items.*5 attempts"):
        _target(api, empty).smoke_test("m:2")
    assert len(calls) == 5
