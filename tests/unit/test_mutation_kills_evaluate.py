"""The metric maths and the blessing stage (flywheel.evaluate): cases mutation testing found.

A refused challenger must be refused with ``blessed is False`` (the KFP condition and
``metrics.json`` read it as a JSON boolean), every metric must reach the summary, the
calibration bins must follow their documented edges in float64 even for float32 scores,
a probability of exactly 0 or 1 must not make the log loss infinite, and the stage reads
only the test split.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from flywheel.evaluate import (
    BlessingRule,
    ModelMetrics,
    calibration_bins,
    decide,
    evaluate,
    expected_calibration_error,
    log_loss,
    ndcg_at_k,
    score_metrics,
)
from flywheel.ranking import MODEL_FEATURES
from tests.shards import write_shards

#: A popularity-baseline AUC every first model in these tests clears by the margin.
POP = 0.5


def _m(auc: float, logloss: float = 0.5) -> ModelMetrics:
    return ModelMetrics(auc, logloss, 0.02, 0.5, 100, 10, 0.2, 0.2)


def test_every_refusal_is_a_false_boolean() -> None:
    rule = BlessingRule(min_improvement=0.01, max_logloss_regression=0.01)
    assert decide(rule, _m(0.5), None, POP).blessed is False  # below the floor
    assert decide(rule, _m(0.70), _m(0.70), POP).blessed is False  # no gain
    assert decide(rule, _m(0.80, logloss=0.9), _m(0.70), POP).blessed is False  # regression
    assert decide(rule, _m(0.80), _m(0.70), POP).blessed is True


def test_calibration_bins_have_ten_bins_and_documented_edges() -> None:
    p = np.array([0.0, 0.85, 0.95, 1.0])
    count, mean_p, rate = calibration_bins(np.array([0, 1, 0, 1]), p)
    assert count.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 1, 2]
    assert mean_p[9] == pytest.approx(0.975) and rate[9] == pytest.approx(0.5)
    # float32 0.69999999: 7.0 when multiplied in float32, 6.9999998 in float64: bin 6.
    just_below = np.array([0.7], dtype=np.float32)  # 0.699999988...
    assert float(just_below[0]) < 0.7
    assert np.flatnonzero(calibration_bins(np.array([1]), just_below)[0]).tolist() == [6]


def test_ece_uses_the_bins_it_is_given() -> None:
    y, p = np.array([1, 0]), np.array([0.2, 0.4])
    assert expected_calibration_error(y, p, n_bins=1) == pytest.approx(0.2)
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.6)


def test_log_loss_of_certain_predictions_is_finite() -> None:
    assert log_loss(np.array([0]), np.array([1.0])) == pytest.approx(-math.log(1 - (1 - 1e-15)))
    assert log_loss(np.array([1]), np.array([0.0])) == pytest.approx(-math.log(1e-15))
    assert log_loss(np.array([1, 0]), np.array([1.0, 0.0])) < 1e-12


def test_ndcg_of_nothing_is_nan() -> None:
    assert math.isnan(ndcg_at_k(np.array([]), np.array([]), np.array([])))


def test_score_metrics_fills_every_field() -> None:
    y = np.array([1, 0, 0, 1, 0, 0])
    p = np.array([0.9, 0.2, 0.1, 0.3, 0.6, 0.1])
    groups = np.array(["a", "a", "a", "b", "b", "c"])
    got = score_metrics(y, p, groups)
    assert got.logloss == pytest.approx(log_loss(y, p))
    assert got.ece == pytest.approx(expected_calibration_error(y, p))
    assert got.ndcg_at_10 == pytest.approx(ndcg_at_k(y, p, groups))
    assert (got.rows, got.groups_with_positive) == (6, 2)
    assert got.positive_rate == pytest.approx(2 / 6)
    assert got.mean_prediction == pytest.approx(np.mean(p))


def test_the_stage_reads_only_the_test_split_and_makes_its_output_folders(tmp_path: Path) -> None:
    shards = write_shards(tmp_path / "shards", n_rows=2_000, seed=4)
    frame = shards.frames["train"]
    dtrain = xgb.DMatrix(
        frame[list(MODEL_FEATURES)].to_numpy(),
        label=frame["label"].to_numpy(),
        feature_names=list(MODEL_FEATURES),
    )
    model = tmp_path / "m.ubj"
    params = {"objective": "binary:logistic", "max_depth": 3, "seed": 0, "nthread": 1}
    xgb.train(params, dtrain, num_boost_round=20).save_model(str(model))
    shutil.rmtree(shards.root / "train")
    shutil.rmtree(shards.root / "valid")
    out = tmp_path / "a" / "b" / "c"
    summary = evaluate(model, model, shards.root, out, BlessingRule(min_auc=0.0))
    assert summary.blessed is False  # the same model does not beat itself
    assert summary.metrics_path == out / "metrics.json"
    assert summary.report_path == out / "report.html"
    assert 0 <= summary.seconds < 600
    record = json.loads((out / "metrics.json").read_text())
    assert record["blessed"] is False
    assert record["challenger_path"] == record["champion_path"] == str(model)
    assert (
        record["data_window"]
        == json.loads((shards.root / "metadata.json").read_text())["data_window"]
    )
    assert set(record["roc_curve"]) == {"fpr", "tpr", "thresholds"}
    alone = evaluate(model, None, shards.root, tmp_path / "alone", BlessingRule(min_auc=0.0))
    assert alone.blessed is True
    assert json.loads((tmp_path / "alone" / "metrics.json").read_text())["champion_path"] is None
    assert 'alt="roc"' in (out / "report.html").read_text()
