"""The off-policy check of the blessing gate: its estimates on a served log whose true values
are computable, the rule's branches, the target propensities, and ``Settings.ope``.

The constructed world: every request has the same three candidates and serves all three
(so the served log holds every candidate and the served-only target is exact), with the
real :func:`flywheel.serving.exploration.epsilon_greedy` over the logger's scores.
Clicks follow a position-based model with examination 1, 0.5 and 0 by position and an
attractiveness per item. The logger shares the challenger's top item and swaps its other
two, so both policies put the same item distribution at position 0, and the
independent-slot estimand equals each policy's true value (position 2 is never examined),
which the test computes by enumerating the epsilon-greedy slates.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from flywheel.config import ConfigError, OpeSettings, Settings, load_settings
from flywheel.evaluate import Decision, evaluate
from flywheel.evaluate_ope import (
    OpeContext,
    OpeUnavailable,
    epsilon_greedy_target,
    gate,
    kfp_numbers,
    remaining_candidates,
    served_best,
)
from flywheel.predlog import LogWriter, log_dir
from flywheel.ranking import MODEL_FEATURES, RAW_FEATURES, model_inputs
from flywheel.serving.exploration import epsilon_greedy
from flywheel.train import load_booster, predict
from tests.shards import SyntheticShards, write_shards

T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
CHAMPION = "flywheel-ranker:champ"
EPS = 0.3
EXAMINE = (1.0, 0.5, 0.0)
#: Attractiveness of the challenger's first, second and third choice.
ATTRACT = (0.5, 0.4, 0.1)
N_REQUESTS = 6_000


def slate_probability(order: tuple[int, ...], ranking: list[int], eps: float) -> float:
    """Probability that epsilon-greedy over ``ranking`` (best first) serves ``order``."""
    remaining, prob = list(ranking), 1.0
    for item in order:
        m = len(remaining)
        prob *= eps / m + (1.0 - eps if item == remaining[0] else 0.0)
        remaining.remove(item)
    return prob


def true_value(ranking: list[int], attract: dict[int, float], eps: float) -> float:
    """Expected clicks per slate of epsilon-greedy over ``ranking``, by enumeration."""
    return sum(
        slate_probability(order, ranking, eps)
        * sum(EXAMINE[k] * attract[item] for k, item in enumerate(order))
        for order in itertools.permutations(ranking)
    )


def _train_booster(shards: SyntheticShards, path: Path, rounds: int) -> Path:
    frame = shards.frames["train"]
    data = xgb.DMatrix(
        frame[list(MODEL_FEATURES)], label=frame["label"], feature_names=list(MODEL_FEATURES)
    )
    params = {"objective": "binary:logistic", "max_depth": 3, "seed": 0, "nthread": 1}
    xgb.train(params, data, num_boost_round=rounds).save_model(str(path))
    return path


def _items(rng: np.random.Generator) -> pd.DataFrame:
    items = pd.DataFrame({f: rng.poisson(3.0, 3).astype(float) for f in RAW_FEATURES})
    items["price"] = [10.0, 20.0, 40.0]
    items["avg_price_7d"] = 20.0
    items["cat_affinity_7d"] = [0.1, 0.5, 0.9]
    items["item_conversion_rate_7d"] = [0.02, 0.1, 0.3]
    return items


def _serve(
    settings: Settings,
    items: pd.DataFrame,
    logger_scores: np.ndarray,
    attract: dict[int, float],
    seed: int,
) -> None:
    writer = LogWriter(log_dir(settings, "predictions"), "predictions")
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    rng = np.random.default_rng(seed)
    for n in range(N_REQUESTS):
        ts = T0 + timedelta(seconds=5 * n)
        slate = epsilon_greedy(logger_scores, 3, EPS, rng)
        records, clicks = [], []
        for pos, (i, p) in enumerate(zip(slate.indices, slate.propensities, strict=True)):
            raw = {k: float(v) for k, v in items.iloc[int(i)].items()}
            raw["last_event_unix"] = ts.timestamp() - 3600.0
            records.append(
                {
                    "request_id": f"r{n}",
                    "ts": ts,
                    "user_id": f"u{n % 50}",
                    "item_id": f"i{int(i)}",
                    "position": pos,
                    "score": float(logger_scores[int(i)]),
                    "model_version": CHAMPION,
                    "propensity": float(p),
                    "features": json.dumps({"category": "c1", **raw}),
                }
            )
            if rng.random() < EXAMINE[pos] * attract[int(i)]:
                at = ts + timedelta(minutes=2)
                clicks.append({"request_id": f"r{n}", "item_id": f"i{int(i)}", "ts": at})
        writer.append(records)
        for c in clicks:
            feedback.append([{**c, "event_type": "click"}])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ope")
    shards = write_shards(root / "shards", n_rows=6_000, seed=2)
    good = _train_booster(shards, root / "good.ubj", rounds=60)
    weak = _train_booster(shards, root / "weak.ubj", rounds=2)
    items = _items(np.random.default_rng(5))
    at = np.full(3, T0.timestamp())
    items_at = items.assign(last_event_unix=T0.timestamp() - 3600.0)
    challenger = predict(load_booster(good), model_inputs(items_at, at, "ranking_v1"))
    assert len(set(challenger.round(9))) == 3, challenger
    first, second, third = (int(i) for i in np.argsort(-challenger))
    # The logger shares the challenger's top item and swaps the other two.
    logger = np.zeros(3)
    logger[[first, third, second]] = [3.0, 2.0, 1.0]
    settings = Settings(workspace=root / "ws")
    attract = dict(zip((first, second, third), ATTRACT, strict=True))
    _serve(settings, items, logger, attract, seed=11)
    return {
        "settings": settings,
        "shards": shards,
        "good": good,
        "weak": weak,
        "truth": {
            "challenger": true_value([first, second, third], attract, EPS),
            "champion": true_value([first, third, second], attract, EPS),
        },
        "root": root,
    }


def test_enumerated_truth_matches_a_hand_computation() -> None:
    attract = {0: 0.5, 1: 0.1, 2: 0.4}
    # logger A, B, C; challenger A, C, B (see the module docstring's numbers in the README)
    assert true_value([0, 1, 2], attract, 0.3) == pytest.approx(0.55425)
    assert true_value([0, 2, 1], attract, 0.3) == pytest.approx(0.63825)
    assert sum(slate_probability(o, [0, 1, 2], 0.3) for o in itertools.permutations(range(3))) == (
        pytest.approx(1.0)
    )


def _context(world: dict[str, Any], **ope: Any) -> OpeContext:
    settings = world["settings"].model_copy(
        update={"ope": OpeSettings(epsilon=EPS, bootstrap=300, **ope)}
    )
    until = T0 + timedelta(seconds=5 * N_REQUESTS, hours=2)
    return OpeContext(settings, CHAMPION, until=until)


def test_estimates_cover_the_true_values_and_the_gate_blesses(
    world: dict[str, Any], tmp_path: Path
) -> None:
    truth = world["truth"]
    assert truth["challenger"] - truth["champion"] > 0.05
    ctx = _context(world, require_ope=True)
    summary = evaluate(world["good"], world["weak"], world["shards"].root, tmp_path, ope=ctx)
    block = summary.ope
    assert block is not None and block["computed"] and block["sufficient"]
    assert block["slates"] == N_REQUESTS and block["slots"] == 3 * N_REQUESTS
    assert block["candidates"] == "served_only" and block["full_candidate_share"] == 0.0
    assert 2_000 < block["effective_sample_size"] <= 3 * N_REQUESTS
    for name in ("snips", "dr"):
        est = block["challenger"][name]
        assert est["low"] < truth["challenger"] < est["high"], (name, est, truth)
        assert abs(est["value"] - truth["challenger"]) < 0.03
        assert est["high"] - est["low"] < 0.08
    logged = block["champion_logged"]
    assert logged["low"] < truth["champion"] < logged["high"]
    assert block["challenger"]["snips"]["low"] > logged["value"]
    assert summary.blessed, summary.reason
    assert "off-policy SNIPS" in summary.reason and "lower bound above it" in summary.reason
    record = json.loads(summary.metrics_path.read_text())
    assert record["ope"]["challenger"] == block["challenger"]
    assert record["blessed"] is True
    page = summary.report_path.read_text()
    assert "Off-policy check (required)" in page and "challenger SNIPS" in page
    numbers = kfp_numbers(record["ope"])
    assert numbers["challenger_snips_low"] == block["challenger"]["snips"]["low"]
    assert numbers["champion_logged"] == logged["value"]
    assert (numbers["required"], numbers["computed"], numbers["sufficient"]) == (1.0, 1.0, 1.0)


def test_an_offline_refusal_stands_with_the_estimate_appended(
    world: dict[str, Any], tmp_path: Path
) -> None:
    ctx = _context(world, require_ope=True)
    summary = evaluate(world["weak"], world["good"], world["shards"].root, tmp_path, ope=ctx)
    assert not summary.blessed
    assert "does not beat champion" in summary.reason and "off-policy" in summary.reason


def test_too_few_slates_refuse_when_required_and_only_report_otherwise(
    world: dict[str, Any], tmp_path: Path
) -> None:
    required = _context(world, require_ope=True, min_slates=N_REQUESTS + 1)
    got = evaluate(world["good"], world["weak"], world["shards"].root, tmp_path / "a", ope=required)
    assert not got.blessed
    assert f"{N_REQUESTS} slates < min_slates {N_REQUESTS + 1}" in got.reason
    assert got.ope is not None and got.ope["computed"] and not got.ope["sufficient"]
    optional = _context(world, min_slates=N_REQUESTS + 1)
    got = evaluate(world["good"], world["weak"], world["shards"].root, tmp_path / "b", ope=optional)
    assert got.blessed and "report only" in got.reason


def test_no_champion_slates_in_the_window_is_a_reason_not_an_error(
    world: dict[str, Any], tmp_path: Path
) -> None:
    ctx = _context(world, require_ope=True)
    early = OpeContext(ctx.settings, CHAMPION, until=T0 - timedelta(days=3))
    got = evaluate(world["good"], world["weak"], world["shards"].root, tmp_path, ope=early)
    assert got.ope is not None and not got.ope["computed"]
    assert "no slates served by flywheel-ranker:champ" in got.ope["reason"]
    assert not got.blessed and "ope.require_ope refuses" in got.reason
    other = OpeContext(ctx.settings, "flywheel-ranker:other", until=ctx.until)
    got = evaluate(world["good"], world["weak"], world["shards"].root, tmp_path / "b", ope=other)
    assert got.ope is not None and "no slates served by flywheel-ranker:other" in got.ope["reason"]
    assert kfp_numbers(got.ope) == {"required": 1.0, "computed": 0.0, "sufficient": 0.0}
    assert "Not computed" in got.report_path.read_text()


def test_a_wrong_epsilon_is_named() -> None:
    p = np.array([1 - 0.1 + 0.1 / 3, 0.1 / 2, 1.0])
    assert remaining_candidates(p, 0.1).tolist() == [3.0, 2.0, 1.0]
    with pytest.raises(OpeUnavailable, match=r"ope.epsilon=0.2"):
        remaining_candidates(np.array([1 - 0.1 + 0.1 / 3]), 0.2)  # m = 1.5
    assert remaining_candidates(np.ones(2), 0.0).tolist() == [1.0, 1.0]


def test_target_propensity_and_served_best() -> None:
    slate = np.array([0, 0, 0, 1, 1])
    position = np.array([0, 1, 2, 0, 1])
    scores = np.array([0.2, 0.9, 0.1, 0.5, 0.5])
    # slate 0: 0.2 < max(0.2, 0.9, 0.1); 0.9 is best of (0.9, 0.1); the last is best alone.
    assert served_best(slate, position, scores).tolist() == [False, True, True, True, True]
    q = epsilon_greedy_target(np.array([True, False]), np.array([4.0, 4.0]), 0.2)
    assert q.tolist() == pytest.approx([0.85, 0.05])


def _block(computed: bool = True, sufficient: bool = True, low: float = 0.6) -> dict[str, Any]:
    return {
        "computed": computed,
        "sufficient": sufficient,
        "reason": None if sufficient else "10 slates < min_slates 2000",
        "slates": 10,
        "effective_sample_size": 9.0,
        "challenger": {"snips": {"value": 0.65, "low": low, "high": 0.7}},
        "champion_logged": {"value": 0.55, "low": 0.5, "high": 0.6},
    }


@pytest.mark.parametrize(
    ("required", "offline", "block", "blessed", "words"),
    [
        (True, True, _block(), True, "lower bound above it"),
        (True, True, _block(low=0.55), False, "does not exceed"),
        (True, True, _block(sufficient=False), False, "too little data"),
        (True, True, _block(computed=False), False, "not computed"),
        (True, False, _block(), False, "off-policy SNIPS"),
        (False, True, _block(low=0.4), True, "report only"),
        (False, True, _block(sufficient=False), True, "report only"),
        (False, True, _block(computed=False), True, "report only"),
        (False, False, _block(), False, "report only"),
    ],
)
def test_gate_branches(
    required: bool, offline: bool, block: dict[str, Any], blessed: bool, words: str
) -> None:
    got = gate(OpeSettings(require_ope=required), Decision(offline, "offline"), block)
    assert got.blessed is blessed
    assert got.reason.startswith("offline; ") and words in got.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_slates", 0),
        ("min_ess", -1),
        ("window_hours", 0),
        ("bootstrap", 5),
        ("reward", "clicks"),
        ("epsilon", 0.6),
        ("bogus", 1),
    ],
)
def test_settings_refuse_bad_values_naming_the_field(
    field: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"FLYWHEEL_OPE__{field.upper()}", str(value))
    with pytest.raises(ConfigError, match=rf"ope\.{field}="):
        load_settings()


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert (s.ope.require_ope, s.ope.min_slates, s.ope.min_ess) == (False, 2000, 2000.0)
    monkeypatch.setenv("FLYWHEEL_OPE__REQUIRE_OPE", "true")
    monkeypatch.setenv("FLYWHEEL_OPE__WINDOW_HOURS", "48")
    s = load_settings()
    assert s.ope.require_ope is True and s.ope.window_hours == 48.0
