"""The Feast feature store end to end: point-in-time retrieval, materialize, online, push.

Feature tables are built here by hand in the contract shape; every retrieval is checked
against ``reference_pit_join``, a plain-Python point-in-time join written from the rule
(latest row at or before the entity time, within ttl, ties broken by created_timestamp).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel import feature_store as fs
from flywheel.config import Settings
from flywheel.features.packed import packed_from_user_item
from flywheel.schemas import FEATURE_TABLES
from tests.ports import on_free_ports, refused_port
from tests.redis_server import redis_binary, start_redis

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
PLUS2 = timezone(timedelta(hours=2))
MINUS5 = timezone(timedelta(hours=-5))
TTL = {"user_activity": 7 * D, "user_category": 7 * D, "item_activity": 7 * D}
TTL |= dict.fromkeys(
    ["user_item", "user_category_history", "user_activity_30d", "item_activity_30d"], 30 * D
)
KEYS = {
    "user_activity": ["user_id"],
    "user_category": ["user_id", "category"],
    "item_activity": ["item_id"],
    "item_catalog": ["item_id"],
    "user_item": ["user_id", "item_id"],
    "user_category_history": ["user_id", "category"],
    "user_activity_30d": ["user_id"],
    "item_activity_30d": ["item_id"],
    "category_price": ["category"],
}
CATEGORY = {10: "shoes", 11: "books", 12: "toys", 13: "shoes"}
#: The string ids of the users and items the cases below call 1..4 and 10..13 (99: unknown
#: everywhere). Some look like numbers, and string order is not the numbers' order
#: ("u-10" < "u-2", "12" < "9"), so a join that re-typed or lost an id would miss.
USER = {1: "u-1", 2: "u-2", 3: "u-10", 4: "9"}
ITEM = {10: "sku-10", 11: "sku-9", 12: "12", 13: "sku 13", 99: "sku-99"}


# ---- data built by hand ------------------------------------------------------------------


def _rows(keys: list[dict[str, Any]], stamps: list[tuple[datetime, datetime]]) -> list[dict]:
    pairs = zip(keys, stamps, strict=True)
    return [{**k, "event_timestamp": e, "created_timestamp": c} for k, (e, c) in pairs]


def _snapshots() -> dict[str, list[dict[str, Any]]]:
    """Key and timestamp columns of each table; edge cases are named in the comments."""
    u = [
        # user 1: an old row, recent rows, a tie at T0 (created later wins), a later row
        (1, T0 - 10 * D, T0 - 10 * D),
        (1, T0 - 2 * D, T0 - 2 * D),
        (1, T0 - H, T0 - H),
        (1, T0, T0 + timedelta(minutes=5)),
        (1, T0, T0 + timedelta(minutes=1)),
        (1, T0 + 3 * H, T0 + 3 * H),
        (2, T0 - 8 * D, T0 - 8 * D),  # user 2: only a row that has expired by T0
        (3, T0 - 7 * D, T0 - 7 * D),  # user 3: exactly at the ttl boundary at T0
        # user 4 has no rows at all
    ]
    uc = [
        (1, "shoes", T0 - D),
        (1, "shoes", T0 + H),
        (1, "books", T0 - 3 * D),
        (2, "shoes", T0 - 9 * D),
        (3, "books", T0 - timedelta(minutes=30)),
    ]
    ia = [(10, T0 - D), (10, T0 + 2 * H), (11, T0 - 12 * D), (13, T0 - 6 * D)]
    cat = [(10, T0 - 100 * D), (11, T0 - 50 * D), (12, T0 - 20 * D), (13, T0 + D)]
    # ranking_v2's views (30-day ttl; category_price never expires)
    ui = [
        (1, 10, T0 - 20 * D),  # user 1 x item 10: an old row, then a recent one
        (1, 10, T0 - 2 * H),
        (1, 11, T0 - 31 * D),  # expired at T0
        (2, 12, T0 - 30 * D),  # exactly at the ttl boundary at T0: still visible
        (3, 10, T0 + H),  # only after T0
        (4, 13, T0 - H),
    ]
    uch = [(1, "shoes", T0 - 10 * D), (1, "shoes", T0 + 2 * H), (2, "books", T0 - 40 * D)]
    ua30 = [(1, T0 - 25 * D), (1, T0 + 2 * H), (3, T0 - 30 * D), (4, T0 - 31 * D)]
    ia30 = [(10, T0 - 3 * D), (12, T0 - 29 * D), (13, T0 + H)]
    cp = [("shoes", T0 - 100 * D), ("shoes", T0 + D), ("books", T0 - 5 * D)]  # toys: none
    return {
        "user_activity": _rows([{"user_id": USER[a]} for a, _, _ in u], [(e, c) for _, e, c in u]),
        "user_category": _rows(
            [{"user_id": USER[a], "category": b} for a, b, _ in uc], [(e, e) for *_, e in uc]
        ),
        "item_activity": _rows([{"item_id": ITEM[a]} for a, _ in ia], [(e, e) for _, e in ia]),
        "item_catalog": _rows(
            [{"item_id": ITEM[a], "category": CATEGORY[a]} for a, _ in cat],
            [(e, e) for _, e in cat],
        ),
        "user_item": _rows(
            [{"user_id": USER[a], "item_id": ITEM[b]} for a, b, _ in ui], [(e, e) for *_, e in ui]
        ),
        "user_category_history": _rows(
            [{"user_id": USER[a], "category": b} for a, b, _ in uch], [(e, e) for *_, e in uch]
        ),
        "user_activity_30d": _rows(
            [{"user_id": USER[a]} for a, _ in ua30], [(e, e) for _, e in ua30]
        ),
        "item_activity_30d": _rows(
            [{"item_id": ITEM[a]} for a, _ in ia30], [(e, e) for _, e in ia30]
        ),
        "category_price": _rows([{"category": c} for c, _ in cp], [(e, e) for _, e in cp]),
    }


def build_tables(data_dir: Path, seed: int = 7) -> dict[str, pd.DataFrame]:
    """Write every feature table (distinct random feature values); return them."""
    rng = np.random.default_rng(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    tables = {}
    for name, rows in _snapshots().items():
        schema = FEATURE_TABLES[name]
        frame = pd.DataFrame(rows)
        for field in schema:
            if field.name in frame.columns:
                continue
            if pa.types.is_integer(field.type):
                frame[field.name] = rng.integers(0, 1_000_000, len(frame))
            else:
                frame[field.name] = rng.random(len(frame)) * 100
        frame = frame[schema.names]
        if name == "user_item":  # never carted: a null latest-cart time
            frame.loc[[1, 5], "ui_last_cart_unix"] = np.nan
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        pq.write_table(table, data_dir / f"{name}.parquet")
        tables[name] = frame
        if name == "user_item":  # and its online form, as the build writes it
            latest = packed_from_user_item(table)
            pq.write_table(latest, data_dir / "user_item_latest.parquet")
    return tables


def entity_rows() -> pd.DataFrame:
    """Entity rows in mixed time zones (object column), with the edge cases listed."""
    times = [
        T0,  # exactly at user 1's tied rows and user 3's ttl boundary
        (T0 + 2 * H).astimezone(PLUS2),
        (T0 - 30 * timedelta(minutes=1)).astimezone(MINUS5),
        T0 + 90 * timedelta(minutes=1),
        T0 - 7 * D,
        (T0 + 5 * D).astimezone(PLUS2),
        T0 + 3 * H,  # exactly at user 1's last row
    ]
    rows = [
        {"user_id": USER[u], "item_id": ITEM[i], "category": CATEGORY[i], "event_timestamp": t}
        for t in times
        for u in (1, 2, 3, 4)
        for i in (10, 11, 12, 13)
    ]
    # A user x category pair that exists only for another user.
    rows.append(
        {"user_id": USER[3], "item_id": ITEM[10], "category": "books", "event_timestamp": T0}
    )
    frame = pd.DataFrame(rows)
    frame.insert(0, "row_id", range(len(frame)))
    frame["event_timestamp"] = pd.Series(list(frame["event_timestamp"]), dtype=object)
    return frame


# ---- the independent reference -----------------------------------------------------------


def _latest(table: pd.DataFrame, keys: dict[str, Any], at: datetime, ttl: timedelta | None):
    """The row of ``table`` matching ``keys`` that a point-in-time join at ``at`` returns."""
    best = None
    for row in table.to_dict("records"):
        if any(row[k] != v for k, v in keys.items()):
            continue
        ts = row["event_timestamp"].to_pydatetime()
        if ts > at or (ttl is not None and ts < at - ttl):
            continue
        rank = (ts, row["created_timestamp"].to_pydatetime())
        if best is None or rank > best[0]:
            best = (rank, row)
    return None if best is None else best[1]


def reference_pit_join(
    tables: dict[str, pd.DataFrame], entities: pd.DataFrame, features: dict[str, list[str]]
) -> pd.DataFrame:
    """Point-in-time join in plain Python: one output row per entity row, floats/NaN."""
    out = []
    for ent in entities.to_dict("records"):
        at = ent["event_timestamp"].astimezone(UTC)
        row: dict[str, Any] = {"row_id": ent["row_id"]}
        for view, names in features.items():
            keys = {k: ent[k] for k in KEYS[view]}
            hit = _latest(tables[view], keys, at, TTL.get(view))
            row.update({n: np.nan if hit is None else float(hit[n]) for n in names})
        out.append(row)
    return pd.DataFrame(out).set_index("row_id").sort_index()


def service_features(settings: Settings) -> dict[str, list[str]]:
    store = fs.get_store(settings)
    service = store.get_feature_service(fs.feature_service_name(settings))
    return {p.name: [f.name for f in p.features] for p in service.feature_view_projections}


# ---- offline: point-in-time retrieval ----------------------------------------------------


@pytest.fixture(scope="module", params=["duckdb-asof", "duckdb", "dask"])
def offline(request, tmp_path_factory) -> tuple[Settings, dict[str, pd.DataFrame]]:
    workspace = tmp_path_factory.mktemp(f"ws-{request.param}")
    settings = Settings(workspace=workspace, feast={"offline_store": request.param})
    tables = build_tables(settings.feature_data_dir)
    fs.apply(settings)
    return settings, tables


def test_point_in_time_retrieval_matches_reference(offline, monkeypatch, tmp_path):
    settings, tables = offline
    monkeypatch.chdir(tmp_path)  # table paths must not depend on the working directory
    entities = entity_rows()
    got = fs.historical_features(settings, entities)
    features = service_features(settings)
    expected = reference_pit_join(tables, entities, features)
    names = [n for ns in features.values() for n in ns]
    got = got.set_index("row_id").sort_index()
    assert len(got) == len(entities)
    pd.testing.assert_frame_equal(got[names].astype(float), expected[names], check_exact=False)
    # Entity timestamps come back as the same instants, in UTC.
    want_ts = pd.to_datetime(entities.set_index("row_id")["event_timestamp"], utc=True)
    assert (got["event_timestamp"] == want_ts.sort_index()).all()


def _one(result: pd.DataFrame, user: int, item: int, at: datetime, cat: str | None = None):
    """The result row of user ``user`` (1..4) and item ``item`` (10..13) at ``at``."""
    at_utc = pd.Timestamp(at).tz_convert("UTC")
    hit = result[
        (result.user_id == USER[user])
        & (result.item_id == ITEM[item])
        & (result.event_timestamp == at_utc)
        & (result.category == (cat or CATEGORY[item]))
    ]
    assert len(hit) == 1
    return hit.iloc[0]


def test_point_in_time_edge_cases(offline):
    settings, tables = offline
    got = fs.historical_features(settings, entity_rows())
    ua, uc = tables["user_activity"], tables["user_category"]
    # A tie at T0: the row created later (index 3) wins; the entity row is exactly at T0.
    assert _one(got, 1, 10, T0)["views_7d"] == ua.loc[3, "views_7d"]
    # +02:00 entity time 04:00 is 02:00 UTC: user 1's T0 row, not the T0+3h one.
    assert _one(got, 1, 10, (T0 + 2 * H).astimezone(PLUS2))["views_7d"] == ua.loc[3, "views_7d"]
    # Exactly at a feature timestamp: that row is visible.
    assert _one(got, 1, 12, T0 + 3 * H)["views_7d"] == ua.loc[5, "views_7d"]
    # Expired (8 days old): null. At exactly 7 days: still visible.
    assert np.isnan(_one(got, 2, 10, T0)["views_7d"])
    assert _one(got, 3, 10, T0)["views_7d"] == ua.loc[7, "views_7d"]
    # A user with no rows at all: null everywhere, but item features still join.
    row = _one(got, 4, 10, T0)
    assert np.isnan(row["views_7d"]) and np.isnan(row["cat_affinity_7d"])
    assert row["item_views_7d"] == tables["item_activity"].loc[0, "item_views_7d"]
    # user x category: user 1's shoes row at T0-1d, then the T0+1h one.
    assert _one(got, 1, 10, T0)["cat_views_7d"] == uc.loc[0, "cat_views_7d"]
    later = T0 + 90 * timedelta(minutes=1)
    assert _one(got, 1, 13, later)["cat_views_7d"] == uc.loc[1, "cat_views_7d"]
    assert _one(got, 3, 10, T0, cat="books")["cat_views_7d"] == uc.loc[4, "cat_views_7d"]
    # The catalog never expires; an item created in the future has no price yet.
    assert _one(got, 1, 10, T0)["price"] == tables["item_catalog"].loc[0, "price"]
    assert np.isnan(_one(got, 1, 13, T0)["price"])
    # ranking_v2's user x item view is keyed by both ids: the latest row of that pair.
    ui = tables["user_item"]
    assert _one(got, 1, 10, T0)["ui_views_7d"] == ui.loc[1, "ui_views_7d"]
    assert np.isnan(_one(got, 1, 10, T0)["ui_last_cart_unix"])  # a null stays null
    assert np.isnan(_one(got, 1, 11, T0)["ui_views_7d"])  # 31 days old: expired
    assert _one(got, 2, 12, T0)["ui_views_7d"] == ui.loc[3, "ui_views_7d"]  # exactly 30 days
    assert np.isnan(_one(got, 2, 10, T0)["ui_views_7d"])  # another user's item
    assert np.isnan(_one(got, 3, 10, T0)["ui_views_7d"])  # its only row is later
    # category_price never expires and is keyed by the item's category alone
    cp = tables["category_price"]
    assert _one(got, 3, 13, T0)["cat_median_price"] == cp.loc[0, "cat_median_price"]
    later = (T0 + 5 * D).astimezone(PLUS2)
    assert _one(got, 4, 10, later)["cat_median_price"] == cp.loc[1, "cat_median_price"]
    assert np.isnan(_one(got, 1, 12, T0)["cat_median_price"])  # toys: no row


def test_entity_df_errors_name_the_column(offline):
    settings, _ = offline
    entities = entity_rows()
    with pytest.raises(fs.EntityDataFrameError, match="'category'"):
        fs.historical_features(settings, entities.drop(columns=["category"]))
    naive = entities.assign(event_timestamp=pd.Timestamp("2024-03-01"))
    with pytest.raises(fs.EntityDataFrameError, match=r"'event_timestamp'.*naive"):
        fs.historical_features(settings, naive)


# ---- offline: the ASOF store's own contract ---------------------------------------------


@pytest.fixture(scope="module")
def asof(tmp_path_factory) -> tuple[Settings, dict[str, pd.DataFrame]]:
    settings = Settings(workspace=tmp_path_factory.mktemp("ws-asof"))
    assert settings.feast.offline_store == "duckdb-asof"  # the default
    tables = build_tables(settings.feature_data_dir)
    fs.apply(settings)
    return settings, tables


def _utc(entities: pd.DataFrame) -> pd.DataFrame:
    return entities.assign(event_timestamp=pd.to_datetime(entities["event_timestamp"], utc=True))


def test_asof_job_is_a_feast_retrieval_job_in_entity_order(asof):
    from flywheel.feast_asof import AsofRetrievalJob

    settings, tables = asof
    store = fs.get_store(settings)
    service = store.get_feature_service(fs.feature_service_name(settings))
    # Mixed time zones in an object column, rows shuffled: the store converts and keeps order.
    entities = entity_rows().sample(frac=1.0, random_state=3, ignore_index=True)
    job = store.get_historical_features(entity_df=entities.copy(), features=service)
    assert isinstance(job, AsofRetrievalJob)
    features = service_features(settings)
    refs = [f"{view}:{name}" for view, names in features.items() for name in names]
    meta = job.metadata
    assert meta is not None
    assert sorted(meta.features) == sorted(refs)
    assert set(meta.keys) == {"row_id", "user_id", "item_id", "category"}
    utc = pd.to_datetime(entities["event_timestamp"], utc=True)
    assert (meta.min_event_timestamp, meta.max_event_timestamp) == (utc.min(), utc.max())
    arrow = job.to_arrow()
    names = [n for ns in features.values() for n in ns]
    assert arrow.column_names == [*entities.columns, *names]
    got = job.to_df()
    assert got["row_id"].tolist() == entities["row_id"].tolist()
    assert (got["event_timestamp"] == utc).all()
    expected = reference_pit_join(tables, entities, features)
    got = got.set_index("row_id")[names].astype(float).loc[expected.index]
    pd.testing.assert_frame_equal(got, expected[names], check_exact=False)


def test_asof_full_feature_names(asof):
    settings, tables = asof
    store = fs.get_store(settings)
    service = store.get_feature_service(fs.feature_service_name(settings))
    entities = _utc(entity_rows())
    got = store.get_historical_features(
        entity_df=entities, features=service, full_feature_names=True
    ).to_df()
    features = service_features(settings)
    expected = reference_pit_join(tables, entities, features)
    full = {f"{view}__{n}": n for view, names in features.items() for n in names}
    assert set(full) <= set(got.columns)
    got = got.set_index("row_id").sort_index()[list(full)].rename(columns=full).astype(float)
    pd.testing.assert_frame_equal(got, expected[list(full.values())], check_exact=False)


def _renamed_objects(tables: dict[str, pd.DataFrame], data_dir: Path) -> list[Any]:
    """A view over a renamed copy of user_activity at a path relative to the repo, a view
    over a file that lacks a feature column, and a service with an alias and a key map."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64, String

    renamed = tables["user_activity"].rename(columns={"views_7d": "v7d_src"})
    (data_dir / "renamed").mkdir()
    renamed.to_parquet(data_dir / "renamed" / "ua.parquet", index=False)
    renamed.drop(columns=["v7d_src"]).to_parquet(data_dir / "renamed" / "broken.parquet")
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    views = []
    for name, path in (("ua_renamed", "renamed/ua.parquet"), ("broken", "renamed/broken.parquet")):
        source = FileSource(
            name=f"{name}_source",
            path=path,  # relative: resolved against repo_path, not the working directory
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
            field_mapping={"v7d_src": "views_7d"},
        )
        schema = [Field(name="user_id", dtype=String), Field(name="views_7d", dtype=Int64)]
        views.append(
            FeatureView(
                name=name, entities=[user], ttl=TTL["user_activity"], schema=schema, source=source
            )
        )
    projected = views[0].with_name("recent").with_join_key_map({"user_id": "buyer_id"})
    service = FeatureService(name="renamed_v1", features=[projected])
    return [user, *views, service]


