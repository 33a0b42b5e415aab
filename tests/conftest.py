"""Every test starts from the same environment, whatever the caller's shell exports.

The README tells users to ``export FLYWHEEL_WORKSPACE=...`` (and a cluster user has
``FLYWHEEL_PROFILE``, AWS credentials, a ``KUBECONFIG``); without this file those would
leak into :func:`flywheel.config.load_settings` and the tests would pass or fail depending
on who runs them. The autouse fixture below removes, before each test, every variable the
code (or a library it drives) reads as configuration:

* ``FLYWHEEL_*``: the settings layer of :mod:`flywheel.config`, the run id, the shared Ray
  address, the pinned serving model;
* ``AWS_*``: credentials, region and endpoint picked up by pyarrow/fsspec/boto for ``s3://``;
* ``RAY_ADDRESS``: joined by :func:`flywheel.ray_runtime.ensure_ray` instead of a local Ray;
* ``KUBECONFIG``, ``BENTOML_HOME``, ``BENTOML_CONFIG``: which cluster kubectl talks to and
  which model store / configuration BentoML uses.

Test-harness switches are not settings (``load_settings`` ignores them) and must survive:
they are read once, when pytest imports this file at session start, and put back after
the clearing. ``FLYWHEEL_REQUIRE_REDIS=1`` (set by ``.ci/run``) turns a missing
redis-server into a failure; the others point the tests at tools and images.
Tests that need a variable set it themselves with ``monkeypatch.setenv``; subprocess-based
tests that pass ``os.environ`` on pass this cleaned environment.

``restore_logging`` (not autouse) is for tests that run the CLI or its log routing, which
swap the root and ``flywheel`` loggers' handlers: it puts them back afterwards.

``s3_bucket`` (not autouse) gives a test a fresh bucket on a real S3 API (one
``moto_server`` process per session, :mod:`tests.s3_server`) with the ``AWS_*`` variables
pinned to it for that test only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Final

import pytest

from tests.ports import on_free_ports
from tests.s3_server import S3Server, make_user, start_moto

#: Variable prefixes and names the code reads as configuration: cleared before each test.
CLEARED_PREFIXES: Final = ("FLYWHEEL_", "AWS_")
CLEARED_NAMES: Final = frozenset({"RAY_ADDRESS", "KUBECONFIG", "BENTOML_HOME", "BENTOML_CONFIG"})

#: Switches of the test harness itself (not settings), kept as they were at session start.
HARNESS_SWITCHES: Final = (
    "FLYWHEEL_REQUIRE_REDIS",  # .ci/run: a missing redis-server fails instead of skipping
    "FLYWHEEL_K8S_TOOLS",  # tests/unit/k8s_tools.py: where kubectl/checkov live
    "FLYWHEEL_CONTAINER_TESTS",  # tests/containers: collect the container tests
    "FLYWHEEL_PLATFORM_IMAGE",  # tests/containers: image tags under test
    "FLYWHEEL_SERVING_IMAGE",
)
#: Their values when this session started (before any fixture touched the environment).
SESSION_SWITCHES: Final = {n: os.environ[n] for n in HARNESS_SWITCHES if n in os.environ}


def caller_config_vars(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Names in ``environ`` that the autouse fixture clears."""
    return [name for name in environ if name.startswith(CLEARED_PREFIXES) or name in CLEARED_NAMES]


@pytest.fixture(autouse=True)
def _clean_caller_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the caller's configuration variables; keep the harness switches."""
    for name in caller_config_vars(os.environ):
        monkeypatch.delenv(name)
    for name, value in SESSION_SWITCHES.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root and ``flywheel`` loggers back as they were (handlers, level, propagate)."""
    root, fw = logging.getLogger(), logging.getLogger("flywheel")
    saved = (root.handlers[:], root.level, fw.handlers[:], fw.level, fw.propagate)
    yield
    root.handlers[:], fw.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    fw.setLevel(saved[3])
    fw.propagate = saved[4]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real ``moto_server`` on a free loopback port for the session, and a key it accepts."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    ports: list[int] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        ports.append(port)
        return start_moto(port, log)

    proc = on_free_ports(start)
    try:
        endpoint = f"http://127.0.0.1:{ports[-1]}"
        key, secret = make_user(endpoint)
        yield S3Server(endpoint, key, secret)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://<fresh bucket>`` on the session's server; ``AWS_*`` pinned to it for this test."""
    import boto3

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"flywheel-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name=s3_server.region,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    ).create_bucket(Bucket=bucket)
    return f"s3://{bucket}"
