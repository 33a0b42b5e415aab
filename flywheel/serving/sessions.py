"""Per-worker session buffer: the events a serving worker has seen, per user, bounded.

Feeds :func:`flywheel.session_features.session_values` at request time, so a served row's
session features are computed from the same events, by the same definition, as a training
row's (:func:`~flywheel.session_features.offline_session_features` over the lake).

What feeds it: every ``/feedback`` event of a request this service issued (the lake gets the
same event, at the same time, from the feedback log) and every event pushed to ``/events``
(the shop's own clicks, views, carts and purchases, which reach the lake by ingest). An event
the lake has but the worker never saw (not pushed, or seen by another worker) is missing
online: the service's session values then undercount, never overcount.

**Per-worker state.** The buffer lives in the worker's memory: with several workers (or
replicas) behind a load balancer each sees only the events routed to it, and a restart
forgets everything. That is correct for one worker, or with routing sticky by user; a
production setup with many replicas keeps the buffer in a shared store instead (e.g. one
Redis sorted set per user, ``ZADD`` on push, ``ZRANGEBYSCORE [t - span, t)`` at request
time, expiring after :data:`~flywheel.session_features.SESSION_SPAN`), read by the same
:func:`~flywheel.session_features.session_values`.

**Bounds.** Per user, events older than ``SESSION_SPAN`` + :data:`LATE_REQUESTS` before
the user's newest are dropped (no session of a request at most ``LATE_REQUESTS`` older than
that newest event can reach them; a request is normally later than every event), and at
most ``max_events`` are kept (the oldest go first); at most ``max_users`` users are held,
the least recently active evicted first. Both only drop events no session can still need,
except under a flood (a user with more than ``max_events`` events in six hours, more than
``max_users`` active users), where the service undercounts.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from flywheel.schemas import EVENT_TYPES
from flywheel.session_features import _SPAN_US, SESSION_FEATURES, session_values

#: Default bounds of a worker's buffer.
MAX_USERS = 200_000
MAX_EVENTS = 1_000
#: How far behind a user's newest buffered event a request's time may be and still be exact.
LATE_REQUESTS = timedelta(hours=1)
_KEEP_US = _SPAN_US + LATE_REQUESTS // timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(at: datetime) -> int:
    """A tz-aware datetime as µs since the epoch, exactly (no float rounding)."""
    if at.tzinfo is None:
        raise ValueError(f"ts={at.isoformat()} is naive; event times must be tz-aware")
    return (at - _EPOCH) // timedelta(microseconds=1)


@dataclass
class _UserEvents:
    ts: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    categories: list[str | None] = field(default_factory=list)


class SessionBuffer:
    """The recent events of the users one worker has seen (see the module docstring)."""

    def __init__(self, max_users: int = MAX_USERS, max_events: int = MAX_EVENTS) -> None:
        if max_users < 1 or max_events < 1:
            raise ValueError(f"max_users={max_users}, max_events={max_events}: both must be >= 1")
        self.max_users, self.max_events = max_users, max_events
        self._users: OrderedDict[str, _UserEvents] = OrderedDict()
        #: Events taken / dropped by a bound before they left the span.
        self.added = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._users)

    def add(
        self, user_id: str, item_id: str, event_type: str, at: datetime, category: str | None
    ) -> None:
        """Record one event (any order in time: a late event is inserted in place).

        Raises:
            ValueError: naming ``event_type`` when it is not an event type, or a naive ``at``.
        """
        if event_type not in EVENT_TYPES:
            raise ValueError(f"event_type={event_type!r}; expected one of {list(EVENT_TYPES)}")
        ts = micros(at)
        user = str(user_id)
        events = self._users.get(user)
        if events is None:
            events = self._users[user] = _UserEvents()
            if len(self._users) > self.max_users:
                _, evicted = self._users.popitem(last=False)
                self.dropped += len(evicted.ts)
        else:
            self._users.move_to_end(user)
        at_j = bisect.bisect_right(events.ts, ts)
        events.ts.insert(at_j, ts)
        events.types.insert(at_j, event_type)
        events.items.insert(at_j, str(item_id))
        events.categories.insert(at_j, category)
        self.added += 1
        # Older than span + LATE_REQUESTS before the newest: no session can reach them.
        cut = bisect.bisect_left(events.ts, events.ts[-1] - _KEEP_US)
        over = max(cut, len(events.ts) - self.max_events)
        if over:
            self.dropped += over - cut if over > cut else 0
            for column in (events.ts, events.types, events.items, events.categories):
                del column[:over]

    def features(
        self,
        user_id: str,
        candidates: Sequence[str],
        categories: Sequence[str | None],
        at: datetime,
    ) -> dict[str, np.ndarray]:
        """The session features of ``user_id`` against ``candidates`` at ``at`` (strictly
        earlier events only), one float64 array per :data:`SESSION_FEATURES` name."""
        events = self._users.get(str(user_id))
        if events is None:
            n = len(candidates)
            return {name: np.zeros(n) for name in SESSION_FEATURES}
        return session_values(
            events.ts, events.types, events.items, events.categories, micros(at),
            candidates, categories,
        )  # fmt: skip
