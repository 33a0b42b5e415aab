"""The ranking service for real: Feast's SQLite online store, the BentoML model store, the
service in-process through ``to_asgi()`` and as a ``bentoml serve`` subprocess.

One small world is built by hand for the module (feature tables stamped an hour ago,
``apply``, ``materialize``, a registered booster). References are independent of the
serving path: features through Feast's own ``get_online_features``
(``feature_store.online_features``), scores through ``ranking.model_inputs`` and
``train.predict`` on the booster from the registry, and the prediction log read back.

Ids are strings: users are decimal text ("3"; most requests send the JSON integer 3, which
is the same id), items are SKUs (``sku(7)`` = "sku-7", so string order is not numeric order).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
from starlette.testclient import TestClient

from flywheel import feature_store as fs
from flywheel.config import Settings
from flywheel.features.packed import packed_from_user_item
from flywheel.lake import write_state
from flywheel.predlog import (
    read_candidate_logs,
    read_feedback_logs,
    read_prediction_logs,
    scan_logs,
)
from flywheel.ranking import MODEL_FEATURES, RAW_FEATURES, model_inputs
from flywheel.registry import current_champion, model_file, register_model
from flywheel.schemas import FEATURE_TABLES
from flywheel.serving import (
    OPTIONS_ENV,
    FeedbackRequest,
    OnlineFeatureReader,
    RankingService,
    RankRequest,
    ServingOptions,
    default_candidates,
    start_server,
    wait_ready,
)
from flywheel.serving.records import candidate_columns
from flywheel.simulate import IdNaming, make_world
from flywheel.simulate.traffic import (
    HttpRanker,
    TrafficError,
    http_feedback,
    http_ranker,
    post_json,
    run_traffic,
)
from flywheel.train import load_booster, predict
from tests.ports import on_free_ports, raise_if_port_taken

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
H = timedelta(hours=1)
N_USERS, N_ITEMS, N_ACTIVE_ITEMS = 60, 120, 100
COLD_USER = 10_000
LINEAGE = {"run_id": "test", "data_window": "test", "feature_service": "ranking_v1"}


def sku(i: int) -> str:
    """The id of item ``i``."""
    return f"sku-{i}"


def skus(items: Any) -> list[str]:
    return [sku(int(i)) for i in items]


# ---- the world -------------------------------------------------------------------------------


def _fill(frame: pd.DataFrame, name: str, rng: np.random.Generator) -> pa.Table:
    """Random values for every contract column the frame lacks."""
    schema = FEATURE_TABLES[name]
    for f in schema:
        if f.name not in frame.columns:
            n = len(frame)
            frame[f.name] = (
                rng.integers(0, 60, n) if pa.types.is_integer(f.type) else rng.random(n) * 90 + 5
            )
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def build_tables(settings: Settings, now: datetime = NOW, seed: int = 0) -> None:
    """Users "0"-"59" active an hour before ``now``; items sku-0 to sku-99 with activity,
    sku-100 to sku-119 new."""
    rng = np.random.default_rng(seed)
    t = now - H
    users, items = np.arange(N_USERS), np.arange(N_ITEMS)
    stamp = {"event_timestamp": t, "created_timestamp": t}
    created = [now - (N_ITEMS - i) * H for i in items]
    frames = {
        "user_activity": pd.DataFrame(
            {"user_id": users.astype(str), **stamp,
             "last_event_unix": t.timestamp() - rng.random(N_USERS)}
        ),
        "user_category": pd.DataFrame(
            [{"user_id": str(u), "category": f"c{(u + d) % 5}", **stamp}
             for u in users for d in (0, 1)]
        ),
        "item_activity": pd.DataFrame({"item_id": skus(items[:N_ACTIVE_ITEMS]), **stamp}),
        "item_catalog": pd.DataFrame(
            {"item_id": skus(items), "event_timestamp": created, "created_timestamp": created,
             "category": [f"c{i % 5}" for i in items]}
        ),
        # ranking_v2's views (the champions here are ranking_v1's; apply registers both)
        "user_item": pd.DataFrame(
            {"user_id": users.astype(str), "item_id": skus(users % N_ACTIVE_ITEMS), **stamp}
        ),
        "user_category_history": pd.DataFrame(
            {"user_id": users.astype(str), "category": [f"c{u % 5}" for u in users], **stamp}
        ),
        "user_activity_30d": pd.DataFrame({"user_id": users.astype(str), **stamp}),
        "item_activity_30d": pd.DataFrame({"item_id": skus(items[:N_ACTIVE_ITEMS]), **stamp}),
        "category_price": pd.DataFrame({"category": [f"c{c}" for c in range(5)], **stamp}),
    }  # fmt: skip
    settings.feature_data_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        table = _fill(frame, name, rng)
        pq.write_table(table, settings.feature_data_dir / f"{name}.parquet")
        if name == "user_item":  # and its online form, as the build writes it
            latest = packed_from_user_item(table)
            pq.write_table(latest, settings.feature_data_dir / "user_item_latest.parquet")


def train_booster(path: Path, seed: int) -> Path:
    """A booster whose scores depend on item and user features but not on recency, so a
    reference computed a moment after the service scored gives the same numbers."""
    rng = np.random.default_rng(seed)
    x = rng.random((2000, len(MODEL_FEATURES))) * 60
    x[:, MODEL_FEATURES.index("recency_hours")] = 1.0
    signal_cols = [MODEL_FEATURES.index(c) for c in ("item_views_7d", "price", "cat_views_7d")]
    y = (x[:, signal_cols] @ rng.random(3) + rng.normal(0, 10, len(x)) > 50).astype(int)
    matrix = xgb.DMatrix(x.astype(np.float32), y, feature_names=list(MODEL_FEATURES))
    params = {"objective": "binary:logistic", "max_depth": 4, "seed": seed}
    xgb.train(params, matrix, num_boost_round=20).save_model(str(path))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return served_world(Settings(workspace=tmp_path_factory.mktemp("serving") / "ws"))


def served_world(settings: Settings) -> Settings:
    """The tables, Feast registry and online store, and a registered champion, in
    ``settings``' workspace and online store (shared by the serving test modules)."""
    build_tables(settings)
    fs.apply(settings)
    fs.materialize(settings, end=NOW + timedelta(seconds=1))
    model = train_booster(settings.workspace / "m0.ubj", seed=0)
    register_model(settings, model, {"auc": 0.6}, LINEAGE)
    return settings


