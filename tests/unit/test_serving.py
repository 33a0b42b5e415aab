"""The serving core without BentoML or Feast: requests, exploration, feedback rows,
default candidates, champion hot swap, the clock, the body-size guard, the serve command."""

from __future__ import annotations

import json
import os
import threading
import typing
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from flywheel import serving
from flywheel.config import Settings, load_settings
from flywheel.lake import write_state
from flywheel.registry import POINTER_FILENAME
from flywheel.schemas import FEATURE_TABLES, FEEDBACK_TYPES, USER_ACTIVITY_SCHEMA
from flywheel.serving import (
    BodySizeLimit,
    ChampionWatcher,
    FeedbackRequest,
    LoadedModel,
    RankRequest,
    ServingOptions,
    activity_after_feedback,
    default_candidates,
    epsilon_greedy,
    make_clock,
    new_request_id,
    options_from_env,
    serve_command,
    user_of_request,
)

T0 = datetime(2025, 3, 10, 12, tzinfo=UTC)
H = timedelta(hours=1)


# ---- request validation ------------------------------------------------------------------


def _error_fields(model: type[Any], raw: str) -> list[str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(raw)
    return [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"user_id": ""}', "user_id"),
        ('{"user_id": "   "}', "user_id"),
        ('{"user_id": "' + "x" * 129 + '"}', "user_id"),
        ('{"user_id": "a\\nb"}', "user_id"),
        ('{"user_id": "a\\u0000"}', "user_id"),
        ('{"user_id": 7.5}', "user_id"),
        ('{"user_id": 7.0}', "user_id"),
        ('{"user_id": true}', "user_id"),
        ('{"user_id": null}', "user_id"),
        ('{"user_id": NaN}', "user_id"),
        ('{"user_id": [1]}', "user_id"),
        ('{"user_id": {"id": 1}}', "user_id"),
        ("{}", "user_id"),
        ('{"user_id": 1, "k": 0}', "k"),
        ('{"user_id": 1, "k": 101}', "k"),
        ('{"user_id": 1, "k": 2.0}', "k"),
        ('{"user_id": 1, "k": "3"}', "k"),
        ('{"user_id": 1, "candidates": []}', "candidates"),
        ('{"user_id": 1, "candidates": [1, 2, 1]}', "candidates"),
        ('{"user_id": 1, "candidates": ' + json.dumps(list(range(501))) + "}", "candidates"),
        ('{"user_id": 1, "candidates": [1, ""]}', "candidates.1"),
        ('{"user_id": 1, "candidates": [1, NaN]}', "candidates.1"),
        ('{"user_id": 1, "candidates": ["a", false]}', "candidates.1"),
        ('{"user_id": 1, "candidates": [1, "1"]}', "candidates"),  # one id, twice
        ('{"user_id": 1, "candidates": "1,2"}', "candidates"),
        ('{"user_id": 1, "candidate": [1]}', "candidate"),
    ],
)
def test_bad_rank_requests_name_the_field(body: str, field: str) -> None:
    assert _error_fields(RankRequest, body) == [field]


def test_malformed_json_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="Invalid JSON"):
        RankRequest.model_validate_json('{"user_id": ')


def test_duplicate_candidates_are_named() -> None:
    with pytest.raises(ValidationError, match=r"repeated: \['1', '4'\]"):
        RankRequest.model_validate_json('{"user_id": 1, "candidates": [4, 1, 2, 1, 4]}')


def test_good_rank_request_and_defaults() -> None:
    req = RankRequest.model_validate_json('{"user_id": 0, "candidates": [5, 3]}')
    assert (req.user_id, req.candidates, req.k) == ("0", ["5", "3"], serving.DEFAULT_K)
    assert RankRequest.model_validate_json('{"user_id": 3, "k": 100}').candidates is None


