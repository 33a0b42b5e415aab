"""tests/conftest.py: the caller's FLYWHEEL_*/AWS_* environment never reaches a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import caller_config_vars

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

PROBE = """
import os
from pathlib import Path

from flywheel.config import load_settings


def test_settings_are_the_defaults():
    s = load_settings()
    assert s.profile == "local", s.profile
    assert s.workspace == Path(".flywheel"), s.workspace
    assert s.ray.address is None


def test_credentials_and_cluster_pointers_are_gone():
    from conftest import HARNESS_SWITCHES

    leaked = [n for n in os.environ if n.startswith(("FLYWHEEL_", "AWS_"))]
    assert set(leaked) <= set(HARNESS_SWITCHES), leaked
    assert os.environ["FLYWHEEL_REQUIRE_REDIS"] == "1"
    assert "RAY_ADDRESS" not in os.environ and "KUBECONFIG" not in os.environ


def test_a_test_can_still_set_its_own(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_PROFILE", "kind")
    assert load_settings().profile == "kind"
"""


def test_a_hostile_environment_does_not_reach_tests(tmp_path: Path) -> None:
    """A fresh pytest run under this conftest with the caller's variables set."""
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_probe.py").write_text(PROBE)
    hostile = {
        **os.environ,
        "FLYWHEEL_WORKSPACE": "/tmp/elsewhere",
        "FLYWHEEL_PROFILE": "prod",
        "FLYWHEEL_RAY__ADDRESS": "ray://nowhere:10001",
        "AWS_ACCESS_KEY_ID": "x",
        "RAY_ADDRESS": "nowhere:6379",
        "KUBECONFIG": "/nonexistent",
        "FLYWHEEL_REQUIRE_REDIS": "1",  # a harness switch: must survive
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=hostile,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_which_names_are_cleared() -> None:
    env = {
        "FLYWHEEL_WORKSPACE": "w",
        "AWS_REGION": "r",
        "RAY_ADDRESS": "a",
        "KUBECONFIG": "k",
        "RAY_AUTH_MODE": "disabled",  # set on purpose by a test module's fixture: kept
        "PATH": "/bin",
    }
    assert sorted(caller_config_vars(env)) == [
        "AWS_REGION",
        "FLYWHEEL_WORKSPACE",
        "KUBECONFIG",
        "RAY_ADDRESS",
    ]
