"""A Feast offline store that does point-in-time joins with DuckDB's ASOF LEFT JOIN.

Feast's stock DuckDB store (ibis) inner-joins every entity row with every feature row of
its key inside the ttl window, then keeps the latest with a window function: with hourly
snapshots that is ~168 candidate rows per entity row for a 7-day ttl. Here each feature
view is instead deduplicated once (one row per join keys and event timestamp, the latest
``created_timestamp`` winning, as in Feast) and matched with one ASOF LEFT JOIN on the join
keys and ``entity.event_timestamp >= view.event_timestamp``: one candidate per entity row.
A match older than the view's ttl is then nulled (ttl 0 or None never expires), which is
the same answer as Feast's "latest row inside the ttl window".

Feast loads this class itself from ``RepoConfig.offline_store.type`` (``STORE_TYPE``; its
config class is the store's name + ``Config`` in this module), so Feast is imported at the
top here: nothing else in Flywheel imports this module. Everything but
``get_historical_features`` is the stock DuckDB store's, and the stock implementation also
answers what this one does not cover (a SQL entity query, ``filter_by_created_timestamp``,
non-Parquet or remote sources, substrait on-demand views).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.data_format import ParquetFormat
from feast.feature_view import FeatureView
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.duckdb import (
    DuckDBOfflineStore,
    DuckDBOfflineStoreConfig,
    _write_data_source,
)
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from pydantic import Field, StrictStr

log = logging.getLogger(__name__)

#: The value of ``RepoConfig.offline_store.type`` that selects this store.
STORE_TYPE = "flywheel.feast_asof.DuckDBAsofOfflineStore"
#: Names of the entity table and its row-number column inside the query.
_ENTITY = "__asof_entity_df"
_ROW = "__asof_row"


class AsofSourceError(ValueError):
    """Raised when a feature view's Parquet source lacks a column the retrieval needs."""


class DuckDBAsofOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Config of ``DuckDBAsofOfflineStore``: the stock DuckDB fields plus engine limits."""

    type: StrictStr = STORE_TYPE
    #: DuckDB ``memory_limit`` for a retrieval, e.g. ``"4GB"`` (None: DuckDB's 80% of RAM).
    memory_limit: str | None = None
    #: DuckDB worker threads for a retrieval (None: one per core).
    threads: int | None = Field(default=None, ge=1)
    #: Where DuckDB may spill when over ``memory_limit`` (None: DuckDB's default).
    temp_directory: str | None = None


@dataclass(frozen=True)
class ViewPlan:
    """What one feature view contributes to the query.

    ``keys`` pairs each source join-key column with its entity column; ``features`` pairs
    each source feature column with its output name; ``ttl_us`` is None for no expiry.
    """

    name: str
    scan: str
    keys: tuple[tuple[str, str], ...]
    timestamp: str
    created: str | None
    features: tuple[tuple[str, str], ...]
    ttl_us: int | None


def _quote(name: str) -> str:
    """A SQL identifier, quoted (column names come from user data)."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ---- planning ----------------------------------------------------------------------------


def _parquet_path(config: RepoConfig, source: Any) -> str | None:
    """The local Parquet file or folder a source reads, or None if DuckDB can't read it here.

    Relative paths are resolved against ``repo_path`` like the dask store does (the stock
    DuckDB store reads them against the working directory).
    """
    if type(source) is not FileSource:  # subclasses (Iceberg, Lance, ...) read differently
        return None
    path = source.path
    parquet = isinstance(source.file_format, ParquetFormat) or (
        source.file_format is None and path.endswith(".parquet")
    )
    parsed = urlparse(path)
    if not parquet or parsed.scheme not in ("", "file"):
        return None
    path = parsed.path if parsed.scheme == "file" else path
    return FileSource.get_uri_for_file_path(config.repo_path, path)


def _scan(path: str) -> str:
    """A ``read_parquet`` call over one file, or every Parquet file under a folder."""
    if Path(path).is_dir():
        files = _literal(str(Path(path) / "**" / "*.parquet"))
        return f"read_parquet({files}, hive_partitioning=true)"
    return f"read_parquet({_literal(path)})"