@pytest.mark.parametrize(
    ("sent", "read"),
    [
        ('"u00042"', "u00042"),
        ('"sku-00017"', "sku-00017"),
        ('"9c4e2f0a-7b1d-4c3e-9f00-5a6b7c8d9e0f"', "9c4e2f0a-7b1d-4c3e-9f00-5a6b7c8d9e0f"),
        ('"  u1 "', "u1"),  # surrounding whitespace is not part of an id
        ('"Ωmega café"', "Ωmega café"),
        ("42", "42"),
        ("-1", "-1"),
        ("9223372036854775808", "9223372036854775808"),
        ('"' + "x" * 128 + '"', "x" * 128),
    ],
)
def test_ids_are_strings_and_integers_read_as_decimal_text(sent: str, read: str) -> None:
    req = RankRequest.model_validate_json(f'{{"user_id": {sent}, "candidates": [{sent}]}}')
    assert (req.user_id, req.candidates) == (read, [read])
    fb = FeedbackRequest.model_validate_json(
        f'{{"request_id": "r1", "item_id": {sent}, "event_type": "click"}}'
    )
    assert fb.item_id == read


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"request_id": "a", "item_id": 1, "event_type": "hover"}, "event_type"),
        ({"request_id": "a", "item_id": 1, "event_type": "view"}, "event_type"),
        ({"request_id": "", "item_id": 1, "event_type": "click"}, "request_id"),
        ({"request_id": "a b", "item_id": 1, "event_type": "click"}, "request_id"),
        (
            {
                "request_id": "x" * (serving.MAX_REQUEST_ID_CHARS + 1),
                "item_id": 1,
                "event_type": "click",
            },
            "request_id",
        ),
        ({"request_id": "a", "item_id": "", "event_type": "click"}, "item_id"),
        ({"request_id": "a", "item_id": 3.5, "event_type": "click"}, "item_id"),
        ({"request_id": "a", "item_id": "y" * 129, "event_type": "click"}, "item_id"),
        ({"request_id": 5, "item_id": 3, "event_type": "click"}, "request_id"),
        ({"item_id": 3, "event_type": "click"}, "request_id"),
    ],
)
def test_bad_feedback_names_the_field(body: dict[str, Any], field: str) -> None:
    assert _error_fields(FeedbackRequest, json.dumps(body)) == [field]


def test_feedback_types_are_the_contracts() -> None:
    assert typing.get_args(serving.FeedbackType) == FEEDBACK_TYPES


@pytest.mark.parametrize(
    "user", ["42", "u00042", "a-b-c", "hash@example.com", "Ωmega café", "a b", "x" * 128]
)
def test_request_ids_carry_the_user(user: str) -> None:
    ids = {new_request_id(user) for _ in range(100)}
    assert len(ids) == 100
    assert {user_of_request(i) for i in ids} == {user}
    for request_id in ids:  # every request id is one that /feedback accepts
        FeedbackRequest(request_id=request_id, item_id="1", event_type="click")


def test_foreign_request_ids_carry_no_user() -> None:
    for foreign in ("oracle-3", "abc", "0" * 32 + "-", "0" * 32 + ".", "0" * 32 + ".%%%"):
        assert user_of_request(foreign) is None
    # base64 of an id that breaks the id rules (a newline) is not a user either
    assert user_of_request("0" * 32 + ".YQpi") is None


def test_options_from_env() -> None:
    assert options_from_env({}) == ServingOptions()
    opts = options_from_env({serving.OPTIONS_ENV: '{"epsilon": 0.25, "seed": 3}'})
    assert (opts.epsilon, opts.seed, opts.clock) == (0.25, 3, "auto")
    with pytest.raises(ValueError, match=r"epsilon=1\.5"):
        options_from_env({serving.OPTIONS_ENV: '{"epsilon": 1.5}'})
    with pytest.raises(ValueError, match="epsilonn"):
        options_from_env({serving.OPTIONS_ENV: '{"epsilonn": 0.1}'})


# ---- exploration --------------------------------------------------------------------------


def test_no_exploration_is_the_greedy_ranking_with_propensity_one() -> None:
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1])
    slate = epsilon_greedy(scores, 4, 0.0, np.random.default_rng(0))
    assert slate.indices.tolist() == [1, 3, 2, 0]  # ties keep candidate order
    assert slate.propensities.tolist() == [1.0] * 4
    assert not slate.explored.any()


def test_propensities_follow_the_formula_and_seeds_repeat() -> None:
    scores = np.random.default_rng(1).random(50)
    eps = 0.3
    a = epsilon_greedy(scores, 10, eps, np.random.default_rng(7))
    b = epsilon_greedy(scores, 10, eps, np.random.default_rng(7))
    assert a.indices.tolist() == b.indices.tolist()
    assert len(set(a.indices.tolist())) == 10
    remaining = list(np.argsort(-scores, kind="stable"))
    for slot, item in enumerate(a.indices):
        m = 50 - slot
        greedy = remaining[0]
        expected = 1 - eps + eps / m if item == greedy else eps / m
        assert a.propensities[slot] == pytest.approx(expected)
        assert a.explored[slot] == (item != greedy)
        remaining.remove(item)
    assert ((a.propensities > 0) & (a.propensities <= 1)).all()


