"""Unit tests of flywheel.feature_store and feature_repo: configuration, definitions, errors.

No registry, online store or retrieval is touched here (see tests/integration/test_feast_*).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel import feature_store as fs
from flywheel.config import Settings
from flywheel.schemas import FEATURE_TABLES

# Contract arrow types -> the Feast types the definitions must declare.
FEAST_TYPE = {
    pa.int64(): "Int64",
    pa.float64(): "Float64",
    pa.string(): "String",
    pa.list_(pa.string()): "Array(String)",
    pa.list_(pa.float64()): "Array(Float64)",
}
TIMESTAMPS = {"event_timestamp", "created_timestamp"}


def test_importing_the_module_does_not_import_feast():
    code = "import sys, flywheel.feature_store, feature_repo; print('feast' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_repo_config_local_defaults(tmp_path):
    settings = Settings(workspace=tmp_path)
    config = fs.repo_config(settings)
    assert config.project == "flywheel"
    assert config.provider == "local"
    assert config.offline_store.type == "flywheel.feast_asof.DuckDBAsofOfflineStore"
    assert config.online_store.type == "flywheel.online_store.BatchedSqliteOnlineStore"
    assert Path(config.online_store.path) == tmp_path / "feast" / "online.db"
    assert Path(config.registry.path) == tmp_path / "feast" / "registry.db"
    assert config.registry.registry_type == "file"
    assert Path(config.repo_path) == tmp_path / "features"
    assert config.entity_key_serialization_version == 3


def test_repo_config_dask_redis_and_custom_registry(tmp_path):
    settings = Settings(
        workspace=tmp_path,
        feast={
            "project": "p1",
            "offline_store": "dask",
            "online_store": "redis",
            "redis_connection_string": "redis.example:6380,db=1",
            "registry": "postgresql+psycopg://u@db/feast",
        },
    )
    config = fs.repo_config(settings)
    assert config.project == "p1"
    assert config.offline_store.type == "dask"
    assert config.online_store.type == "redis"
    assert config.online_store.connection_string == "redis.example:6380,db=1"
    assert config.registry.path == "postgresql+psycopg://u@db/feast"
    assert config.registry.registry_type == "sql"


def test_feature_service_name_follows_settings(tmp_path):
    settings = Settings(workspace=tmp_path, feast={"feature_service_version": 3})
    assert fs.feature_service_name(settings) == "ranking_v3"


def _views() -> dict[str, Any]:
    from feast import FeatureView

    import feature_repo.definitions as d

    return {v.name: v for v in vars(d).values() if isinstance(v, FeatureView)}


#: The ttl of each view: snapshot views 7 days, change-point views their longest window.
TTLS = {
    "user_activity": timedelta(days=7),
    "user_category": timedelta(days=7),
    "item_activity": timedelta(days=7),
    "user_item": timedelta(days=30),
    "user_item_latest": timedelta(days=30),
    "user_category_history": timedelta(days=30),
    "user_activity_30d": timedelta(days=30),
    "item_activity_30d": timedelta(days=30),
}


def test_feature_views_declare_the_contract_schemas():
    views = _views()
    assert set(views) == set(FEATURE_TABLES)
    for name, schema in FEATURE_TABLES.items():
        view = views[name]
        declared = {f.name: str(f.dtype) for f in [*view.entity_columns, *view.features]}
        expected = {f.name: FEAST_TYPE[f.type].upper() for f in schema if f.name not in TIMESTAMPS}
        assert {k: v.upper() for k, v in declared.items()} == expected, name
        assert view.batch_source.path == f"{name}.parquet"
        assert view.batch_source.timestamp_field == "event_timestamp"
        assert view.batch_source.created_timestamp_column == "created_timestamp"
    assert views["user_activity"].stream_source.name == "user_activity_push"
    assert {n: v.ttl for n, v in views.items() if v.ttl} == TTLS
    assert not views["item_catalog"].ttl and not views["category_price"].ttl
    assert [e for e in views["user_item"].entities] == ["user", "item"]


V1_VIEWS = ("user_activity", "user_category", "item_activity", "item_catalog")


@pytest.mark.parametrize("service", ["ranking_v1", "ranking_v2"])
def test_ranking_services_use_whole_views_but_not_the_category_key(service):
    import feature_repo.definitions as d
    from flywheel.ranking import FEATURE_SETS

    projections = getattr(d, service).feature_view_projections
    used = {p.name: [f.name for f in p.features] for p in projections}
    online_form = {"user_item_latest"}  # read for user_item by serving, not in a service
    assert set(used) == (
        set(V1_VIEWS) if service == "ranking_v1" else set(FEATURE_TABLES) - online_form
    )
    assert used["item_catalog"] == ["price"]
    for name in set(used) - {"item_catalog"}:
        keys = {f.name for f in _views()[name].entity_columns}
        assert used[name] == [n for n in FEATURE_TABLES[name].names if n not in TIMESTAMPS | keys]
    # what the service returns is what ranking.model_inputs expects of it, in order
    assert [n for names in used.values() for n in names] == list(FEATURE_SETS[service].raw)


def test_ranking_v2_starts_with_ranking_v1():
    """A v1 champion can be scored on v2 rows: v2's raw features and model columns
    begin with v1's."""
    from flywheel.ranking import FEATURE_SETS

    v1, v2 = FEATURE_SETS["ranking_v1"], FEATURE_SETS["ranking_v2"]
    assert v2.raw[: len(v1.raw)] == v1.raw
    assert v2.model[: len(v1.model)] == v1.model
    assert len(set(v2.model)) == len(v2.model) == 49