def plan_view(
    config: RepoConfig, view: FeatureView, feature_refs: Sequence[str], full_feature_names: bool
) -> ViewPlan | None:
    """Plan one view's part of the join, or None if its source needs the stock store.

    Args:
        config: the repo config (``repo_path`` anchors relative source paths).
        view: the feature view, with the projection the feature service gave it.
        feature_refs: every requested ``view:feature`` reference; this view's are picked
            by its projection's name (alias and version tag included), as Feast does.
        full_feature_names: name outputs ``<view or alias>__<feature>``.
    """
    source = view.batch_source
    path = _parquet_path(config, source)
    if source is None or path is None:
        return None
    prefix = f"{view.projection.name_to_use()}:"
    names = [ref.split(":", 1)[1] for ref in feature_refs if ref.startswith(prefix)]
    # field_mapping maps a source column to the name the view uses for it.
    column = {new: old for old, new in source.field_mapping.items()}
    base = view.projection.name_alias or view.name
    join_map = view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}
    ttl_us = view.ttl // timedelta(microseconds=1) if view.ttl else None
    return ViewPlan(
        name=view.name,
        scan=_scan(path),
        keys=tuple((column.get(k, k), e) for k, e in join_map.items()),
        timestamp=source.timestamp_field,
        created=source.created_timestamp_column or None,
        features=tuple(
            (column.get(n, n), f"{base}__{n}" if full_feature_names else n) for n in names
        ),
        ttl_us=ttl_us or None,
    )


def check_sources(plans: Sequence[ViewPlan]) -> None:
    """Raise ``AsofSourceError`` naming the view and file if a file or column is missing."""
    con = duckdb.connect()
    try:
        for plan in plans:
            try:
                described = con.execute(f"DESCRIBE SELECT * FROM {plan.scan}").fetchall()
            except duckdb.IOException as exc:
                raise AsofSourceError(f"feature view {plan.name!r}: {plan.scan}: {exc}") from exc
            have = [row[0] for row in described]
            need = [k for k, _ in plan.keys] + [plan.timestamp, *[f for f, _ in plan.features]]
            need += [plan.created] if plan.created else []
            missing = [c for c in need if c not in have]
            if missing:
                raise AsofSourceError(
                    f"feature view {plan.name!r}: source {plan.scan} lacks column(s) "
                    f"{', '.join(map(repr, missing))}; it has {', '.join(have)}"
                )
    finally:
        con.close()


# ---- the queries -------------------------------------------------------------------------


def _view_cte(plan: ViewPlan, bounds: tuple[datetime, datetime] | None) -> str:
    """The view deduplicated: keys ``k<i>``, ``__ts`` and features ``f<j>``.

    Rows after the last entity time, or expired before the first, can never match: they
    are filtered where DuckDB can skip Parquet row groups. Of the rows before the first
    entity time only each key's latest can match (for any entity row it is later than every
    other such row and still not after it), so only that one is kept: with a 30-day ttl and
    a 14-day training window this drops most of a busy view's rows before the ASOF join
    sorts them (what remains grows with the window, not with the ttl).
    """
    ts = _quote(plan.timestamp)
    cols = [f"{_quote(src)} AS k{i}" for i, (src, _) in enumerate(plan.keys)]
    cols.append(f"CAST({ts} AS TIMESTAMPTZ) AS __ts")
    cols += [f"{_quote(src)} AS f{j}" for j, (src, _) in enumerate(plan.features)]
    select = f"SELECT {', '.join(cols)} FROM {plan.scan}"
    keys = [_quote(src) for src, _ in plan.keys]
    created = _quote(plan.created) if plan.created is not None else None
    # One row per (keys, event time): the latest created wins, as in Feast's dedupe.
    dedupe = (
        f" QUALIFY row_number() OVER (PARTITION BY {', '.join([*keys, ts])} "
        f"ORDER BY {created} DESC) = 1"
        if created is not None
        else ""
    )
    if bounds is None:
        return f"v AS ({select}{dedupe})"
    low, high = (f"TIMESTAMPTZ {_literal(t.isoformat())}" for t in bounds)
    recent = f"{select} WHERE {ts} >= {low} AND {ts} <= {high}{dedupe}"
    older = f"{select} WHERE {ts} < {low}"
    if plan.ttl_us is not None:
        older += f" AND {ts} >= {low} - INTERVAL {plan.ttl_us} MICROSECONDS"
    order = f"{ts} DESC" + (f", {created} DESC" if created is not None else "")
    partition = ", ".join(keys)
    older += f" QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY {order}) = 1"
    return f"v AS ({recent} UNION ALL {older})"