def test_logged_propensities_match_observed_frequencies() -> None:
    """Monte Carlo check: how often the policy really puts an item in a slot."""
    scores = np.array([0.1, 0.8, 0.4, 0.6])
    eps, draws = 0.4, 20_000
    rng = np.random.default_rng(3)
    first: Counter[int] = Counter()
    second_after_best: Counter[int] = Counter()
    logged: dict[tuple[int, int], float] = {}
    for _ in range(draws):
        slate = epsilon_greedy(scores, 2, eps, rng)
        i0, i1 = int(slate.indices[0]), int(slate.indices[1])
        first[i0] += 1
        logged[(0, i0)] = slate.propensities[0]
        if i0 == 1:
            second_after_best[i1] += 1
            logged[(1, i1)] = slate.propensities[1]
    for item, count in first.items():
        assert count / draws == pytest.approx(logged[(0, item)], abs=0.015)
    total = sum(second_after_best.values())
    for item, count in second_after_best.items():
        assert count / total == pytest.approx(logged[(1, item)], abs=0.015)


def test_slate_is_never_longer_than_the_candidates() -> None:
    slate = epsilon_greedy(np.array([0.3, 0.2]), 10, 0.5, np.random.default_rng(0))
    assert sorted(slate.indices.tolist()) == [0, 1]
    assert slate.propensities[-1] == 1.0  # one candidate left: the policy must take it
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_greedy(np.array([0.3]), 1, 1.2, np.random.default_rng(0))


# ---- the prediction log records of a slate -------------------------------------------------


def _candidate_features(items: list[str], rng: np.random.Generator) -> pd.DataFrame:
    from flywheel.ranking import RAW_FEATURES

    frame = pd.DataFrame(rng.random((len(items), len(RAW_FEATURES))) * 10, columns=RAW_FEATURES)
    frame.loc[1, "views_7d"] = np.nan  # a missing value is logged as null
    return frame.assign(item_id=items, category=[f"c{n % 3}" for n in range(len(items))])


@pytest.mark.parametrize("k", [4, 6])
def test_prediction_records_are_one_per_served_item(k: int) -> None:
    from flywheel.ranking import RAW_FEATURES
    from flywheel.schemas import PREDICTION_LOG_SCHEMA

    rng = np.random.default_rng(5)
    items = ["sku-40", "sku-41", "42", "sku 43", "Ω44", "45"]
    features = _candidate_features(items, rng)
    scores = rng.random(len(items))
    slate = epsilon_greedy(scores, k, 0.5, np.random.default_rng(2))
    records = serving._prediction_records("rid-7", T0, "u7", "m:1", features, scores, slate)
    assert len(records) == len(slate.indices) == k  # k = 6: every candidate, the last too
    assert [r["position"] for r in records] == list(range(k))
    assert [r["item_id"] for r in records] == [items[i] for i in slate.indices]
    assert [r["propensity"] for r in records] == slate.propensities.tolist()
    assert [r["score"] for r in records] == [float(scores[i]) for i in slate.indices]
    assert {(r["request_id"], r["ts"], r["user_id"], r["model_version"]) for r in records} == {
        ("rid-7", T0, "u7", "m:1")
    }
    for record, i in zip(records, slate.indices, strict=True):
        logged = json.loads(record["features"])
        assert logged["category"] == f"c{i % 3}"
        expected = features.loc[i, list(RAW_FEATURES)].tolist()
        assert [logged[n] for n in RAW_FEATURES] == [None if np.isnan(v) else v for v in expected]
    # a normal record leaves the optional "degraded" out; a degraded one says so
    assert set(records[0]) == set(PREDICTION_LOG_SCHEMA.names) - {"degraded"}
    pa.Table.from_pylist(records, schema=PREDICTION_LOG_SCHEMA)  # the records fit the contract
    marked = serving._prediction_records(
        "rid-7", T0, "u7", "m:1", features, scores, slate, degraded=True
    )
    assert [r["degraded"] for r in marked] == [True] * k
    assert [{**r, "degraded": None} for r in marked] == [{**r, "degraded": None} for r in records]
    assert set(marked[0]) == set(PREDICTION_LOG_SCHEMA.names)
    pa.Table.from_pylist(marked, schema=PREDICTION_LOG_SCHEMA)


