"""The objective setting: validation, query groups per worker, what scores mean downstream.

Boosters here are tiny in-process ``xgboost.train`` runs (no Ray): enough to read their
saved objective back; the Ray Train path is tested in tests/integration/test_train.py.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from flywheel.config import ConfigError, Settings, TrainSettings, load_settings
from flywheel.evaluate import BlessingRule, ModelMetrics, decide, score_metrics
from flywheel.evaluation_report import roc_points
from flywheel.objective import (
    booster_params,
    check_objective,
    group_codes,
    group_sizes,
    score_kind,
    stop_metric,
    worker_rows,
)
from flywheel.report import version_report
from flywheel.train import _best_metrics, _split_params

# ---- the setting ------------------------------------------------------------------------


def test_default_objective_is_binary_logistic_with_the_old_params() -> None:
    config = _split_params(None, seed=3)
    assert config["params"]["objective"] == "binary:logistic"
    assert config["params"]["eval_metric"] == ["auc", "logloss"]
    assert not any(k.startswith("lambdarank") for k in config["params"])
    assert stop_metric("binary:logistic") == ("logloss", False)


def test_rank_objective_reaches_the_booster_params() -> None:
    train = TrainSettings(objective="rank:pairwise", lambdarank_pair_method="mean",
                          lambdarank_num_pair_per_sample=4)  # fmt: skip
    params = _split_params(None, seed=0, train=train)["params"]
    assert params["objective"] == "rank:pairwise"
    assert params["lambdarank_pair_method"] == "mean"
    assert params["lambdarank_num_pair_per_sample"] == 4
    assert params["eval_metric"] == ["auc", "ndcg@10"]
    assert booster_params(train)["objective"] == "rank:pairwise"
    assert stop_metric("rank:pairwise") == ("ndcg@10", True)


def test_unknown_objective_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"train\.objective='rank:map'"):
        load_settings(train={"objective": "rank:map"})
    with pytest.raises(ValueError, match="objective='reg:squarederror' is not supported"):
        _split_params({"objective": "reg:squarederror"}, seed=0)
    assert check_objective("rank:ndcg") == "rank:ndcg"


def test_lambdarank_options_need_a_rank_objective() -> None:
    with pytest.raises(ConfigError, match=r"train\.lambdarank_pair_method='mean' applies"):
        load_settings(train={"lambdarank_pair_method": "mean"})
    with pytest.raises(ConfigError, match="lambdarank_num_pair_per_sample"):
        load_settings(train={"objective": "rank:ndcg", "lambdarank_num_pair_per_sample": 0})
    ok = load_settings(train={"objective": "rank:ndcg", "lambdarank_pair_method": "mean"})
    assert ok.train.lambdarank_pair_method == "mean"


def test_settings_round_trip_through_json_keeps_the_objective() -> None:
    """What the pipeline does: Settings -> settings_json -> each step's Settings."""
    for train in (
        TrainSettings(),
        TrainSettings(objective="rank:ndcg", lambdarank_pair_method="mean"),
    ):
        settings = Settings(train=train)
        assert Settings.model_validate_json(settings.model_dump_json()).train == train


def test_objective_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_TRAIN__OBJECTIVE", "rank:ndcg")
    assert load_settings().train.objective == "rank:ndcg"


# ---- query groups per worker ------------------------------------------------------------


