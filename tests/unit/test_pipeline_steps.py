"""Pipeline step adapters with real KFP artifacts (``kfp.dsl.Metrics``), outside a pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp import dsl

from flywheel.config import Settings
from flywheel.evaluate import BlessingRule
from flywheel.lake import write_state
from flywheel.pipeline_steps import (
    RUN_ID_ENV,
    _seal,
    lake_fingerprint,
    record_step,
    run_evaluate,
    run_ingest,
)
from flywheel.ranking import MODEL_FEATURES
from tests.shards import write_shards


def test_seal_writes_metadata_once_so_kfp_cache_entries_stay_valid(tmp_path: Path) -> None:
    m = dsl.Metrics(uri=str(tmp_path / "task" / "metrics"))
    m.log_metric("rows", 3.0)
    _seal(m)
    assert json.loads(Path(m.path).read_text()) == {"rows": 3.0}
    Path(m.path).write_text("kept")
    _seal(m)  # an existing artifact file is never overwritten
    assert Path(m.path).read_text() == "kept"


def test_lake_fingerprint_changes_only_with_the_ingest_state(tmp_path: Path) -> None:
    s = Settings(workspace=tmp_path)
    empty = lake_fingerprint(s)
    state = {"events": {"files": {"a.parquet": {"sha256": "x", "size": 1}}, "watermark": "t"}}
    write_state(s, state)
    first = lake_fingerprint(s)
    assert first != empty
    write_state(s, state)
    assert lake_fingerprint(s) == first
    state["events"]["files"]["b.parquet"] = {"sha256": "y", "size": 2}
    write_state(s, state)
    assert lake_fingerprint(s) != first


def test_ingest_without_uri_only_fingerprints(tmp_path: Path) -> None:
    s = Settings(workspace=tmp_path)
    metrics = dsl.Metrics(uri=str(tmp_path / "m"))
    version, rows = run_ingest(s.model_dump_json(), "", "", metrics)
    assert (version, rows) == (lake_fingerprint(s), 0)
    assert json.loads(Path(metrics.path).read_text()) == metrics.metadata


def test_steps_record_their_summary_for_the_cycle_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Settings(workspace=tmp_path)
    record_step(s, "train", {"valid_auc": 0.7}, 1.234)  # no run id: nothing recorded
    assert not (tmp_path / "runs").exists()
    monkeypatch.setenv(RUN_ID_ENV, "r1")
    record_step(s, "train", {"valid_auc": 0.7}, 1.234)
    data = json.loads((tmp_path / "runs" / "r1" / "train.json").read_text())
    assert data == {"stage": "train", "seconds": 1.23, "summary": {"valid_auc": 0.7}}


def test_ingest_bad_mapping_text_fails_naming_the_key_before_any_write(tmp_path: Path) -> None:
    from flywheel.ingest import MappingError

    s = Settings(workspace=tmp_path)
    events = tmp_path / "events.csv"
    events.write_text("a,b\n1,2\n")
    text = "name: x\ncolumns: {user_id: a, item_id: b, event_type: c, ts: d, usr: e}\n"
    with pytest.raises(MappingError, match=r"parameter: columns\.usr: Extra inputs"):
        run_ingest(s.model_dump_json(), str(events), "", dsl.Metrics(uri="m"), mapping=text)
    assert not s.lake_dir.exists() and not s.state_dir.exists()


def test_evaluate_step_logs_the_popularity_baseline_to_kfp_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real KFP artifacts and a real booster; the workspace has no champion yet."""
    import xgboost as xgb

    monkeypatch.setenv(RUN_ID_ENV, "r1")
    s = Settings(workspace=tmp_path / "ws")
    shards = write_shards(tmp_path / "shards", n_rows=2_000, seed=4)
    frame = shards.frames["train"]
    data = xgb.DMatrix(
        frame[list(MODEL_FEATURES)], label=frame["label"], feature_names=list(MODEL_FEATURES)
    )
    model = dsl.Model(uri=str(tmp_path / "model"))
    Path(model.path).mkdir()
    params = {"objective": "binary:logistic", "max_depth": 3, "seed": 0, "nthread": 1}
    xgb.train(params, data, num_boost_round=20).save_model(str(Path(model.path) / "model.ubj"))

    def run(name: str, rule: BlessingRule) -> tuple[bool, dsl.Metrics]:
        metrics = dsl.Metrics(uri=str(tmp_path / name / "metrics"))
        roc = dsl.ClassificationMetrics(uri=str(tmp_path / name / "roc"))
        report = dsl.HTML(uri=str(tmp_path / name / "report.html"))
        blessed = run_evaluate(
            s.model_dump_json(), dsl.Dataset(uri=str(shards.root)), model,
            rule.model_dump_json(), metrics, roc, report,
        )  # fmt: skip
        return blessed, metrics

    blessed, metrics = run("on", BlessingRule(min_auc=0.0))
    record = json.loads((s.workspace / "runs" / "r1" / "evaluate.json").read_text())["summary"]
    assert blessed is record["blessed"] is True
    popularity = record["popularity"]
    assert metrics.metadata["popularity_auc"] == popularity["auc"]
    assert metrics.metadata["popularity_ndcg_at_10"] == popularity["ndcg_at_10"]
    assert metrics.metadata["popularity_lift_auc"] == pytest.approx(
        metrics.metadata["challenger_auc"] - popularity["auc"]
    )
    assert metrics.metadata["popularity_min_lift"] == 0.01
    assert 0.0 <= popularity["auc"] <= 1.0
    _, off = run("off", BlessingRule(min_auc=0.0, min_lift_over_popularity=None))
    assert "popularity_min_lift" not in off.metadata and "popularity_auc" in off.metadata