def test_prediction_records_of_columns_equal_those_of_a_dataframe() -> None:
    """Serving passes the feature columns as arrays; the records are the same."""
    rng = np.random.default_rng(8)
    items = [f"sku-{n}" for n in range(7)]
    frame = _candidate_features(items, rng)
    columns = {name: frame[name].to_numpy() for name in frame.columns}
    columns["item_id"], columns["category"] = list(frame["item_id"]), list(frame["category"])
    scores = rng.random(len(items))
    slate = epsilon_greedy(scores, 5, 0.3, np.random.default_rng(4))
    args = ("rid-8", T0, "u8", "m:2")
    assert serving._prediction_records(*args, columns, scores, slate) == (
        serving._prediction_records(*args, frame, scores, slate)
    )


# ---- feedback -> user activity row ----------------------------------------------------------


def _current() -> dict[str, Any]:
    return {
        "views_1h": 1, "views_24h": 4, "views_7d": 10, "carts_24h": 1, "carts_7d": 2,
        "purchases_7d": 1, "clicks_7d": 3, "cart_rate_7d": 0.2, "conversion_rate_7d": 0.1,
        "avg_price_7d": 25.0, "last_event_unix": (T0 - H).timestamp(),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("event", "changes"),
    [
        ("click", {"clicks_7d": 4}),
        ("cart", {"carts_24h": 2, "carts_7d": 3, "cart_rate_7d": 0.3}),
        ("purchase", {"purchases_7d": 2, "conversion_rate_7d": 0.2}),
    ],
)
def test_feedback_counts_the_event_in_its_windows(event: str, changes: dict[str, Any]) -> None:
    row = activity_after_feedback("u5", _current(), T0 - H, event, T0)
    expected = {**_current(), **changes, "last_event_unix": T0.timestamp()}
    assert {k: row[k] for k in expected} == pytest.approx(expected)
    assert row["user_id"] == "u5" and row["event_timestamp"] == T0
    assert set(row) == set(USER_ACTIVITY_SCHEMA.names)


def test_feedback_for_a_user_without_features_starts_from_zero() -> None:
    row = activity_after_feedback("9", None, None, "cart", T0)
    assert (row["carts_24h"], row["carts_7d"], row["views_7d"], row["cart_rate_7d"]) == (
        1, 1, 0, 0.0,
    )  # fmt: skip
    frame = pd.DataFrame([row])
    pa.Table.from_pandas(frame[USER_ACTIVITY_SCHEMA.names], schema=USER_ACTIVITY_SCHEMA)


def test_feedback_row_is_stamped_after_the_stored_row() -> None:
    later = T0 + timedelta(seconds=5)
    row = activity_after_feedback("1", _current(), later, "click", T0)
    assert row["event_timestamp"] > later
    with pytest.raises(ValueError, match="view"):
        activity_after_feedback("1", None, None, "view", T0)


# ---- default candidates -------------------------------------------------------------------


def _write(settings: Settings, name: str, rows: list[dict[str, Any]]) -> None:
    schema = FEATURE_TABLES[name]
    frame = pd.DataFrame(rows)
    for f in schema:
        if f.name not in frame.columns:
            frame[f.name] = 0 if pa.types.is_integer(f.type) else 0.0
    settings.feature_data_dir.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    pq.write_table(table, settings.feature_data_dir / f"{name}.parquet")


def test_default_candidates_are_recent_popular_then_newest(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    snap = [  # (item, snapshot time, views_7d, carts_7d)
        (1, T0 - 2 * H, 50, 0), (1, T0 - H, 5, 0),  # latest snapshot counts: 5
        (2, T0 - H, 30, 1), (3, T0 - H, 30, 4),  # tie on views: more carts first
        (4, T0 - 8 * 24 * H, 99, 0),  # older than 7 days
        (5, T0 + H, 99, 0),  # after the request time
        (6, T0 - 3 * H, 10, 0),
    ]  # fmt: skip
    _write(settings, "item_activity", [
        {"item_id": str(i), "event_timestamp": t, "created_timestamp": t, "item_views_7d": v,
         "item_carts_7d": c} for i, t, v, c in snap
    ])  # fmt: skip
    created = {1: -90, 2: -80, 3: -70, 4: -60, 5: -5, 6: -50, 7: -2, 8: -1, 9: 3}
    _write(settings, "item_catalog", [
        {"item_id": str(i), "event_timestamp": T0 + d * H, "created_timestamp": T0 + d * H,
         "category": "c", "price": 1.0} for i, d in created.items()
    ])  # fmt: skip
    assert default_candidates(settings, T0, n_popular=3, n_new=2) == list("32687")
    # too few popular items: the newest fill the gap; item 9 does not exist yet
    assert default_candidates(settings, T0, n_popular=10, n_new=0) == list("32618754")
    assert default_candidates(Settings(workspace=tmp_path / "empty"), T0) == []


# ---- champion hot swap ----------------------------------------------------------------------


def _point_to(settings: Settings, tag: str) -> None:
    path = settings.state_dir / POINTER_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"champion": tag, "history": [], "updated_at": "x"}))
    os.replace(tmp, path)


