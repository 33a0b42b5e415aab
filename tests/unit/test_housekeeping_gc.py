"""``flywheel gc``: retention by age and count, dry runs, and what it never touches.

Real files, the real BentoML model store and champion pointer (registry), real xgboost.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb
from typer.testing import CliRunner

from flywheel import lake
from flywheel.config import RetentionSettings, Settings
from flywheel.housekeeping import plan_gc, run_gc
from flywheel.ranking import MODEL_FEATURES
from flywheel.registry import champion_state, model_store, promote, register_model
from flywheel.schemas import EVENT_SCHEMA

NOW = datetime(2025, 6, 30, 12, tzinfo=UTC)


def _settings(tmp_path: Path, **retention: object) -> Settings:
    return Settings(workspace=tmp_path / "ws", retention=RetentionSettings(**retention))


def _age(path: Path, days: float) -> Path:
    stamp = (NOW - timedelta(days=days)).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def _file(path: Path, days: float, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return _age(path, days)


def _lake_days(settings: Settings, days: int) -> None:
    """One partition per day, the last on NOW's date; the ingest watermark at NOW."""
    for back in range(days):
        ts = NOW - timedelta(days=back)
        row = {
            "event_id": f"e{back}",
            "user_id": "u",
            "item_id": "i",
            "event_type": "view",
            "ts": ts,
            "session_id": "s",
            "device": "web",
        }
        table = pa.Table.from_pylist([row], schema=EVENT_SCHEMA)
        lake.commit_part(table, settings.events_dir / lake.partition_name(ts.date()))
    lake.write_state(settings, {"events": {"watermark": NOW.isoformat()}})


def _files(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_size) for p in root.rglob("*") if p.is_file())


def test_dry_run_lists_everything_but_deletes_nothing(tmp_path: Path) -> None:
    s = _settings(tmp_path, lake_days=10, quarantine_days=5, log_days=5, kfp_runs_keep=0)
    _lake_days(s, 60)
    _file(s.quarantine_dir / "old.parquet", 9)
    _file(s.workspace / "logs" / "cycle-old.log", 9)
    _file(s.workspace / "kfp" / "outputs" / "run-a" / "x.bin", 30)
    _age(s.workspace / "kfp" / "outputs" / "run-a", 30)
    before = _files(s.workspace)

    result = run_gc(s, dry_run=True, now=NOW)

    kinds = {c.kind for c in result.candidates}
    assert {"lake/events", "quarantine", "logs", "kfp-run"} <= kinds
    assert result.bytes > 0
    assert _files(s.workspace) == before


def test_lake_days_never_reach_into_the_training_window(tmp_path: Path) -> None:
    s = _settings(tmp_path, lake_days=1)
    _lake_days(s, 60)

    result = run_gc(s, now=NOW)

    # 14 training days + 30 feature-lookback days before NOW's date stay, whatever lake_days.
    first_kept = NOW.date() - timedelta(days=44)
    assert result.protected_from == first_kept
    days = sorted(lake.partition_day(p) for p in s.events_dir.iterdir())
    assert days[0] == first_kept and len(days) == 45
    assert {c.kind for c in result.candidates} == {"lake/events"}
    state = lake.read_state(s)
    assert state["events"]["deleted_through"] == (first_kept - timedelta(days=1)).isoformat()


def test_keep_days_option_widens_the_protected_window(tmp_path: Path) -> None:
    s = _settings(tmp_path, lake_days=1)
    _lake_days(s, 60)
    run_gc(s, now=NOW, keep_days=25)
    assert len(list(s.events_dir.iterdir())) == 25 + 30 + 1