def test_asof_field_mapping_alias_key_map_and_relative_paths(asof, monkeypatch, tmp_path):
    from flywheel.feast_asof import AsofSourceError

    settings, tables = asof
    store = fs.get_store(settings)
    store.apply(_renamed_objects(tables, settings.feature_data_dir))
    monkeypatch.chdir(tmp_path)
    entities = _utc(entity_rows()).rename(columns={"user_id": "buyer_id"})
    got = store.get_historical_features(
        entity_df=entities,
        features=store.get_feature_service("renamed_v1"),
        full_feature_names=True,
    ).to_df()
    want = [
        _latest(tables["user_activity"], {"user_id": e["buyer_id"]}, e["event_timestamp"], 7 * D)
        for e in entities.to_dict("records")
    ]
    want_values = [np.nan if w is None else float(w["views_7d"]) for w in want]
    np.testing.assert_array_equal(got["recent__views_7d"].to_numpy(float), want_values)
    with pytest.raises(AsofSourceError, match=r"'broken'.*broken\.parquet.*'v7d_src'"):
        store.get_historical_features(
            entity_df=entities.rename(columns={"buyer_id": "user_id"}),
            features=["broken:views_7d"],
        )


def test_asof_hands_created_timestamp_filtering_to_the_stock_store(asof):
    from flywheel.feast_asof import AsofRetrievalJob

    settings, tables = asof
    store = fs.get_store(settings)
    job = store.get_historical_features(
        entity_df=_utc(entity_rows()),
        features=["user_activity:views_7d"],
        filter_by_created_timestamp=True,
    )
    assert not isinstance(job, AsofRetrievalJob)
    got = job.to_df()
    # User 1 at T0: the tied rows were created after T0, so the filtered answer is T0 - 1h.
    at_t0 = got[(got.user_id == USER[1]) & (got.event_timestamp == pd.Timestamp(T0))]
    assert at_t0["views_7d"].tolist() == [tables["user_activity"].loc[2, "views_7d"]] * 4