def view_sql(
    plan: ViewPlan, timestamp_column: str, bounds: tuple[datetime, datetime] | None
) -> str:
    """One view's features for every entity row, as one DuckDB query.

    Args:
        plan: the view.
        timestamp_column: the entity column holding each row's UTC event time.
        bounds: earliest and latest entity time (None if there are no entity rows).

    Returns:
        A query over the registered entity table (``__asof_entity_df``: the row number
        ``__asof_row``, the event time and the view's join keys) that yields one row per
        entity row, in row number order, with the view's features, nulled past the ttl.
    """
    ts = _quote(timestamp_column)
    select = []
    for j, (_, name) in enumerate(plan.features):
        value = f"v.f{j}"
        if plan.ttl_us is not None:
            fresh = f"v.__ts >= e.{ts} - INTERVAL {plan.ttl_us} MICROSECONDS"
            value = f"CASE WHEN {fresh} THEN {value} END"
        select.append(f"{value} AS {_quote(name)}")
    on = [f"e.{_quote(entity)} = v.k{k}" for k, (_, entity) in enumerate(plan.keys)]
    on.append(f"e.{ts} >= v.__ts")
    return (
        f"WITH {_view_cte(plan, bounds)} SELECT {', '.join(select)} FROM {_ENTITY} AS e "
        f"ASOF LEFT JOIN v ON {' AND '.join(on)} ORDER BY e.{_ROW}"
    )


# ---- entity rows -------------------------------------------------------------------------


def entity_table(entity_df: pd.DataFrame, timestamp_column: str) -> pa.Table:
    """The entity rows as Arrow, event times in UTC, plus a row number to keep their order.

    Timestamps may be tz-aware in any zones, mixed zones in an object column included;
    naive ones are taken as UTC, as Feast's stores do.
    """
    stamps = entity_df[timestamp_column]
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert("UTC")
    else:
        stamps = pd.to_datetime(stamps, utc=True)
    arrays = [
        pa.Array.from_pandas(stamps if name == timestamp_column else entity_df[name])
        for name in entity_df.columns
    ]
    names = [str(name) for name in entity_df.columns]
    table = pa.Table.from_arrays(arrays, names=names)
    return table.append_column(_ROW, pa.array(range(len(entity_df)), type=pa.int64()))


def _bounds(table: pa.Table, timestamp_column: str) -> tuple[datetime, datetime] | None:
    column = table[timestamp_column]
    if len(column) == 0 or column.null_count == len(column):
        return None
    low, high = pc.min_max(column).values()
    return low.as_py(), high.as_py()


# ---- the retrieval job -------------------------------------------------------------------


class AsofRetrievalJob(RetrievalJob):
    """A lazy ASOF retrieval: the queries run (in a fresh DuckDB) on ``to_df``/``to_arrow``.

    One query per view, each over a narrow copy of the entity rows (row number, time, join
    keys): DuckDB never sorts the wide rows, and holds one view's working set at a time.
    The answers are in entity row order, so they are appended to the entity columns as
    they are, without a join.
    """

    def __init__(
        self,
        entity_df: pd.DataFrame,
        timestamp_column: str,
        plans: Sequence[ViewPlan],
        config: DuckDBAsofOfflineStoreConfig,
        repo_path: str = "",
        full_feature_names: bool = False,
        on_demand_feature_views: Sequence[OnDemandFeatureView] = (),
        feature_refs: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self._entities = entity_table(entity_df, timestamp_column)
        self._timestamp = timestamp_column
        bounds = _bounds(self._entities, timestamp_column)
        self._queries = [(p, view_sql(p, timestamp_column, bounds)) for p in plans if p.features]
        self._config = config
        self._repo_path = repo_path
        self._full_feature_names = full_feature_names
        self._on_demand_feature_views = list(on_demand_feature_views)
        self._metadata = RetrievalMetadata(
            features=list(feature_refs),
            keys=[str(c) for c in entity_df.columns if c != timestamp_column],
            min_event_timestamp=bounds[0] if bounds else None,
            max_event_timestamp=bounds[1] if bounds else None,
        )

    def _connect(self) -> duckdb.DuckDBPyConnection:
        settings: dict[str, Any] = {}
        if self._config.memory_limit:
            settings["memory_limit"] = self._config.memory_limit
        if self._config.threads:
            settings["threads"] = self._config.threads
        if self._config.temp_directory:
            settings["temp_directory"] = self._config.temp_directory
        con = duckdb.connect(config=settings)
        # Naive Parquet times are read as UTC, and results come back in UTC (ICU is built in
        # but only settable once connected).
        con.execute("SET TimeZone = 'UTC'")
        return con

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        table = self._entities
        con = self._connect()
        try:
            for plan, sql in self._queries:
                keys = dict.fromkeys(entity for _, entity in plan.keys)
                con.register(_ENTITY, self._entities.select([_ROW, self._timestamp, *keys]))
                # Streamed batches: DuckDB keeps no materialized copy of the answer.
                began = time.perf_counter()
                part = con.sql(sql).to_arrow_reader(1_000_000).read_all()
                con.unregister(_ENTITY)
                log.info(
                    "ASOF join of %s: %d rows in %.1fs",
                    plan.name, part.num_rows, time.perf_counter() - began,
                )  # fmt: skip
                if part.num_rows != table.num_rows:
                    raise RuntimeError(
                        f"feature view {plan.name!r}: the ASOF join returned {part.num_rows} "
                        f"rows for {table.num_rows} entity rows"
                    )
                for name in part.column_names:
                    table = table.append_column(name, part[name])
        finally:
            con.close()
        return table.drop_columns([_ROW])

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def to_sql(self) -> str:
        """The DuckDB queries, one per view (over the registered ``__asof_entity_df``)."""
        return ";\n".join(sql for _, sql in self._queries)

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self._on_demand_feature_views

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._metadata

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: int | None = None,
    ) -> None:
        """Write the result where ``storage`` says, with the stock DuckDB store's writer."""
        import ibis

        table = ibis.memtable(self.to_arrow(timeout=timeout))
        source = storage.to_data_source()
        _write_data_source(table, source, self._repo_path, "overwrite", allow_overwrite)