def _interleaved_groups(n_groups: int, seed: int) -> np.ndarray:
    """Group ids in time order, as sessions interleave in a time-sorted shard."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, n_groups)
    starts = rng.uniform(0, 1000, n_groups)
    rows = [
        (starts[g] + rng.uniform(0, 60), f"s{g}") for g in range(n_groups) for _ in range(sizes[g])
    ]
    rows.sort()
    return np.array([g for _, g in rows], dtype=object)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_worker_rows_keep_every_group_whole_and_every_row_once(world: int) -> None:
    groups = _interleaved_groups(300, seed=world)
    codes = group_codes(groups)
    n = len(groups)
    seen: list[int] = []
    for rank in range(world):
        start, stop = n * rank // world, n * (rank + 1) // world
        plan = worker_rows(codes, start, stop)
        rows = start + plan.order
        assert np.all(np.diff(plan.qid) >= 0), "qid must be non-decreasing"
        # A group's rows are all on this worker, contiguous, in the shard's (time) order.
        for q, size in zip(np.unique(plan.qid), group_sizes(plan.qid), strict=True):
            mine = rows[plan.qid == q]
            assert len(set(groups[mine])) == 1
            assert size == int((groups == groups[mine[0]]).sum())
            assert np.all(np.diff(mine) > 0)
        assert plan.read_stop >= stop or len(plan.order) == 0
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(n))


def test_worker_rows_reads_past_its_range_for_a_group_that_started_in_it() -> None:
    codes = group_codes(np.array(["a", "b", "a", "c", "b", "c", "a"]))
    first = worker_rows(codes, 0, 3)  # a, b start here; a's last row is 6
    assert first.read_stop == 7
    assert (first.order.tolist(), first.qid.tolist()) == ([0, 2, 6, 1, 4], [0, 0, 0, 1, 1])
    second = worker_rows(codes, 3, 7)  # only c starts here
    assert (second.order.tolist(), second.qid.tolist()) == ([0, 2], [0, 0])
    empty = worker_rows(group_codes(np.array(["a", "a", "a"])), 1, 3)
    assert len(empty.order) == 0


# ---- what scores mean downstream --------------------------------------------------------


def _booster(objective: str) -> object:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=200) > 0.5).astype(np.float32)
    qid = np.repeat(np.arange(20), 10) if objective.startswith("rank:") else None
    return xgb.train({"objective": objective}, xgb.DMatrix(x, label=y, qid=qid), 3)


@pytest.mark.parametrize(
    ("objective", "kind"),
    [("binary:logistic", "probability"), ("rank:ndcg", "ranking"), ("rank:pairwise", "ranking")],
)
def test_score_kind_is_read_from_the_booster(objective: str, kind: str) -> None:
    assert score_kind(_booster(objective)) == kind  # type: ignore[arg-type]


def test_ranking_scores_have_no_logloss_or_ece_but_rank_metrics() -> None:
    y = np.array([0, 1, 0, 1, 0, 0])
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    raw = np.array([-2.0, 3.0, 0.5, 1.5, -1.0, 4.0])
    ranked = score_metrics(y, raw, groups, "ranking")
    assert math.isnan(ranked.logloss) and math.isnan(ranked.ece)
    as_prob = score_metrics(y, 1 / (1 + np.exp(-raw)), groups)  # same order as raw
    assert ranked.auc == pytest.approx(as_prob.auc)
    assert ranked.ndcg_at_10 == pytest.approx(as_prob.ndcg_at_10)
    assert math.isfinite(as_prob.logloss)
    curve = roc_points(y, raw, "ranking")
    assert max(curve["thresholds"]) == pytest.approx(raw.max())
    assert min(curve["thresholds"]) < 0


def _metrics(auc: float, logloss: float) -> ModelMetrics:
    return ModelMetrics(auc, logloss, logloss, 0.5, 100, 10, 0.1, 0.1)


def test_blessing_skips_the_logloss_check_only_for_ranking_scores() -> None:
    rule = BlessingRule()
    champion = _metrics(0.70, 0.20)
    ranked = decide(rule, _metrics(0.72, math.nan), champion, 0.5)
    assert ranked.blessed and "logloss check skipped" in ranked.reason
    worse_calibrated = decide(rule, _metrics(0.72, 0.30), champion, 0.5)
    assert not worse_calibrated.blessed and "regresses" in worse_calibrated.reason
    on_logloss = decide(BlessingRule(metric="logloss"), _metrics(0.72, math.nan), champion, 0.5)
    assert not on_logloss.blessed and "needs probabilities" in on_logloss.reason


def test_serving_report_gives_no_calibration_to_ranking_scores() -> None:
    ts = pd.Timestamp("2025-03-01", tz="UTC")
    rows = pd.DataFrame({"request_id": ["r1", "r1", "r2"], "engaged": [True, False, False],
                         "explored": [False, False, True], "ts": [ts] * 3})  # fmt: skip
    ranked = version_report("m:1", rows.assign(score=[2.5, -1.0, 0.3]))
    assert math.isnan(ranked.ece) and ranked.calibration == ()
    probs = version_report("m:2", rows.assign(score=[0.9, 0.1, 0.3]))
    assert math.isfinite(probs.ece) and len(probs.calibration) == 10


def test_best_metrics_follow_the_stop_metric() -> None:
    history = {
        "train": {"auc": [0.6, 0.7, 0.8], "ndcg@10": [0.5, 0.6, 0.7]},
        "valid": {"auc": [0.6, 0.65, 0.64], "ndcg@10": [0.5, 0.7, 0.6]},
    }
    best = _best_metrics(history, "ndcg@10", maximize=True)
    assert best["best_iteration"] == 1
    assert best["valid_ndcg_at_10"] == 0.7 and best["valid_auc"] == 0.65
    assert math.isnan(best["valid_logloss"])
    binary = {"train": {"auc": [0.6, 0.7], "logloss": [0.5, 0.4]},
              "valid": {"auc": [0.6, 0.65], "logloss": [0.3, 0.35]}}  # fmt: skip
    assert _best_metrics(binary)["best_iteration"] == 0