# ---- online: materialize and push --------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port, without persistence, for this module."""
    binary = redis_binary()
    log = tmp_path_factory.mktemp("redis") / "redis.log"
    ports: list[int] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        ports.append(port)
        return start_redis(binary, log, port)

    proc = on_free_ports(start)
    try:
        yield f"127.0.0.1:{ports[-1]}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def online(request, tmp_path) -> tuple[Settings, dict[str, pd.DataFrame]]:
    feast: dict[str, Any] = {"online_store": request.param}
    if request.param == "redis":
        feast["redis_connection_string"] = request.getfixturevalue("redis_url")
        feast["project"] = f"t{time.monotonic_ns()}"  # one Redis serves every test
    settings = Settings(workspace=tmp_path, feast=feast)
    tables = build_tables(settings.feature_data_dir)
    fs.apply(settings)
    return settings, tables


def _online_reference(tables, settings, user: str, items: list[str], at: datetime):
    """What serving should see at ``at``: each item's category as the catalog then knew it."""
    catalog = [_latest(tables["item_catalog"], {"item_id": i}, at, None) for i in items]
    categories = [None if c is None else c["category"] for c in catalog]
    entities = pd.DataFrame(
        {
            "row_id": range(len(items)),
            "user_id": user,
            "item_id": items,
            "category": [c or "" for c in categories],
            "event_timestamp": at,
        }
    )
    features = reference_pit_join(tables, entities, service_features(settings))
    return categories, features.reset_index(drop=True)


