"""The command line: settings, a small simulate, and how errors reach the user."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.schemas import EVENT_SCHEMA

runner = CliRunner()


# The CLI routes the ``flywheel`` loggers to rich; leave them as other tests expect.
pytestmark = pytest.mark.usefixtures("restore_logging")


def test_settings_prints_the_resolved_profile(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--profile", "prod", "--workspace", str(tmp_path), "settings"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["profile"] == "prod" and data["feast"]["online_store"] == "redis"
    assert data["workspace"] == str(tmp_path)


def test_bad_profile_exits_2_with_one_clear_line() -> None:
    result = runner.invoke(app, ["--profile", "staging", "settings"])
    assert result.exit_code == 2
    assert "profile 'staging' is unknown" in result.output
    assert "Traceback" not in result.output


def test_simulate_writes_contract_events(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    args = ["--workspace", str(tmp_path), "simulate", "--users", "50", "--items", "20"]
    result = runner.invoke(app, [*args, "--days", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    files = sorted((out / "events").glob("*.parquet"))
    assert files and pq.read_schema(files[0]).names == EVENT_SCHEMA.names
    assert (out / "items.parquet").exists() and (out / "world").is_dir()


def test_missing_input_is_one_red_line_and_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    result = runner.invoke(app, ["--workspace", str(tmp_path), "ingest", "--events", str(missing)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0] == f"error: {missing}: input path does not exist"
    # The error line and the log's path; not a second "error: 1" for the exit itself.
    assert len(lines) == 2 and lines[1].startswith("full log: "), lines
    assert not (tmp_path / "lake").exists()


def test_upload_to_a_local_path_is_one_red_line(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a\n")
    result = runner.invoke(app, ["upload", "--to", str(tmp_path / "out"), str(tmp_path / "x.csv")])
    assert result.exit_code == 1
    assert (
        " ".join(result.output.split())  # rich wraps at the terminal width
        == f"error: --to {str(tmp_path / 'out')!r}: expected an s3://bucket/prefix URI"
    )
