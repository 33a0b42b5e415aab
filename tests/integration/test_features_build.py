"""The Ray Data feature build end to end on a small lake, against a brute-force reference."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.config import Settings
from flywheel.features import FeatureBuildError, build_features
from flywheel.features.day_parts import in_key_order, table_files
from flywheel.ray_runtime import ensure_ray, shutdown_ray
from flywheel.schemas import EVENT_SCHEMA, FEATURE_TABLES, ITEM_SCHEMA

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location(
    "features_reference", Path(__file__).parents[1] / "unit" / "test_features_reference.py"
)
assert _spec and _spec.loader
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

DAY0 = datetime(2025, 3, 1, tzinfo=UTC)
PLANTED_T = DAY0 + timedelta(days=1, hours=10)  # user "u-7" has a snapshot exactly here
#: Ids are strings: some look like numbers, none sorts as its number would ("sku-10" <
#: "sku-2", "10" < "9"), so a build that lost or re-typed an id would not match.
USERS = ["u-1", "u-2", "u-7", "u-10", "10", "9", "sku 3", "Ω-1"]
ITEMS = [f"sku-{i}" for i in range(1, 13)]


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    ensure_ray(Settings(workspace=tmp_path_factory.mktemp("ray"), ray={"num_cpus": 2}))
    yield
    shutdown_ray()


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ITEMS,  # "sku-12" never appears in events
            "category": [f"c{i % 4}" for i in range(12)],
            "price": np.round(np.linspace(3.0, 80.0, 12), 2),
            "created_ts": [DAY0 - timedelta(days=10 + i) for i in range(12)],
        }
    )


def _events() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 400
    seconds = rng.integers(0, 3 * 86_400, n)
    seconds[:60] = seconds[:60] // 3600 * 3600  # many events exactly on hour boundaries
    events = pd.DataFrame(
        {
            "user_id": rng.choice(USERS, n),
            "item_id": rng.choice([*ITEMS[:11], "77", "sku-78"], n),  # not in the catalog
            "event_type": rng.choice(["view"] * 6 + ["cart", "purchase", "click"], n),
            "ts": [DAY0 + timedelta(seconds=int(s)) for s in seconds],
        }
    )
    planted = pd.DataFrame(
        {
            "user_id": ["u-7", "u-7"],
            "item_id": ["sku-3", "sku-3"],
            "event_type": ["view", "purchase"],
            "ts": [PLANTED_T - timedelta(minutes=5), PLANTED_T],  # the purchase is at T
        }
    )
    return pd.concat([events, planted], ignore_index=True)


def _write_lake(settings: Settings, events: pd.DataFrame) -> None:
    events = events.assign(
        event_id=[f"e{i}" for i in range(len(events))], session_id="s", device="mobile"
    )
    day = events["ts"].dt.strftime("%Y-%m-%d")
    for date, part in events.groupby(day):
        folder = settings.events_dir / f"date={date}"
        folder.mkdir(parents=True)
        table = pa.Table.from_pandas(part[EVENT_SCHEMA.names], schema=EVENT_SCHEMA)
        half = table.num_rows // 2  # two files in each partition
        pq.write_table(table.slice(0, half), folder / "part-0.parquet")
        pq.write_table(table.slice(half), folder / "part-1.parquet")
    items = pa.Table.from_pandas(_items(), schema=ITEM_SCHEMA, preserve_index=False)
    pq.write_table(items, settings.items_path)


@pytest.fixture()
def built(ray_session: None, tmp_path: Path) -> tuple[Settings, pd.DataFrame]:
    settings = Settings(workspace=tmp_path, ray={"num_cpus": 2, "batch_size": 1000})
    events = _events()
    _write_lake(settings, events)
    summary = build_features(settings)
    assert summary.events_read == len(events)
    return settings, events


def _read(settings: Settings, name: str) -> pa.Table:
    return pq.read_table(settings.feature_data_dir / f"{name}.parquet")


def test_tables_equal_brute_force_reference(built: tuple[Settings, pd.DataFrame]) -> None:
    settings, events = built
    expected = reference.brute_force(events, _items())
    for name in FEATURE_TABLES:
        if name != "user_item_latest":
            table = in_key_order(_read(settings, name), name)  # a day folder reads day by day
            reference.assert_tables_match(table.to_pandas(), expected[name])
    horizon = int(pd.Timestamp(events["ts"].max()).timestamp()) // 3600 + 1
    packed = _read(settings, "user_item_latest").to_pandas()
    assert reference.unpacked(packed) == reference.latest_pairs(expected["user_item"], horizon)
    # the exact strings of the lake, not numbers and not dense keys
    assert set(_read(settings, "user_activity")["user_id"].to_pylist()) == set(USERS)
    assert set(_read(settings, "item_catalog")["item_id"].to_pylist()) == set(ITEMS)


def test_schemas_and_created_timestamp(built: tuple[Settings, pd.DataFrame]) -> None:
    settings, _ = built
    stamps = set()
    for name, schema in FEATURE_TABLES.items():
        table = _read(settings, name)
        assert table.schema.equals(schema), name
        stamps |= set(table["created_timestamp"].to_pylist())
    assert len(stamps) == 1  # one build time for every row of the build
    leftovers = [p.name for p in settings.feature_data_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_no_row_uses_an_event_at_or_after_its_timestamp(
    built: tuple[Settings, pd.DataFrame],
) -> None:
    settings, events = built
    users = _read(settings, "user_activity").to_pandas()
    assert (users["last_event_unix"] < users["event_timestamp"].map(pd.Timestamp.timestamp)).all()
    user7 = users[users.user_id == "u-7"].set_index("event_timestamp")
    mine = events[(events.user_id == "u-7") & (events.event_type == "purchase")]
    before = int((mine.ts < PLANTED_T).sum() - (mine.ts < PLANTED_T - timedelta(days=7)).sum())
    assert user7.loc[pd.Timestamp(PLANTED_T), "purchases_7d"] == before  # planted one excluded
    after = user7.loc[pd.Timestamp(PLANTED_T + timedelta(hours=1)), "purchases_7d"]
    assert after == before + 1
    assert user7.loc[pd.Timestamp(PLANTED_T), "last_event_unix"] == pytest.approx(
        (PLANTED_T - timedelta(minutes=5)).timestamp()
    )
    # The user x item history of the planted pair: the purchase at T enters at T + 1h.
    pairs = _read(settings, "user_item").to_pandas()
    pair = pairs[(pairs.user_id == "u-7") & (pairs.item_id == "sku-3")]
    pair = pair.set_index("event_timestamp")
    bought = events[(events.user_id == "u-7") & (events.item_id == "sku-3")]
    bought = bought[bought.event_type == "purchase"]
    at_t = pair.loc[pd.Timestamp(PLANTED_T)]
    window = (bought.ts < PLANTED_T) & (bought.ts >= PLANTED_T - timedelta(days=30))
    assert at_t["ui_purchases_30d"] == int(window.sum())
    assert pair.loc[pd.Timestamp(PLANTED_T + timedelta(hours=1)), "ui_last_purchase_unix"] == (
        pytest.approx(PLANTED_T.timestamp())
    )
    stamps = pairs["event_timestamp"].map(pd.Timestamp.timestamp)
    for kind in ("view", "cart", "purchase"):
        last = pairs[f"ui_last_{kind}_unix"]
        assert (last.isna() | (last < stamps)).all(), kind


def _table_bytes(settings: Settings) -> dict[str, bytes]:
    """Every file of every table (the per-entity tables are day folders)."""
    return {
        str(p.relative_to(settings.feature_data_dir)): p.read_bytes()
        for n in FEATURE_TABLES
        for p in table_files(settings.feature_data_dir / f"{n}.parquet")
    }


def test_failed_build_keeps_previous_tables(built: tuple[Settings, pd.DataFrame]) -> None:
    settings, _ = built
    # the files themselves (Table.equals would fail on the NaNs of user_item_latest)
    before = _table_bytes(settings)
    bad = pa.Table.from_pylist(
        [
            {
                "event_id": "x",
                "user_id": "u-1",
                "item_id": "sku-1",
                "event_type": "wishlist",
                "ts": DAY0,
                "session_id": "s",
                "device": "d",
            }
        ],
        schema=EVENT_SCHEMA,
    )
    pq.write_table(bad, next(settings.events_dir.glob("date=*")) / "part-9.parquet")
    with pytest.raises(Exception, match="wishlist"):
        build_features(settings)
    assert _table_bytes(settings) == before
    assert not [p for p in settings.feature_data_dir.iterdir() if p.name.startswith(".")]


def test_empty_lake_raises(ray_session: None, tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    (settings.events_dir / "date=2025-03-01").mkdir(parents=True)
    pq.write_table(_items().pipe(pa.Table.from_pandas), settings.items_path)
    with pytest.raises(FeatureBuildError, match="empty"):
        build_features(settings)