def _assert_online(settings, tables, store_or_settings, at: datetime, items: list[str]):
    got = fs.online_features(store_or_settings, USER[1], items, as_of=at)
    categories, want = _online_reference(tables, settings, USER[1], items, at)
    assert got["user_id"].tolist() == [USER[1]] * len(items)
    assert got["item_id"].tolist() == items
    assert got["category"].tolist() == categories
    got = got[list(want.columns)].astype(float)
    pd.testing.assert_frame_equal(got, want, check_exact=False)


def test_materialize_then_online_lookup_and_push(online):
    settings, tables = online
    # 13 is in the catalog only from T0+1d on; 99 is unknown everywhere.
    items = [ITEM[i] for i in (10, 11, 12, 13, 99)]
    first = fs.materialize(settings, end=T0 + H)
    # user_item is offline only: its online form is user_item_latest
    assert {v.name for v in first.views} == set(FEATURE_TABLES) - {"user_item"}
    _assert_online(settings, tables, settings, T0 + H, items)

    # The next run writes the keys whose latest row changed since (a delta per view).
    second = fs.materialize(settings, end=T0 + 2 * D)
    assert all(v.mode == "delta" for v in second.views)
    assert all(v.end == T0 + 2 * D for v in second.views)
    _assert_online(settings, tables, settings, T0 + 2 * D, items)

    # A push from serving replaces the user's activity in the online store.
    pushed = tables["user_activity"].iloc[[5]].copy()
    pushed["event_timestamp"] = pushed["created_timestamp"] = T0 + 2 * D + H
    pushed["views_7d"] = 123_456_789
    store = fs.get_store(settings)
    fs.push_user_activity(store, pushed)
    got = fs.online_features(store, USER[1], [ITEM[10], ITEM[11]], as_of=T0 + 2 * D + H)
    assert got["views_7d"].tolist() == [123_456_789, 123_456_789]
    assert got.loc[0, "item_views_7d"] == tables["item_activity"].loc[1, "item_views_7d"]


