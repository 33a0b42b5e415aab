"""Raw web-log events from the simulated world, written day by day in bounded Parquet chunks.

How a day unfolds:

* Each user starts ``Poisson(activity x weekday factor)`` sessions (weekends ~20% busier
  than weekdays, the week averaging to ``activity``). Start times follow ``HOURLY_RHYTHM``
  (quiet 1-6 am, busy 7-10 pm; the simulator's clock is UTC and users live in it).
* A session has a ``device`` (desktop/mobile/tablet) and ``1 + Poisson(4)`` item page
  views, a minute apart on average. Each view's item is chosen from ``LISTING_SIZE``
  candidates, each drawn from the user's current tastes (a category, then an item by
  popularity) or, with probability ``TRENDING_SHARE``, from the global popularity; the user
  picks among them in proportion to the ground-truth click probability.
* A view leads to ``cart`` with ``World.cart_given_view``, a cart to ``purchase`` with
  ``World.purchase_given_cart`` (both drift-aware at the view's time).
* ``click`` is not emitted here: clicks are reactions to *served* rankings, produced by
  :mod:`flywheel.simulate.traffic` and fed back through the serving API.

Randomness is keyed by ``(seed, day, batch)``, so a day's events depend only on the world,
the seed and the day index: generating days 0-6 then 7-13 (``start_day=7``) gives the same
events as days 0-13 at once. Ids carry the world seed, run seed and day, so runs with
different seeds or days never collide in the lake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.schemas import EVENT_SCHEMA, ITEM_SCHEMA, TS_TYPE
from flywheel.simulate.world import DAY_US, MEAN_SESSIONS_PER_DAY, World

log = logging.getLogger(__name__)

#: Relative session-start intensity per UTC hour of day (0-23).
HOURLY_RHYTHM: Final = np.array(
    [0.45, 0.30, 0.20, 0.15, 0.15, 0.20, 0.35, 0.60, 0.80, 0.90, 0.95, 1.00,
     1.10, 1.05, 1.00, 1.00, 1.05, 1.15, 1.35, 1.60, 1.80, 1.75, 1.40, 0.85]
)  # fmt: skip
#: Session-rate factor by weekday (Monday=0); averages to 1 over a week.
WEEKDAY_FACTOR: Final = np.array([0.946, 0.946, 0.946, 0.946, 0.946, 1.135, 1.135])
DEVICES: Final = ("desktop", "mobile", "tablet")
DEVICE_SHARE: Final = np.array([0.38, 0.52, 0.10])
_EMITTED_TYPES: Final = ("view", "cart", "purchase")
MEAN_VIEWS_PER_SESSION: Final = 5.0
#: Candidates in the listing a view is chosen from, and the share drawn from "trending".
LISTING_SIZE: Final = 3
TRENDING_SHARE: Final = 0.2
_MEAN_DWELL_S: Final = 60.0
_MEAN_CART_DELAY_S: Final = 30.0
_MEAN_BUY_DELAY_S: Final = 90.0
#: Sessions simulated together; bounds memory at roughly 6x this many events.
SESSION_BATCH: Final = 50_000
#: Measured mean events (views + carts + purchases) per session for default worlds; used
#: only to size worlds for a target event count.
EVENTS_PER_SESSION: Final = 6.0


class SimulationError(ValueError):
    """An argument of the event simulation is out of range; the message names it."""


@dataclass(frozen=True)
class SimulationSummary:
    """What one ``simulate_events`` run wrote."""

    events: int
    views: int
    carts: int
    purchases: int
    clicks: int
    sessions: int
    users: int
    active_users: int
    items: int
    days: int
    files: int
    seconds: float
    out_dir: str

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def users_for_events(n_events: int, days: int) -> int:
    """Users whose ``days`` of activity yield about ``n_events`` events (within ~10%)."""
    per_user = MEAN_SESSIONS_PER_DAY * EVENTS_PER_SESSION * days
    return max(1, round(n_events / per_user))


def simulate_events(
    world: World,
    days: int,
    out_dir: str | Path,
    chunk_events: int = 1_000_000,
    seed: int = 0,
    start_day: int = 0,
) -> SimulationSummary:
    """Simulate ``days`` days of web logs and write them with the catalog and the world.

    Writes ``out_dir/events/part-NNNNN.parquet`` (``EVENT_SCHEMA``, at most ``chunk_events``
    rows each, time-ordered apart from sessions straddling a batch), ``out_dir/items.parquet``
    (``ITEM_SCHEMA``) and ``out_dir/world/`` (:meth:`World.save`). Existing part files are
    replaced. Days run from ``start_day`` to ``start_day + days - 1`` after ``world.start``;
    events never reach past the last day.

    Returns:
        A :class:`SimulationSummary` (counts by type, users, files, seconds).
    """
    if days < 1 or chunk_events < 1 or start_day < 0:
        raise SimulationError(
            f"days={days}, chunk_events={chunk_events}, start_day={start_day}; expected "
            "days >= 1, chunk_events >= 1, start_day >= 0"
        )
    t0 = time.perf_counter()
    out = Path(out_dir)
    events_dir = out / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    for old in events_dir.glob("part-*.parquet"):
        old.unlink()
    write_items(world, out / "items.parquet")
    world.save(out / "world")
    writer = _ChunkWriter(events_dir, chunk_events)
    end_us = world.start_us + (start_day + days) * DAY_US
    counts = np.zeros(len(_EMITTED_TYPES), dtype=np.int64)
    sessions, active = 0, np.zeros(world.n_users, dtype=bool)
    for day in range(start_day, start_day + days):
        for table, session_users, by_type in _simulate_day(world, day, seed, end_us):
            writer.add(table)
            sessions += session_users.size
            active[session_users] = True
            counts += by_type
        log.info("simulated day %d/%d: %d events so far", day - start_day + 1, days, writer.rows)
    writer.close()
    seconds = time.perf_counter() - t0
    views, carts, purchases = (int(c) for c in counts)
    summary = SimulationSummary(
        events=writer.rows, views=views, carts=carts, purchases=purchases, clicks=0,
        sessions=sessions, users=world.n_users, active_users=int(active.sum()),
        items=world.n_items, days=days, files=writer.files, seconds=seconds, out_dir=str(out),
    )  # fmt: skip
    log.info("wrote %d events in %d files (%.0f events/s)", summary.events, summary.files,
             summary.events_per_second)  # fmt: skip
    return summary


def write_items(world: World, path: str | Path) -> Path:
    """Write the item catalog (``ITEM_SCHEMA``) to one Parquet file."""
    names = pa.array(world.category_names, type=pa.string())
    table = pa.Table.from_arrays(
        [
            world.ids.item_ids(np.arange(world.n_items, dtype=np.int64)),
            pa.DictionaryArray.from_arrays(pa.array(world.item_category), names).cast(pa.string()),
            pa.array(world.item_price, type=pa.float64()),
            pa.array(world.item_created_us, type=TS_TYPE),
        ],
        schema=ITEM_SCHEMA,
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return Path(path)


class _ChunkWriter:
    """Buffers tables and writes ``part-NNNNN.parquet`` files of ``chunk_events`` rows."""

    def __init__(self, directory: Path, chunk_events: int) -> None:
        self.directory, self.chunk_events = directory, chunk_events
        self.pending: list[pa.Table] = []
        self.pending_rows = self.rows = self.files = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= self.chunk_events:
            self._flush(self.chunk_events)

    def close(self) -> None:
        if self.pending_rows:
            self._flush(self.pending_rows)

    def _flush(self, n: int) -> None:
        buffered = pa.concat_tables(self.pending)
        pq.write_table(buffered.slice(0, n), self.directory / f"part-{self.files:05d}.parquet")
        rest = buffered.slice(n)
        self.pending, self.pending_rows = [rest], rest.num_rows
        self.files += 1
        self.rows += n


def _simulate_day(
    world: World, day: int, seed: int, end_us: int
) -> Iterator[tuple[pa.Table, np.ndarray, np.ndarray]]:
    """Yield one day's events in tables of ``SESSION_BATCH`` sessions, in start order, with
    the user (index) of each session and the event count per emitted type of each table."""
    rng = np.random.default_rng([seed, day, 0])
    day_us = world.start_us + day * DAY_US
    weekday = (world.start.weekday() + day) % 7
    per_user = rng.poisson(world.activity * WEEKDAY_FACTOR[weekday])
    users = np.repeat(np.arange(world.n_users, dtype=np.int64), per_user)
    hours = rng.choice(24, users.size, p=HOURLY_RHYTHM / HOURLY_RHYTHM.sum())
    clock_us = hours * 3_600_000_000 + rng.integers(0, 3_600_000_000, users.size)
    # Rhythm is in UTC clock hours even when ``world.start`` is not midnight.
    starts = day_us + (clock_us - day_us % DAY_US) % DAY_US
    order = np.argsort(starts, kind="stable")
    users, starts = users[order], starts[order]
    devices = rng.choice(len(DEVICES), users.size, p=DEVICE_SHARE).astype(np.int8)
    n_views = 1 + rng.poisson(MEAN_VIEWS_PER_SESSION - 1, users.size)
    prefix = f"{world.seed:x}.{seed:x}.{day:x}."
    event_offset = 0
    for b, lo in enumerate(range(0, users.size, SESSION_BATCH)):
        hi = min(lo + SESSION_BATCH, users.size)
        brng = np.random.default_rng([seed, day, b + 1])
        batch = _Sessions(users[lo:hi], starts[lo:hi], devices[lo:hi], n_views[lo:hi], lo)
        table, by_type = _session_events(world, brng, batch, prefix, event_offset, end_us)
        event_offset += table.num_rows
        yield table, users[lo:hi], by_type


@dataclass(frozen=True)
class _Sessions:
    users: np.ndarray
    starts: np.ndarray
    devices: np.ndarray
    n_views: np.ndarray
    first_index: int  # day-level index of the first session (for session ids)


def _session_events(
    world: World, rng: np.random.Generator, s: _Sessions, prefix: str, offset: int, end_us: int
) -> tuple[pa.Table, np.ndarray]:
    """Views, carts and purchases of a batch of sessions as an ``EVENT_SCHEMA`` table, and
    the count of each emitted event type."""
    sess = np.repeat(np.arange(s.users.size), s.n_views)
    users = s.users[sess]
    dwell = rng.exponential(_MEAN_DWELL_S * 1e6, sess.size).astype(np.int64)
    cum = np.cumsum(dwell)
    first = np.cumsum(s.n_views) - s.n_views
    view_ts = s.starts[sess] + cum - cum[first][sess]
    items = choose_viewed_items(world, rng, users, view_ts)
    carted = np.flatnonzero(rng.random(sess.size) < world.cart_given_view(users, items, view_ts))
    cart_ts = view_ts[carted] + 1_000_000 + _delays(rng, _MEAN_CART_DELAY_S, carted.size)
    p_buy = world.purchase_given_cart(users[carted], items[carted], view_ts[carted])
    bought = carted[rng.random(carted.size) < p_buy]
    buy_ts = cart_ts[np.searchsorted(carted, bought)]
    buy_ts = buy_ts + 1_000_000 + _delays(rng, _MEAN_BUY_DELAY_S, bought.size)
    rows = np.concatenate([np.arange(sess.size), carted, bought])
    kinds = np.repeat(np.arange(3, dtype=np.int8), [sess.size, carted.size, bought.size])
    ts = np.minimum(np.concatenate([view_ts, cart_ts, buy_ts]), end_us - 1)
    order = np.argsort(ts, kind="stable")
    rows, kinds, ts = rows[order], kinds[order], ts[order]
    table = pa.Table.from_arrays(
        [
            _hex_ids(f"e{prefix}", offset + np.arange(ts.size), width=8),
            world.ids.user_ids(users[rows]),
            world.ids.item_ids(items[rows]),
            _labels(kinds, _EMITTED_TYPES),
            pa.array(ts, type=TS_TYPE),
            _hex_ids(f"s{prefix}", s.first_index + sess[rows], width=7),
            _labels(s.devices[sess[rows]], DEVICES),
        ],
        schema=EVENT_SCHEMA,
    )
    return table, np.array([sess.size, carted.size, bought.size], dtype=np.int64)


def choose_viewed_items(
    world: World, rng: np.random.Generator, users: np.ndarray, ts_us: np.ndarray
) -> np.ndarray:
    """The item each (user, time) views: one of ``LISTING_SIZE`` candidates (by taste, or
    trending), picked in proportion to the ground-truth click probability."""
    n, k = users.size, LISTING_SIZE
    taste_cdf = np.cumsum(world.taste_at(users, ts_us), axis=1)
    u = rng.random((n, k))
    cats = np.minimum((taste_cdf[:, None, :] < u[:, :, None]).sum(axis=2), world.n_categories - 1)
    cand = world.category_sampler.draw(cats, rng.random((n, k)))
    trending = rng.random((n, k)) < TRENDING_SHARE
    n_trending = int(trending.sum())
    cand[trending] = world.popularity_sampler.draw(
        np.zeros(n_trending, np.int64), rng.random(n_trending)
    )
    p = np.cumsum(world.click_prob(users[:, None], cand, ts_us[:, None]), axis=1)
    pick = (p < rng.random(n)[:, None] * p[:, -1:]).sum(axis=1)
    return cand[np.arange(n), np.minimum(pick, k - 1)]


def _delays(rng: np.random.Generator, mean_s: float, n: int) -> np.ndarray:
    return rng.exponential(mean_s * 1e6, n).astype(np.int64)


def _labels(codes: np.ndarray, names: tuple[str, ...]) -> pa.Array:
    """Small-integer codes to a plain string array (fast: via a dictionary array)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names)).cast(pa.string())


_HEX: Final = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_ids(prefix: str, counters: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded lowercase hex of each counter, built without Python loops."""
    counters = np.asarray(counters, dtype=np.uint64)
    if counters.size and int(counters.max()) >= 16**width:
        raise SimulationError(f"id counter {int(counters.max())} needs more than {width} hex")
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    digits = _HEX[((counters[:, None] >> shifts) & np.uint64(15)).astype(np.intp)]
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    chars = np.concatenate([np.broadcast_to(head, (counters.size, head.size)), digits], axis=1)
    length = head.size + width
    offsets = np.arange(counters.size + 1, dtype=np.int32) * length
    return pa.StringArray.from_buffers(
        counters.size, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars))
    )
