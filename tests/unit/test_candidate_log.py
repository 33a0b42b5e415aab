"""The candidate log (``serving.log_candidates``) and the off-policy check's exact target
propensities over it (:mod:`flywheel.ope_candidates`).

Real parts throughout: the serving record functions, the real :class:`LogWriter` and
reader, a real xgboost challenger, :func:`flywheel.evaluate_ope.ope_block`. The end-to-end
world: every request has the same six candidates with time-independent features (cold
users: no ``last_event_unix``), so the challenger's ranking is the same for every request;
the logger serves three of them epsilon-greedy (the real
:func:`~flywheel.serving.exploration.epsilon_greedy`) and only position 0 is examined, so
the independent-slot estimand equals the challenger's true value, computed exactly.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from flywheel.config import ConfigError, OpeSettings, RetentionSettings, Settings, load_settings
from flywheel.evaluate_ope import OpeContext, OpeUnavailable, ope_block, remaining_candidates
from flywheel.monitor.ope import LoggedSlots, off_policy_estimates
from flywheel.ope_candidates import candidate_records, full_targets
from flywheel.predlog import LogWriter, log_dir, read_candidate_logs, scan_logs
from flywheel.ranking import MODEL_FEATURES, RAW_FEATURES, model_inputs
from flywheel.serving.exploration import Slate, epsilon_greedy
from flywheel.serving.records import _candidate_record, _prediction_records, candidate_columns
from flywheel.train import load_booster, predict
from tests.shards import write_shards

T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
CHAMPION = "flywheel-ranker:champ"


def _columns(n: int, **varying: list[Any]) -> dict[str, Any]:
    """Serving's feature columns for ``n`` candidates: every raw feature shared (a user's
    own), ``varying`` per candidate."""
    cols: dict[str, Any] = {
        "item_id": [f"i{j}" for j in range(n)],
        "category": ["c1"] * n,
        **{f: np.full(n, 2.0) for f in RAW_FEATURES},
    }
    cols.update({k: np.asarray(v) if k != "category" else v for k, v in varying.items()})
    return cols


# ---- the record and its round trip ---------------------------------------------------


def test_candidate_record_holds_every_candidate_compactly() -> None:
    cols = _columns(
        4,
        price=[10.0, np.nan, 30.5, 40.0],
        category=["c1", "c2", "c1", None],
        last_event_unix=[np.nan] * 4,
    )
    slate = Slate(np.array([2, 0]), np.array([0.925, 0.025]), np.array([False, True]))
    scores = np.array([0.1, 0.2, 0.7, 0.4])
    record = _candidate_record("r1", T0, "u1", CHAMPION, cols, scores, slate, 0.1)
    assert {k: record[k] for k in ("request_id", "ts", "user_id", "model_version")} == {
        "request_id": "r1", "ts": T0, "user_id": "u1", "model_version": CHAMPION,
    }  # fmt: skip
    assert record["epsilon"] == 0.1 and record["candidates"] == 4 and record["served"] == [2, 0]
    assert record["item_ids"] == ["i0", "i1", "i2", "i3"]
    assert record["scores"] == [0.1, 0.2, 0.7, 0.4]
    assert "degraded" not in record
    shared = json.loads(record["features"])
    assert shared["views_1h"] == 2.0  # shared: written once
    assert shared["last_event_unix"] is None  # missing for all
    assert shared["category"] == ["c1", "c2", "c1", None]
    assert record["varying"] == ["price"]  # differs per candidate: the float64 matrix
    assert set(shared) | set(record["varying"]) == {"category", *RAW_FEATURES}
    assert len(base64.b64decode(record["values"])) == 4 * 8
    back = candidate_columns(json.loads(json.dumps(record, default=str)))
    np.testing.assert_array_equal(back["price"], [10.0, np.nan, 30.5, 40.0])
    for name in RAW_FEATURES:
        np.testing.assert_array_equal(back[name], cols[name])  # exact, bit for bit
    assert back["category"].tolist() == ["c1", "c2", "c1", None]
    one = _candidate_record("r1", T0, "u1", CHAMPION, _columns(3), scores[:3], slate, 0.1)
    assert one["varying"] == [] and json.loads(one["features"])["category"] == "c1"
    assert candidate_columns(one)["category"].tolist() == ["c1"] * 3
    marked = _candidate_record("r1", T0, "u1", CHAMPION, cols, scores, slate, 0.1, degraded=True)
    assert marked["degraded"] is True


def test_candidate_records_round_trip_through_the_writer_and_reader(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    writer = LogWriter(log_dir(settings, "candidates"), "candidates")
    cols = _columns(3, price=[1.0, 2.0, 3.0])
    slate = Slate(np.array([1, 0, 2]), np.ones(3), np.zeros(3, dtype=bool))
    written = [
        _candidate_record(f"r{n}", T0 + timedelta(seconds=n), "u", CHAMPION, cols,
                          np.array([0.3, 0.2, 0.1]), slate, 0.0, degraded=n == 2)
        for n in range(3)
    ]  # fmt: skip
    for record in written:
        writer.append([record])
    assert writer.path is not None and writer.path.parent.parent == log_dir(settings, "candidates")
    with writer.path.open("ab") as fh:  # a worker killed mid-write: a torn last line
        fh.write(b'{"request_id":"r9","ts":"2026-03-')
    scan = scan_logs(settings, "candidates")
    assert scan.torn_lines == 1 and scan.table.num_rows == 3
    rows = read_candidate_logs(settings).to_pylist()
    for got, want in zip(rows, written, strict=True):
        assert got["ts"] == want["ts"] and got["features"] == want["features"]
        keys = ("request_id", "epsilon", "candidates", "served", "item_ids", "scores", "varying",
                "values")  # fmt: skip
        for key in keys:
            assert got[key] == want[key], key
    assert [r["degraded"] for r in rows] == [None, None, True]
    # the reader of the check: the champion's normal traffic of the window only
    picked = candidate_records(settings, CHAMPION, T0, T0 + timedelta(seconds=1))
    assert picked["request_id"].tolist() == ["r0"]
    assert candidate_records(settings, CHAMPION, T0, T0 + timedelta(hours=1))[
        "request_id"
    ].tolist() == ["r0", "r1"]
    assert candidate_records(settings, "other:tag", T0, T0 + timedelta(hours=1)).empty
    # the served ingest's logs are untouched
    assert scan_logs(settings, "predictions").table.num_rows == 0


# ---- exact target propensities on a hand-computed log --------------------------------


def _hand_log(tmp_path: Path) -> tuple[Settings, pd.DataFrame]:
    """Two requests over candidates i0..i3 whose challenger scores (the raw column
    ``price``, read by the test's scorer) are 0.2, 0.9, 0.5, 0.9: i1 and i3 tie, and
    serving's tie rule makes i1 (first in candidate order) the best."""
    settings = Settings(workspace=tmp_path / "ws")
    writer = LogWriter(log_dir(settings, "candidates"), "candidates")
    cols = _columns(4, price=[0.2, 0.9, 0.5, 0.9])
    rows = []
    for rid, served, prop in (
        ("ra", [2, 1], [0.05, 0.8 + 0.2 / 3]),
        ("rb", [3, 0], [0.85, 0.2 / 3]),
    ):
        slate = Slate(np.array(served), np.array(prop), np.zeros(2, dtype=bool))
        writer.append([_candidate_record(rid, T0, "u", CHAMPION, cols, np.zeros(4), slate, 0.2)])
        rows += [{"request_id": rid, "item_id": f"i{i}", "position": k, "propensity": p}
                 for k, (i, p) in enumerate(zip(served, prop, strict=True))]  # fmt: skip
    return settings, pd.DataFrame(rows)


def _price(raw: pd.DataFrame, at: np.ndarray) -> np.ndarray:
    assert len(at) == len(raw)
    return raw["price"].to_numpy(dtype=np.float64)


def test_exact_target_probabilities_over_the_logged_candidates(tmp_path: Path) -> None:
    settings, slots = _hand_log(tmp_path)
    records = candidate_records(settings, CHAMPION, T0, T0 + timedelta(hours=1))
    remaining = remaining_candidates(slots["propensity"].to_numpy(), 0.2)
    assert remaining.tolist() == [4, 3, 4, 3]
    got = full_targets(slots, records, remaining, 0.2, _price)
    # ra: i2 at 0 (best is i1: 0.2/4); i1 at 1 (best of i0, i1, i3: 0.8 + 0.2/3)
    # rb: i3 at 0 (ties i1 but is later: 0.2/4); i0 at 1 (best of i0, i1, i2 is i1: 0.2/3)
    np.testing.assert_allclose(got.target, [0.05, 0.8 + 0.2 / 3, 0.05, 0.2 / 3], rtol=1e-12)
    assert got.full.all() and (got.slates, got.mismatched) == (2, 0)


def test_a_record_that_disagrees_with_the_served_log_falls_back(tmp_path: Path) -> None:
    settings, slots = _hand_log(tmp_path)
    records = candidate_records(settings, CHAMPION, T0, T0 + timedelta(hours=1))
    slots.loc[1, "item_id"] = "i3"  # ra's position 1 names another item than its record
    remaining = remaining_candidates(slots["propensity"].to_numpy(), 0.2)
    got = full_targets(slots, records, remaining, 0.2, _price)
    assert got.full.tolist() == [False, False, True, True] and got.mismatched == 1
    assert np.isnan(got.target[:2]).all()
    with pytest.raises(OpeUnavailable, match=r"served with epsilon 0.2, not ope.epsilon=0.1"):
        full_targets(slots, records, remaining, 0.1, _price)
    none = full_targets(slots, records.iloc[0:0], remaining, 0.2, _price)
    assert not none.full.any() and none.slates == 0


# ---- the gate end to end --------------------------------------------------------------

EPS = 0.2
N_REQUESTS = 3_000
N_CAND, K = 6, 3


def _challenger(root: Path) -> Path:
    shards = write_shards(root / "shards", n_rows=4_000, seed=3)
    frame = shards.frames["train"]
    data = xgb.DMatrix(
        frame[list(MODEL_FEATURES)], label=frame["label"], feature_names=list(MODEL_FEATURES)
    )
    params = {"objective": "binary:logistic", "max_depth": 3, "seed": 0, "nthread": 1}
    path = root / "challenger.ubj"
    xgb.train(params, data, num_boost_round=40).save_model(str(path))
    return path


def _candidates() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    cols = _columns(N_CAND, last_event_unix=[np.nan] * N_CAND)
    for f in ("price", "cat_affinity_7d", "item_conversion_rate_7d", "item_views_7d"):
        if f in cols:
            cols[f] = rng.uniform(0.0, 1.0, N_CAND) * (40.0 if f == "price" else 1.0)
    return cols


def _serve(settings: Settings, cols: dict[str, Any], attract: np.ndarray, every: int) -> None:
    """The logger (scores 0..5 in reverse of the challenger's taste) serves ``N_REQUESTS``;
    a candidate record for every ``every``-th request (0: none)."""
    predictions = LogWriter(log_dir(settings, "predictions"), "predictions")
    candidates = LogWriter(log_dir(settings, "candidates"), "candidates")
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    logger = np.arange(N_CAND, dtype=np.float64)
    rng = np.random.default_rng(11)
    for n in range(N_REQUESTS):
        ts, rid = T0 + timedelta(seconds=5 * n), f"r{n:05d}"
        slate = epsilon_greedy(logger, K, EPS, rng)
        predictions.append(_prediction_records(rid, ts, "u", CHAMPION, cols, logger, slate))
        if every and n % every == 0:
            candidates.append([_candidate_record(rid, ts, "u", CHAMPION, cols, logger, slate, EPS)])
        first = int(slate.indices[0])
        if rng.random() < attract[first]:  # only position 0 is examined
            at = ts + timedelta(minutes=2)
            feedback.append([{"request_id": rid, "item_id": f"i{first}", "ts": at,
                              "event_type": "click"}])  # fmt: skip


@pytest.fixture(scope="module")
def gate_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("candidates")
    booster = load_booster(_challenger(root))
    cols = _candidates()
    challenger = predict(booster, model_inputs(cols, T0.timestamp(), "ranking_v1"))
    assert len(set(challenger.round(9))) == N_CAND, challenger
    order = np.argsort(-challenger, kind="stable")
    attract = np.empty(N_CAND)
    attract[order] = np.linspace(0.6, 0.1, N_CAND)  # the challenger's taste is right
    q0 = np.full(N_CAND, EPS / N_CAND)
    q0[order[0]] += 1.0 - EPS
    worlds = {}
    for name, every in (("full", 1), ("mixed", 2), ("none", 0)):
        settings = Settings(workspace=root / name)
        _serve(settings, cols, attract, every)
        worlds[name] = settings
    return {"booster": booster, "worlds": worlds, "truth": float(q0 @ attract),
            "challenger": challenger}  # fmt: skip


def _block(world: dict[str, Any], name: str) -> dict[str, Any]:
    settings = world["worlds"][name].model_copy(
        update={"ope": OpeSettings(epsilon=EPS, bootstrap=300, min_slates=100, min_ess=100)}
    )
    until = T0 + timedelta(seconds=5 * N_REQUESTS, hours=2)
    return ope_block(OpeContext(settings, CHAMPION, until=until), world["booster"], "ranking_v1")


def _brute_force_q(challenger: np.ndarray, slots: pd.DataFrame) -> np.ndarray:
    """Epsilon-greedy over the challenger's scores, slot by slot given the logged prefix."""
    q = []
    for _, slate in slots.groupby("request_id", sort=False):
        left = list(np.argsort(-challenger, kind="stable"))
        for item in slate.sort_values("position")["item_id"]:
            i = int(item[1:])
            q.append(EPS / len(left) + (1.0 - EPS if i == left[0] else 0.0))
            left.remove(i)
    return np.array(q)


def test_the_gate_re_ranks_every_candidate_and_covers_the_truth(
    gate_world: dict[str, Any],
) -> None:
    block = _block(gate_world, "full")
    assert block["computed"], block["reason"]
    assert block["candidates"] == "full" and block["full_candidate_share"] == 1.0
    assert block["candidate_records_mismatched"] == 0 and "every candidate" in block["log"]
    assert block["slates"] == N_REQUESTS
    # the same numbers as the estimators on independently computed exact propensities
    from flywheel.evaluate_ope import closed_slates

    settings = gate_world["worlds"]["full"]
    frame, _ = closed_slates(settings, CHAMPION, T0 + timedelta(seconds=5 * N_REQUESTS, hours=2))
    q = _brute_force_q(gate_world["challenger"], frame)
    codes, _ = pd.factorize(frame["request_id"], sort=False)
    slots = LoggedSlots(codes, frame["position"].to_numpy(), frame["propensity"].to_numpy(),
                        frame["reward"].to_numpy(), q)  # fmt: skip
    expected = off_policy_estimates(slots, n_boot=300, seed=0)
    for name in ("snips", "dr"):
        est = block["challenger"][name]
        assert est["value"] == pytest.approx(expected[name].value, rel=1e-12)
        assert est["low"] < gate_world["truth"] < est["high"], (name, est, gate_world["truth"])


def test_without_the_candidate_log_the_served_only_path_runs(gate_world: dict[str, Any]) -> None:
    full, none = _block(gate_world, "full"), _block(gate_world, "none")
    assert none["computed"] and none["candidates"] == "served_only"
    assert none["full_candidate_share"] == 0.0 and "served slots only" in none["log"]
    # judged among three of six candidates, the served-only estimate is another one
    truth = gate_world["truth"]
    bias = {
        k: abs(b["challenger"]["snips"]["value"] - truth)
        for k, b in (("full", full), ("none", none))
    }
    assert bias["full"] < bias["none"], bias
    snips = none["challenger"]["snips"]
    assert not snips["low"] < truth < snips["high"], (snips, truth)  # and misses the truth


def test_a_sampled_candidate_log_runs_mixed(gate_world: dict[str, Any]) -> None:
    block = _block(gate_world, "mixed")
    assert block["computed"] and block["candidates"] == "mixed"
    assert block["full_candidate_share"] == pytest.approx(0.5, abs=1e-9)
    assert "50% of slates" in block["log"]


# ---- settings and retention -------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1"])
def test_sample_rate_must_be_a_share(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_SERVING__CANDIDATE_SAMPLE_RATE", value)
    with pytest.raises(ConfigError, match=r"serving\.candidate_sample_rate="):
        load_settings()


def test_candidate_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.serving.log_candidates is True and s.serving.candidate_sample_rate == 1.0
    monkeypatch.setenv("FLYWHEEL_SERVING__LOG_CANDIDATES", "false")
    monkeypatch.setenv("FLYWHEEL_SERVING__CANDIDATE_SAMPLE_RATE", "0.25")
    s = load_settings()
    assert s.serving.log_candidates is False and s.serving.candidate_sample_rate == 0.25


def test_gc_removes_closed_old_candidate_logs_without_an_ingest(tmp_path: Path) -> None:
    """The candidate log is read where it lies, never ingested: retention goes by age."""
    from flywheel import lake
    from flywheel.housekeeping import plan_gc, run_gc
    from flywheel.predlog import encode_records

    now = datetime(2025, 6, 30, 12, tzinfo=UTC)
    s = Settings(workspace=tmp_path / "ws", retention=RetentionSettings(serving_log_days=1))
    lake.write_state(s, {"events": {"watermark": now.isoformat()}})
    root = log_dir(s, "candidates")
    cols = _columns(2)
    slate = Slate(np.array([0]), np.ones(1), np.zeros(1, dtype=bool))
    paths = []
    for back in (60, 2):
        day = now - timedelta(days=back)
        path = root / lake.partition_name(day.date()) / "w.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_records([_candidate_record("r", day, "u", CHAMPION, cols,
                                                           np.zeros(2), slate, 0.1)]))  # fmt: skip
        stamp = (now - timedelta(days=3)).timestamp()
        os.utime(path, (stamp, stamp))
        paths.append(path)
    planned = [c for c in plan_gc(s, now=now).candidates if c.kind == "serving/candidates"]
    assert [c.path for c in planned] == [paths[0]]
    run_gc(s, now=now)
    assert not paths[0].exists() and paths[1].exists()  # the newest partition stays