def test_push_rejects_rows_missing_contract_columns(online):
    settings, tables = online
    store = fs.get_store(settings)
    rows = tables["user_activity"].drop(columns=["views_1h"])
    with pytest.raises(fs.EntityDataFrameError, match="'views_1h'"):
        fs.push_user_activity(store, rows)


def test_unreachable_redis_is_a_clear_error(tmp_path):
    build_tables(Settings(workspace=tmp_path).feature_data_dir)
    fs.apply(Settings(workspace=tmp_path))
    with refused_port() as port:  # held, never listening: a connection is refused
        where = f"127.0.0.1:{port}"
        settings = Settings(
            workspace=tmp_path, feast={"online_store": "redis", "redis_connection_string": where}
        )
        with pytest.raises(fs.OnlineStoreUnavailableError, match=where.replace(".", r"\.")):
            fs.online_features(settings, USER[1], [ITEM[10]])
        with pytest.raises(fs.OnlineStoreUnavailableError, match="unreachable"):
            fs.materialize(settings, end=T0)


# ---- online = offline on tables the feature build wrote --------------------------------------


def _built_tables(data_dir: Path) -> tuple[list[str], list[str], list[datetime]]:
    """Feature tables of a sparse 60-day lake, computed by the build's own (Ray-free) math
    and written where Feast reads them; returns the users, items and some hour ends."""
    from flywheel.features import aggregate as F
    from flywheel.features.keys import KeySpace, distinct_sorted
    from flywheel.schemas import EVENT_SCHEMA, ITEM_SCHEMA

    rng = np.random.default_rng(21)
    n, users, items = 400, [USER[u] for u in (1, 2, 3, 4)], [ITEM[i] for i in (10, 11, 12, 13)]
    start = T0 - 60 * D
    events = pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": rng.choice(users, n),
            "item_id": rng.choice([*items, ITEM[99]], n),
            "event_type": rng.choice(["view", "view", "cart", "purchase", "click"], n),
            "ts": pa.array(
                [start + timedelta(minutes=int(m)) for m in rng.integers(0, 60 * 24 * 60, n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "session_id": ["s"] * n,
            "device": ["d"] * n,
        },
        schema=EVENT_SCHEMA,
    )
    catalog = pa.table(
        {
            "item_id": items,
            "category": [CATEGORY[i] for i in (10, 11, 12, 13)],
            "price": [10.0, 25.0, 7.5, 40.0],
            "created_ts": pa.array([start - D, start - D, start + 20 * D, start + 40 * D]),
        },
        schema=ITEM_SCHEMA,
    )
    keys = KeySpace(
        distinct_sorted([events["user_id"]]),
        distinct_sorted([events["item_id"], catalog["item_id"]]),
    )
    index = F.CatalogIndex.from_table(catalog, keys)
    partials = F.hourly_partials(events, index, keys)
    horizon = max(events["ts"].to_pylist()).timestamp() // 3600 + 1
    tables = F.bucket_features(partials, index, 0, keys, int(horizon))
    tables |= F.driver_tables(catalog, 0)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, data_dir / f"{name}.parquet")
    ends = [T0 - 30 * D, T0 - 9 * D - 7 * H, T0 - D, T0 + H]  # incremental materializations
    return users, [*items, ITEM[99]], ends