# ---- the store ---------------------------------------------------------------------------


class DuckDBAsofOfflineStore(DuckDBOfflineStore):
    """The stock DuckDB offline store with an ASOF-join ``get_historical_features``."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        """Point-in-time-correct features for ``entity_df`` (Feast's offline store API).

        Each entity row gets, per view, the row with the same join keys and the latest
        event timestamp at or before the entity's (ties: latest created timestamp), null
        if none or if that row is older than the view's ttl. The result holds every entity
        column (event times in UTC), then the features, in entity row order.

        Raises:
            AsofSourceError: a view's Parquet file lacks a column the request needs.
            FeastEntityDFMissingColumnsError: ``entity_df`` lacks a join key column.
        """
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        plans = [plan_view(config, v, feature_refs, full_feature_names) for v in feature_views]
        why = _stock_reason(entity_df, filter_by_created_timestamp, plans, odfvs)
        if why or not isinstance(entity_df, pd.DataFrame):
            log.info("using the stock DuckDB point-in-time join: %s", why)
            return DuckDBOfflineStore.get_historical_features(
                config,
                feature_views,
                feature_refs,
                entity_df,  # type: ignore[arg-type]  # the stock store takes None too
                registry,
                project,
                full_feature_names,
                filter_by_created_timestamp,
            )
        ready = [p for p in plans if p is not None]
        check_sources(ready)
        schema = dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
        timestamp = offline_utils.infer_event_timestamp_from_entity_df(schema)
        keys = {entity for plan in ready for _, entity in plan.keys}
        offline_utils.assert_expected_columns_in_entity_df(schema, keys, timestamp)
        log.info("ASOF point-in-time join: %d entity rows, %d views", len(entity_df), len(ready))
        store_config = config.offline_store
        if not isinstance(store_config, DuckDBAsofOfflineStoreConfig):
            store_config = DuckDBAsofOfflineStoreConfig()
        return AsofRetrievalJob(
            entity_df,
            timestamp,
            ready,
            store_config,
            repo_path=str(config.repo_path),
            full_feature_names=full_feature_names,
            on_demand_feature_views=odfvs,
            feature_refs=feature_refs,
        )


def _stock_reason(
    entity_df: pd.DataFrame | str | None,
    filter_by_created_timestamp: bool,
    plans: Sequence[ViewPlan | None],
    odfvs: Sequence[OnDemandFeatureView],
) -> str:
    """Why the stock store must answer this request ('' if the ASOF join can)."""
    if not isinstance(entity_df, pd.DataFrame):
        return "the entity rows are not a DataFrame"
    if filter_by_created_timestamp:
        return "filter_by_created_timestamp needs a second inequality in the join"
    if any(p is None for p in plans):
        return "a feature view's source is not a local Parquet FileSource"
    if any(v.mode == "substrait" for v in odfvs):
        return "substrait on-demand feature views transform the ibis query"
    return ""
