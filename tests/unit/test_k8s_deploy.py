"""Cluster deploy decision logic against a FAKE Kubernetes API boundary.

No Kubernetes API server can run here, so ``FakeAppsV1Api`` stands in for
``kubernetes.client.AppsV1Api``: it keeps one Deployment as JSON, applies strategic merge
patches to container env vars by name, bumps ``metadata.generation`` when the pod template
changes, and plays the Deployment controller when watched: it streams watch events in the
API server's wire format (JSON lines) that the real ``kubernetes.watch.Watch`` parses into
``V1Deployment`` objects. What is tested is our logic (patch, wait, smoke test, revert) and
which API verbs it needs; not a real API server, controller or RBAC evaluation.
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


class _WatchResponse:
    """What ``list_namespaced_deployment(watch=True, _preload_content=False)`` returns."""

    def __init__(self, lines: list[str], linger_s: float) -> None:
        self.lines, self.linger_s = lines, linger_s

    def stream(self, amt: Any = None, decode_content: bool = False) -> Any:
        yield from (line.encode() + b"\n" for line in self.lines)
        time.sleep(self.linger_s)  # a real watch blocks until its timeoutSeconds

    def close(self) -> None: ...
    def release_conn(self) -> None: ...


class FakeAppsV1Api:
    """One Deployment, its patches, and a controller that rolls out healthy tags."""

    def __init__(self, tag: str | None, stuck: set[str] | None = None) -> None:
        self.dep = _deployment(tag)
        self.stuck = stuck or set()
        self.calls: list[tuple[str, str]] = []

    def _tag(self) -> str | None:
        container = self.dep["spec"]["template"]["spec"]["containers"][1]
        return next((e["value"] for e in container["env"] if e["name"] == MODEL_TAG_ENV), None)

    def _bump(self) -> None:
        self.dep["metadata"]["resourceVersion"] = str(
            int(self.dep["metadata"]["resourceVersion"]) + 1
        )

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
        self._bump()
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
        done = {
            "observedGeneration": meta["generation"],
            "replicas": want,
            "updatedReplicas": want,
            "availableReplicas": want,
        }
        return [surge, done]

    def list_namespaced_deployment(self, namespace: str, **kwargs: Any) -> Any:
        """Only ever called watching (the Watch helper reads the line below).

        :return: V1DeploymentList
        """
        verb = "watch" if kwargs.get("watch") else "list"
        self.calls.append((verb, f"{namespace}/{kwargs.get('field_selector')}"))
        assert kwargs["field_selector"] == f"metadata.name={NAME}"
        lines = []
        for status in self._progress():
            self.dep["status"] = status
            self._bump()
            lines.append(json.dumps({"type": "MODIFIED", "object": self.dep}))
        return _WatchResponse(lines, linger_s=0.02)


class FakeService:
    """The serving Service: answers /rank with whatever tag the Deployment pins."""

    def __init__(self, api: FakeAppsV1Api, broken: set[str] | None = None) -> None:
        self.api, self.broken, self.calls = api, broken or set(), []

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
