"""flywheel-serving for real: the champion trained and registered on the host, served from
the image with a read-only root filesystem, a writable /tmp and the workspace volume.

The world is the one ``tests/integration/test_service.py`` builds (feature tables stamped
an hour ago, ``feast apply`` + ``materialize`` into SQLite, a booster registered and
promoted). References come from the host, independently of the container: the champion
pointer, and each served item's score recomputed with Feast's ``get_online_features`` and
``train.predict`` on the registered booster.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flywheel import feature_store as fs
from flywheel.config import Settings
from flywheel.predlog import read_prediction_logs
from flywheel.ranking import model_inputs
from flywheel.registry import current_champion, model_file, register_model
from flywheel.serving import wait_ready
from flywheel.train import load_booster, predict
from tests.containers._support import (
    IMAGE_UID,
    SERVING_IMAGE,
    WORKSPACE_MOUNT,
    Timer,
    share_with_image_user,
    step,
)
from tests.integration.test_service import LINEAGE, NOW, build_tables, train_booster

pytestmark = pytest.mark.integration

CANDIDATES = list(range(0, 100, 3))


@pytest.fixture(scope="module")
def champion_world(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    step("serving: host builds features (Feast SQLite) and registers + promotes a champion")
    settings = Settings(workspace=tmp_path_factory.mktemp("serving") / "ws")
    with Timer("host workspace with a champion"):
        build_tables(settings)
        fs.apply(settings)
        fs.materialize(settings, end=NOW + timedelta(seconds=1))
        register_model(
            settings, train_booster(settings.workspace / "m0.ubj", 0), {"auc": 0.6}, LINEAGE
        )
    share_with_image_user(settings.workspace)
    return settings


@pytest.fixture(scope="module")
def served(docker_client: Any, champion_world: Settings) -> Iterator[tuple[str, Any]]:
    """The serving image running on the workspace, as the cluster runs it; its URL."""
    step(f"serving: docker run --read-only --tmpfs /tmp --user {IMAGE_UID} {SERVING_IMAGE}")
    container = docker_client.containers.run(
        SERVING_IMAGE,
        detach=True,
        read_only=True,
        tmpfs={"/tmp": "rw,size=256m"},
        user=str(IMAGE_UID),
        volumes={str(champion_world.workspace): {"bind": WORKSPACE_MOUNT, "mode": "rw"}},
        environment={"FLYWHEEL_PROFILE": "local"},  # SQLite online store; kind would use Redis
        # Docker picks and binds the host port itself: no window for another process.
        ports={"3000/tcp": ("127.0.0.1", None)},
    )
    try:
        container.reload()
        url = f"http://127.0.0.1:{container.ports['3000/tcp'][0]['HostPort']}"
        with Timer("container start until /readyz answers 200"):
            wait_ready(url, timeout_s=180)
        yield url, container
    finally:
        container.reload()
        if container.status != "running":
            print(container.logs().decode()[-4000:])
        container.stop(timeout=20)
        container.remove()


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 200
        return dict(json.loads(reply.read()))


def test_serving_image_ranks_with_the_champion(
    served: tuple[str, Any], champion_world: Settings
) -> None:
    url, _ = served
    step("serving: POST /rank answers with the champion's model_version and its scores")
    with Timer("POST /rank (first request)"):
        body = _post(f"{url}/rank", {"user_id": 3, "candidates": CANDIDATES, "k": 10})
    assert body["model_version"] == current_champion(champion_world)
    served_items = [entry["item_id"] for entry in body["items"]]
    assert len(served_items) == 10 == len(set(served_items))
    assert set(served_items) <= set(CANDIDATES)

    # Exploration may reorder the slate, never change a score: recompute each on the host.
    now = datetime.now(UTC)
    booster = load_booster(model_file(champion_world, body["model_version"]))
    features = fs.online_features(champion_world, 3, served_items, as_of=now)
    reference = predict(booster, model_inputs(features, now.timestamp()))
    assert [e["score"] for e in body["items"]] == pytest.approx(reference.tolist(), rel=1e-5)

    step("serving: the prediction log on the volume holds the served slate")
    log = read_prediction_logs(champion_world).to_pandas()
    mine = log[log.request_id == body["request_id"]].sort_values("position")
    assert mine["item_id"].tolist() == served_items
    assert set(mine["model_version"]) == {body["model_version"]}
    print(f"[containers] ranked {served_items} with {body['model_version']}")


def test_serving_container_is_non_root_and_read_only(served: tuple[str, Any]) -> None:
    url, container = served
    step("serving: /livez, uid 1000, root filesystem read-only, /tmp writable")
    with urllib.request.urlopen(f"{url}/livez", timeout=10) as reply:
        assert reply.status == 200
    assert container.exec_run("id -u").output.decode().strip() == str(IMAGE_UID)
    denied = container.exec_run(["touch", "/opt/venv/probe"])
    assert denied.exit_code != 0 and b"Read-only file system" in denied.output
    assert container.exec_run(["touch", "/tmp/probe"]).exit_code == 0