def test_lake_is_kept_whole_by_default(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    _lake_days(s, 90)
    assert not [c for c in plan_gc(s, now=NOW).candidates if c.kind.startswith("lake")]


def test_quarantine_and_logs_go_by_age(tmp_path: Path) -> None:
    s = _settings(tmp_path, quarantine_days=7, log_days=3)
    old_q = _file(s.quarantine_dir / "r1.parquet", 8)
    new_q = _file(s.quarantine_dir / "r2.parquet", 6)
    old_log = _file(s.workspace / "logs" / "ingest-1.log", 4)
    new_log = _file(s.workspace / "logs" / "ingest-2.log", 1)
    other = _file(s.workspace / "logs" / "notes.txt", 40)

    run_gc(s, now=NOW)

    assert not old_q.exists() and new_q.exists()
    assert not old_log.exists() and new_log.exists() and other.exists()


def test_kfp_runs_keep_the_newest_and_the_young(tmp_path: Path) -> None:
    s = _settings(tmp_path, kfp_runs_keep=2, kfp_run_days=10)
    outputs = s.workspace / "kfp" / "outputs"
    ages = {"p-1": 40, "p-2": 30, "p-3": 20, "p-4": 5, "p-5": 1}
    for name, days in ages.items():
        _file(outputs / name / "task" / "out.bin", days)
        _age(outputs / name, days)
    cache = s.workspace / "kfp" / "cache"
    stale = _file(cache / "k1.json", 30, json.dumps({"uri": str(outputs / "p-1" / "task")}))
    fresh = _file(cache / "k2.json", 1, json.dumps({"uri": str(outputs / "p-5" / "task")}))

    run_gc(s, now=NOW)

    # p-5, p-4: the newest two; p-3..p-1 are older than 10 days and beyond them.
    assert sorted(p.name for p in outputs.iterdir()) == ["p-4", "p-5"]
    assert not stale.exists() and fresh.exists()


X = np.random.default_rng(0).standard_normal((200, len(MODEL_FEATURES))).astype(np.float32)


def _register(s: Settings, tmp_path: Path, seed: int) -> str:
    y = (np.random.default_rng(seed).random(len(X)) < 0.3).astype(np.float32)
    dtrain = xgb.DMatrix(X, label=y, feature_names=list(MODEL_FEATURES))
    path = tmp_path / f"m{seed}.ubj"
    xgb.train({"objective": "binary:logistic", "max_depth": 2}, dtrain, 3).save_model(str(path))
    run_id = f"run-{seed}"
    shards = s.workspace / "kfp" / "outputs" / f"pipe-{seed}" / "preprocess" / "shards"
    _file(shards / "train.parquet", 60)
    _age(shards.parent.parent, 60)
    record = {"summary": {"shards_dir": str(shards)}}
    _file(s.workspace / "runs" / run_id / "preprocess.json", 60, json.dumps(record))
    _age(s.workspace / "runs" / run_id, 60)
    lineage = {
        "run_id": run_id,
        "data_window": {"start": f"w{seed}", "end": f"w{seed}"},
        "feature_service": "ranking_v1",
    }
    return register_model(s, path, {"auc": 0.7}, lineage)


def test_champion_rollback_history_and_their_runs_are_never_removed(tmp_path: Path) -> None:
    s = _settings(tmp_path, models_keep=0, kfp_runs_keep=0, kfp_run_days=1)
    tags = [_register(s, tmp_path, seed) for seed in range(4)]  # each becomes champion
    # Demote the last one by hand: model 3 leaves the pointer, so it is an ordinary model.
    pointer = s.state_dir / "champion.json"
    data = json.loads(pointer.read_text())
    pointer.write_text(json.dumps({**data, "champion": tags[2], "history": tags[:2]}))
    assert champion_state(s).champion == tags[2]

    result = run_gc(s, now=NOW)

    gone = {c.tag for c in result.candidates if c.kind == "model"}
    assert gone == {tags[3]}
    with model_store(s) as store:
        left = {str(m.tag) for m in store.list("flywheel-ranker")}
    assert left == set(tags[:3])
    outputs = sorted(p.name for p in (s.workspace / "kfp" / "outputs").iterdir())
    assert outputs == ["pipe-0", "pipe-1", "pipe-2"]
    assert sorted(p.name for p in (s.workspace / "runs").iterdir()) == ["run-0", "run-1", "run-2"]
    promote(s, tags[0])  # the rollback history still works: its models exist


def test_gc_takes_the_workspace_lock(tmp_path: Path) -> None:
    from flywheel.workspace_lock import WorkspaceBusyError, workspace_lock

    s = _settings(tmp_path, quarantine_days=1)
    q = _file(s.quarantine_dir / "r.parquet", 9)
    with workspace_lock(s, "cycle"):
        os.environ.pop("FLYWHEEL_LOCK_HELD", None)  # as if another process held it
        import flywheel.workspace_lock as wl

        held = dict(wl._held)
        wl._held.clear()
        try:
            with pytest.raises(WorkspaceBusyError, match="flywheel cycle"):
                run_gc(s, now=NOW)
        finally:
            wl._held.update(held)
    assert q.exists()


def test_cli_gc_dry_run_prints_the_table(tmp_path: Path, restore_logging: None) -> None:
    from flywheel.cli import app

    s = _settings(tmp_path, quarantine_days=1)
    q = _file(s.quarantine_dir / "run-1.parquet", 400, "y" * 100)
    q_mtime = q.stat().st_mtime
    result = CliRunner().invoke(app, ["--workspace", str(s.workspace), "gc", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "run-1.parquet" in result.output and "quarantine" in result.output
    assert "dry run: nothing deleted" in result.output
    assert q.exists() and q.stat().st_mtime == q_mtime


def test_retention_settings_come_from_the_environment_and_name_bad_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flywheel.config import ConfigError, load_settings

    monkeypatch.setenv("FLYWHEEL_RETENTION__LAKE_DAYS", "90")
    assert load_settings().retention.lake_days == 90
    monkeypatch.setenv("FLYWHEEL_RETENTION__MODELS_KEEP", "-1")
    with pytest.raises(ConfigError, match=r"retention\.models_keep"):
        load_settings()


def test_serving_logs_go_only_when_ingested_closed_and_out_of_the_window(tmp_path: Path) -> None:
    from flywheel.predlog import encode_records, log_dir
    from flywheel.served import ingest_served

    s = _settings(tmp_path, serving_log_days=1)
    _lake_days(s, 1)
    root = log_dir(s, "feedback")

    def log(day: datetime, name: str) -> Path:
        rec = {"request_id": name, "item_id": "i", "event_type": "click", "ts": day}
        path = root / lake.partition_name(day.date()) / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_records([rec]))
        return _age(path, 3)

    old = log(NOW - timedelta(days=60), "old")
    in_window = log(NOW - timedelta(days=40), "window")
    newest = log(NOW - timedelta(days=2), "newest")
    assert not [c for c in plan_gc(s, now=NOW).candidates if c.kind.startswith("serving")]

    ingest_served(s, now=NOW)  # now read to their end
    run_gc(s, now=NOW)

    assert not old.exists() and in_window.exists() and newest.exists()
    state = json.loads((s.state_dir / "served_state.json").read_text())
    assert sorted(state["feedback"]["files"]) == sorted(
        p.relative_to(root).as_posix() for p in (in_window, newest)
    )
