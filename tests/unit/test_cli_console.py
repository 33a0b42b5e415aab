"""What ``flywheel cycle`` prints: progress and the table on the terminal, the rest in a file.

The pipeline itself is replaced by a stand-in that produces the pipeline's noise the way
kfp.local, Ray, Feast and a child process produce it (``make_noise``); a real cycle takes
a minute and a half here, and its output routing is the same code path. The real thing,
end to end, is ``tests/integration/test_cli_quiet.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel import cycle
from flywheel.cli import app
from flywheel.cycle import STAGES, CycleError, CycleSummary, StageReport
from tests.unit.framework_noise import NOISE, make_noise

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("restore_logging")


def _noisy_cycle(*args: object, **kwargs: object) -> CycleSummary:
    make_noise()
    stages = [StageReport(s, "ran", 1.0, "") for s in STAGES]
    return CycleSummary("run-1", True, None, "flywheel-ranker:abc", 8.0, stages)


def _failing_cycle(*args: object, **kwargs: object) -> CycleSummary:
    make_noise()
    print("    ValueError: window_days=0; expected > 0")  # the task's traceback, streamed
    raise CycleError("cycle run-1 failed at stage 'train': Task 'train' finished with FAILURE")


def _log_file(output: str, workspace: Path) -> Path:
    match = re.search(r"full log: (\S+)", output)
    assert match, output
    path = Path(match.group(1))
    assert path.parent == workspace / "logs" and path.name.startswith("cycle-"), path
    return path


def test_cycle_prints_progress_and_table_and_logs_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cycle, "run_cycle", _noisy_cycle)
    result = runner.invoke(app, ["--workspace", str(tmp_path), "cycle"])
    assert result.exit_code == 0, result.output
    assert "cycle run-1" in result.output and "decision: blessed" in result.output
    for marker in NOISE:
        assert marker not in result.output, (marker, result.output)
    assert "FLYWHEEL-WARNING" in result.output and "LIB-ERROR" in result.output
    text = _log_file(result.output, tmp_path).read_text()
    assert all(marker in text for marker in NOISE)
    assert len(result.output.splitlines()) < 40, result.output


def test_verbose_cycle_shows_the_framework_log_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cycle, "run_cycle", _noisy_cycle)
    result = runner.invoke(app, ["--workspace", str(tmp_path), "-v", "cycle"])
    assert result.exit_code == 0, result.output
    # Python-level output (kfp.local's log and prints, loggers) is echoed to the terminal;
    # the child's fd-level output goes to the real fd 1, which CliRunner does not capture.
    for marker in ("KFP-TASK-OUTPUT", "Executing task", "RAY-CHATTER", "FEAST-CHATTER"):
        assert marker in result.output, marker
    assert "KFP-TASK-OUTPUT" in _log_file(result.output, tmp_path).read_text()


def test_a_failed_stage_is_one_error_line_its_cause_and_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cycle, "run_cycle", _failing_cycle)
    result = runner.invoke(app, ["--workspace", str(tmp_path), "cycle"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.startswith("error: cycle run-1 failed at stage 'train'") for line in lines)
    assert "cause: ValueError: window_days=0; expected > 0" in lines, lines
    assert "Traceback" not in result.output and "KFP-TASK-OUTPUT" not in result.output
    text = _log_file(result.output, tmp_path).read_text()
    assert "CycleError: cycle run-1 failed" in text  # the traceback is in the file


def test_cycle_mapping_reaches_run_cycle_and_needs_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = tmp_path / "events.csv"
    events.write_text("event_time,event_type\n")
    seen: list[dict[str, object]] = []

    def recording_cycle(*args: object, **kwargs: object) -> CycleSummary:
        seen.append({"events_uri": args[1], **kwargs})
        return _noisy_cycle()

    base = ["--workspace", str(tmp_path), "cycle", "--mapping", "rees46"]
    alone = runner.invoke(app, base)  # the real run_cycle: refused before any stage runs
    assert alone.exit_code == 1 and "mapping given without events_uri" in alone.output
    monkeypatch.setattr(cycle, "run_cycle", recording_cycle)
    result = runner.invoke(app, [*base, "--events", str(events)])
    assert result.exit_code == 0, result.output
    assert [(s["events_uri"], s["mapping"]) for s in seen] == [(str(events.resolve()), "rees46")]
