"""The online store's circuit breaker and the lost-rows watch (pure logic, a fake clock).

The ping is a plain function here: what it stands for (a Redis PING) is exercised against a
real redis-server in ``tests/integration/test_service_outage.py``.
"""

from __future__ import annotations

import logging

import pytest

from flywheel.config import ConfigError, load_settings
from flywheel.serving.store_health import LostRowsWatch, StoreHealth


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Store:
    """A ping that fails while ``down``, counting its calls."""

    def __init__(self) -> None:
        self.down, self.pings = False, 0

    def ping(self) -> None:
        self.pings += 1
        if self.down:
            raise ConnectionError("refused")


def _health(store: Store, clock: Clock) -> tuple[StoreHealth, list[bool], list[int]]:
    health = StoreHealth(store.ping, (ConnectionError,), retry_s=1.0, check_s=5.0, clock=clock)
    changes: list[bool] = []
    failures: list[int] = []
    health.on_change = changes.append
    health.on_failure = lambda: failures.append(1)
    return health, changes, failures


def test_a_failed_read_opens_the_breaker_and_one_request_per_retry_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = Store(), Clock()
    health, changes, failures = _health(store, clock)
    assert health.try_now() and health.try_now()  # up: every request reads
    with caplog.at_level(logging.ERROR, "flywheel.serving.store_health"):
        health.failed(ConnectionError("Connection refused"))
    assert not health.up and changes == [False] and len(failures) == 1
    assert "online store is unreachable (Connection refused)" in caplog.text
    assert not health.try_now()  # within retry_s: skip the store
    clock.t += 1.0
    assert health.try_now()  # this request probes ...
    assert not health.try_now()  # ... and the next one does not
    health.failed(ConnectionError("still"))
    assert changes == [False] and len(failures) == 2 and "still" in str(health.last_error)
    clock.t += 1.0
    assert health.try_now()
    health.succeeded()
    assert health.up and changes == [False, True] and health.last_error is None
    health.succeeded()
    assert changes == [False, True]  # no change, no call


def test_readiness_pings_at_most_every_check_s_while_up_and_retry_s_while_down() -> None:
    store, clock = Store(), Clock()
    health, changes, _ = _health(store, clock)
    assert health.check() and store.pings == 0  # not due yet: the known state
    clock.t += 5.0
    assert health.check() and store.pings == 1
    store.down = True
    assert health.check() and store.pings == 1  # a dead store is noticed at the next check
    clock.t += 5.0
    assert not health.check() and store.pings == 2 and changes == [False]
    clock.t += 0.5
    assert not health.check() and store.pings == 2
    clock.t += 0.5
    assert not health.check() and store.pings == 3
    store.down = False
    clock.t += 1.0
    assert health.check() and store.pings == 4 and changes == [False, True]


def test_an_error_outside_the_store_errors_is_not_swallowed() -> None:
    clock = Clock()

    def broken() -> None:
        raise KeyError("a bug")

    health = StoreHealth(broken, (ConnectionError,), clock=clock)
    clock.t += 10
    with pytest.raises(KeyError):
        health.check()


def _feed(watch: LostRowsWatch, cold: int, warm: int) -> None:
    for flag in [True] * cold + [False] * warm:
        watch.observe(flag)


def test_lost_rows_fire_when_every_user_turns_cold_and_clear_when_rows_return(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = LostRowsWatch(window=20, lost_share=0.95, normal_share=0.5)
    changes: list[bool] = []
    shares: list[float] = []
    watch.on_change, watch.on_share = changes.append, shares.append
    _feed(watch, 5, 5)
    assert watch.share is None and not watch.armed  # half a window: no judgement
    _feed(watch, 5, 5)
    assert watch.share == 0.5 and watch.armed and not watch.lost and shares == [0.5]
    with caplog.at_level(logging.ERROR, "flywheel.serving.store_health"):
        _feed(watch, 18, 0)
    assert not watch.lost  # 18 of 20: below 95%
    with caplog.at_level(logging.ERROR, "flywheel.serving.store_health"):
        _feed(watch, 1, 0)
    assert watch.lost and changes == [True] and watch.share == 0.95 and shares[-1] == 0.95
    assert "online store lost its rows?" in caplog.text and "95%" in caplog.text
    _feed(watch, 20, 0)
    assert changes == [True]  # still on, said once
    _feed(watch, 0, 9)
    assert watch.lost  # 11 of 20 cold: above normal_share yet
    _feed(watch, 0, 1)
    assert not watch.lost and changes == [True, False]


def test_traffic_that_was_always_cold_never_fires() -> None:
    """A shop whose users are all new has no "before" to jump from."""
    watch = LostRowsWatch(window=10, lost_share=0.9, normal_share=0.5)
    _feed(watch, 100, 0)
    assert watch.share == 1.0 and not watch.armed and not watch.lost


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match=r"normal_share=0\.9 must be below lost_share=0\.5"):
        LostRowsWatch(10, lost_share=0.5, normal_share=0.9)
    with pytest.raises(ConfigError, match=r"serving\.normal_cold_share=0\.99"):
        load_settings(serving={"normal_cold_share": 0.99})


def test_degraded_mode_is_on_in_prod_only() -> None:
    assert load_settings("prod").serving.degraded_mode
    assert not load_settings("local").serving.degraded_mode
    assert not load_settings("kind").serving.degraded_mode
