"""Serving through an online-store outage (issue #12, section 4), with a real ``redis-server``.

The world, the model, the app and the load come from ``test_service`` (imported under the
name pytest gives it, as ``test_service_fuzz`` does); the online store is a real Redis on a
free port, stopped (connections refused) and started again empty (no persistence), as a
Redis pod without a volume is. Nothing is faked.

- in-process (``to_asgi``), degraded mode off: an unreachable store is a 503 naming it,
  ``/readyz`` turns 503, the metrics count it, and the service recovers on its own;
- in-process: a store that comes back without its rows raises the lost-rows gauge and
  logs it, and a full reload clears it;
- a real ``bentoml serve`` with two workers, degraded mode on, Redis stopped and restarted
  under load: no request fails, answers are marked degraded while it is down, readiness
  follows the store, and every acknowledged answer is in the prediction log, marked as
  it was answered.
"""

from __future__ import annotations

import contextlib
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

# pytest's default "prepend" import mode imports test files of this folder (no __init__.py)
# under their module name; importing it so shares its one ASGI app (BentoML registers its
# request metrics once per process).
import test_service as service_tests
from starlette.testclient import TestClient

from flywheel import feature_store as fs
from flywheel.config import Settings
from flywheel.predlog import read_prediction_logs
from flywheel.serving import OPTIONS_ENV, ServingOptions
from flywheel.serving.commands import _settings_env
from tests.ports import on_free_ports
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.redis]

NOW, skus, sku = service_tests.NOW, service_tests.skus, service_tests.sku
wait_until = service_tests.wait_until
#: Fast breaker and a small lost-rows window, so the test waits seconds, not minutes.
SERVING = {
    "store_retry_s": 0.2,
    "store_check_s": 0.5,
    "lost_rows_window": 20,
    "normal_cold_share": 0.5,
    "lost_rows_share": 0.95,
}


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis") / "redis.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer) -> Settings:
    feast = {"online_store": "redis", "redis_connection_string": redis.url,
             "project": f"outage{time.monotonic_ns()}"}  # fmt: skip
    settings = Settings(
        workspace=tmp_path_factory.mktemp("outage") / "ws", feast=feast, serving=SERVING
    )
    return service_tests.served_world(settings)


def _with(settings: Settings, **serving: Any) -> Settings:
    return settings.model_copy(update={"serving": settings.serving.model_copy(update=serving)})


def _reload(settings: Settings, redis: RedisServer) -> None:
    """Redis up and holding every row again (what `flywheel features --full-reload` does)."""
    redis.start()
    fs.materialize(settings, end=NOW + timedelta(seconds=1), full=True)


