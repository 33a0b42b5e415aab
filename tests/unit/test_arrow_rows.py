"""The direct Arrow -> SQLite rows (flywheel.feature_store.arrow_rows) against Feast's path.

Feast's path here is what ``BatchedSqliteOnlineStore.online_write_batch`` stores for the
protos Feast's ``_convert_arrow_to_proto`` makes: the reference is run, not written down.
Every feature view of ``feature_repo`` gets a random batch of its own schema (edge values
included); the direct rows must be the same bytes in the same order.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from flywheel.feature_store import arrow_rows
from flywheel.schemas import FEATURE_TABLES

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def _views() -> dict[str, Any]:
    from feast import FeatureView

    import feature_repo.definitions as d

    return {v.name: v for v in vars(d).values() if isinstance(v, FeatureView)}


def _column(field: pa.Field, n: int, rng: np.random.Generator) -> pa.Array:
    t = field.type
    if pa.types.is_timestamp(t):
        hours = rng.integers(0, 48, n)
        micros = rng.integers(0, 10**6, n)  # created stamps carry microseconds
        base = int(T0.timestamp() * 1e6)
        return pa.array(base + hours * 3_600_000_000 + micros, pa.int64()).cast(t)
    if pa.types.is_int64(t):
        edge = np.array([0, -1, 127, 128, 2**63 - 1, -(2**63), 300])
        return pa.array(np.where(rng.random(n) < 0.2, rng.choice(edge, n), rng.integers(0, 50, n)))
    if pa.types.is_float64(t):
        edge = np.array([0.0, -0.0, 1e-300, 1e300, 0.1, np.inf, -np.inf])
        return pa.array(np.where(rng.random(n) < 0.2, rng.choice(edge, n), rng.random(n) * 10))
    if pa.types.is_string(t):
        words = np.array(["u1", "u2", "é-ü", "", "x" * 300, "🛒", "a'b"], dtype=object)
        return pa.array(rng.choice(words, n).tolist(), t)
    if pa.types.is_list(t):
        inner = t.value_type
        lengths = rng.integers(0, 5, n)
        if pa.types.is_string(inner):
            return pa.array([[f"i{j}" for j in range(k)] for k in lengths], t)
        return pa.array([list(rng.random(k)) for k in lengths], t)
    raise AssertionError(f"no generator for {field}")


def _batch(name: str, n: int, seed: int) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    schema = FEATURE_TABLES[name]
    fields = list(schema)
    return pa.RecordBatch.from_arrays([_column(f, n, rng) for f in fields], schema=schema)


def _feast_rows(view: Any, batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    """What the store writes for Feast's protos of ``batch`` (its own row generator)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.utils import _convert_arrow_to_proto

    from flywheel.online_store import _epoch

    join = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
    keyed = [
        (serialize_entity_key(k, entity_key_serialization_version=3), v, ts, ct)
        for k, v, ts, ct in _convert_arrow_to_proto(batch, view, join)
    ]
    keyed.sort(key=lambda item: item[0])
    return [
        (key, name, value.SerializeToString(), extract_text_and_num(value, False)[0],
         _epoch(ts), _epoch(ct))
        for key, values, ts, ct in keyed
        for name, value in values.items()
    ]  # fmt: skip


def _direct_rows(view: Any, batch: pa.RecordBatch) -> list[tuple[Any, ...]] | None:
    from flywheel.online_store import _epoch

    rows = arrow_rows.encode(
        batch,
        [(f.name, f.dtype.to_value_type()) for f in view.features],
        {c.name: c.dtype.to_value_type() for c in view.entity_columns},
        view.batch_source.timestamp_field,
        view.batch_source.created_timestamp_column or None,
        _epoch,
    )
    return None if rows is None else list(rows)


@pytest.mark.parametrize("name", sorted(FEATURE_TABLES))
def test_every_view_gets_the_bytes_feast_writes(name: str) -> None:
    view = _views()[name]
    batch = _batch(name, 400, seed=len(name))
    direct = _direct_rows(view, batch)
    assert direct is not None
    want = _feast_rows(view, batch)
    assert len(direct) == len(want) == 400 * len(view.features)
    assert direct == want


def test_nulls_and_nan_take_feasts_own_conversion_and_match() -> None:
    view = _views()["user_activity"]
    batch = _batch("user_activity", 50, seed=1)
    i = batch.schema.get_field_index("avg_price_7d")
    j = batch.schema.get_field_index("views_7d")
    prices = batch.column(i).to_numpy().copy()
    prices[::7] = np.nan
    views = pa.array([None if k % 5 == 0 else k for k in range(50)], pa.int64())
    arrays = list(batch.columns)
    arrays[i], arrays[j] = pa.array(prices), views
    schema = batch.schema.set(j, pa.field("views_7d", pa.int64()))
    odd = pa.RecordBatch.from_arrays(arrays, schema=schema)
    direct = _direct_rows(view, odd)
    assert direct == _feast_rows(view, odd)
    nan_rows = [r for r in direct or [] if r[1] == "avg_price_7d" and r[2] == b""]
    assert len(nan_rows) == len(prices[::7])  # NaN is stored as an empty value


