"""The real ``flywheel`` command in a fresh process: Ray's and Ray Data's chatter lands in
``<workspace>/logs``, the terminal gets the summary and the log's path; ``-v`` shows it all.

A subprocess, not CliRunner: only a real process has the real fds 1 and 2 that Ray's
own processes inherit, and starts Ray the way a user's shell does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.simulate import make_world, simulate_events

pytestmark = pytest.mark.integration

FLYWHEEL = str(Path(sys.executable).parent / "flywheel")
#: What Ray and Ray Data print in a driver that starts them (measured, Ray 2.5x).
RAY_CHATTER = re.compile(r"Token authentication|streaming_executor|Starting execution of Dataset")


def _run(workspace: Path, *args: str) -> tuple[str, Path]:
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "FLYWHEEL_RAY__NUM_CPUS": "2",
        "COLUMNS": "100",
    }
    done = subprocess.run(
        [FLYWHEEL, "--workspace", str(workspace), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    match = re.search(r"full log: (\S+)", output)
    assert match, output
    return output, Path(match.group(1))


def test_ingest_and_features_keep_ray_in_the_log_file(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    simulate_events(make_world(60, 20, seed=1), days=2, out_dir=raw, seed=1)
    ws = tmp_path / "ws"

    quiet, quiet_log = _run(ws, "ingest", "--events", str(raw))
    assert "accepted" in quiet  # the summary table
    assert not RAY_CHATTER.search(quiet), quiet
    assert quiet_log.parent == ws / "logs" and quiet_log.name.startswith("ingest-")
    text = quiet_log.read_text()
    assert "starting local Ray" in text and RAY_CHATTER.search(text), text[-2000:]

    loud, loud_log = _run(ws, "-v", "features", "--no-materialize")
    assert "starting local Ray" in loud  # the log, on the terminal as well
    assert "starting local Ray" in loud_log.read_text()
    assert loud_log != quiet_log
