"""Live traffic: position bias, oracle vs random rankers, and the HTTP client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import numpy as np
import pytest

from flywheel.simulate.traffic import (
    TrafficError,
    http_feedback,
    http_ranker,
    oracle_ranker,
    random_ranker,
    run_traffic,
    simulate_session_response,
)
from flywheel.simulate.world import World, make_world

START = datetime(2025, 3, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(300, 200, seed=21, start=START, drift_day=2.0, drift_share=1.0)


def test_reactions_follow_position_bias_and_the_funnel(world) -> None:
    rng = np.random.default_rng(0)
    served = [5, 17, 33, 48, 90]
    n = 6000
    examined = np.zeros(len(served))
    clicked = np.zeros(len(served))
    for _ in range(n):
        r = simulate_session_response(world, 7, served, START, rng)
        assert set(r.clicked) <= set(r.examined)
        assert set(r.carted) <= set(r.clicked) and set(r.purchased) <= set(r.carted)
        examined += np.isin(served, r.examined)
        clicked += np.isin(served, r.clicked)
    expected_exam = 1 / np.log2(np.arange(len(served)) + 2)
    np.testing.assert_allclose(examined / n, expected_exam, atol=0.025)
    expected_click = expected_exam * world.click_prob(7, served, START)
    np.testing.assert_allclose(clicked / n, expected_click, atol=0.02)


def test_feedback_events_are_ordered_click_cart_purchase(world) -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        r = simulate_session_response(world, 3, [1, 2, 3], START, rng)
        kinds = [kind for _, kind in r.feedback_events()]
        assert kinds == sorted(kinds, key=["click", "cart", "purchase"].index)
        assert len(kinds) == len(r.clicked) + len(r.carted) + len(r.purchased)


def test_oracle_serves_the_highest_true_click_probabilities(world) -> None:
    after = START + timedelta(days=3)
    _, before_items = oracle_ranker(world, START)(12, None, 5)
    _, after_items = oracle_ranker(world, after)(12, None, 5)
    for items, at in ((before_items, START), (after_items, after)):
        p = world.click_prob(12, np.arange(world.n_items), at)
        assert items == np.argsort(-p, kind="stable")[:5].tolist()
    assert before_items != after_items  # user 12 drifted, so the oracle follows
    _, among = oracle_ranker(world)(12, [3, 4, 5, 6], 2)
    assert set(among) <= {3, 4, 5, 6} and len(among) == 2


def test_oracle_gets_a_clearly_higher_ctr_than_random(world) -> None:
    oracle = run_traffic(world, oracle_ranker(world), 400, seed=3)
    rand = run_traffic(world, random_ranker(world, seed=3), 400, seed=3)
    assert oracle.impressions == rand.impressions == 4000
    # Standard error of a difference of two CTRs on 4000 impressions each is < 0.011.
    assert oracle.ctr - rand.ctr > 0.1
    assert oracle.purchases > rand.purchases


def test_run_traffic_is_deterministic_by_seed(world) -> None:
    first = run_traffic(world, random_ranker(world, seed=1), 100, seed=9)
    again = run_traffic(world, random_ranker(world, seed=1), 100, seed=9)
    other = run_traffic(world, random_ranker(world, seed=1), 100, seed=10)
    assert (first.clicks, first.carts) == (again.clicks, again.carts)
    assert (first.clicks, first.carts, first.purchases) != (
        other.clicks, other.carts, other.purchases,
    )  # fmt: skip


class _FakeService(BaseHTTPRequestHandler):
    """A stand-in for the serving API: random items for /rank, records /feedback."""

    feedback: ClassVar[list[dict[str, Any]]] = []
    broken = False

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.broken:
            self._reply(500, {"detail": "model not loaded"})
        elif self.path == "/rank":
            rid = f"req-{body['user_id']}-{len(self.feedback)}"
            items = [{"item_id": i, "score": 1.0 / (i + 1)} for i in range(body["k"])]
            self._reply(200, {"request_id": rid, "model_version": "m1", "items": items})
        else:
            self.feedback.append(body)
            self._reply(200, {"ok": True})

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture()
def service() -> Iterator[str]:
    _FakeService.feedback = []
    _FakeService.broken = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_ranker_and_feedback_round_trip(world, service) -> None:
    ranker = http_ranker(service)
    summary = run_traffic(world, ranker, 30, seed=4, k=4, feedback=http_feedback(service))
    assert summary.impressions == 120
    assert summary.model_versions == {"m1": 30}
    posted = _FakeService.feedback
    assert len(posted) == summary.clicks + summary.carts + summary.purchases > 0
    assert sum(p["event_type"] == "click" for p in posted) == summary.clicks
    assert all(p["request_id"].startswith("req-") and p["item_id"] in set("0123") for p in posted)


def test_http_errors_name_the_url_and_status(service) -> None:
    _FakeService.broken = True
    with pytest.raises(TrafficError, match=r"/rank failed with HTTP 500"):
        http_ranker(service)(1, None, 3)
    with pytest.raises(TrafficError, match="could not reach"):
        http_ranker("http://127.0.0.1:9", timeout_s=2)(1, None, 3)
