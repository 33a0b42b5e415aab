"""Compaction against a real ingest (local Ray): the dedupe index still holds afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flywheel import lake
from flywheel.config import RaySettings, Settings
from flywheel.housekeeping import run_compact
from flywheel.ingest import ingest_events
from flywheel.ray_runtime import ensure_ray, shutdown_ray

pytestmark = pytest.mark.integration

NOW = datetime(2024, 3, 10, tzinfo=UTC)
T0 = datetime(2024, 3, 1, 20, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ray_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    ensure_ray(Settings(workspace=tmp_path_factory.mktemp("ray"), ray=RaySettings(num_cpus=2)))
    yield
    shutdown_ray()


def _write(path: Path, ids: range) -> Path:
    rows = [
        {
            "event_id": f"e{i}",
            "user_id": i % 7,
            "item_id": 100 + i % 11,
            "event_type": "view",
            "ts": (T0 + timedelta(hours=3 * i)).isoformat(),
            "session_id": f"s{i // 3}",
            "device": "web",
        }
        for i in ids
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reingest_after_compaction_adds_nothing(tmp_path: Path, ray_started: None) -> None:
    s = Settings(workspace=tmp_path / "ws", ray=RaySettings(num_cpus=2, batch_size=1000))
    files = [_write(tmp_path / "raw" / f"b{k}.jsonl", range(10 * k, 10 * k + 30)) for k in range(3)]
    for f in files:  # overlapping batches: several parts per date
        ingest_events(s, [f], now=NOW)
    before = sorted(lake.read_lake_events(s, ["event_id"])["event_id"].to_pylist())
    parts_before = len(lake.lake_files(s))

    result = run_compact(s)

    assert result.compactions and len(lake.lake_files(s)) < parts_before
    assert sorted(lake.read_lake_events(s, ["event_id"])["event_id"].to_pylist()) == before
    # The same file again: its fingerprint is known. A copy under a new name: every event
    # is already in the compacted partitions.
    assert ingest_events(s, [files[0]], now=NOW).accepted == 0
    copy = _write(tmp_path / "raw" / "copy.jsonl", range(0, 50))
    assert ingest_events(s, [copy], now=NOW).accepted == 0
    assert sorted(lake.read_lake_events(s, ["event_id"])["event_id"].to_pylist()) == before
