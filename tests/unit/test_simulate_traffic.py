"""Live traffic: position bias, oracle vs random rankers, and the HTTP client's errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
from tests.ports import refused_port

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


# The HTTP client against the real service (rank, feedback, HTTP errors) is tested in
# tests/integration/test_service.py, on a real `bentoml serve`.


def test_http_client_names_an_unreachable_service() -> None:
    with refused_port() as port, pytest.raises(TrafficError, match=r"/rank could not reach"):
        http_ranker(f"http://127.0.0.1:{port}", timeout_s=5)(1, None, 3)
    with refused_port() as port, pytest.raises(TrafficError, match=r"/feedback could not reach"):
        http_feedback(f"http://127.0.0.1:{port}", timeout_s=5)("r1", 1, "click")