def test_online_equals_offline_on_built_tables(tmp_path):
    """For the same entity and time, the online store after materialize (Feast's reads and
    serving's batched reader) returns what point-in-time retrieval returns, for every view
    of ranking_v2, including the (user_id, item_id)-keyed user_item (online from its packed
    per-user form, user_item_latest, which holds the state at the build's horizon: compared
    at the materialization past the horizon, as `flywheel features` materializes)."""
    from flywheel.serving import OnlineFeatureReader

    settings = Settings(workspace=tmp_path)
    users, items, ends = _built_tables(settings.feature_data_dir)
    fs.apply(settings)
    store = fs.get_store(settings)
    service = fs.feature_service_name(settings)
    assert service == "ranking_v2"
    names = [n for ns in service_features(settings).values() for n in ns]
    reader = OnlineFeatureReader(store, service)
    nonzero = 0
    for end in ends:
        fs.materialize(settings, end=end)
        at = end - timedelta(seconds=1)  # materialization loads rows before its end
        compared = names if end == ends[-1] else [n for n in names if not n.startswith("ui_")]
        for user in users:
            online = fs.online_features(store, user, items, as_of=at)
            rows = online[["user_id", "item_id", "category"]].assign(event_timestamp=at)
            rows["category"] = rows["category"].fillna("")
            rows.insert(0, "row_id", range(len(rows)))
            offline = fs.historical_features(settings, rows).set_index("row_id").sort_index()
            want = offline[compared].astype(float).reset_index(drop=True)
            pd.testing.assert_frame_equal(online[compared].astype(float), want, check_exact=False)
            served = reader.read(user, items, at)
            assert list(served.columns[3:]) == names  # the service's order
            pd.testing.assert_frame_equal(served[compared].astype(float), want, check_exact=False)
            nonzero += int((want.filter(like="ui_").fillna(0) > 0).any(axis=None))
    assert nonzero >= 2  # the user x item history did have rows to compare
    # a day later, pairs whose window moved on read their later values; a request past a
    # pair's ttl reads null for it, the same offline and online
    for later in (ends[-1] + D, ends[-1] + 29 * D):
        for user in users:
            rows = pd.DataFrame({"row_id": range(len(items)), "user_id": user, "item_id": items})
            rows = rows.assign(category="", event_timestamp=later)
            offline = fs.historical_features(settings, rows).set_index("row_id").sort_index()
            ui = [n for n in names if n.startswith("ui_")]
            want = offline[ui].astype(float).reset_index(drop=True)
            served = reader.read(user, items, later)
            pd.testing.assert_frame_equal(served[ui].astype(float), want, check_exact=False)


