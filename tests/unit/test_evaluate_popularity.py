"""The item-popularity baseline (flywheel.popularity) and the first-model rule built on it.

The scorer is checked against hand-computed ranks and against a slow, obvious reference; the
rule at its boundary (figures exact in binary floating point); the stage end to end on a
7-row test shard whose AUC and NDCG@10 are worked out by hand below.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from flywheel.evaluate import BlessingRule, ModelMetrics, decide, evaluate, ndcg_at_k
from flywheel.popularity import POPULARITY_FEATURES, popularity_scores
from flywheel.ranking import MODEL_FEATURES
from tests.shards import START, write_shards, write_split

PURCHASES = MODEL_FEATURES.index("item_purchases_7d")
VIEWS = MODEL_FEATURES.index("item_views_7d")


def _matrix(pairs: list[tuple[float, float]], seed: int = 0) -> np.ndarray:
    """Model inputs with the given (purchases, views) per row and noise everywhere else."""
    x = np.random.default_rng(seed).standard_normal((len(pairs), len(MODEL_FEATURES)))
    x[:, [PURCHASES, VIEWS]] = np.array(pairs, dtype=np.float64).reshape(-1, 2)
    return x.astype(np.float32)


# ---- the scorer ---------------------------------------------------------------------------


def test_scores_rank_by_purchases_then_views_by_hand() -> None:
    # Distinct pairs in order: (0, 50) < (2, 3) < (2, 10) < (5, 0): dense ranks 0..3, / 3.
    x = _matrix([(2, 10), (0, 50), (2, 3), (0, 50), (5, 0)])
    np.testing.assert_array_equal(popularity_scores(x), [2 / 3, 0.0, 1 / 3, 0.0, 1.0])
    assert popularity_scores(x).dtype == np.float64
    # Only the two popularity columns matter.
    np.testing.assert_array_equal(popularity_scores(_matrix([(2, 10), (0, 50)], seed=1)), [1, 0])


def test_scores_of_one_pair_empty_and_wrong_shapes() -> None:
    np.testing.assert_array_equal(popularity_scores(_matrix([(3, 3), (3, 3)])), [0.0, 0.0])
    assert popularity_scores(np.zeros((0, len(MODEL_FEATURES)), np.float32)).shape == (0,)
    expected = rf"X has shape \(4, 3\); expected \(n, {len(MODEL_FEATURES)}\)"
    with pytest.raises(ValueError, match=expected):
        popularity_scores(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="X has shape"):
        popularity_scores(np.zeros(len(MODEL_FEATURES)))
    assert POPULARITY_FEATURES == ("item_purchases_7d", "item_views_7d")


def test_scores_match_a_sorted_reference_on_random_counts() -> None:
    rng = np.random.default_rng(5)
    pairs = [(float(p), float(v)) for p, v in rng.integers(0, 6, (400, 2))]
    distinct = sorted(set(pairs))
    reference = [distinct.index(pair) / (len(distinct) - 1) for pair in pairs]
    np.testing.assert_allclose(popularity_scores(_matrix(pairs)), reference, rtol=0, atol=1e-12)


# ---- the rule -----------------------------------------------------------------------------


def _m(auc: float) -> ModelMetrics:
    return ModelMetrics(auc, 0.5, 0.02, 0.5, 100, 10, 0.2, 0.2)


# 0.625 + 0.015625 = 0.640625: every figure here is exact in binary floating point.
POP, MARGIN, NEED = 0.625, 0.015625, 0.640625
RULE = BlessingRule(min_auc=0.5, min_lift_over_popularity=MARGIN)


def test_default_margin_is_one_hundredth_of_auc() -> None:
    assert BlessingRule().min_lift_over_popularity == 0.01
    assert BlessingRule.model_validate_json('{"min_auc": 0.6}').min_lift_over_popularity == 0.01
    for bad in (-0.001, 1.5):
        with pytest.raises(ValidationError, match="min_lift_over_popularity"):
            BlessingRule(min_lift_over_popularity=bad)


def test_first_model_exactly_at_popularity_plus_margin_is_blessed() -> None:
    at = decide(RULE, _m(NEED), None, POP)
    assert at.blessed is True
    assert at.reason == (
        "no champion yet; challenger AUC 0.6406 passes the floor 0.5000 and beats the "
        "popularity baseline's 0.6250 by +0.0156 (>= 0.0156)"
    )


def test_first_model_just_below_popularity_plus_margin_is_refused() -> None:
    below = decide(RULE, _m(math.nextafter(NEED, 0.0)), None, POP)
    assert below.blessed is False
    assert "min_lift_over_popularity" in below.reason
    clear = decide(RULE, _m(0.6328125), None, POP)  # lift 0.0078125, half the margin
    assert clear.blessed is False
    assert clear.reason == (
        "no champion yet; challenger AUC 0.6328 does not beat the popularity baseline's "
        "0.6250 by min_lift_over_popularity 0.0156 (lift +0.0078)"
    )
    # A model worse than popularity with a subtraction in the rule would pass: it must not.
    assert decide(RULE, _m(0.6171875), None, POP).blessed is False


def test_zero_margin_needs_at_least_popularity_and_none_turns_it_off() -> None:
    zero = BlessingRule(min_auc=0.5, min_lift_over_popularity=0.0)
    assert decide(zero, _m(POP), None, POP).blessed is True
    assert decide(zero, _m(math.nextafter(POP, 0.0)), None, POP).blessed is False
    off = decide(BlessingRule(min_auc=0.5, min_lift_over_popularity=None), _m(0.55), None, 0.9)
    assert off.blessed is True
    assert (
        off.reason
        == "no champion yet; challenger AUC 0.5500 passes the floor 0.5000; popularity check off"
    )


def test_the_floor_still_comes_first_and_a_nan_baseline_refuses() -> None:
    floor = decide(RULE, _m(0.49), None, 0.1)
    assert floor.blessed is False and "below the floor" in floor.reason
    assert decide(RULE, _m(0.9), None, math.nan).blessed is False


def test_with_a_champion_the_champion_comparison_decides_alone() -> None:
    """Below popularity + margin, but better than the serving model: blessed (see
    BlessingRule: refusing it would keep the worse champion serving)."""
    rule = BlessingRule(min_auc=0.5, min_lift_over_popularity=MARGIN, max_logloss_regression=None)
    better = decide(rule, _m(0.6328125), _m(0.59375), POP)
    assert better.blessed is True and "beats champion" in better.reason
    below_popularity = decide(rule, _m(0.6), _m(0.59375), POP)
    assert below_popularity.blessed is True
    # Well above popularity is not enough to replace a better champion.
    worse = decide(rule, _m(0.75), _m(0.8), POP)
    assert worse.blessed is False and "does not beat champion" in worse.reason


# ---- the stage on a 7-row test shard worked out by hand -----------------------------------

#: (group, item_purchases_7d, item_views_7d, label). Distinct pairs in order: (0,0) (0,5)
#: (1,2) (1,9) (2,1) (3,0) (4,4), so the scores are ranks 5 3 2 1 | 4 0 6 (over 6).
#: AUC: positives ranked 5, 1, 6 vs negatives 3, 2, 4, 0: 4 + 1 + 4 of 12 pairs = 0.75.
#: NDCG@10: g1 ranks pos, neg, neg, pos: (1 + 1/log2 5) / (1 + 1/log2 3); g2 pos first: 1.
TINY = [
    ("g1", 3, 0, 1),
    ("g1", 1, 9, 0),
    ("g1", 1, 2, 0),
    ("g1", 0, 5, 1),
    ("g2", 2, 1, 0),
    ("g2", 0, 0, 0),
    ("g2", 4, 4, 1),
]
TINY_AUC = 0.75
TINY_NDCG = ((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)) + 1.0) / 2


def _tiny_shards(root: Path) -> pd.DataFrame:
    frame = pd.DataFrame(
        _matrix([(p, v) for _, p, v, _ in TINY], seed=3), columns=list(MODEL_FEATURES)
    )
    frame["label"] = np.array([t[3] for t in TINY], dtype=np.int8)
    frame["group_id"] = [t[0] for t in TINY]
    frame["user_id"] = [f"u-{t[0]}" for t in TINY]
    frame["item_id"] = [f"sku-{i}" for i in range(len(TINY))]
    frame["event_timestamp"] = pd.Series([START] * len(TINY)).astype("datetime64[us, UTC]")
    write_split(root / "test", frame, 1)
    meta = {"feature_columns": list(MODEL_FEATURES), "label": "label", "group": "group_id"}
    (root / "metadata.json").write_text(json.dumps(meta))
    return frame


def _booster(frame: pd.DataFrame, y: np.ndarray, path: Path, rounds: int) -> Path:
    data = xgb.DMatrix(frame[list(MODEL_FEATURES)], label=y, feature_names=list(MODEL_FEATURES))
    params = {"objective": "binary:logistic", "min_child_weight": 0, "seed": 0, "nthread": 1}
    xgb.train(params, data, num_boost_round=rounds).save_model(str(path))
    return path


def test_the_hand_computed_shard_end_to_end(tmp_path: Path) -> None:
    frame = _tiny_shards(tmp_path / "shards")
    y = frame["label"].to_numpy()
    assert ndcg_at_k(y, popularity_scores(frame[list(MODEL_FEATURES)].to_numpy()),
                     frame["group_id"].to_numpy()) == pytest.approx(TINY_NDCG)  # fmt: skip
    # A model that learned the labels beats popularity's 0.75 and is blessed.
    good = _booster(frame, y, tmp_path / "good.ubj", rounds=30)
    blessed = evaluate(good, None, tmp_path / "shards", tmp_path / "good")
    assert blessed.challenger.auc == 1.0 and blessed.blessed is True, blessed.reason
    assert blessed.popularity.auc == pytest.approx(TINY_AUC)
    assert blessed.popularity.ndcg_at_10 == pytest.approx(TINY_NDCG)
    record = json.loads((tmp_path / "good" / "metrics.json").read_text())
    assert record["popularity"] == {
        "auc": pytest.approx(TINY_AUC),
        "ndcg_at_10": pytest.approx(TINY_NDCG),
        "ranked_by": ["item_purchases_7d", "item_views_7d"],
        "lift_auc": pytest.approx(1.0 - TINY_AUC),
        "min_lift": 0.01,
    }
    # One that learned the opposite has AUC 0: past a zero floor, popularity refuses it.
    bad = _booster(frame, 1 - y, tmp_path / "bad.ubj", rounds=30)
    rule = BlessingRule(min_auc=0.0)
    refused = evaluate(bad, None, tmp_path / "shards", tmp_path / "bad", rule)
    assert refused.blessed is False
    assert refused.reason == (
        "no champion yet; challenger AUC 0.0000 does not beat the popularity baseline's "
        "0.7500 by min_lift_over_popularity 0.0100 (lift -0.7500)"
    )
    record = json.loads((tmp_path / "bad" / "metrics.json").read_text())
    assert record["blessed"] is False and record["reason"] == refused.reason
    assert record["rule"]["min_lift_over_popularity"] == 0.01
    # Against a champion, the bad model is refused by the champion comparison instead.
    versus = evaluate(bad, good, tmp_path / "shards", tmp_path / "versus", rule)
    assert versus.blessed is False and "does not beat champion" in versus.reason
    assert versus.popularity.auc == pytest.approx(TINY_AUC)


def test_report_and_metrics_carry_the_popularity_figures(tmp_path: Path) -> None:
    shards = write_shards(tmp_path / "shards", n_rows=3_000, seed=6)
    train = shards.frames["train"]
    model = _booster(train, train["label"].to_numpy(), tmp_path / "m.ubj", rounds=20)
    summary = evaluate(model, model, shards.root, tmp_path / "out", BlessingRule(min_auc=0.0))
    test = shards.frames["test"]
    # Independent: the dense rank of (purchases, views) by Python's tuple order.
    pairs = list(zip(test["item_purchases_7d"], test["item_views_7d"], strict=True))
    distinct = sorted(set(pairs))
    expected = roc_auc_score(test["label"], [distinct.index(p) for p in pairs])
    assert summary.popularity.auc == pytest.approx(expected, abs=1e-12)
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # The earlier keys are all still there; popularity is one more.
    assert {"blessed", "reason", "rule", "challenger", "champion", "test_rows"} < set(record)
    assert record["popularity"]["auc"] == pytest.approx(expected, abs=1e-12)
    assert record["popularity"]["lift_auc"] == pytest.approx(summary.challenger.auc - expected)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<th>popularity</th>" in page
    assert f"<td>{summary.popularity.auc:.4f}</td>" in page
    assert f"<td>{summary.popularity.ndcg_at_10:.4f}</td>" in page
    assert "ranks by item_purchases_7d, ties by item_views_7d" in page
    assert f"lift over it {summary.challenger.auc - expected:+.4f}" in page
    assert "a first model needs 0.0100" in page
    off = BlessingRule(min_auc=0.0, min_lift_over_popularity=None)
    evaluate(model, None, shards.root, tmp_path / "off", off)
    assert "the first-model check is off" in (tmp_path / "off" / "report.html").read_text()