def test_definitions_are_anchored_to_the_data_dir_without_touching_the_module(tmp_path):
    from feast import FileSource

    import feature_repo.definitions as d

    objects = fs._definitions(tmp_path / "features")
    paths = {o.name: o.path for o in objects if isinstance(o, FileSource)}
    assert paths == {
        f"{name}_source": str(tmp_path / "features" / f"{name}.parquet") for name in FEATURE_TABLES
    }
    views = {o.name: o for o in objects if type(o).__name__ == "FeatureView"}
    assert views["user_activity"].batch_source.path == paths["user_activity_source"]
    assert d.user_activity_source.path == "user_activity.parquet"


def test_apply_refuses_an_undefined_service_version(tmp_path):
    settings = Settings(workspace=tmp_path, feast={"feature_service_version": 9})
    with pytest.raises(fs.FeatureServiceNotFoundError, match=r"v9'.*ranking_v1, ranking_v2"):
        fs.apply(settings)
    assert not (tmp_path / "feast").exists()


def test_missing_feature_tables_name_the_file_and_the_fix(tmp_path):
    settings = Settings(workspace=tmp_path)
    settings.feature_data_dir.mkdir(parents=True)
    (settings.feature_data_dir / "user_activity.parquet").touch()
    with pytest.raises(fs.FeatureTablesMissingError) as err:
        fs.check_feature_tables(settings)
    message = str(err.value)
    assert str(settings.feature_data_dir / "item_catalog.parquet") in message
    assert "user_activity.parquet" not in message
    assert "flywheel features" in message
    entities = pd.DataFrame({"event_timestamp": [datetime.now(UTC)]})
    with pytest.raises(fs.FeatureTablesMissingError, match=r"item_activity\.parquet"):
        fs.historical_features(settings, entities)
    with pytest.raises(fs.FeatureTablesMissingError, match="flywheel features"):
        fs.materialize(settings, end=datetime.now(UTC))


def test_materialize_refuses_a_naive_end(tmp_path):
    with pytest.raises(fs.FeatureStoreError, match="end=2024-03-01T00:00:00 is naive"):
        fs.materialize(Settings(workspace=tmp_path), end=datetime(2024, 3, 1))


def test_utc_column_converts_mixed_time_zones_to_the_same_instants():
    plus2 = timezone(timedelta(hours=2))
    values = [datetime(2024, 3, 1, 12, tzinfo=UTC), datetime(2024, 3, 1, 14, tzinfo=plus2)]
    got = fs._utc_column(pd.Series(values, dtype=object), "ts")
    assert str(got.dtype) == "datetime64[ns, UTC]"
    assert got.tolist() == [pd.Timestamp("2024-03-01 12:00", tz="UTC")] * 2
    aware = pd.Series(pd.to_datetime(["2024-03-01 14:00"]).tz_localize(plus2))
    assert fs._utc_column(aware, "ts").tolist() == [pd.Timestamp("2024-03-01 12:00", tz="UTC")]


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(pd.to_datetime(["2024-03-01"])),
        pd.Series([datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1)], dtype=object),
        pd.Series(["2024-03-01T00:00:00Z"]),
    ],
    ids=["naive-dtype", "one-naive-value", "strings"],
)
def test_utc_column_refuses_naive_or_non_timestamps_naming_the_column(values):
    with pytest.raises(fs.EntityDataFrameError, match="column 'event_timestamp'"):
        fs._utc_column(values, "event_timestamp")


def test_missing_columns_are_named():
    frame = pd.DataFrame({"user_id": [1], "event_timestamp": [datetime.now(UTC)]})
    with pytest.raises(fs.EntityDataFrameError, match=r"missing column.*'item_id', 'category'"):
        fs._require_columns(
            frame, ["user_id", "item_id", "category", "event_timestamp"], "entity_df"
        )


