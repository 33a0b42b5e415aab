"""Whether the online store answers, and whether it still holds its rows.

Two watches, both per worker and both free on the fast path (no extra online read):

- :class:`StoreHealth`, a circuit breaker. A serving read that fails with one of
  :func:`store_errors` marks the store **down**; while it is down requests do not touch it
  (they answer degraded or 503 at once) except one per ``retry_s``, which tries it for
  real, and the readiness probe pings it at most as often. Any success marks it **up**
  again: the Redis client reconnects on its own, no restart needed. While it is up the
  readiness probe pings it at most every ``check_s``, so a store that died between
  requests is noticed without traffic.
- :class:`LostRowsWatch`. An online store that answers but lost its rows (a Redis
  restarted without persistence, a flushed database) makes every user look new. The
  watch keeps the cold flags of the last ``window`` requests that read the store; when
  their cold share reaches ``lost_share`` after a full window was at or below
  ``normal_share``, that is an incident (a gauge and an error log line), cleared when the
  share is back at or below ``normal_share`` (after the next materialization). A shop
  whose traffic has always been mostly new users never arms it.

:func:`serving_online_store` builds the online store instance serving reads through,
failing fast: Feast's Redis client retries a refused connection three times with
exponential backoff (seconds per request, on the event loop); serving's retries once at once and
gives up after ``timeout_s``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import RepoConfig

log = logging.getLogger(__name__)


def is_redis(config: RepoConfig) -> bool:
    return getattr(config.online_store, "type", "") == "redis"


def store_errors(config: RepoConfig) -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the online store cannot answer" (not a bug: a 503)."""
    errors: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    if is_redis(config):
        import redis

        # BusyLoadingError (a restarted Redis loading its dump) is a ConnectionError.
        errors += (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    else:
        errors += (sqlite3.OperationalError,)
    return errors


def describe_store(config: RepoConfig) -> str:
    """``online store Redis at 'host:6379'`` or ``online store SQLite at '/path'``."""
    if is_redis(config):
        where = str(config.online_store.connection_string).split(",", 1)[0]
        return f"online store Redis at {where!r}"
    return f"online store SQLite at {getattr(config.online_store, 'path', '?')!r}"


def serving_online_store(config: RepoConfig, timeout_s: float) -> Any:
    """Feast's online store for ``config``, whose Redis client fails fast: no retries, and
    ``timeout_s`` to connect and to hear back (the same instance serves every view)."""
    from feast.infra.online_stores.helpers import get_online_store_from_config

    online: Any = get_online_store_from_config(config.online_store)
    if is_redis(config):
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Feast makes its client on first use from the connection string (which cannot
        # carry a Retry); making it now lets us change it before any connection exists.
        client = online._get_client(config.online_store)
        # One immediate retry: a connection left from before a Redis restart is reopened
        # at once; a store that is down costs two refused connects, not seconds.
        client.set_retry(Retry(NoBackoff(), 1))
        client.connection_pool.connection_kwargs.update(
            socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
    return online


def ping_store(online: Any, config: RepoConfig) -> None:
    """One cheap round trip to the online store; raises one of :func:`store_errors`."""
    if is_redis(config):
        online._get_client(config.online_store).ping()
    else:
        online._get_conn(config).execute("SELECT 1").fetchall()


class StoreHealth:
    """The circuit breaker of one worker's online store (see the module docstring)."""

    def __init__(
        self,
        ping: Callable[[], None],
        errors: tuple[type[BaseException], ...],
        retry_s: float = 1.0,
        check_s: float = 5.0,
        what: str = "online store",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ping, self.errors, self.what = ping, errors, what
        self.retry_s, self.check_s, self.clock = retry_s, check_s, clock
        #: Read on every request: one attribute, no call.
        self.up = True
        self.failures = 0
        self.last_error: str | None = None
        self._next_try = 0.0
        self._next_check = clock() + check_s
        #: Called with the new state on every change (the service's gauge).
        self.on_change: Callable[[bool], None] | None = None
        #: Called on every failed read or ping (the service's counter).
        self.on_failure: Callable[[], None] | None = None

    def try_now(self) -> bool:
        """Whether a request should read the store: always while up; while down, one
        request per ``retry_s`` (it claims the slot, so concurrent ones skip)."""
        if self.up:
            return True
        now = self.clock()
        if now < self._next_try:
            return False
        self._next_try = now + self.retry_s
        return True

    def failed(self, exc: BaseException) -> None:
        """A read or ping failed with ``exc``: the store is down."""
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._next_try = self.clock() + self.retry_s
        if self.on_failure is not None:
            self.on_failure()
        if self.up:
            self.up = False
            log.error("%s is unreachable (%s); retrying every %g s", self.what, exc, self.retry_s)
            if self.on_change is not None:
                self.on_change(False)

    def succeeded(self) -> None:
        """A read or ping succeeded: the store is up (a no-op while it already is)."""
        if self.up:
            return
        self.up = True
        self.last_error = None
        self._next_check = self.clock() + self.check_s
        log.warning("%s answers again", self.what)
        if self.on_change is not None:
            self.on_change(True)

    def check(self) -> bool:
        """The readiness probe: the state after a ping, when one is due (every ``retry_s``
        while down, every ``check_s`` while up); the known state otherwise."""
        now = self.clock()
        due = now >= self._next_check if self.up else now >= self._next_try
        if not due:
            return self.up
        self._next_check, self._next_try = now + self.check_s, now + self.retry_s
        try:
            self.ping()
        except self.errors as exc:
            self.failed(exc)
        else:
            self.succeeded()
        return self.up


class LostRowsWatch:
    """Rolling share of cold users over the last ``window`` store reads; flags the jump to
    ~100% that a store which lost its rows causes (see the module docstring)."""

    def __init__(
        self, window: int = 200, lost_share: float = 0.98, normal_share: float = 0.9
    ) -> None:
        if not 0 <= normal_share < lost_share <= 1:
            raise ValueError(
                f"normal_share={normal_share} must be below lost_share={lost_share}, in [0, 1]"
            )
        self.window, self.lost_share, self.normal_share = window, lost_share, normal_share
        self._flags = bytearray(window)
        self._at = self._seen = self._cold = 0
        #: A full window was at or below ``normal_share``: a jump can be judged.
        self.armed = False
        #: The incident is on.
        self.lost = False
        #: Called with the new state on every change (the service's gauge).
        self.on_change: Callable[[bool], None] | None = None
        #: Called with the share each time the window has turned over and at every change
        #: of ``lost`` (a gauge: it lags the requests by at most one window).
        self.on_share: Callable[[float], None] | None = None

    @property
    def share(self) -> float | None:
        """The cold share of the last ``window`` requests (None until that many)."""
        return self._cold / self.window if self._seen >= self.window else None

    def observe(self, cold: bool) -> None:
        """Count one request that read the store; ``cold``: its user had no fresh row."""
        flags, at = self._flags, self._at
        self._cold += cold - flags[at]
        flags[at] = cold
        self._at = (at + 1) % self.window
        if self._seen < self.window:
            self._seen += 1
            if self._seen < self.window:
                return
        cold_n = self._cold
        if self._at == 0 and self.on_share is not None:
            self.on_share(cold_n / self.window)
        if cold_n <= self.normal_share * self.window:
            self.armed = True
            if self.lost:
                self._set(False, cold_n)
        elif self.armed and not self.lost and cold_n >= self.lost_share * self.window:
            self._set(True, cold_n)

    def _set(self, lost: bool, cold_n: int) -> None:
        self.lost = lost
        share = cold_n / self.window
        if lost:
            log.error(
                "online store lost its rows? %.0f%% of the last %d requests found no row for "
                "their user (it had been at most %.0f%%); reload the online store "
                "(`flywheel features --full-reload`) or restore it",
                100 * share, self.window, 100 * self.normal_share,
            )  # fmt: skip
        else:
            log.warning(
                "online store rows are back: %.0f%% of the last %d requests were cold users",
                100 * share, self.window,
            )  # fmt: skip
        if self.on_share is not None:
            self.on_share(share)
        if self.on_change is not None:
            self.on_change(lost)