def test_the_v1_service_still_resolves(offline):
    """A ranking_v1 champion keeps serving: its service reads its four views, offline and
    online, whatever the configured version."""
    settings, tables = offline
    entities = entity_rows()
    got = fs.historical_features(settings, entities, feature_service="ranking_v1")
    store = fs.get_store(settings)
    v1 = {p.name: [f.name for f in p.features] for p in
          store.get_feature_service("ranking_v1").feature_view_projections}  # fmt: skip
    assert set(v1) == {"user_activity", "user_category", "item_activity", "item_catalog"}
    names = [n for ns in v1.values() for n in ns]
    assert "ui_views_7d" not in got.columns
    expected = reference_pit_join(tables, entities, v1)
    got = got.set_index("row_id").sort_index()
    pd.testing.assert_frame_equal(got[names].astype(float), expected[names], check_exact=False)
    lookups = {v.view: v.join_keys for v in fs.service_lookups(store, "ranking_v2")}
    assert lookups["user_item"] == ("user_id", "item_id")
    assert lookups["category_price"] == ("category",)
    assert [v.view for v in fs.service_lookups(store, "ranking_v1")] == list(v1)
    with pytest.raises(fs.FeatureServiceNotFoundError, match="ranking_v9"):
        fs.service_lookups(store, "ranking_v9")


