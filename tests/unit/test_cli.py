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
    assert "error:" in result.output and "nope.parquet" in result.output
    assert not (tmp_path / "lake").exists()
