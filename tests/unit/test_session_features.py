"""The session signal: the vectorised offline features, a brute-force reference, the online
buffer's values, and the point-in-time guarantee (no event at or after a row's time)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from flywheel.serving.sessions import LATE_REQUESTS, SessionBuffer, micros
from flywheel.session_features import (
    SESSION_FEATURES,
    SESSION_GAP,
    SESSION_SPAN,
    catalog_lookup,
    offline_session_features,
)

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
CATALOG = {"a": "shoes", "b": "shoes", "c": "hats", "d": "hats", "e": "bags"}  # "z": none


def events_table(rows: list[tuple[str, str, str, datetime]]) -> pa.Table:
    users, items, types, ts = zip(*rows, strict=True) if rows else ([], [], [], [])
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "item_id": pa.array(items, pa.string()),
            "event_type": pa.array(types, pa.string()),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        }
    )


def offline(events: list[tuple[str, str, str, datetime]], rows: list[tuple[str, str, datetime]]):
    users, items, at = zip(*rows, strict=True)
    return offline_session_features(
        events_table(events), catalog_lookup(CATALOG), list(users), list(items),
        np.array([micros(t) for t in at], np.int64),
    )  # fmt: skip


def brute_force(events: list[tuple[str, str, str, datetime]], user: str, item: str, at: datetime):
    """The definition read literally, one row at a time: the session starts at the earliest
    event time ``s >= at - span`` of the user's earlier events from which every pause, and
    the pause up to ``at``, is at most the gap."""
    frame = pd.DataFrame(events, columns=["user_id", "item_id", "event_type", "ts"])
    mine = frame[(frame.user_id == user) & (frame.ts < at)].sort_values("ts")
    start = None
    for s in sorted(set(mine.ts)):
        if s < at - SESSION_SPAN:
            continue
        stamps = [*sorted(mine.ts[mine.ts >= s]), at]
        if all(b - a <= SESSION_GAP for a, b in itertools.pairwise(stamps)):
            start = s
            break
    zero = dict.fromkeys(SESSION_FEATURES, 0.0)
    if start is None:
        return zero
    session = mine[mine.ts >= start]
    views = session[session.event_type == "view"]
    category = CATALOG.get(item)
    return {
        "session_events": float(len(session)),
        "session_views": float(len(views)),
        "session_carts": float((session.event_type == "cart").sum()),
        "session_purchases": float((session.event_type == "purchase").sum()),
        "session_seconds": (at - start).total_seconds(),
        "session_item_views": float((views.item_id == item).sum()),
        "session_cat_views": float(
            sum(CATALOG.get(i) == category for i in views.item_id) if category else 0
        ),
    }


def random_world(seed: int, n_events: int = 400, n_rows: int = 150):
    rng = random.Random(seed)
    users = ["u1", "u2", "u3", "u4"]
    items = [*CATALOG, "z"]
    events: list[tuple[str, str, str, datetime]] = []
    for user in users:
        t = T0 + timedelta(minutes=rng.randint(0, 60))
        for _ in range(n_events // len(users)):
            # mostly short pauses (sessions), sometimes a long one; some exact ties
            pause = rng.choice([0, 1, 5, 12, 29, 30, 31, 45, 90, 400])
            t += timedelta(minutes=pause, seconds=rng.choice([0, 0, 7]))
            kind = rng.choices(["view", "cart", "purchase", "click"], [8, 2, 1, 1])[0]
            events.append((user, rng.choice(items), kind, t))
    rng.shuffle(events)
    stamps = [e[3] for e in events]
    rows = []
    for _ in range(n_rows):
        # at an event's own instant, just after one, or anywhere
        base = rng.choice(stamps)
        at = rng.choice([base, base + timedelta(microseconds=1), base + timedelta(minutes=31),
                         base + timedelta(minutes=rng.randint(0, 60))])  # fmt: skip
        rows.append((rng.choice([*users, "u-new"]), rng.choice(items), at))
    return events, rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_offline_equals_brute_force_reference(seed: int) -> None:
    events, rows = random_world(seed)
    got = offline(events, rows)
    live = 0
    for k, (user, item, at) in enumerate(rows):
        want = brute_force(events, user, item, at)
        assert {n: got[n][k] for n in SESSION_FEATURES} == pytest.approx(want), (user, item, at)
        live += want["session_events"] > 0
    assert 0 < live < len(rows)  # both kinds of rows were checked


def replay(events, rows, lookahead: timedelta) -> list[dict[str, float]]:
    """Each row's online values, the buffer fed up to ``lookahead`` past the row's time in
    a shuffled order (late events are inserted in place; later ones must be ignored)."""
    pending = sorted(events, key=lambda e: e[3])
    buffer, fed, out = SessionBuffer(), 0, {}
    rng = random.Random(7)
    for k in sorted(range(len(rows)), key=lambda k: rows[k][2]):
        user, item, at = rows[k]
        batch = []
        while fed < len(pending) and pending[fed][3] < at + lookahead:
            batch.append(pending[fed])
            fed += 1
        rng.shuffle(batch)
        for e_user, e_item, kind, ts in batch:
            buffer.add(e_user, e_item, kind, ts, CATALOG.get(e_item))
        online = buffer.features(user, [item], [CATALOG.get(item)], at)
        out[k] = {n: float(online[n][0]) for n in SESSION_FEATURES}
    return [out[k] for k in range(len(rows))]


@pytest.mark.parametrize("lookahead", [timedelta(0), timedelta(minutes=50)])
def test_online_buffer_equals_offline(lookahead: timedelta) -> None:
    events, rows = random_world(3, n_rows=300)
    got = offline(events, rows)
    online = replay(events, rows, lookahead)
    for k in range(len(rows)):
        assert online[k] == {n: got[n][k] for n in SESSION_FEATURES}, rows[k]


def test_a_hand_made_session() -> None:
    m = timedelta(minutes=1)
    events = [
        ("u1", "a", "view", T0),  # a 40-minute pause: the session below starts after it
        ("u1", "b", "view", T0 + 40 * m),
        ("u1", "a", "view", T0 + 60 * m),
        ("u1", "c", "click", T0 + 70 * m),
        ("u1", "a", "cart", T0 + 85 * m),
        ("u2", "a", "view", T0 + 84 * m),
    ]
    at = T0 + 100 * m
    rows = [("u1", "a", at), ("u1", "d", at), ("u1", "a", T0 + 116 * m), ("u2", "z", at)]
    got = offline(events, rows)
    assert [got[n][0] for n in SESSION_FEATURES] == [4, 2, 1, 0, 60 * 60, 1, 2]
    assert [got[n][1] for n in SESSION_FEATURES] == [4, 2, 1, 0, 60 * 60, 0, 0]  # hats: none
    assert [got[n][2] for n in SESSION_FEATURES] == [0] * 7  # 31 min after the last: over
    assert [got[n][3] for n in SESSION_FEATURES] == [1, 1, 0, 0, 16 * 60, 0, 0]  # z: no cat


def test_the_session_is_cut_at_the_span() -> None:
    # an event every 20 minutes for 8 hours: one long session, read over the last 6 h only
    events = [("u1", "a", "view", T0 + timedelta(minutes=20 * j)) for j in range(25)]
    at = T0 + timedelta(hours=8, minutes=10)
    got = offline(events, [("u1", "a", at)])
    first = at - SESSION_SPAN  # 02:10 after T0; the first event at or after it is at 02:20
    assert got["session_events"][0] == 18
    assert got["session_seconds"][0] == (at - (first + timedelta(minutes=10))).total_seconds()
    assert got == brute_force_columns(events, [("u1", "a", at)])


def brute_force_columns(events, rows):
    found = [brute_force(events, *row) for row in rows]
    return {n: np.array([f[n] for f in found]) for n in SESSION_FEATURES}


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(microseconds=1), timedelta(days=1)])
def test_a_planted_event_at_or_after_the_row_moves_nothing(offset: timedelta) -> None:
    events, rows = random_world(4, n_rows=40)
    before = offline(events, rows)
    for k, (user, item, at) in enumerate(rows):
        planted = [(user, i, kind, at + offset) for i in (item, "a", "c")
                   for kind in ("view", "cart", "purchase", "click")]  # fmt: skip
        after = offline(events + planted, [(user, item, at)])
        want = {n: before[n][k] for n in SESSION_FEATURES}
        assert {n: after[n][0] for n in SESSION_FEATURES} == want, (user, item, at)
        if offset > LATE_REQUESTS:
            continue  # the buffer serves requests at most LATE_REQUESTS behind its newest
        buffer = SessionBuffer()
        for e_user, e_item, kind, ts in sorted(events + planted, key=lambda e: e[3]):
            if e_user == user and ts < at + timedelta(minutes=1):
                buffer.add(e_user, e_item, kind, ts, CATALOG.get(e_item))
        online = buffer.features(user, [item], [CATALOG.get(item)], at)
        assert {n: online[n][0] for n in SESSION_FEATURES} == want, (user, item, at)
    # and the planted events do count for a row just after them
    user, item, at = rows[0]
    planted = [(user, item, "view", at + offset)]
    moved = offline(events + planted, [(user, item, at + offset + timedelta(microseconds=1))])
    assert moved["session_item_views"][0] >= 1


def test_buffer_bounds_and_bad_input() -> None:
    buffer = SessionBuffer(max_users=2, max_events=3)
    for j in range(5):
        buffer.add("u1", "a", "view", T0 + timedelta(minutes=j), "shoes")
    at = T0 + timedelta(minutes=5)
    assert buffer.features("u1", ["a"], ["shoes"], at)["session_views"][0] == 3
    buffer.add("u2", "a", "view", T0, None)
    buffer.add("u3", "a", "view", T0, None)  # u1 is the least recently active: evicted
    assert len(buffer) == 2
    assert buffer.features("u1", ["a"], ["shoes"], at)["session_events"][0] == 0
    with pytest.raises(ValueError, match="event_type='like'"):
        buffer.add("u2", "a", "like", T0, None)
    with pytest.raises(ValueError, match="naive"):
        buffer.add("u2", "a", "view", datetime(2026, 3, 2), None)


def test_events_older_than_the_span_are_pruned() -> None:
    buffer = SessionBuffer()
    buffer.add("u1", "a", "view", T0, "shoes")
    buffer.add("u1", "a", "view", T0 + timedelta(hours=1), "shoes")
    later = T0 + SESSION_SPAN + LATE_REQUESTS + timedelta(seconds=1)
    buffer.add("u1", "a", "view", later, "shoes")
    assert buffer._users["u1"].ts == [micros(T0 + timedelta(hours=1)), micros(later)]
    assert buffer.dropped == 0  # left the span: not a loss
