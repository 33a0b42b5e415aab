"""Unit tests of the pure feature math (no Ray): partials, windows, tables vs brute force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_features_reference import assert_tables_match, brute_force, latest_pairs, unpacked

from flywheel.features import aggregate as F
from flywheel.features.build import BucketPlan, lake_files, read_catalog
from flywheel.features.keys import KeySpace, distinct_sorted
from flywheel.schemas import EVENT_SCHEMA, FEATURE_TABLES, ITEM_SCHEMA

T0 = datetime(2025, 3, 10, 12, tzinfo=UTC)  # a snapshot time (hour end)
CREATED_US = int(datetime(2025, 4, 1, tzinfo=UTC).timestamp() * 1e6)


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["10", "11", "12", "13"],
            "category": ["shoes", "books", "shoes", "toys"],
            "price": [20.0, 5.5, 100.0, 7.25],
            "created_ts": [T0 - timedelta(days=30)] * 4,
        }
    )


def _edge_events() -> pd.DataFrame:
    """Events exactly at hour boundaries, at T-W (inclusive) and at T (excluded)."""
    rows = [
        # user 1: views around the 12:00 snapshot of T0
        (1, 10, "view", T0 - timedelta(hours=1)),  # 11:00:00 exactly: in 1h window of T0
        (1, 11, "view", T0 - timedelta(microseconds=1)),  # last µs before T0
        (1, 12, "cart", T0 - timedelta(hours=24)),  # exactly T0-24h: in 24h window
        (1, 12, "view", T0 - timedelta(hours=24, microseconds=1)),  # just outside 24h
        (1, 13, "view", T0 - timedelta(days=7)),  # exactly T0-7d: in 7d window
        (1, 10, "purchase", T0 - timedelta(days=7, microseconds=1)),  # just outside 7d
        (1, 10, "click", T0),  # exactly T0: excluded at T0, own snapshot at T0+1h
        (1, 999, "view", T0 - timedelta(minutes=30)),  # unknown item
        # user 2: only unknown items and carts (zero-view rates, no prices)
        (2, 998, "cart", T0 - timedelta(hours=3)),
        (2, 998, "purchase", T0 - timedelta(hours=2, minutes=59)),
        (2, 997, "view", T0 + timedelta(days=1)),
        # user 3: many events in one hour and across days
        *[(3, 10 + i % 4, "view", T0 + timedelta(minutes=7 * i)) for i in range(20)],
        (3, 11, "purchase", T0 + timedelta(days=6, hours=23)),
        (3, 11, "view", T0 + timedelta(days=8)),
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])


def _random_events(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, 12 * 86_400, n) // 600 * 600  # many exact boundaries
    return pd.DataFrame(
        {
            # string order is not numeric order, and ids need not look like numbers
            "user_id": rng.choice(["7", "10", "u-9", "u-10", "sku 3", "Ω-1"], n),
            "item_id": rng.choice(["10", "11", "12", "13", "500", "9"], n),
            "event_type": rng.choice(["view", "view", "view", "cart", "purchase", "click"], n),
            "ts": [T0 + timedelta(seconds=int(s)) for s in seconds],
        }
    )


def _sparse_events(n: int, seed: int) -> pd.DataFrame:
    """Few events over 90 days: windows empty and refill, 7- and 30-day windows close."""
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, 90 * 86_400, n) // 1800 * 1800
    seconds[: n // 4] = seconds[: n // 4] // 86_400 * 86_400  # whole days: exits at entries
    return pd.DataFrame(
        {
            "user_id": rng.choice(["7", "10", "u-9", "u-10", "sku 3", "Ω-1", "a", "b"], n),
            "item_id": rng.choice(["10", "11", "12", "13", "500", "9"], n),
            "event_type": rng.choice(["view", "view", "cart", "purchase", "click"], n),
            "ts": [T0 + timedelta(seconds=int(s)) for s in seconds],
        }
    )


def _to_arrow(events: pd.DataFrame) -> pa.Table:
    full = events.assign(event_id="e", session_id="s", device="d")
    full = full.astype({"user_id": str, "item_id": str})
    return pa.Table.from_pandas(full[EVENT_SCHEMA.names], schema=EVENT_SCHEMA, preserve_index=False)


def _keys(events: pa.Table, items: pa.Table) -> KeySpace:
    """The key space the build makes: the events' users; the events' and catalog's items."""
    return KeySpace(
        distinct_sorted([events["user_id"]]),
        distinct_sorted([events["item_id"], items["item_id"]]),
    )


