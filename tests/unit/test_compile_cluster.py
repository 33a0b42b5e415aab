"""The pipeline compiled for the cluster profiles (kind, prod): golden IR and platform spec.

Every executor must run in the platform image, mount the workspace PVC at the workspace
path and carry ``FLYWHEEL_PROFILE``; the mount and env are read from the parsed pipeline
and platform specs. Regenerate the golden files after an intended change with
``UPDATE_GOLDEN=1 pytest tests/unit/test_compile_cluster.py``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel.config import Settings, load_settings
from flywheel.cycle import compile_pipeline

GOLDEN_DIR = Path(__file__).parent.parent / "golden"
_VERSION_LINES = re.compile(r"^\s*sdkVersion:.*$", re.MULTILINE)
STAGES = {"ingest", "features", "dataset", "preprocess", "train", "evaluate", "register", "deploy"}
#: The pipeline image per cluster profile: kind runs the tag ``kind load`` put on the node;
#: prod refuses anything but a registry and a digest (test_prod_image.py), so it gets one.
IMAGE = {
    "kind": "flywheel-platform:0.1.0",
    "prod": "registry.acme.test/ml/flywheel-platform@sha256:" + "a1" * 32,
}


def _settings(profile: str) -> Settings:
    return load_settings(profile=profile, image=IMAGE[profile] if profile == "prod" else None)


@pytest.fixture(autouse=True)
def _no_flywheel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLYWHEEL_"):
            monkeypatch.delenv(name)


def _compile(settings: Settings, tmp_path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    text = _VERSION_LINES.sub("", compile_pipeline(settings, tmp_path / "p.yaml").read_text())
    docs = list(yaml.safe_load_all(text))
    platform = docs[1] if len(docs) > 1 else {}
    return text, docs[0], platform


@pytest.mark.parametrize("profile", ["kind", "prod"])
def test_matches_golden_file(tmp_path: Path, profile: str) -> None:
    text, _, _ = _compile(_settings(profile), tmp_path)
    golden = GOLDEN_DIR / f"continuous_training_{profile}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), "golden file missing: run with UPDATE_GOLDEN=1"
    assert text == golden.read_text(), "compiled IR changed; if intended, UPDATE_GOLDEN=1"


@pytest.mark.parametrize("profile", ["kind", "prod"])
def test_every_executor_mounts_the_workspace_and_knows_its_profile(
    tmp_path: Path, profile: str
) -> None:
    from kfp import components

    settings = _settings(profile)
    text, spec, platform = _compile(settings, tmp_path)
    loaded = components.load_component_from_text(text)  # kfp's own loader, both documents
    assert loaded.name == "flywheel-continuous-training"
    executors = spec["deploymentSpec"]["executors"]
    assert {name.removeprefix("exec-") for name in executors} == STAGES
    k8s_execs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(k8s_execs) == set(executors)
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == IMAGE[profile]
        assert {"name": "FLYWHEEL_PROFILE", "value": profile} in container["env"]
        (mount,) = k8s_execs[name]["pvcMount"]
        assert mount["mountPath"] == "/mnt/flywheel" == str(settings.workspace)
        assert mount["pvcNameParameter"]["runtimeValue"]["constant"] == "flywheel-workspace"
    # The train task only submits a Ray job: no CPU or memory reserved for it.
    assert "resources" not in executors["exec-train"]["container"]
    compiled = json.loads(
        spec["root"]["inputDefinitions"]["parameters"]["settings_json"]["defaultValue"]
    )
    assert compiled["profile"] == profile
    assert compiled["k8s"]["ray_jobs_address"].endswith(":8265")


def test_local_profile_has_no_kubernetes_config(tmp_path: Path) -> None:
    text, spec, platform = _compile(Settings(), tmp_path)
    assert platform == {} and "platforms" not in text
    for executor in spec["deploymentSpec"]["executors"].values():
        assert "env" not in executor["container"]
    compiled = json.loads(
        spec["root"]["inputDefinitions"]["parameters"]["settings_json"]["defaultValue"]
    )
    assert "k8s" not in compiled and Settings.model_validate(compiled) == Settings()


@pytest.mark.parametrize(
    ("profile", "secret", "keys", "endpoint"),
    [
        (
            "kind",
            "mlpipeline-minio-artifact",
            ["accesskey", "secretkey"],
            "http://minio-service.kubeflow:9000",
        ),
        ("prod", "flywheel-s3", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"], None),
    ],
)
def test_only_ingest_gets_the_object_store_and_its_keys(
    tmp_path: Path, profile: str, secret: str, keys: list[str], endpoint: str | None
) -> None:
    _, spec, platform = _compile(_settings(profile), tmp_path)
    k8s_execs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    with_secret = {name for name, e in k8s_execs.items() if "secretAsEnv" in e}
    assert with_secret == {"exec-ingest"}
    (mounted,) = k8s_execs["exec-ingest"]["secretAsEnv"]
    assert mounted["secretName"] == secret
    assert mounted["keyToEnv"] == [
        {"secretKey": keys[0], "envVar": "AWS_ACCESS_KEY_ID"},
        {"secretKey": keys[1], "envVar": "AWS_SECRET_ACCESS_KEY"},
    ]
    for name, executor in spec["deploymentSpec"]["executors"].items():
        env = {e["name"]: e["value"] for e in executor["container"]["env"]}
        aws = {k: v for k, v in env.items() if k.startswith("AWS_")}
        if name != "exec-ingest":
            assert aws == {}, name
        else:
            expected = {"AWS_REGION": "us-east-1"}
            if endpoint:
                expected["AWS_ENDPOINT_URL"] = endpoint
            assert aws == expected