def test_int64_join_keys_and_duplicate_keys_keep_feasts_order() -> None:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    shop = Entity(name="shop", join_keys=["shop_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="shops",
        entities=[shop],
        schema=[Field(name="shop_id", dtype=Int64), Field(name="score", dtype=Float64)],
        source=FileSource(
            path="x.parquet", timestamp_field="ts", created_timestamp_column="created"
        ),
    )
    ts = pa.array([T0 + timedelta(hours=h) for h in (0, 1, 2, 3)], pa.timestamp("us", "UTC"))
    batch = pa.RecordBatch.from_pydict(
        {"shop_id": [5, -3, 5, 2**40], "score": [1.0, 2.0, 3.0, 4.0], "ts": ts, "created": ts}
    )
    direct = _direct_rows(view, batch)
    assert direct == _feast_rows(view, batch)
    # the duplicate key's rows stay in batch order, so the later one wins the upsert
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    five = serialize_entity_key(
        EntityKey(join_keys=["shop_id"], entity_values=[Value(int64_val=5)])
    )
    assert [r[3] for r in direct or [] if r[0] == five] == ["1.0", "3.0"]


def test_an_unsupported_key_column_declines() -> None:
    view = _views()["user_activity"]
    batch = _batch("user_activity", 5, seed=2)
    i = batch.schema.get_field_index("user_id")
    arrays = list(batch.columns)
    arrays[i] = pa.array(["a", None, "b", "c", "d"])
    odd = pa.RecordBatch.from_arrays(
        arrays, schema=batch.schema.set(i, pa.field("user_id", pa.string()))
    )
    assert _direct_rows(view, odd) is None


def test_the_store_writes_the_direct_rows_and_feast_reads_them(tmp_path: Path) -> None:
    """Real SQLite online stores (Feast's schema, made by the store's own ``update``): the
    direct write leaves the same table as Feast's conversion + ``online_write_batch``, and
    Feast's stock store reads it back."""
    from feast import RepoConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStore
    from feast.utils import _convert_arrow_to_proto

    from flywheel.online_store import STORE_TYPE, BatchedSqliteOnlineStore

    view = _views()["user_item"]
    batch = _batch("user_item", 300, seed=9)
    join = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
    protos = _convert_arrow_to_proto(batch, view, join)
    tables = []
    for how in ("feast", "direct"):
        config = RepoConfig(
            project="flywheel",
            provider="local",
            registry={"registry_type": "file", "path": str(tmp_path / f"{how}.reg")},
            online_store={"type": STORE_TYPE, "path": str(tmp_path / f"{how}.db")},
            offline_store={"type": "duckdb"},
            entity_key_serialization_version=3,
            repo_path=tmp_path,
        )
        store = BatchedSqliteOnlineStore()
        store.update(config, [], [view], [], [], partial=False)
        if how == "feast":
            store.online_write_batch(config, view, protos, None)
        else:
            assert store.write_arrow(config, view, batch)
        with sqlite3.connect(tmp_path / f"{how}.db") as db:
            tables.append(db.execute("SELECT * FROM flywheel_user_item ORDER BY 1, 2").fetchall())
    assert len(tables[0]) == len({(k.SerializeToString()) for k, *_ in protos}) * len(view.features)
    assert tables[0] == tables[1]
    # the last row of each key wins, as Feast's own write would leave it
    last = {k.SerializeToString(): (k, v) for k, v, _, _ in protos}
    keys = [k for k, _ in last.values()][:50]
    read = SqliteOnlineStore().online_read(config, view, keys)
    assert [values for _, values in read] == [v for _, v in list(last.values())[:50]]


def test_list_columns_are_encoded_directly_also_in_a_slice() -> None:
    """The list path itself (not Feast's fallback) on a batch slice, whose list offsets do
    not start at 0, as a reader's batches may be."""
    from feast.value_type import ValueType

    view = _views()["user_item_latest"]
    whole = _batch("user_item_latest", 120, seed=4)
    part = whole.slice(37, 50)
    for name, value_type in (
        ("ui_items", ValueType.STRING_LIST),
        ("ui_values", ValueType.DOUBLE_LIST),
    ):
        assert arrow_rows._list_values(part.column(name), value_type) is not None
    assert _direct_rows(view, part) == _feast_rows(view, part)
