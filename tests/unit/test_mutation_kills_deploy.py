"""Rollout and revert (flywheel.deploy, flywheel.k8s_deploy): cases mutation testing found.

The Kubernetes API is faked (``FakeAppsV1Api`` of ``test_k8s_deploy``: no cluster here);
``rollout_state`` is fed plain objects shaped like a ``V1Deployment``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from flywheel import k8s_deploy
from flywheel.config import KubernetesSettings, Settings
from flywheel.deploy import DeployError, DeployResult, deploy, rollout, smoke_test_booster
from flywheel.k8s_deploy import (
    PREVIOUS_TAG_ANNOTATION,
    KubernetesTarget,
    RolloutTimeout,
    env_patch,
    rollout_state,
)
from tests.unit.test_k8s_deploy import FakeAppsV1Api, FakeService, _target


class _Target:
    def __init__(self, fail_switch: bool = False) -> None:
        self.fail_switch, self.live = fail_switch, "m:1"

    def current(self) -> str | None:
        return self.live

    def switch(self, tag: str) -> None:
        if self.fail_switch:
            raise RuntimeError("rollout timed out")
        self.live = tag

    def smoke_test(self, tag: str) -> None: ...

    def revert(self) -> str | None:
        return "m:1"


def test_rollout_reports_what_it_deployed_and_which_step_failed() -> None:
    assert rollout(_Target(), "m:2") == DeployResult("deployed", "m:2", "smoke test passed")
    with pytest.raises(DeployError, match=r"'m:2' failed its rollout \(rollout timed out\)"):
        rollout(_Target(fail_switch=True), "m:2")


def test_cluster_deploy_builds_its_kubernetes_target_from_the_settings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: list[Any] = []

    class Fake(_Target):
        def __init__(self, settings: Settings) -> None:
            super().__init__()
            seen.append(settings)

    monkeypatch.setattr(k8s_deploy, "KubernetesTarget", Fake)
    settings = Settings(profile="kind")
    assert deploy(settings, "m:2").model_tag == "m:2"
    assert seen == [settings]


def test_smoke_test_accepts_certain_predictions_and_names_a_constant_model() -> None:
    smoke_test_booster(lambda x: np.r_[0.0, 1.0, np.full(14, 0.5)], 3)
    with pytest.raises(ValueError, match="scores every input the same: it cannot rank"):
        smoke_test_booster(lambda x: np.full(16, 0.5), 3)


# ---- rollout_state ----------------------------------------------------------------------------


def _dep(generation: Any, replicas: Any, status: Any) -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(generation=generation),
        spec=SimpleNamespace(replicas=replicas),
        status=status,
    )


def _status(**fields: Any) -> Any:
    names = ("observed_generation", "replicas", "updated_replicas", "available_replicas")
    return SimpleNamespace(
        conditions=fields.pop("conditions", None), **{n: fields.get(n) for n in names}
    )


def test_a_deployment_with_no_status_yet_is_not_rolled_out() -> None:
    got = rollout_state(_dep(1, None, None))
    assert (got.complete, got.stalled) == (False, False)
    assert got.detail == "generation 1 (observed 0), 0/1 updated, 0 available, 0 total"
    empty = rollout_state(_dep(2, 3, _status()))
    assert empty.detail == "generation 2 (observed 0), 0/3 updated, 0 available, 0 total"


def test_default_replicas_and_a_missing_generation() -> None:
    one = _status(observed_generation=5, replicas=1, updated_replicas=1, available_replicas=1)
    assert rollout_state(_dep(5, None, one)).complete  # spec.replicas None means 1
    fresh = _status(replicas=2, updated_replicas=2, available_replicas=2)
    assert rollout_state(_dep(None, 2, fresh)).complete


def test_only_a_progress_deadline_condition_stalls() -> None:
    other = [SimpleNamespace(type="Progressing", reason="NewReplicaSetAvailable")]
    busy = _status(observed_generation=1, replicas=3, updated_replicas=1, conditions=other)
    assert not rollout_state(_dep(1, 2, busy)).stalled
    odd = [SimpleNamespace(type="Available", reason="ProgressDeadlineExceeded")]
    assert not rollout_state(_dep(1, 2, _status(conditions=odd))).stalled


def test_env_patch_records_the_change_cause() -> None:
    pin = env_patch("serving", "m:2", None)["metadata"]["annotations"]
    assert pin == {
        PREVIOUS_TAG_ANNOTATION: "",
        "kubernetes.io/change-cause": "flywheel deploy: model m:2",
    }
    unpin = env_patch("serving", None, "m:2")["metadata"]["annotations"]
    assert unpin["kubernetes.io/change-cause"] == "flywheel deploy: model (unpinned)"
    assert unpin[PREVIOUS_TAG_ANNOTATION] == "m:2"


# ---- KubernetesTarget ----------------------------------------------------------------------------


def test_the_default_api_client_is_used_when_none_is_given(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sentinel = object()
    monkeypatch.setattr(k8s_deploy, "default_apps_api", lambda: sentinel)
    target = KubernetesTarget(Settings(profile="kind"), http=lambda *a: {})
    assert target.apps is sentinel


def test_smoke_test_url_timeout_and_retry_after_a_refused_connection() -> None:
    calls: list[tuple[str, float]] = []

    def http(url: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        calls.append((url, timeout_s))
        if len(calls) == 1:
            raise ConnectionRefusedError("refused")
        return {"model_version": "m:1", "items": [{"item_id": "7"}]}

    k8s = KubernetesSettings(serving_url="http://ranker:3000/")
    target = KubernetesTarget(
        Settings(profile="kind", k8s=k8s), apps_api=object(), http=http, sleep=lambda _: None
    )
    target.smoke_test("m:1")
    assert calls == [("http://ranker:3000/rank", 10.0)] * 2


def test_smoke_test_failure_names_the_last_problem() -> None:
    target = _target(FakeAppsV1Api("m:1"), lambda *a: {"model_version": "m:0", "items": []})
    with pytest.raises(
        RuntimeError, match=r"^POST .*/rank answered model_version='m:0' with 0 items"
    ):
        target.smoke_test("m:1")


def test_revert_without_a_recorded_switch_keeps_the_pin_and_records_what_it_replaced() -> None:
    api = FakeAppsV1Api("m:1")
    assert _target(api, FakeService(api)).revert() == "m:1"
    target = _target(api, FakeService(api))
    target.switch("m:2")
    assert target.revert() == "m:1"
    assert api.dep["metadata"]["annotations"][PREVIOUS_TAG_ANNOTATION] == "m:2"


def test_no_time_left_is_a_timeout() -> None:
    """The deadline reached exactly (remaining == 0) ends the wait: no zero-length watch."""
    api = FakeAppsV1Api("m:1", stuck={"m:2"})
    target = _target(api, FakeService(api), timeout_s=5.0)
    target._patch("m:2", "m:1")
    ticks = iter([0.0, 5.0])
    with pytest.raises(RolloutTimeout, match="within 5 s"):
        target.wait_for_rollout(clock=lambda: next(ticks))