# ---- the ASOF offline store (flywheel.feast_asof) ------------------------------------------


def test_the_asof_store_is_what_feast_loads_for_the_default_setting(tmp_path):
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

    from flywheel import feast_asof

    config = fs.repo_config(Settings(workspace=tmp_path))
    assert isinstance(config.offline_store, feast_asof.DuckDBAsofOfflineStoreConfig)
    store = get_offline_store_from_config(config.offline_store)
    assert type(store) is feast_asof.DuckDBAsofOfflineStore
    stock = fs.repo_config(Settings(workspace=tmp_path, feast={"offline_store": "duckdb"}))
    assert type(get_offline_store_from_config(stock.offline_store)).__name__ == (
        "DuckDBOfflineStore"
    )


def test_parquet_paths_resolve_against_the_repo_path_and_others_go_to_the_stock_store(tmp_path):
    from feast import FileSource

    from flywheel.feast_asof import _parquet_path

    config: Any = SimpleNamespace(repo_path=tmp_path)

    def source(path: str) -> FileSource:
        return FileSource(name="s", path=path, timestamp_field="event_timestamp")

    assert _parquet_path(config, source("t/a.parquet")) == str(tmp_path / "t" / "a.parquet")
    assert _parquet_path(config, source("/abs/a.parquet")) == "/abs/a.parquet"
    assert _parquet_path(config, source("file:///abs/a.parquet")) == "/abs/a.parquet"
    assert _parquet_path(config, source("s3://bucket/a.parquet")) is None
    assert _parquet_path(config, source("t/a.csv")) is None


T = datetime(2024, 3, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


def _asof_result(tmp_path, plans_ttl: list[timedelta | None], entities: pd.DataFrame):
    """Run the ASOF query of one hand-made table (source column ``src_val``) per ttl."""
    from flywheel import feast_asof

    rows = [  # user, event time, created time, value
        (1, T - 2 * timedelta(days=1), T - 2 * timedelta(days=1), 1.0),
        (1, T, T + timedelta(minutes=1), 2.0),
        (1, T, T + timedelta(minutes=5), 3.0),  # same event time, created later: wins
        (2, T - timedelta(days=7), T - timedelta(days=7), 4.0),  # exactly at the ttl limit
        (3, T - timedelta(days=7) - US, T - timedelta(days=7), 5.0),  # 1 us past it
    ]
    table = pd.DataFrame(rows, columns=["uid", "ts", "created", "src_val"])
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp_path / "t.parquet")
    plans = [
        feast_asof.ViewPlan(
            name=f"v{i}",
            scan=feast_asof._scan(str(tmp_path / "t.parquet")),
            keys=(("uid", "user_id"),),
            timestamp="ts",
            created="created",
            features=(("src_val", f"val{i}"),),
            ttl_us=int(ttl.total_seconds() * 1e6) if ttl else None,
        )
        for i, ttl in enumerate(plans_ttl)
    ]
    config = feast_asof.DuckDBAsofOfflineStoreConfig()
    job = feast_asof.AsofRetrievalJob(entities, "event_timestamp", plans, config)
    return job.to_df()


def test_asof_query_picks_the_latest_row_within_ttl_in_entity_order(tmp_path):
    plus2 = timezone(timedelta(hours=2))
    cases = [  # user, entity time, expected with a 7-day ttl, expected without a ttl
        (1, T.astimezone(plus2), 3.0, 3.0),
        (1, T - timedelta(hours=1), 1.0, 1.0),
        (2, T, 4.0, 4.0),
        (3, T, np.nan, 5.0),
        (4, T, np.nan, np.nan),  # no rows at all
        (1, T - 3 * timedelta(days=1), np.nan, np.nan),  # before the user's first row
        (1, T - US, 1.0, 1.0),  # just before the tied rows
    ]
    entities = pd.DataFrame(
        {
            "label": [10 + i for i in range(len(cases))],
            "user_id": [c[0] for c in cases],
            "event_timestamp": pd.Series([c[1] for c in cases], dtype=object),
        }
    )
    got = _asof_result(tmp_path, [timedelta(days=7), None], entities)
    assert list(got.columns) == ["label", "user_id", "event_timestamp", "val0", "val1"]
    assert got["label"].tolist() == entities["label"].tolist()
    want = pd.to_datetime(entities["event_timestamp"], utc=True)
    assert (got["event_timestamp"] == want).all()
    np.testing.assert_array_equal(got["val0"].to_numpy(float), [c[2] for c in cases])
    np.testing.assert_array_equal(got["val1"].to_numpy(float), [c[3] for c in cases])