def test_watcher_swaps_when_the_pointer_changes(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    loads: list[str] = []

    def loader(_: Settings, tag: str) -> LoadedModel:
        if tag == "broken:1":
            raise FileNotFoundError("model file missing")
        loads.append(tag)
        return LoadedModel(tag, booster=None, feature_service="ranking_v1")  # type: ignore[arg-type]

    watcher = ChampionWatcher(settings, check_s=0.0, loader=loader)
    assert watcher.current() is None  # no pointer yet
    _point_to(settings, "m:1")
    assert watcher.current().tag == "m:1"  # type: ignore[union-attr]
    assert watcher.current().tag == "m:1"  # type: ignore[union-attr]
    _point_to(settings, "m:2")
    assert watcher.current().tag == "m:2"  # type: ignore[union-attr]
    _point_to(settings, "broken:1")
    assert watcher.current().tag == "m:2"  # type: ignore[union-attr]  # kept the old one
    assert loads == ["m:1", "m:2"] and watcher.swaps == 1


def test_watcher_checks_the_pointer_at_most_every_check_s(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)

    def loader(_: Settings, tag: str) -> LoadedModel:
        return LoadedModel(tag, booster=None, feature_service="ranking_v1")  # type: ignore[arg-type]

    watcher = ChampionWatcher(settings, check_s=3600.0, loader=loader)
    _point_to(settings, "m:1")
    assert watcher.current().tag == "m:1"  # type: ignore[union-attr]
    _point_to(settings, "m:2")
    assert watcher.current().tag == "m:1"  # type: ignore[union-attr]  # not checked yet
    watcher.check_s = 0.0
    assert watcher.current().tag == "m:2"  # type: ignore[union-attr]


def test_callers_wait_for_the_first_model_but_not_for_a_swap(tmp_path: Path) -> None:
    """A loader held on an event: while it loads m:1 a second caller waits (there is
    nothing to serve); while it loads m:2 other callers get m:1 at once, not after it."""
    settings = Settings(workspace=tmp_path)
    loading = {tag: threading.Event() for tag in ("m:1", "m:2")}
    release = {tag: threading.Event() for tag in ("m:1", "m:2")}

    def gated_loader(_: Settings, tag: str) -> LoadedModel:
        loading[tag].set()
        assert release[tag].wait(30), f"the test never released the load of {tag}"
        return LoadedModel(tag, booster=None, feature_service="ranking_v1")  # type: ignore[arg-type]

    watcher = ChampionWatcher(settings, check_s=0.0, loader=gated_loader)
    _point_to(settings, "m:1")
    with ThreadPoolExecutor(2) as pool:
        try:
            loader_call = pool.submit(watcher.current)
            assert loading["m:1"].wait(30)
            waiting = pool.submit(watcher.current)
            # Before any model a caller must not come back empty-handed while one loads.
            with pytest.raises(FutureTimeout):
                waiting.result(timeout=0.5)
        finally:
            release["m:1"].set()
        assert loader_call.result(30).tag == "m:1"  # type: ignore[union-attr]
        assert waiting.result(30).tag == "m:1"  # type: ignore[union-attr]

    _point_to(settings, "m:2")
    with ThreadPoolExecutor(4) as pool:
        try:
            swapper = pool.submit(watcher.current)
            assert loading["m:2"].wait(30)
            # m:2 is still loading (held until release): these must answer without it.
            during = [pool.submit(watcher.current) for _ in range(3)]
            tags = [f.result(timeout=30).tag for f in during]  # type: ignore[union-attr]
            assert not release["m:2"].is_set() and tags == ["m:1"] * 3
        finally:
            release["m:2"].set()
        assert swapper.result(30).tag == "m:2"  # type: ignore[union-attr]
    assert watcher.current().tag == "m:2" and watcher.swaps == 1  # type: ignore[union-attr]


# ---- the clock -----------------------------------------------------------------------------


def test_clock_replays_an_old_lake_and_follows_a_fresh_one(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    wall = datetime.now(UTC)
    assert make_clock(settings, "auto", wall).offset == timedelta(0)  # empty lake
    with pytest.raises(ValueError, match="empty"):
        make_clock(settings, "lake", wall)
    mark = datetime(2025, 1, 19, 22, 30, tzinfo=UTC)
    write_state(settings, {"events": {"watermark": mark.isoformat()}})
    replay = make_clock(settings, "auto", wall)
    start = datetime(2025, 1, 19, 23, tzinfo=UTC)  # the end of the watermark's hour
    assert replay.offset == start - wall
    assert abs(replay.now() - start) < timedelta(seconds=60)
    assert make_clock(settings, "wall", wall).offset == timedelta(0)
    assert make_clock(settings, "auto", mark + H).offset == timedelta(0)  # data is fresh
    replay.advance_to(replay.now() - H)  # never backwards
    assert replay.offset == start - wall
    with pytest.raises(ValueError, match="sundial"):
        make_clock(settings, "sundial", wall)


# ---- body size guard -------------------------------------------------------------------------


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


def _guarded(limit: int) -> TestClient:
    app = Starlette(routes=[Route("/echo", _echo, methods=["POST", "GET"])])
    return TestClient(BodySizeLimit(app, max_bytes=limit))


def test_body_size_limit() -> None:
    client = _guarded(100)
    assert client.post("/echo", content=b"x" * 100).json() == {"bytes": 100}
    big = client.post("/echo", content=b"x" * 101)
    assert big.status_code == 413 and "at most 100 bytes" in big.json()["error"]

    def chunks(n: int) -> Any:
        yield from (b"y" * 30 for _ in range(n))

    assert client.post("/echo", content=chunks(3)).json() == {"bytes": 90}
    assert client.post("/echo", content=chunks(4)).status_code == 413
    assert client.get("/echo").json() == {"bytes": 0}


# ---- the serve command ------------------------------------------------------------------------


def test_serve_command_reproduces_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(workspace=str(tmp_path / "ws"))
    settings = settings.model_copy(
        update={"feast": settings.feast.model_copy(update={"online_store": "redis"})}
    )
    inherited = {"FLYWHEEL_CONFIG": "/nope.yaml", "FLYWHEEL_PROFILE": "prod", "PATH": "/bin"}
    argv, env = serve_command(settings, port=3123, workers=2, environ=inherited)
    assert argv[-4:-1] == ["--port", "3123", "--working-dir"]
    assert (Path(argv[-1]) / "serving" / "service.py").is_file()
    assert "FLYWHEEL_CONFIG" not in env and env["PATH"] == "/bin"
    assert env["BENTOML_HOME"] == str((tmp_path / "ws" / "bentoml").absolute())
    assert json.loads(env["BENTOML_CONFIG_OVERRIDES"]) == {"services": {"Ranker": {"workers": 2}}}
    assert ServingOptions.model_validate_json(env[serving.OPTIONS_ENV]) == ServingOptions()
    for name in list(os.environ):
        if name.startswith("FLYWHEEL_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("FLYWHEEL_"):
            monkeypatch.setenv(name, value)
    assert load_settings() == settings.model_copy(update={"workspace": tmp_path / "ws"})
    with pytest.raises(ValueError, match="workers=0"):
        serve_command(settings, workers=0)


def test_serve_command_keeps_the_environments_options(tmp_path: Path) -> None:
    """A container sets $RANKER_OPTIONS; explicit options still win; bad ones are refused."""
    settings = Settings(workspace=tmp_path)
    env_in = {serving.OPTIONS_ENV: json.dumps({"epsilon": 0.3, "seed": 5})}
    _, env = serve_command(settings, environ=env_in)
    assert json.loads(env[serving.OPTIONS_ENV])["epsilon"] == 0.3
    explicit = serving.ServingOptions(epsilon=0.0)
    _, env = serve_command(settings, options=explicit, environ=env_in)
    assert json.loads(env[serving.OPTIONS_ENV])["epsilon"] == 0.0
    _, env = serve_command(settings, environ={})
    assert json.loads(env[serving.OPTIONS_ENV]) == json.loads(
        serving.ServingOptions().model_dump_json()
    )
    with pytest.raises(ValueError, match="epsilon"):
        serve_command(settings, environ={serving.OPTIONS_ENV: '{"epsilon": 2}'})