@contextlib.contextmanager
def asgi(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A fresh service instance in-process, configured as ``bentoml serve`` would be."""
    for name, value in _settings_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(OPTIONS_ENV, ServingOptions(epsilon=0.0).model_dump_json())
    if not service_tests._APP:
        from serving.service import Ranker

        service_tests._APP.append(Ranker.to_asgi())
    with TestClient(service_tests._APP[0]) as client:
        yield client


def _metric(client: TestClient, name: str) -> float:
    return service_tests._metric(client, name)


def test_an_unreachable_store_is_a_503_naming_it_and_readiness_follows_it(
    world: Settings, redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"user_id": 3, "candidates": skus(range(20)), "k": 5}
    try:
        with asgi(_with(world, degraded_mode=False), monkeypatch) as client:
            ok = client.post("/rank", json=body)
            assert ok.status_code == 200 and ok.json()["degraded"] is False
            assert client.get("/readyz").status_code == 200
            assert _metric(client, "flywheel_online_store_up") == 1
            errors = _metric(client, "flywheel_online_store_errors_total")
            refused = _metric(client, "flywheel_online_store_unavailable_requests_total")
            redis.stop()
            down = client.post("/rank", json=body)
            assert down.status_code == 503, down.text
            assert f"online store Redis at '{redis.url}' is unreachable" in down.json()["error"]
            assert client.get("/readyz").status_code == 503
            again = client.post("/rank", json=body)  # the breaker is open: 503 at once
            assert again.status_code == 503 and "retrying every 0.2 s" in again.json()["error"]
            rid = ok.json()["request_id"]
            feedback = client.post(
                "/feedback", json={"request_id": rid, "item_id": sku(1), "event_type": "click"}
            )
            assert feedback.status_code == 200 and "not updated" in feedback.json()["note"]
            assert _metric(client, "flywheel_online_store_up") == 0
            assert _metric(client, "flywheel_online_store_errors_total") >= errors + 1
            assert _metric(client, "flywheel_online_store_unavailable_requests_total") == (
                refused + 2
            )
            time.sleep(1.0)
            assert client.get("/readyz").status_code == 503  # pinged again: still down
            redis.start()  # back, empty: the service reconnects by itself
            wait_until("ready again", lambda: client.get("/readyz").status_code == 200, 30)
            back = client.post("/rank", json=body)
            assert back.status_code == 200 and back.json()["degraded"] is False
            assert _metric(client, "flywheel_online_store_up") == 1
    finally:
        _reload(world, redis)


def test_a_store_back_without_its_rows_raises_the_lost_rows_gauge(
    world: Settings,
    redis: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def traffic(client: TestClient) -> list[bool]:
        """25 requests of users who have rows; whether the service found them cold."""
        answers = []
        for user in range(25):
            reply = client.post("/rank", json={"user_id": user, "candidates": skus(range(10))})
            assert reply.status_code == 200, reply.text
            answers.append(reply.json()["degraded"])
        return answers

    try:
        with (
            asgi(world, monkeypatch) as client,
            caplog.at_level(logging.WARNING, "flywheel.serving.store_health"),
        ):
            cold = _metric(client, "flywheel_cold_start_requests_total")
            assert traffic(client) == [False] * 25
            assert _metric(client, "flywheel_cold_start_requests_total") == cold
            assert _metric(client, "flywheel_online_store_rows_lost") == 0
            redis.stop()
            redis.start()  # no persistence: every row is gone
            wait_until("ready again", lambda: client.get("/readyz").status_code == 200, 30)
            traffic(client)
            assert _metric(client, "flywheel_cold_start_requests_total") >= cold + 20
            assert _metric(client, "flywheel_online_store_rows_lost") == 1
            assert _metric(client, "flywheel_cold_user_share") >= 0.95
            assert "online store lost its rows?" in caplog.text
            assert "--full-reload" in caplog.text
            fs.materialize(world, end=NOW + timedelta(seconds=1), full=True)
            traffic(client)
            assert _metric(client, "flywheel_online_store_rows_lost") == 0
            assert "online store rows are back" in caplog.text
    finally:
        _reload(world, redis)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as reply:
            return bool(reply.status == 200)
    except OSError:  # an HTTPError (503) is one
        return False


def test_a_redis_restart_under_load_fails_no_request_and_logs_every_answer(
    world: Settings, redis: RedisServer, tmp_path: Path
) -> None:
    settings = _with(world, degraded_mode=True)
    url, process = on_free_ports(lambda port: service_tests._start_on(settings, port))
    began = datetime.now(UTC)
    try:
        with service_tests.Load(url, threads=4) as load:

            def answers(degraded: bool, since: int = 0) -> int:
                return sum(a["degraded"] is degraded for a in load.snapshot()[since:])

            wait_until("30 normal answers", lambda: answers(False) >= 30)
            redis.stop()
            try:
                wait_until("readiness false with the store down", lambda: not _ready(url), 30)
                wait_until("30 degraded answers", lambda: answers(True) >= 30)
                assert not any(_ready(url) for _ in range(10))  # both workers, every probe
            finally:
                redis.start()
            fs.materialize(settings, end=NOW + timedelta(seconds=1), full=True)
            wait_until("ready again", lambda: all(_ready(url) for _ in range(10)), 30)
            mark = len(load.snapshot())
            wait_until("30 normal answers after", lambda: answers(False, mark) >= 30)
        assert load.failures == []  # no 5xx, no refused connection: every request answered
        assert answers(True) >= 30
        logged = read_prediction_logs(settings, since=began).to_pandas()
        logged = logged.sort_values(["request_id", "position"])
        by_request = {rid: group for rid, group in logged.groupby("request_id")}
        for answer in load.answers:
            mine = by_request[answer["request_id"]]  # acknowledged, so logged
            assert list(mine.item_id) == [e["item_id"] for e in answer["items"]]
            flags = set(mine["degraded"].fillna(False))
            assert flags == {answer["degraded"]}, answer["request_id"]
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
        assert float(lines["flywheel_online_store_up"]) == 1
        assert float(lines["flywheel_degraded_requests_total"]) >= 30
        assert float(lines["flywheel_online_store_errors_total"]) >= 2  # both workers saw it
    finally:
        service_tests.kill_9(process)
        _reload(world, redis)
