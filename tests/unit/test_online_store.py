"""The batched SQLite online store writes exactly what Feast's own SQLite store writes.

Both stores are real Feast stores on real SQLite files: the same rows go through each
store's ``online_write_batch`` and the two tables are compared row for row (keys, values,
text values, timestamps), after a first write and after an upsert of overlapping keys.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from feast import Entity, FeatureView, Field, FileSource, RepoConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Float32, Int64, String
from feast.value_type import ValueType

from flywheel.online_store import STORE_TYPE, BatchedSqliteOnlineStore

COLUMNS = "entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts"
T0 = datetime(2025, 1, 13, 12, 30, 15, 250_000, tzinfo=UTC)


def _view() -> FeatureView:
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    category = Entity(name="category", join_keys=["category"], value_type=ValueType.STRING)
    source = FileSource(path="unused.parquet", timestamp_field="event_timestamp")
    return FeatureView(
        name="user_category",
        entities=[user, category],
        ttl=timedelta(days=7),
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="category", dtype=String),
            Field(name="cat_views_7d", dtype=Int64),
            Field(name="cat_affinity_7d", dtype=Float32),
            Field(name="top_item", dtype=String),
        ],
        source=source,
    )


def _config(tmp_path, store_type: str) -> RepoConfig:
    return RepoConfig(
        project="flywheel",
        provider="local",
        registry={"registry_type": "file", "path": str(tmp_path / "registry.db")},
        online_store={
            "type": store_type,
            "path": str(tmp_path / f"{store_type.rsplit('.', 1)[-1]}.db"),
        },
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=tmp_path,
    )


def _rows(users: range, shift: int) -> list:
    rows = []
    # Keys arrive unsorted, as Feast's conversion hands them over.
    for user in sorted(users, key=lambda u: (u * 7919) % 1009):
        for category in ("books", "garden"):
            key = EntityKey(
                join_keys=["user_id", "category"],
                entity_values=[Value(int64_val=user), Value(string_val=category)],
            )
            values = {
                "cat_views_7d": Value(int64_val=user + shift),
                "cat_affinity_7d": Value(float_val=(user % 10) / 10 + shift),
                "top_item": Value(string_val=f"item-{user}-{shift}"),
            }
            created = None if user % 3 else T0 + timedelta(hours=shift)
            rows.append((key, values, T0 + timedelta(minutes=user + shift), created))
    return rows


def _dump(path: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute(f"SELECT {COLUMNS} FROM flywheel_user_category").fetchall())


def _write(store, config, view, rows) -> None:
    store.online_write_batch(config, view, rows, progress=None)


@pytest.fixture
def stores(tmp_path):
    view = _view()
    pair = []
    for store_cls, store_type in (
        (SqliteOnlineStore, "sqlite"),
        (BatchedSqliteOnlineStore, STORE_TYPE),
    ):
        config = _config(tmp_path, store_type)
        store = store_cls()
        store.update(config, [], [view], [], [], partial=False)
        pair.append((store, config))
    return view, pair


def test_batched_writes_match_feast_sqlite_row_for_row(stores):
    view, [(stock, stock_cfg), (batched, batched_cfg)] = stores
    first = _rows(range(300), shift=0)
    _write(stock, stock_cfg, view, first)
    _write(batched, batched_cfg, view, first)
    stock_rows = _dump(stock_cfg.online_store.path)
    assert len(stock_rows) == 300 * 2 * 3
    assert _dump(batched_cfg.online_store.path) == stock_rows

    # An upsert over half the keys plus new ones: updated in place, never duplicated.
    second = _rows(range(150, 450), shift=1)
    _write(stock, stock_cfg, view, second)
    _write(batched, batched_cfg, view, second)
    stock_rows = _dump(stock_cfg.online_store.path)
    assert len(stock_rows) == 450 * 2 * 3
    assert _dump(batched_cfg.online_store.path) == stock_rows


def test_feast_reads_what_the_batched_store_wrote(stores):
    view, [_, (batched, batched_cfg)] = stores
    rows = _rows(range(20), shift=2)
    _write(batched, batched_cfg, view, rows)
    keys = [key for key, *_ in rows]
    # Feast's own reader (a fresh connection) on the batched store's database.
    read = SqliteOnlineStore().online_read(batched_cfg, view, keys)
    for (ts, values), (_, written, event_ts, _) in zip(read, rows, strict=True):
        assert ts == event_ts.replace(microsecond=0)
        assert values == written


def test_batched_store_connection_has_a_larger_page_cache(stores):
    _, [_, (batched, batched_cfg)] = stores
    conn = batched._get_conn(batched_cfg)
    assert conn.execute("PRAGMA cache_size").fetchone()[0] < -2000
