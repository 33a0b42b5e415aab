"""Evaluation maths against hand-computed values, the blessing rule, and the stage's files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from flywheel.evaluate import (
    BlessingRule,
    ModelMetrics,
    auc,
    decide,
    evaluate,
    expected_calibration_error,
    log_loss,
    ndcg_at_k,
)
from flywheel.ranking import MODEL_FEATURES
from flywheel.train import ShardError
from tests.shards import SyntheticShards, write_shards, write_split

# ---- metric maths vs hand-computed values ------------------------------------------------


def test_auc_of_a_classic_four_point_example() -> None:
    # Of the 4 (pos, neg) pairs, 3 are ordered correctly.
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert math.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_log_loss_by_hand() -> None:
    expected = -(math.log(0.8) + math.log(1 - 0.4)) / 2
    assert log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(expected)
    # Clipping keeps a confident miss finite.
    assert math.isfinite(log_loss(np.array([1]), np.array([0.0])))


def test_ece_by_hand() -> None:
    # bins: [0,.1): p .05 y 0 -> gap .05 (n 1); [.1,.2): mean p .15, rate .5 -> .35 (n 2);
    # [.9,1]: p .95 y 1 -> .05 (n 1). ECE = (1*.05 + 2*.35 + 1*.05) / 4 = 0.2
    y = np.array([0, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.15, 0.95])
    assert expected_calibration_error(y, p) == pytest.approx(0.2)


def test_ece_bin_edges() -> None:
    # p == 1.0 belongs to the last bin, p == 0.1 to the second: both perfectly calibrated.
    assert expected_calibration_error(np.array([1]), np.array([1.0])) == pytest.approx(0.0)
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert expected_calibration_error(y, np.full(10, 0.1)) == pytest.approx(0.0)


def test_ndcg_by_hand() -> None:
    groups = np.array(["a"] * 3 + ["b"] * 4 + ["c"] * 2)
    y = np.array([0, 1, 0, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.1, 0.5, 0.3, 0.2, 0.6, 0.4])
    # a: the positive is 2nd -> 1/log2(3). b: positives 1st and 4th -> (1 + 1/log2(5)) over
    # the ideal (1 + 1/log2(3)). c has no positive and is left out of the mean.
    ndcg_a = 1 / math.log2(3)
    ndcg_b = (1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(y, p, groups, k=10) == pytest.approx((ndcg_a + ndcg_b) / 2)


def test_ndcg_cutoff_and_pessimistic_ties() -> None:
    groups = np.zeros(12, dtype=np.int64)
    y = np.zeros(12)
    y[10] = 1  # ranked 11th by descending score: outside the top 10
    p = np.linspace(1.0, 0.0, 12)
    assert ndcg_at_k(y, p, groups, k=10) == pytest.approx(0.0)
    # Equal scores: the positive goes after the two negatives -> rank 3 -> 1/log2(4).
    assert ndcg_at_k(np.array([1, 0, 0]), np.ones(3), np.zeros(3), k=10) == pytest.approx(0.5)
    assert math.isnan(ndcg_at_k(np.zeros(3), np.ones(3), np.zeros(3)))


def _ndcg_reference(y: np.ndarray, p: np.ndarray, groups: np.ndarray, k: int) -> float:
    """A slow, obvious NDCG@k (one group at a time) to check the vectorised one."""
    values = []
    for g in np.unique(groups):
        yy, pp = y[groups == g], p[groups == g]
        if yy.sum() == 0:
            continue
        ranked = yy[np.lexsort((yy, -pp))][:k]
        dcg = sum(r / math.log2(i + 2) for i, r in enumerate(ranked))
        idcg = sum(1 / math.log2(i + 2) for i in range(min(int(yy.sum()), k)))
        values.append(dcg / idcg)
    return float(np.mean(values))


def test_ndcg_matches_a_per_group_reference_on_random_data() -> None:
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 60, 900)
    y = (rng.random(900) < 0.2).astype(np.int8)
    p = np.round(rng.random(900), 2)  # rounding creates ties
    assert ndcg_at_k(y, p, groups, k=5) == pytest.approx(_ndcg_reference(y, p, groups, 5))


# ---- the blessing rule ------------------------------------------------------------------

#: A popularity-baseline AUC every first model in these tests clears by the margin.
POP = 0.5


def _m(auc_: float, logloss: float = 0.5, ndcg: float = 0.5, ece: float = 0.02) -> ModelMetrics:
    return ModelMetrics(auc_, logloss, ece, ndcg, 100, 10, 0.2, 0.2)


def test_rule_floor_and_no_champion() -> None:
    rule = BlessingRule(min_auc=0.6)
    assert not decide(rule, _m(0.59), None, POP).blessed
    assert not decide(rule, _m(math.nan), None, POP).blessed
    ok = decide(rule, _m(0.61), None, POP)
    assert ok.blessed and "no champion" in ok.reason


def test_rule_against_a_champion() -> None:
    rule = BlessingRule(min_improvement=0.01, max_logloss_regression=0.02)
    assert decide(rule, _m(0.72), _m(0.70), POP).blessed
    assert not decide(rule, _m(0.705), _m(0.70), POP).blessed  # gain below min_improvement
    assert not decide(BlessingRule(), _m(0.70), _m(0.70), POP).blessed  # a tie does not beat
    regressed = decide(rule, _m(0.75, logloss=0.6), _m(0.70, logloss=0.5), POP)
    assert not regressed.blessed and "logloss" in regressed.reason


def test_floor_holds_against_a_champion_too() -> None:
    """A challenger below ``min_auc`` is refused even when it beats a weaker champion."""
    rule = BlessingRule(min_auc=0.6, max_logloss_regression=None)
    below = decide(rule, _m(0.59), _m(0.52), POP)
    assert not below.blessed and "below the floor" in below.reason
    assert not decide(rule, _m(math.nan), _m(0.52), POP).blessed


def test_floor_is_inclusive_at_min_auc() -> None:
    rule = BlessingRule(min_auc=0.6)
    assert decide(rule, _m(0.6), None, POP).blessed
    assert decide(rule, _m(0.6), _m(0.55), POP).blessed
    assert not decide(rule, _m(math.nextafter(0.6, 0.0)), _m(0.55), POP).blessed


def test_logloss_regression_exactly_at_the_limit_is_allowed() -> None:
    # 0.5 and 0.25 are exact in binary floating point, so the regression is exactly 0.25.
    rule = BlessingRule(max_logloss_regression=0.25)
    at_limit = decide(rule, _m(0.75, logloss=0.75), _m(0.70, logloss=0.5), POP)
    assert at_limit.blessed, at_limit.reason
    over = decide(rule, _m(0.75, logloss=math.nextafter(0.75, 1.0)), _m(0.70, logloss=0.5), POP)
    assert not over.blessed and "regresses" in over.reason
    off = BlessingRule(max_logloss_regression=None)
    assert decide(off, _m(0.75, logloss=5.0), _m(0.70, logloss=0.5), POP).blessed


def test_rule_on_a_loss_metric_prefers_lower() -> None:
    rule = BlessingRule(metric="ece", max_logloss_regression=None)
    assert decide(rule, _m(0.7, ece=0.01), _m(0.7, ece=0.03), POP).blessed
    assert not decide(rule, _m(0.7, ece=0.03), _m(0.7, ece=0.01), POP).blessed


# ---- the stage, with real boosters --------------------------------------------------------


def _booster(shards: SyntheticShards, path: Path, rounds: int, shuffle: bool = False) -> Path:
    frame = shards.frames["train"]
    y = frame["label"].to_numpy()
    if shuffle:
        y = np.random.default_rng(7).permutation(y)
    dtrain = xgb.DMatrix(
        frame[list(MODEL_FEATURES)].to_numpy(), label=y, feature_names=list(MODEL_FEATURES)
    )
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.1, "seed": 0}
    xgb.train(params, dtrain, num_boost_round=rounds).save_model(str(path))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("eval")
    shards = write_shards(root / "shards", n_rows=12_000, seed=1)
    return {
        "shards": shards,
        "good": _booster(shards, root / "good.ubj", rounds=150),
        "weak": _booster(shards, root / "weak.ubj", rounds=3),
        "shuffled": _booster(shards, root / "shuffled.ubj", rounds=150, shuffle=True),
    }


def test_shuffled_challenger_is_never_blessed(world: dict, tmp_path: Path) -> None:
    shards = world["shards"]
    alone = evaluate(world["shuffled"], None, shards.root, tmp_path / "a")
    assert not alone.blessed and "floor" in alone.reason
    assert alone.challenger.auc < 0.55
    against = evaluate(world["shuffled"], world["weak"], shards.root, tmp_path / "b")
    assert not against.blessed


def test_better_challenger_is_blessed_and_worse_is_not(world: dict, tmp_path: Path) -> None:
    shards = world["shards"]
    better = evaluate(world["good"], world["weak"], shards.root, tmp_path / "better")
    assert better.blessed, better.reason
    assert better.champion is not None and better.challenger.auc > better.champion.auc
    worse = evaluate(world["weak"], world["good"], shards.root, tmp_path / "worse")
    assert not worse.blessed and "does not beat" in worse.reason


def test_metrics_agree_with_an_independent_computation(world: dict, tmp_path: Path) -> None:
    shards = world["shards"]
    summary = evaluate(world["good"], None, shards.root, tmp_path)
    test = shards.frames["test"]
    booster = xgb.Booster(model_file=str(world["good"]))
    p = booster.predict(xgb.DMatrix(test[list(MODEL_FEATURES)], feature_names=list(MODEL_FEATURES)))
    assert summary.challenger.auc == pytest.approx(roc_auc_score(test["label"], p), abs=1e-9)
    assert summary.test_rows == len(test)
    # The model can approach, never meaningfully beat, the true-probability ranking.
    oracle = roc_auc_score(test["label"], shards.true_prob["test"])
    assert summary.challenger.auc < oracle + 0.01


def test_report_files_hold_the_decision(world: dict, tmp_path: Path) -> None:
    summary = evaluate(world["good"], world["weak"], world["shards"].root, tmp_path)
    for name in ("metrics.json", "roc.png", "calibration.png", "report.html"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "report.html").read_text()
    assert "BLESSED" in page and "NOT BLESSED" not in page
    assert page.count("data:image/png;base64,") == 2
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["blessed"] is summary.blessed and record["reason"] == summary.reason
    assert record["champion"]["auc"] == pytest.approx(summary.champion.auc)  # type: ignore[union-attr]


def test_single_class_test_split_is_refused(world: dict, tmp_path: Path) -> None:
    shards = write_shards(tmp_path / "s", n_rows=2_000, seed=2)
    test_dir = tmp_path / "s" / "test"
    frame = shards.frames["test"].assign(label=np.int8(0))
    for f in test_dir.iterdir():
        f.unlink()
    write_split(test_dir, frame, 1)
    with pytest.raises(ShardError, match="one class"):
        evaluate(world["good"], None, tmp_path / "s", tmp_path / "out")


def test_a_v1_champion_is_scored_on_its_own_columns_of_v2_shards(tmp_path: Path) -> None:
    """The first ranking_v2 challenger meets a ranking_v1 champion on the same test rows:
    each model reads its own columns (v2's start with v1's)."""
    from flywheel.ranking import model_features

    shards = write_shards(tmp_path / "shards", n_rows=6_000, seed=3, service="ranking_v2")
    frame, y = shards.frames["train"], shards.frames["train"]["label"].to_numpy()
    params = {"objective": "binary:logistic", "max_depth": 3, "seed": 0}
    paths = {}
    for service in ("ranking_v1", "ranking_v2"):
        names = list(model_features(service))
        dtrain = xgb.DMatrix(frame[names].to_numpy(), label=y, feature_names=names)
        paths[service] = tmp_path / f"{service}.ubj"
        xgb.train(params, dtrain, num_boost_round=30).save_model(str(paths[service]))
    summary = evaluate(paths["ranking_v2"], paths["ranking_v1"], shards.root, tmp_path / "out")
    test, v1 = shards.frames["test"], list(MODEL_FEATURES)
    champion = xgb.Booster(model_file=str(paths["ranking_v1"]))
    p = champion.predict(xgb.DMatrix(test[v1].to_numpy(), feature_names=v1))
    assert summary.champion is not None
    assert summary.champion.auc == pytest.approx(roc_auc_score(test["label"], p), abs=1e-9)
    # and v1 shards cannot score a v2 model: the error names the missing columns
    old = write_shards(tmp_path / "v1", n_rows=2_000, seed=4)
    with pytest.raises(ShardError, match="ui_views_24h"):
        evaluate(paths["ranking_v2"], None, old.root, tmp_path / "out2")
