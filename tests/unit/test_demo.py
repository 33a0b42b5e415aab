"""The demo's workspace handling: a fresh demo folder, nothing else touched."""

from __future__ import annotations

from pathlib import Path

from flywheel.config import Settings
from flywheel.demo import demo_settings


def test_demo_runs_in_a_fresh_subfolder_and_leaves_the_rest_alone(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    old = ws / "demo" / "lake" / "events"
    old.mkdir(parents=True)
    (old / "part-0.parquet").write_bytes(b"stale")
    keep = ws / "lake" / "items.parquet"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"mine")

    moved = demo_settings(Settings(workspace=ws))

    assert moved.workspace == ws / "demo"
    assert not (ws / "demo").exists()  # removed; the loop creates what it needs
    assert keep.read_bytes() == b"mine"
    assert moved.feature_data_dir == ws / "demo" / "features"


def test_demo_settings_on_a_new_workspace_creates_nothing(tmp_path: Path) -> None:
    moved = demo_settings(Settings(workspace=tmp_path / "new"))
    assert moved.workspace == tmp_path / "new" / "demo"
    assert not (tmp_path / "new").exists()
