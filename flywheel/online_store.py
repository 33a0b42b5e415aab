"""Feast's SQLite online store with a batched write path (the local profile's online store).

Materializing a 10M-event lake writes ~2M entity keys (~6M feature rows) into SQLite. Feast
0.67's ``SqliteOnlineStore.online_write_batch`` issues one ``execute`` per feature value in
whatever order the keys arrive, so each row pays a Python round trip and two random B-tree
inserts (the primary key and the ``entity_key`` index). This subclass writes exactly the
same rows with the same upsert statement, but:

- serializes each entity key and converts each timestamp once per key, not once per value;
- sorts the batch by serialized entity key, so both indexes grow by appending;
- hands SQLite the whole batch through one ``executemany``;
- gives the connection a larger page cache (:data:`CACHE_KIB`).

Everything else (schema, reads, ``update``/``teardown``, the on-disk format) is Feast's own,
so a database written here is read by a stock ``SqliteOnlineStore`` and vice versa
(``tests/unit/test_online_store.py`` checks both directions). Vector and text-search
configurations fall back to Feast's write path unchanged.

Feast loads this class itself from ``RepoConfig.online_store.type`` (:data:`STORE_TYPE`); its
config class is the store's name + ``Config``, as Feast requires.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _quote_id,
    _table_id,
    adapt_datetime_epoch,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.utils import to_naive_utc

from flywheel.feature_store import SQLITE_STORE_TYPE as STORE_TYPE

#: SQLite page cache per connection, KiB (SQLite's default is 2,000). Pages are allocated
#: only as they are touched.
CACHE_KIB = 65_536

_Row = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]


class BatchedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """``SqliteOnlineStoreConfig`` selecting :class:`BatchedSqliteOnlineStore`."""

    type: Literal["flywheel.online_store.BatchedSqliteOnlineStore"] = STORE_TYPE  # type: ignore[assignment]


def _epoch(ts: datetime | None) -> int | None:
    """What Feast's SQLite store writes for ``ts``: its own naive-UTC conversion, then its
    own sqlite3 datetime adapter, once per key instead of once per value."""
    return None if ts is None else adapt_datetime_epoch(to_naive_utc(ts))


def _needs_feast_write(config: RepoConfig) -> bool:
    """Vector and text-search configurations write through Feast's own method."""
    store = config.online_store
    return bool(store.vector_enabled or getattr(store, "enable_openai_compatible_store", False))


class BatchedSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store; writes a batch with one sorted ``executemany``."""

    def _get_conn(self, config: RepoConfig) -> sqlite3.Connection:
        fresh = self._conn is None
        conn = super()._get_conn(config)
        if fresh:
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        return conn

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: Sequence[_Row],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Upsert ``data`` into ``table``'s SQLite table (same rows as Feast's own method)."""
        if _needs_feast_write(config):
            super().online_write_batch(config, table, list(data), progress)
            return
        version = config.entity_key_serialization_version
        keyed = [
            (serialize_entity_key(key, entity_key_serialization_version=version), values, ts, ct)
            for key, values, ts, ct in data
        ]
        keyed.sort(key=lambda item: item[0])

        def rows() -> Any:
            for key_bin, values, event_ts, created_ts in keyed:
                event, created = _epoch(event_ts), _epoch(created_ts)
                for name, value in values.items():
                    text, _ = extract_text_and_num(value, False)
                    yield key_bin, name, value.SerializeToString(), text, event, created

        self.write_rows(config, table, rows())
        if progress:
            progress(len(keyed))

    def write_arrow(self, config: RepoConfig, table: FeatureView, batch: Any) -> bool:
        """Upsert an Arrow batch of ``table``'s rows without Feast's proto conversion
        (:mod:`flywheel.feature_store.arrow_rows`: the same rows, byte for byte). Returns
        False, having written nothing, where that module or this store's configuration
        needs Feast's own path (then call ``online_write_batch``)."""
        from flywheel.feature_store import arrow_rows

        if _needs_feast_write(config):
            return False
        if config.entity_key_serialization_version != arrow_rows.KEY_VERSION:
            return False
        source: Any = table.batch_source
        rows = arrow_rows.encode(
            batch,
            [(f.name, f.dtype.to_value_type()) for f in table.features],
            {c.name: c.dtype.to_value_type() for c in table.entity_columns},
            source.timestamp_field,
            source.created_timestamp_column or None,
            _epoch,
        )
        if rows is None:
            return False
        self.write_rows(config, table, rows)
        return True

    def write_rows(self, config: RepoConfig, table: FeatureView, rows: Any) -> None:
        """One transaction: Feast's upsert of each ``(entity_key, feature_name, value,
        value_text, event_ts, created_ts)`` row, in the order given."""
        conn = self._get_conn(config)
        name = _table_id(
            config.project, table, config.registry.enable_online_feature_view_versioning
        )
        sql = (
            f"INSERT INTO {_quote_id(name)} "
            "(entity_key, feature_name, value, value_text, event_ts, created_ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, value_text = excluded.value_text, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts;"
        )
        with conn:
            conn.executemany(sql, rows)
