"""Synthetic event lake for benchmarks: N events in the contract layout, written day by day.

Until the simulator (``flywheel.simulate``) exists, this writes a lake of ``N`` events under
``<workspace>/lake/events/date=YYYY-MM-DD/part-00000.parquet`` plus ``items.parquet``:
~50k users per 1M events with a skewed (log-normal) activity, 2000 items with Zipf-like
popularity, 30 days, sessions of a few events minutes apart, the type mix ~85% view /
8% click / 5% cart / 2% purchase, and 0.5% of events on items missing from the catalog.
Vectorised numpy, one day in memory at a time, so 10M events never sit in memory at once.

Ids (``--ids``): ``text`` writes the integers as decimal text (``"1000042"``, what ingest
makes of integer ids), ``shop`` writes shop-like strings (``"u1000042"``, ``"sku-00017"``),
``int`` writes int64 columns (the lake layout before ids became strings, for comparing
with that code in the same run; ``benchmarks/string_ids.py``).

    python benchmarks/synth.py --events 1000000 --workspace /tmp/bench-1m
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel.schemas import EVENT_SCHEMA, ITEM_SCHEMA

START = datetime(2025, 1, 1, tzinfo=UTC)
TYPES = np.array(["view", "click", "cart", "purchase"])
TYPE_P = [0.85, 0.08, 0.05, 0.02]
DEVICES = np.array(["mobile", "desktop", "tablet"])
USER_ID_BASE, ITEM_ID_BASE, UNKNOWN_ITEM_BASE = 1_000_000, 1, 900_000
DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class SynthSummary:
    events: int
    users: int
    items: int
    days: int
    files: int


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights, dtype=np.float64)
    return cdf / cdf[-1]


#: Id styles: the kind and text of user and item ids.
ID_STYLES = ("text", "shop", "int")


def id_column(numbers: np.ndarray, style: str, kind: str) -> pa.Array:
    """Integer ids in ``style``: int64, their decimal text, or prefixed shop-like text."""
    if style == "int":
        return pa.array(numbers.astype(np.int64))
    text = pa.array(numbers.astype(np.int64)).cast(pa.string())
    if style == "text":
        return text
    if style != "shop":
        raise ValueError(f"id style {style!r}; expected one of {ID_STYLES}")
    prefix = "u" if kind == "user" else "sku-"
    return pc.binary_join_element_wise(pa.scalar(prefix), text, "")


def _schema(schema: pa.Schema, style: str) -> pa.Schema:
    """The contract with int64 ids for the ``int`` style."""
    if style != "int":
        return schema
    return pa.schema(
        [f.with_type(pa.int64()) if f.name in ("user_id", "item_id") else f for f in schema]
    )


def write_catalog(path: Path, n_items: int, rng: np.random.Generator, ids: str = "text") -> None:
    """The catalog: ``n_items`` items in 25 categories, log-normal prices."""
    cats = np.array([f"cat_{i:02d}" for i in range(25)])
    created = START - timedelta(days=60)
    table = pa.table(
        {
            "item_id": id_column(np.arange(ITEM_ID_BASE, ITEM_ID_BASE + n_items), ids, "item"),
            "category": cats[rng.integers(0, len(cats), n_items)],
            "price": np.round(rng.lognormal(3.0, 1.0, n_items), 2),
            "created_ts": pa.array([created] * n_items, ITEM_SCHEMA.field("created_ts").type),
        },
        schema=_schema(ITEM_SCHEMA, ids),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _ids(prefix: str, start: int, n: int) -> pa.Array:
    numbers = pa.array(np.arange(start, start + n)).cast(pa.string())
    return pc.binary_join_element_wise(pa.scalar(prefix), numbers, "")


def day_events(
    day: int,
    n: int,
    first_id: int,
    user_cdf: np.ndarray,
    item_cdf: np.ndarray,
    rng: np.random.Generator,
    ids: str = "text",
) -> pa.Table:
    """``n`` events of one day: sessions of geometric length, events ~1 min apart."""
    lengths = rng.geometric(0.2, n // 3 + 10)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), n) + 1]
    lengths[-1] -= lengths.sum() - n
    n_sess = len(lengths)
    sess = np.repeat(np.arange(n_sess), lengths)
    users = USER_ID_BASE + np.searchsorted(user_cdf, rng.random(n_sess))
    day_start = int((START + timedelta(days=day)).timestamp() * 1_000_000)
    sess_start = rng.integers(0, DAY_US, n_sess)
    gaps = rng.exponential(60e6, n).astype(np.int64)
    first = np.cumsum(lengths) - lengths
    offsets = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first] - gaps[first], lengths)
    ts = day_start + np.minimum(sess_start[sess] + offsets, DAY_US - 1)
    items = ITEM_ID_BASE + np.searchsorted(item_cdf, rng.random(n))
    unknown = rng.random(n) < 0.005
    items = np.where(unknown, UNKNOWN_ITEM_BASE + rng.integers(0, 100, n), items)
    order = np.argsort(ts, kind="stable")
    table = pa.table(
        {
            "event_id": _ids("e", first_id, n),
            "user_id": id_column(users[sess][order], ids, "user"),
            "item_id": id_column(items[order], ids, "item"),
            "event_type": TYPES[rng.choice(4, n, p=TYPE_P)],
            "ts": pa.array(ts[order], EVENT_SCHEMA.field("ts").type),
            "session_id": _ids(f"s{day}-", 0, n_sess).take(pa.array(sess[order])),
            "device": DEVICES[rng.integers(0, 3, n_sess)][sess[order]],
        }
    )
    return table.cast(_schema(EVENT_SCHEMA, ids))


def write_lake(
    workspace: Path,
    n_events: int,
    days: int = 30,
    n_items: int = 2000,
    seed: int = 0,
    ids: str = "text",
) -> SynthSummary:
    """Write the lake and catalog under ``workspace/lake``; returns what was written."""
    rng = np.random.default_rng(seed)
    n_users = max(100, n_events // 20)
    user_cdf = _cdf(rng.lognormal(0.0, 1.5, n_users))
    # Zipf-like popularity, shuffled so that the popular items are not the lowest ids
    item_cdf = _cdf(rng.permutation(1.0 / np.arange(1, n_items + 1) ** 0.9))
    lake = workspace / "lake"
    write_catalog(lake / "items.parquet", n_items, rng, ids)
    per_day = np.full(days, n_events // days)
    per_day[: n_events % days] += 1
    written = 0
    for day, n in enumerate(per_day):
        date = (START + timedelta(days=day)).date().isoformat()
        out = lake / "events" / f"date={date}" / "part-00000.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        table = day_events(day, int(n), written, user_cdf, item_cdf, rng, ids)
        pq.write_table(table, out)
        written += int(n)
    return SynthSummary(written, n_users, n_items, days, days)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ids", choices=ID_STYLES, default="text")
    args = parser.parse_args()
    print(write_lake(args.workspace, args.events, days=args.days, seed=args.seed, ids=args.ids))


if __name__ == "__main__":
    main()
