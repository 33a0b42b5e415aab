"""A lake that grows a day at a time, with late events, and its feature tables.

Used by ``benchmarks/online_delta.py`` and ``tests/integration/test_online_delta.py``.
Each simulated day's arrivals are that day's events plus a share of *late* events stamped
one to three days earlier (a device that synced late, a delayed batch): they change rows
of keys whose latest row lies before the previous materialization, which a time-window
materialization never revisits. The tables are computed by the feature build's own
Ray-free math (``flywheel.features.aggregate``), in seconds, and written where Feast reads
them, as ``flywheel features`` does after a day's ingest: the per-entity tables as day
folders whose unchanged days keep their file (the incremental build hard-links them), so
the delta's day shortcut is exercised; a late event rewrites its day and the later ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.features import day_parts
from flywheel.schemas import EVENT_SCHEMA, ITEM_SCHEMA

START = datetime(2024, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
_TYPES = np.array(["view", "view", "view", "view", "click", "cart", "purchase"])


@dataclass(frozen=True)
class World:
    """Users, items and how many events arrive each day."""

    users: int = 300
    items: int = 60
    events_per_day: int = 1_500
    #: Share of a day's arrivals stamped 1-3 days earlier.
    late_share: float = 0.05
    seed: int = 3

    def catalog(self) -> pa.Table:
        items = [f"sku-{i}" for i in range(self.items)]
        return pa.table(
            {
                "item_id": items,
                "category": [f"cat-{i % 7}" for i in range(self.items)],
                "price": [5.0 + (i * 37 % 90) for i in range(self.items)],
                "created_ts": pa.array([START - 30 * DAY] * self.items),
            },
            schema=ITEM_SCHEMA,
        )

    def arrivals(self, day: int) -> pa.Table:
        """The events that arrive on simulated day ``day`` (0-based)."""
        rng = np.random.default_rng([self.seed, day])
        n = self.events_per_day
        offsets = rng.integers(0, 86_400 * 10**6, n)
        late = rng.random(n) < (self.late_share if day > 0 else 0.0)
        back = rng.integers(1, min(day, 3) + 1, n) if day > 0 else np.zeros(n, dtype=int)
        days = np.where(late, day - back, day)
        base_us = int(START.timestamp() * 10**6)
        ts_us = base_us + days * 86_400 * 10**6 + offsets
        # a few busy users: most keys of a day are the same few hundred
        users = np.minimum(rng.zipf(1.3, n) - 1, self.users - 1)
        return pa.table(
            {
                "event_id": [f"d{day}-e{i}" for i in range(n)],
                "user_id": [f"u-{u}" for u in users],
                "item_id": [f"sku-{i}" for i in rng.integers(0, self.items, n)],
                "event_type": rng.choice(_TYPES, n),
                "ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
                "session_id": ["s"] * n,
                "device": ["d"] * n,
            },
            schema=EVENT_SCHEMA,
        )

    def lake(self, through_day: int) -> pa.Table:
        """Every event that has arrived by the end of ``through_day``."""
        return pa.concat_tables(self.arrivals(d) for d in range(through_day + 1))


def build_tables(events: pa.Table, catalog: pa.Table, created_us: int) -> dict[str, pa.Table]:
    """The nine feature tables (and ``user_item_latest``) of ``events``, as the build computes
    them; ``created_us`` stamps every row's ``created_timestamp`` (each build its own)."""
    from flywheel.features import aggregate as F
    from flywheel.features.keys import KeySpace, distinct_sorted

    keys = KeySpace(
        distinct_sorted([events["user_id"]]),
        distinct_sorted([events["item_id"], catalog["item_id"]]),
    )
    index = F.CatalogIndex.from_table(catalog, keys)
    partials = F.hourly_partials(events, index, keys)
    last_us = max(events["ts"].cast(pa.int64()).to_pylist())
    horizon = last_us // (3600 * 10**6) + 1
    tables = F.bucket_features(partials, index, created_us, keys, int(horizon))
    return tables | F.driver_tables(catalog, created_us)


def _same_rows(path: Path, table: pa.Table) -> bool:
    """The file holds ``table``'s rows (each build stamps ``created_timestamp`` anew)."""
    old = pq.read_table(path).drop_columns(["created_timestamp"])
    return old.equals(table.drop_columns(["created_timestamp"]).cast(old.schema))


def _write_days(table: pa.Table, dest: Path) -> None:
    """``table`` as a day folder; a day whose rows did not change keeps its file (inode)."""
    if dest.is_file():
        dest.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    days = day_parts.row_days(table)
    names = set()
    for day in np.unique(days).tolist():
        path = dest / day_parts.part_name(day)
        names.add(path.name)
        rows = table.take(pa.array(np.flatnonzero(days == day)))
        if path.is_file() and _same_rows(path, rows):
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(rows, tmp)
        tmp.replace(path)
    for path in day_parts.table_files(dest):
        if path.name not in names:
            path.unlink()


def write_tables(tables: dict[str, pa.Table], data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        dest = data_dir / f"{name}.parquet"
        if name in day_parts.DAY_PARTED:
            _write_days(table, dest)
        else:
            pq.write_table(table, dest)


def feature_end(events: pa.Table) -> datetime:
    """What ``flywheel.lake.feature_time`` gives for this lake: the end of the last event's
    hour, plus one second."""
    last_us = max(events["ts"].cast(pa.int64()).to_pylist())
    hour_end = (last_us // (3600 * 10**6) + 1) * 3600
    return datetime.fromtimestamp(hour_end + 1, UTC)


def build_day(world: World, day: int, data_dir: Path) -> datetime:
    """Write the feature tables of the lake as of ``day``; return the materialization end."""
    events = world.lake(day)
    created_us = int((START + (day + 1) * DAY).timestamp() * 10**6) + 17  # the build's clock
    write_tables(build_tables(events, world.catalog(), created_us), data_dir)
    return feature_end(events)