def test_materialize_writes_in_batches_sized_per_view(online, monkeypatch):
    """Every write batch handed to the online store has at most the rows sized for its
    view, and values written in many small batches equal the offline join."""
    from flywheel.feature_store import write_batches as wb

    settings, tables = online
    monkeypatch.setattr(wb, "MIN_ROWS", 1)
    monkeypatch.setattr(wb, "MAX_ROWS", 3)
    store_cls = type(fs.get_store(settings)._get_provider().online_store)
    seen: dict[str, list[int]] = {}
    write = store_cls.online_write_batch

    def counting(self, config, table, data, progress):
        seen.setdefault(table.name, []).append(len(data))
        return write(self, config, table, data, progress)

    monkeypatch.setattr(store_cls, "online_write_batch", counting)
    if hasattr(store_cls, "write_arrow"):  # the local store's direct path: Arrow batches
        direct = store_cls.write_arrow

        def counting_arrow(self, config, table, batch):
            seen.setdefault(table.name, []).append(batch.num_rows)
            return direct(self, config, table, batch)

        monkeypatch.setattr(store_cls, "write_arrow", counting_arrow)
    summary = fs.materialize(settings, end=T0 + 2 * D)
    assert {v.batch_rows for v in summary.views} == {3}
    assert seen and all(max(sizes) <= 3 for sizes in seen.values())
    assert any(len(sizes) > 1 for sizes in seen.values())
    _assert_online(settings, tables, settings, T0 + 2 * D, [ITEM[i] for i in (10, 11, 12, 13)])
