"""flywheel.runlog: framework output lands in the log file, not on the terminal (-v: both).

The noise is produced the way the frameworks produce it (``tests/unit/framework_noise.py``).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kfp.local import logging_utils

from flywheel import progress
from flywheel.console import ProgressDisplay, console
from flywheel.runlog import command_log, kfp_task_event, last_error_line, log_path
from tests.unit.framework_noise import CHILD, MUST_SEE, NOISE, make_noise

pytestmark = pytest.mark.usefixtures("restore_logging")


def test_framework_output_goes_to_the_file_and_not_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logs" / "cycle.log"
    with command_log(path, verbose=False):
        make_noise()
    terminal = "".join(capfd.readouterr())
    text = path.read_text()
    for marker in NOISE + MUST_SEE:
        assert marker in text, marker
    for marker in NOISE:
        assert marker not in terminal, (marker, terminal)
    for marker in MUST_SEE:  # a person must still see warnings of ours and errors
        assert marker in terminal, (marker, terminal)
    assert "\x1b[" not in text  # kfp's colour codes are dropped in the file


def test_verbose_shows_everything_and_still_writes_the_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cycle.log"
    with command_log(path, verbose=True):
        make_noise()
    terminal = re.sub(r"\x1b\[[0-9;]*m", "", "".join(capfd.readouterr()))  # kfp's colours
    text = path.read_text()
    for marker in NOISE + MUST_SEE:
        assert marker in text, marker
        assert marker in terminal, marker


def test_everything_is_put_back(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    before = (sys.stdout, sys.stderr, logging.getLogger().handlers[:])
    with pytest.raises(RuntimeError, match="stage failed"), command_log(tmp_path / "x.log"):
        raise RuntimeError("stage failed")
    assert (sys.stdout, sys.stderr, logging.getLogger().handlers) == before
    subprocess.run(CHILD, check=True)
    assert "child fd1" in capfd.readouterr().out  # fd 1 is ours again
    assert "RuntimeError: stage failed" in (tmp_path / "x.log").read_text()  # traceback kept


def test_progress_events_drive_the_display(tmp_path: Path) -> None:
    """Phases set the live line, kfp task lines its stage, milestones print a line."""
    log = logging.getLogger("flywheel.loop")
    with command_log(tmp_path / "x.log", capture_fds=False, stages=("ingest", "train")) as run:
        display = run.display
        assert isinstance(display, ProgressDisplay)
        progress.phase(log, "day %d/%d: retraining", 5, 8)
        with logging_utils.local_logger_context():
            logging.info("Executing task %s", logging_utils.format_task_name("train"))
            line = display.line().plain
        with console.capture() as captured:
            progress.milestone(log, "day 5: served %d requests", 500)
    assert line.startswith("day 5/8: retraining") and "stage 2/2 train" in line, line
    assert "day 5: served 500 requests" in captured.get()
    text = (tmp_path / "x.log").read_text()
    assert "day 5/8: retraining" in text and "day 5: served 500 requests" in text


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("23:01:03.009 - INFO - Executing task 'ingest'", ("ingest", "running")),
        ("23:01:08.089 - INFO - Task 'ingest' finished with status SUCCESS", ("ingest", "SUCCESS")),
        ("Task 'train' finished with status FAILURE", ("train", "FAILURE")),
        ("Task features cache hit (key=0123456789ab); skipping", ("features", "cached")),
        ("    [KFP Executor] training task 3 of 8", None),
    ],
)
def test_kfp_task_lines(line: str, event: tuple[str, str] | None) -> None:
    assert kfp_task_event(line) == event


def test_the_last_error_line_of_a_failed_task(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(
        "    Traceback (most recent call last):\n"
        '      File "train.py", line 3, in <module>\n'
        "    ValueError: window_days=0; expected > 0\n"
        "23:01:08.089 - ERROR - Task 'train' finished with status FAILURE\n"
    )
    assert last_error_line(log) == "ValueError: window_days=0; expected > 0"
    assert last_error_line(tmp_path / "missing.log") is None


def test_log_files_live_under_the_workspace(tmp_path: Path) -> None:
    from datetime import datetime

    at = datetime(2025, 1, 2, 3, 4, 5)
    path = log_path(tmp_path, "demo", at)
    assert path == tmp_path / "logs" / "demo-20250102-030405.log"
    path.parent.mkdir()
    path.touch()  # a second run in the same second gets a file of its own
    assert log_path(tmp_path, "demo", at).name == "demo-20250102-030405-2.log"


def test_a_framework_logger_that_stopped_propagating_still_goes_to_the_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Ray, once initialised (by an earlier test or stage), gives the ``ray`` logger a stderr
    handler of its own and stops it propagating; a run still sends it to the file only."""
    ray_logger = logging.getLogger("ray")
    own = logging.StreamHandler(sys.stderr)
    saved = (ray_logger.handlers[:], ray_logger.propagate)
    ray_logger.handlers[:], ray_logger.propagate = [own], False
    try:
        path = tmp_path / "logs" / "cycle.log"
        with command_log(path, verbose=False):
            ray_logger.warning("RAY-OWN-HANDLER chatter")
        assert "RAY-OWN-HANDLER" in path.read_text()
        assert "RAY-OWN-HANDLER" not in "".join(capfd.readouterr())
        assert ray_logger.handlers == [own] and ray_logger.propagate is False  # restored
    finally:
        ray_logger.handlers[:], ray_logger.propagate = saved