def _rank_reference(settings: Settings, user: str, items: list[str], at: datetime) -> np.ndarray:
    booster = load_booster(model_file(settings, current_champion(settings) or ""))
    service = LINEAGE["feature_service"]  # the champion's own service, as serving reads it
    feats = fs.online_features(settings, user, items, service, as_of=at)
    return predict(booster, model_inputs(feats, at.timestamp(), service))


# ---- in-process through to_asgi() --------------------------------------------------------


_APP: list[Any] = []


@contextlib.contextmanager
def asgi_client(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> Iterator[TestClient]:
    """A client of the service app; each ``with`` starts a fresh service instance, which
    reads the workspace and options from the environment as under ``bentoml serve``."""
    from serving.service import Ranker

    monkeypatch.setenv("FLYWHEEL_WORKSPACE", str(settings.workspace))
    monkeypatch.setenv(OPTIONS_ENV, ServingOptions(**options).model_dump_json())
    if not _APP:  # one app per process: BentoML registers its request metrics globally
        _APP.append(Ranker.to_asgi())
    with TestClient(_APP[0]) as client:
        yield client


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_reader_matches_feast_online_features(world: Settings) -> None:
    store = fs.get_store(world)
    reader = OnlineFeatureReader(store, fs.feature_service_name(world))
    items = skus([0, 7, 105, 999])  # active, active, new (no activity), not in the catalog
    for user, at in [("3", NOW), (str(COLD_USER), NOW), ("3", NOW + 8 * 24 * H)]:  # expired
        ours = reader.read(user, items, at)
        theirs = fs.online_features(store, user, items, as_of=at)
        assert list(ours.columns) == list(theirs.columns)
        for key in ("user_id", "item_id", "category"):
            assert ours[key].tolist() == theirs[key].tolist(), key
        assert ours["item_id"].tolist() == items and set(ours["user_id"]) == {user}
        numeric = [c for c in theirs.columns if c not in ("user_id", "item_id", "category")]
        np.testing.assert_array_equal(
            ours[numeric].to_numpy(np.float64),
            theirs[numeric].to_numpy(np.float64, na_value=np.nan),
        )
    assert reader.read("3", items, NOW)["views_7d"].notna().all()
    assert reader.read("3", items, NOW + 8 * 24 * H)["views_7d"].isna().all()


def test_rank_scores_with_the_champion_and_logs_what_it_served(
    world: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    candidates = skus(range(0, 100, 2))
    with asgi_client(world, monkeypatch, epsilon=0.0) as client:
        reply = client.post("/rank", json={"user_id": 3, "candidates": candidates, "k": 10})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model_version"] == current_champion(world)
    served = [entry["item_id"] for entry in body["items"]]
    scores = [entry["score"] for entry in body["items"]]
    assert set(served) <= set(candidates)  # the catalog's strings, as sent
    reference = _rank_reference(world, "3", candidates, datetime.now(UTC))
    by_item = dict(zip(candidates, reference.tolist(), strict=True))
    assert scores == pytest.approx([by_item[i] for i in served], rel=1e-6)
    assert scores == sorted(reference.tolist(), reverse=True)[:10]

    log = read_prediction_logs(world).to_pandas()
    mine = log[log.request_id == body["request_id"]].sort_values("position")
    assert mine["item_id"].tolist() == served
    assert mine["position"].tolist() == list(range(10))
    assert mine["propensity"].tolist() == [1.0] * 10
    assert set(mine["model_version"]) == {body["model_version"]} and set(mine.user_id) == {"3"}
    # the logged features replay to the served scores through the shared transform
    at = mine["ts"].iloc[0].timestamp()
    logged = pd.DataFrame([json.loads(f) for f in mine["features"]])
    booster = load_booster(model_file(world, body["model_version"]))
    np.testing.assert_allclose(predict(booster, model_inputs(logged, at)), mine["score"], rtol=1e-6)
    online = fs.online_features(world, "3", served, as_of=mine["ts"].iloc[0].to_pydatetime())
    np.testing.assert_allclose(
        logged[list(RAW_FEATURES)].to_numpy(np.float64),
        online[list(RAW_FEATURES)].to_numpy(np.float64, na_value=np.nan),
    )
    # the candidate log (serving.log_candidates, on by default): every candidate, whose
    # logged raw values replay to the champion's scores of all 50
    records = read_candidate_logs(world).to_pylist()
    record = next(r for r in records if r["request_id"] == body["request_id"])
    assert record["item_ids"] == candidates and record["candidates"] == len(candidates)
    assert [candidates[i] for i in record["served"]] == served and record["epsilon"] == 0.0
    replay = predict(booster, model_inputs(candidate_columns(record), at))
    np.testing.assert_allclose(replay, record["scores"], rtol=1e-6)
    np.testing.assert_allclose(record["scores"], reference, rtol=1e-6)


def test_cold_user_gets_default_candidates_and_is_counted(
    world: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with asgi_client(world, monkeypatch, epsilon=0.0) as client:
        cold, default = (_metric(client, f"flywheel_{n}_total") for n in
                         ("cold_start_requests", "default_candidate_requests"))  # fmt: skip
        reply = client.post("/rank", json={"user_id": COLD_USER, "k": 20})
        warm = client.post("/rank", json={"user_id": "4", "candidates": skus([1, 2, 3])})
        assert reply.status_code == 200 and warm.status_code == 200
        assert _metric(client, "flywheel_cold_start_requests_total") == cold + 1
        assert _metric(client, "flywheel_default_candidate_requests_total") == default + 1
    pool = default_candidates(world, datetime.now(UTC))
    assert len(pool) == 50 and set(skus(range(110, 120))) <= set(pool)  # the ten newest items
    served = [e["item_id"] for e in reply.json()["items"]]
    assert len(served) == 20 and set(served) <= set(pool)


def test_feedback_is_logged_and_updates_online_user_features(
    world: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["clicks_7d", "carts_24h", "carts_7d", "purchases_7d", "views_7d"]

    def activity() -> dict[str, float]:
        row = fs.online_features(world, "5", [sku(0)], as_of=datetime.now(UTC) + H)
        return {n: float(row[n].iloc[0]) for n in names}

    before = activity()
    with asgi_client(world, monkeypatch) as client:
        rid = client.post("/rank", json={"user_id": 5, "k": 3}).json()["request_id"]
        item = sku(17)
        for kind in ("click", "cart", "cart", "purchase"):
            reply = client.post(
                "/feedback", json={"request_id": rid, "item_id": item, "event_type": kind}
            )
            assert reply.json() == {"status": "recorded", "note": None}
        stranger = client.post(
            "/feedback", json={"request_id": "oracle-1", "item_id": item, "event_type": "click"}
        )
    assert stranger.status_code == 200 and "oracle-1" in stranger.json()["note"]
    after = activity()
    assert after == {**before, "clicks_7d": before["clicks_7d"] + 1,
                     "carts_24h": before["carts_24h"] + 2, "carts_7d": before["carts_7d"] + 2,
                     "purchases_7d": before["purchases_7d"] + 1}  # fmt: skip
    log = read_feedback_logs(world).to_pandas()
    mine = log[log.request_id.isin([rid, "oracle-1"])].sort_values("ts")
    assert mine["event_type"].tolist() == ["click", "cart", "cart", "purchase", "click"]
    assert set(mine.item_id) == {item}


BAD_REQUESTS = [
    ("/rank", b'{"user_id": 1', "json_invalid", ""),
    ("/rank", b'{"user_id": ""}', "value_error", "user_id"),
    ("/rank", b'{"user_id": NaN}', "value_error", "user_id"),
    ("/rank", b'{"user_id": 1, "k": 0}', "greater_than_equal", "k"),
    ("/rank", b'{"user_id": 1, "k": 1000}', "less_than_equal", "k"),
    ("/rank", b'{"user_id": 1, "candidates": [1.5]}', "value_error", "candidates.0"),
    ("/rank", json.dumps({"user_id": 1, "candidates": list(range(501))}).encode(), "too_long",
     "candidates"),
    ("/rank", b'{"user_id": 1, "candidates": [2, 2]}', "value_error", "candidates"),
    ("/rank", b'{"user_id": 1, "candidates": [2, "2"]}', "value_error", "candidates"),
    ("/rank", b'{"user_id": 1, "user": 2}', "extra_forbidden", "user"),
    ("/feedback", b'{"request_id": "a", "item_id": 1, "event_type": "hover"}', "literal_error",
     "event_type"),
    ("/feedback", b'{"request_id": "a", "event_type": "click"}', "missing", "item_id"),
]  # fmt: skip


def test_bad_input_is_a_4xx_naming_the_field(
    world: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with asgi_client(world, monkeypatch) as client:
        for path, body, kind, field in BAD_REQUESTS:
            reply = client.post(path, content=body, headers={"content-type": "application/json"})
            assert reply.status_code == 400, (body, reply.text)
            errors = reply.json()["detail"]
            assert [(e["type"], ".".join(map(str, e["loc"]))) for e in errors] == [(kind, field)]
        huge = b'{"user_id": 1, "candidates": [' + b"1," * 50_000 + b"1]}"
        reply = client.post("/rank", content=huge, headers={"content-type": "application/json"})
        assert reply.status_code == 413 and "65536" in reply.json()["error"]


def test_metrics_count_served_and_explored_items(
    world: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ("rank_requests", "served_items", "explored_items")
    with asgi_client(world, monkeypatch, epsilon=0.5, seed=11) as client:
        before = [_metric(client, f"flywheel_{n}_total") for n in names]
        ids = []
        for user in range(20):
            reply = client.post(
                "/rank", json={"user_id": user, "candidates": skus(range(30)), "k": 6}
            )
            ids.append(reply.json()["request_id"])
        after = [_metric(client, f"flywheel_{n}_total") for n in names]
    log = read_prediction_logs(world).to_pandas()
    mine = log[log.request_id.isin(ids)]
    # With epsilon 0.5 a greedy pick has propensity > 0.5, an explored one 0.5 / m < 0.5.
    explored = int((mine.propensity < 0.5).sum())
    assert [a - b for a, b in zip(after, before, strict=True)] == [20, 120, explored]
    assert 0 < explored < 120


def test_health_readiness_and_docs(world: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with asgi_client(world, monkeypatch) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/docs").status_code == 200  # Swagger UI, via a redirect to /
        spec = client.get("/docs.json").json()
        assert {"/rank", "/feedback"} <= set(spec["paths"])


def test_without_a_champion_the_service_is_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with asgi_client(Settings(workspace=tmp_path), monkeypatch) as client:
        assert client.get("/readyz").status_code == 503
        reply = client.post("/rank", json={"user_id": 1, "candidates": [1]})
    assert reply.status_code == 503 and "no champion" in reply.json()["error"]


def test_a_replayed_world_is_served_on_its_own_clock(tmp_path: Path) -> None:
    """Features stamped 30 days ago would all have expired at wall-clock time; with the
    lake's watermark there, the service serves on a clock that starts at the lake's end."""
    then = NOW - 30 * 24 * H
    settings = Settings(workspace=tmp_path / "ws")
    build_tables(settings, now=then)
    fs.apply(settings)
    fs.materialize(settings, end=then + timedelta(seconds=1))
    write_state(settings, {"events": {"watermark": (then - H / 2).isoformat()}})
    register_model(settings, train_booster(tmp_path / "m.ubj", seed=0), {"auc": 0.6}, LINEAGE)
    service = RankingService(settings, ServingOptions(epsilon=0.0))
    outcome = service.rank(RankRequest(user_id="3", candidates=skus([1, 2, 3]), k=2))
    assert not outcome.cold_start
    logged = read_prediction_logs(settings).to_pandas()
    assert abs(logged["ts"].iloc[0].to_pydatetime() - then) < timedelta(minutes=5)
    wall = RankingService(settings, ServingOptions(clock="wall"))
    assert wall.rank(RankRequest(user_id="3", candidates=skus([1, 2, 3]), k=2)).cold_start
    # feedback lands in the replayed present too
    rid = outcome.response.request_id
    clock = service.clock
    before = fs.online_features(settings, "3", [sku(1)], as_of=clock.now())["clicks_7d"].iloc[0]
    service.feedback(FeedbackRequest(request_id=rid, item_id=sku(1), event_type="click"))
    after = fs.online_features(settings, "3", [sku(1)], as_of=clock.now())["clicks_7d"].iloc[0]
    assert after == before + 1


# ---- a real `bentoml serve` with two workers ---------------------------------------------


def _start_on(settings: Settings, port: int) -> tuple[str, subprocess.Popen[bytes]]:
    """``bentoml serve`` with two workers on ``port``, ready; PortTaken if it was not free."""
    log = settings.workspace / f"server-{port}.log"
    with log.open("wb") as out:
        process = start_server(
            settings, port=port, workers=2, options=ServingOptions(epsilon=0.1), stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout_s=90, process=process)
        if process.poll() is not None:  # whatever answered, it was not this server
            raise RuntimeError(f"the server exited with code {process.returncode}")
    except Exception:
        kill_9(process)
        raise_if_port_taken(log, f"bentoml serve on port {port}")
        print(log.read_text(errors="replace")[-4000:])
        raise
    return url, process


@pytest.fixture(scope="module")
def server(world: Settings) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    url, process = on_free_ports(lambda port: _start_on(world, port))
    try:
        yield url, process
    finally:
        kill_9(process)


def kill_9(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server and its workers (each worker runs in a session of its own)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        family = [
            *psutil.Process(process.pid).children(recursive=True),
            psutil.Process(process.pid),
        ]
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGKILL)
    process.wait(30)


class Load:
    """Rank requests from ``threads`` threads, each sending one after the other; answers
    and failures are visible while it runs. ``sent``/``at``: monotonic stamps, used only to
    order events (a request sent after an answer arrived), never to time anything."""

    def __init__(self, url: str, threads: int, per_thread: int | None = None) -> None:
        self.url, self.per_thread = url, per_thread
        self.answers: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._work, args=(s,)) for s in range(threads)]

    def _work(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        sent = 0
        while (self.per_thread is None or sent < self.per_thread) and not self.stop.is_set():
            candidates = skus(rng.choice(N_ITEMS, 50, replace=False))
            body = {"user_id": int(rng.integers(0, N_USERS + 5)), "candidates": candidates}
            began = time.monotonic()
            try:
                reply = post_json(f"{self.url}/rank", body, 10.0)
                with self.lock:
                    self.answers.append(
                        {**reply, "thread": seed, "sent": began, "at": time.monotonic()}
                    )
            except TrafficError as exc:
                with self.lock:
                    self.failures.append(str(exc))
            sent += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.answers)


def wait_until(what: str, done: Any, timeout_s: float = 120.0) -> None:
    """Poll ``done()`` until true; fail naming ``what`` after a generous ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.05)


def _logged_slates(
    settings: Settings, since: datetime | None = None
) -> dict[str, list[tuple[int, str]]]:
    log = read_prediction_logs(settings, since).to_pandas().sort_values(["request_id", "position"])
    return {
        rid: list(zip(g.position, g.item_id, strict=True)) for rid, g in log.groupby("request_id")
    }


def _worker_of_request(settings: Settings) -> dict[str, str]:
    """request id -> the pid of the worker whose prediction log holds it."""
    owner = {}
    for path in (settings.workspace / "serving" / "predictions").rglob("*.jsonl"):
        pid = path.name.split("-")[0]
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                owner[json.loads(line)["request_id"]] = pid
    return owner


def test_server_ranks_logs_every_served_item_and_takes_feedback(
    world: Settings, server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, _ = server
    with Load(url, threads=8, per_thread=25) as load:
        for t in load.threads:
            t.join()
    assert load.failures == [] and len(load.answers) == 200
    served_ids = {e["item_id"] for answer in load.answers for e in answer["items"]}
    assert served_ids and served_ids <= set(skus(range(N_ITEMS)))  # catalog strings only
    logged = _logged_slates(world)
    for answer in load.answers:
        served = [(p, e["item_id"]) for p, e in enumerate(answer["items"])]
        assert logged[answer["request_id"]] == served
    rid = load.answers[0]["request_id"]
    reply = post_json(
        f"{url}/feedback", {"request_id": rid, "item_id": sku(1), "event_type": "click"}, 10
    )
    assert reply == {"status": "recorded", "note": None}
    assert rid in set(read_feedback_logs(world)["request_id"].to_pylist())
    pids = {
        p.name.split("-")[0] for p in (world.workspace / "serving" / "predictions").rglob("*.jsonl")
    }
    assert len(pids - {str(os.getpid())}) == 2  # each worker wrote its own file
    # each answer's candidate record, written by the worker that served it
    records = {r["request_id"]: r for r in read_candidate_logs(world).to_pylist()}
    for answer in load.answers:
        record = records[answer["request_id"]]
        assert [record["item_ids"][i] for i in record["served"]] == [
            e["item_id"] for e in answer["items"]
        ]
        assert record["candidates"] == 50


def test_server_answers_sequential_calls_with_the_champions_ranking(
    world: Settings, server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    """Correctness of one call after another (latency is the benchmark's job:
    benchmarks/serving_bench.py)."""
    url, _ = server
    rng = np.random.default_rng(5)
    champion = current_champion(world)
    for i in range(50):
        candidates = skus(rng.choice(N_ITEMS, 50, replace=False))
        body = post_json(f"{url}/rank", {"user_id": i % N_USERS, "candidates": candidates}, 10)
        items = [e["item_id"] for e in body["items"]]
        assert body["model_version"] == champion
        assert len(items) == len(set(items)) == 10 and set(items) <= set(candidates)


class _RecordingRanker(HttpRanker):
    """The traffic client's ranker, remembering what each request was served."""

    def __init__(self, url: str, ids: IdNaming) -> None:
        super().__init__(url, ids=ids)
        self.served: dict[str, list[int]] = {}

    def __call__(self, user_id: int, candidates: list[int] | None, k: int) -> tuple[str, list[int]]:
        request_id, items = super().__call__(user_id, candidates, k)
        self.served[request_id] = items
        return request_id, items


def test_traffic_client_round_trip(
    world: Settings, server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    """The simulated users of `flywheel traffic` against the real service: what they were
    served is what the service logged, and every reaction they posted is in its feedback log."""
    url, _ = server
    # the world's naming matches the service's: users as decimal text, items as sku-<i>
    users = make_world(N_USERS, N_ITEMS, seed=21, naming=IdNaming(item="sku-{}"))
    ranker = _RecordingRanker(url, users.ids)
    summary = run_traffic(
        users, ranker, 30, seed=4, k=4, feedback=http_feedback(url, ids=users.ids)
    )
    assert summary.impressions == 120 and len(ranker.served) == 30
    assert summary.model_versions == {current_champion(world): 30}
    logged = _logged_slates(world)
    for request_id, items in ranker.served.items():
        assert logged[request_id] == list(enumerate(users.ids.item_ids(items).to_pylist()))
    feedback = read_feedback_logs(world).to_pandas()
    mine = feedback[feedback["request_id"].isin(set(ranker.served))]
    assert len(mine) == summary.clicks + summary.carts + summary.purchases > 0
    assert (mine["event_type"] == "click").sum() == summary.clicks
    assert (mine["event_type"] == "purchase").sum() == summary.purchases
    assert all(
        users.ids.item_indices([item])[0] in ranker.served[r]
        for r, item in zip(mine.request_id, mine.item_id, strict=True)
    )


def test_traffic_client_errors_name_the_url_and_status(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, _ = server
    with pytest.raises(TrafficError, match=rf"POST {url}/rank failed with HTTP 400: .*candidates"):
        http_ranker(url)(1, [3, 3], 2)  # duplicate candidates: the service refuses them
    with pytest.raises(TrafficError, match=rf"POST {url}/feedback failed with HTTP 400"):
        http_feedback(url)("r1", 1, "hover")


def test_hot_swap_under_load_fails_no_request(
    world: Settings, server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    """Promote a new champion under load: no request fails, every worker moves to the new
    model on its own, and once a worker has answered with it, it never answers with the
    old one again (checked per worker, from which worker's log holds each request)."""
    url, _ = server
    old = current_champion(world)
    with Load(url, threads=4) as load:
        wait_until("20 answers before the swap", lambda: len(load.snapshot()) >= 20)
        new = register_model(
            world, train_booster(world.workspace / "m1.ubj", seed=1), {"auc": 0.7}, LINEAGE
        )

        def settled() -> bool:
            recent = load.snapshot()[-40:]
            return len(recent) == 40 and all(a["model_version"] == new for a in recent)

        wait_until("40 answers in a row from the new champion", settled)
    assert load.failures == [] and new != old
    answers = sorted(load.answers, key=lambda a: a["at"])
    assert {a["model_version"] for a in answers} == {old, new}
    worker = _worker_of_request(world)
    for pid in {worker[a["request_id"]] for a in answers}:
        own = [a for a in answers if worker[a["request_id"]] == pid]
        first_new = min((a["at"] for a in own if a["model_version"] == new), default=None)
        assert first_new is not None, f"worker {pid} never served {new}"
        later = [a["model_version"] for a in own if a["sent"] > first_new]
        assert set(later) <= {new}, f"worker {pid} went back to {old}"


def test_kill_9_loses_no_acknowledged_prediction(
    world: Settings, server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, process = server
    began = datetime.now(UTC)  # the server runs on the wall clock: the world is fresh
    with Load(url, threads=4) as load:
        wait_until("30 acknowledged answers", lambda: len(load.snapshot()) >= 30)
        kill_9(process)  # the server and both workers, mid-traffic
        wait_until("a request failing after the kill", lambda: bool(load.failures))
    acked = {a["request_id"]: a for a in load.answers}
    assert len(acked) >= 30 and load.failures  # traffic was cut off by the kill
    logged = _logged_slates(world, since=began)
    for rid, answer in acked.items():
        assert logged[rid] == [(p, e["item_id"]) for p, e in enumerate(answer["items"])]
    scan = scan_logs(world, "predictions")
    assert scan.torn_lines <= scan.files
    unacknowledged = set(logged) - set(acked)
    assert all(len(logged[r]) == 10 for r in unacknowledged)  # complete or absent, never half


def test_metrics_export_the_latest_monitor_record_as_gauges(
    world: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `flywheel monitor` last wrote shows on /metrics, and a new record replaces it."""
    path = world.workspace / "monitor" / "monitor.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "generated_at": "2026-12-01T00:00:00+00:00",
        "drift": {"features": [{"name": "views_7d", "psi": 0.42, "js": 0.2, "status": "alert"}]},
        "quality": {"versions": [{"model_version": "m:1", "impressions": 10,
                                  "ctr": {"rate": 0.3}, "auc": None}]},
    }  # fmt: skip
    try:
        path.write_text(json.dumps(record))
        with asgi_client(world, monkeypatch) as client:
            text = client.get("/metrics").text
            assert 'flywheel_feature_psi{feature="views_7d"} 0.42' in text
            assert 'flywheel_served_ctr{model_version="m:1"} 0.3' in text
            assert "flywheel_served_auc" not in text  # null: left out, not 0
            assert _metric(client, "flywheel_rank_requests_total") >= 0  # counters still there
            record["drift"]["features"][0]["psi"] = 0.05
            path.write_text(json.dumps(record))
            os.utime(path, (time.time() + 5, time.time() + 5))
            assert 'flywheel_feature_psi{feature="views_7d"} 0.05' in client.get("/metrics").text
    finally:
        path.unlink(missing_ok=True)
