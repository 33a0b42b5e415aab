"""Finding the champion's shards from its lineage: the run's own preprocess record, the
newest run with the same data window when KFP cached the step, or a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel.config import Settings
from flywheel.monitor.reference import ReferenceError, lineage_shards

WINDOW = {"start": "2026-03-01T00:00:00+00:00", "end": "2026-03-03T00:00:00+00:00"}


def _record(settings: Settings, run: str, stage: str, summary: dict[str, object]) -> None:
    folder = settings.workspace / "runs" / run
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stage}.json").write_text(json.dumps({"stage": stage, "summary": summary}))


def test_shards_from_the_run_or_the_cached_run(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    window = {"window_start": WINDOW["start"], "window_end": WINDOW["end"]}
    _record(settings, "20260301T000000Z-a", "dataset", window)
    _record(settings, "20260301T000000Z-a", "preprocess", {"shards_dir": "/s/a"})
    _record(settings, "20260302T000000Z-b", "dataset", {**window, "window_end": "other"})
    _record(settings, "20260302T000000Z-b", "preprocess", {"shards_dir": "/s/b"})
    _record(settings, "20260303T000000Z-c", "preprocess", {"shards_dir": "/s/c"})
    lineage = {"run_id": "20260303T000000Z-c", "data_window": WINDOW}
    assert lineage_shards(settings, lineage) == Path("/s/c")
    # The champion's run cached preprocess: the run that built the same window wrote it.
    cached = {"run_id": "20260304T000000Z-d", "data_window": WINDOW}
    assert lineage_shards(settings, cached) == Path("/s/a")
    with pytest.raises(ReferenceError, match="--reference"):
        lineage_shards(settings, {"run_id": "x", "data_window": {"start": "1", "end": "2"}})
