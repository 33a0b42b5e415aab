"""Container tests: the built images run for real on a local Docker daemon.

They need root or the docker group, ``make images`` done, and minutes, so the default
``make test`` does not collect them: only ``make test-containers`` (which sets
``FLYWHEEL_CONTAINER_TESTS=1`` after building the images) does. Steps print what they
check and how long it took (run with ``-s`` to see them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.containers._support import PLATFORM_IMAGE, SERVING_IMAGE

ENABLE_ENV = "FLYWHEEL_CONTAINER_TESTS"

collect_ignore_glob = [] if os.environ.get(ENABLE_ENV) == "1" else ["test_*.py"]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client of the local daemon, once both images are known to exist."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker daemon ({exc}); start it with images/dockerd.sh")
    for image in (PLATFORM_IMAGE, SERVING_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} is missing; build it with make images")
    yield client
    client.close()