def _build(events: pd.DataFrame, n_batches: int = 3, n_buckets: int = 2) -> dict[str, pd.DataFrame]:
    """The Ray build's math without Ray: batches -> partials -> range buckets -> tables."""
    items = pa.Table.from_pandas(_items(), schema=ITEM_SCHEMA, preserve_index=False)
    table = _to_arrow(events.sample(frac=1.0, random_state=0))  # order must not matter
    keys = _keys(table, items)
    catalog = F.CatalogIndex.from_table(items, keys)
    parts = [
        F.hourly_partials(table.slice(i, -(-table.num_rows // n_batches)), catalog, keys)
        for i in range(0, table.num_rows, -(-table.num_rows // n_batches))
    ]
    partials = F.concat_partials(parts)
    plan = BucketPlan(0, len(keys.users) - 1, n_buckets, 0, len(keys.items) - 1, n_buckets)
    bucket = plan.assign(partials["kind"], partials["entity"])
    horizon = _horizon(table)
    out: dict[str, list[pa.Table]] = {}
    for b in sorted(set(bucket.tolist())):
        mine = {c: v[bucket == b] for c, v in partials.items()}
        tables = F.bucket_features(mine, catalog, CREATED_US, keys, horizon)
        for name, t in tables.items():
            out.setdefault(name, []).append(t)
    for name, t in F.driver_tables(items, CREATED_US).items():
        out[name] = [t]
    return {k: pa.concat_tables(v).to_pandas() for k, v in out.items()}


def _horizon(events: pa.Table) -> int:
    """The end (epoch hour) of the hour of the latest event, as the build's scan finds it."""
    return int(pc.max(events["ts"]).value) // F.US_PER_HOUR + 1


@pytest.mark.parametrize(
    "events",
    [_edge_events(), _random_events(400, 1), _sparse_events(300, 2)],
    ids=["edges", "random", "sparse"],
)
def test_tables_equal_brute_force(events: pd.DataFrame) -> None:
    built = _build(events)
    expected = brute_force(events, _items())
    for name in FEATURE_TABLES:
        if name != "user_item_latest":
            assert_tables_match(built[name], expected[name])
    horizon = _horizon(_to_arrow(events))
    assert unpacked(built["user_item_latest"]) == latest_pairs(expected["user_item"], horizon)


def test_edge_snapshot_values_by_hand() -> None:
    ua = _build(_edge_events())["user_activity"]
    at_t0 = ua[(ua.user_id == "1") & (ua.event_timestamp == pd.Timestamp(T0))].iloc[0]
    # 1h: 11:00:00, 11:59:59.999999, 11:30 (unknown); 24h adds nothing; 7d adds T0-7d
    assert (at_t0.views_1h, at_t0.views_24h, at_t0.views_7d) == (3, 3, 5)
    assert (at_t0.carts_24h, at_t0.purchases_7d, at_t0.clicks_7d) == (1, 0, 0)
    assert at_t0.avg_price_7d == pytest.approx((20.0 + 5.5 + 100.0 + 7.25) / 4)
    assert at_t0.last_event_unix == pytest.approx((T0 - timedelta(microseconds=1)).timestamp())
    user2 = ua[ua.user_id == "2"].iloc[0]
    assert (user2.cart_rate_7d, user2.conversion_rate_7d, user2.avg_price_7d) == (0, 0, 0)


def test_written_schemas_equal_contract() -> None:
    items = pa.Table.from_pandas(_items(), schema=ITEM_SCHEMA, preserve_index=False)
    events = _to_arrow(_edge_events())
    keys = _keys(events, items)
    catalog = F.CatalogIndex.from_table(items, keys)
    partials = F.hourly_partials(events, catalog, keys)
    tables = F.bucket_features(partials, catalog, CREATED_US, keys, _horizon(events))
    tables |= F.driver_tables(items, CREATED_US)
    for name, schema in FEATURE_TABLES.items():
        assert tables[name].schema.equals(schema), name


def test_window_sums_matches_loop() -> None:
    rng = np.random.default_rng(7)
    group = np.sort(rng.integers(0, 5, 300))
    hour = np.concatenate([np.sort(rng.integers(0, 400, (group == g).sum())) for g in range(5)])
    values = rng.integers(0, 9, (300, 2))
    qg, qe = rng.integers(0, 5, 50), rng.integers(0, 450, 50)
    got = F.window_sums(group, hour, values, qg, qe, 24)
    for k in range(50):
        mask = (group == qg[k]) & (hour >= qe[k] - 24) & (hour < qe[k])
        assert got[k].tolist() == values[mask].sum(axis=0).tolist()


def test_unknown_event_type_is_named() -> None:
    events = _edge_events()
    events.loc[0, "event_type"] = "wishlist"
    items = pa.Table.from_pandas(_items(), schema=ITEM_SCHEMA)
    table = _to_arrow(events)
    keys = _keys(table, items)
    catalog = F.CatalogIndex.from_table(items, keys)
    with pytest.raises(F.FeatureBuildError, match="wishlist"):
        F.hourly_partials(table, catalog, keys)


def test_duplicate_catalog_item_is_named() -> None:
    items = pa.Table.from_pandas(pd.concat([_items(), _items().iloc[:1]]), schema=ITEM_SCHEMA)
    keys = KeySpace(pa.array([], pa.string()), distinct_sorted([items["item_id"]]))
    with pytest.raises(F.FeatureBuildError, match="item_id '10'"):
        F.CatalogIndex.from_table(items, keys)


def test_empty_lake_and_missing_catalog_raise(tmp_path) -> None:
    with pytest.raises(F.FeatureBuildError, match="is empty"):
        lake_files(tmp_path / "events")
    with pytest.raises(F.FeatureBuildError, match="does not exist"):
        read_catalog(tmp_path / "items.parquet")
