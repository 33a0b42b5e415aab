"""The workspace lock, with real processes: one holds it, another finds it busy, waits for
it, or inherits it (``flywheel.workspace_lock``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel.config import Settings
from flywheel.workspace_lock import WorkspaceBusyError, holder, workspace_lock

ROOT = Path(__file__).resolve().parents[2]
FLYWHEEL = str(Path(sys.executable).parent / "flywheel")

#: A process that takes the lock as ``cycle``, says so, and holds it until ``release`` exists.
HOLDER = """
import sys, time
from pathlib import Path
from flywheel.config import Settings
from flywheel.workspace_lock import workspace_lock
ws = Path(sys.argv[1])
with workspace_lock(Settings(workspace=ws), "cycle"):
    print("held", flush=True)
    while not (ws / "release").exists():
        time.sleep(0.05)
    (ws / "released_at").write_text(repr(time.time()))
"""

#: Takes the lock (settings from the environment) and prints when it got it.
TAKER = """
import sys, time
from pathlib import Path
from flywheel.config import load_settings
from flywheel.workspace_lock import workspace_lock
with workspace_lock(load_settings(workspace=Path(sys.argv[1])), "ingest"):
    print(repr(time.time()), flush=True)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


@pytest.fixture
def held(tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    yield tmp_path, proc
    (tmp_path / "release").touch()
    proc.kill()
    proc.wait(timeout=10)


def test_a_second_cli_run_exits_naming_the_holder(held):
    ws, proc = held
    run = subprocess.run(
        [FLYWHEEL, "--workspace", str(ws), "ingest", "--events", str(ws / "none.jsonl")],
        capture_output=True, text=True, env=_env(), timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    out = " ".join((run.stdout + run.stderr).split())
    assert f"is in use by `flywheel cycle` (pid {proc.pid}" in out
    assert "lock.on_busy=wait" in out
    assert holder(ws)["pid"] == proc.pid


def test_wait_queues_behind_the_holder(held):
    ws, _ = held
    taker = subprocess.Popen(
        [sys.executable, "-c", TAKER, str(ws)],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(FLYWHEEL_LOCK__ON_BUSY="wait"),
    )
    time.sleep(1.5)
    assert taker.poll() is None  # still waiting
    (ws / "release").touch()
    out, _ = taker.communicate(timeout=60)
    assert taker.returncode == 0
    assert float(out) >= float((ws / "released_at").read_text())


def test_waiting_gives_up_after_the_timeout(held):
    ws, _ = held
    settings = Settings(workspace=ws, lock={"on_busy": "wait", "wait_timeout_s": 0.5})
    started = time.monotonic()
    with (
        pytest.raises(WorkspaceBusyError, match=r"still in use .* after waiting 0.5 s"),
        workspace_lock(settings, "cycle"),
    ):
        pass
    assert time.monotonic() - started >= 0.5


def test_a_killed_holder_leaves_no_stale_lock(held):
    ws, proc = held
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with workspace_lock(Settings(workspace=ws), "cycle"):
        assert holder(ws)["pid"] == os.getpid()
    assert holder(ws) is None  # released: the file names no one


def test_the_holders_children_and_nested_blocks_run_under_its_lock(tmp_path: Path):
    settings = Settings(workspace=tmp_path)
    with workspace_lock(settings, "cycle"):
        with workspace_lock(settings, "features"):  # nested in one process
            pass
        # A child process (as a kfp.local stage is) inherits the lock through the environment.
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run = subprocess.run(
            [sys.executable, "-c", TAKER, str(tmp_path)],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert holder(tmp_path)["command"] == "cycle"
    # Released: an unrelated process (no inherited variable) now takes it at once.
    run = subprocess.run(
        [sys.executable, "-c", TAKER, str(tmp_path)],
        capture_output=True, text=True, env=_env(), timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "FLYWHEEL_LOCK_HELD" not in os.environ


def test_a_second_run_in_fail_mode_fails_at_once(held):
    ws, _ = held
    started = time.monotonic()
    with (
        pytest.raises(WorkspaceBusyError, match="in use by `flywheel cycle`"),
        workspace_lock(Settings(workspace=ws), "cycle"),
    ):
        pass
    assert time.monotonic() - started < 2
