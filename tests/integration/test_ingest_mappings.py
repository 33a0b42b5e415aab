"""The built-in mappings end to end on a real local Ray, on the sample logs in tests/data.

Expected counts, sessions and catalogs are computed here from the sample files with pandas,
independently of the mapping code.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flywheel import lake
from flywheel.config import RaySettings, Settings
from flywheel.ingest import IngestSummary, InputFileError, ingest_events
from flywheel.ray_runtime import ensure_ray, shutdown_ray

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[1] / "data"
RR = DATA / "retailrocket" / "events.csv"
REES = DATA / "rees46" / "2019-Oct-sample.csv"
NOW = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def ray_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    ensure_ray(Settings(workspace=tmp_path_factory.mktemp("ray"), ray=RaySettings(num_cpus=2)))
    yield
    shutdown_ray()


def workspace(root: Path) -> Settings:
    return Settings(workspace=root, ray=RaySettings(num_cpus=2, batch_size=1000))


def run(settings: Settings, paths: list[Path], mapping: str) -> IngestSummary:
    return ingest_events(settings, paths, mapping=mapping, now=NOW)


def lake_frame(settings: Settings) -> pd.DataFrame:
    return lake.read_lake_events(settings).to_pandas().sort_values("event_id", ignore_index=True)


def source(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_retailrocket_sample(ray_started: None, tmp_path: Path) -> None:
    raw = source(RR)
    unique = raw.drop_duplicates(["visitorid", "itemid", "event", "timestamp"])
    s = workspace(tmp_path)
    summary = run(s, [RR], "retailrocket")
    assert (summary.rows_read, summary.quarantined, summary.dropped) == (len(raw), 0, 0)
    assert (summary.accepted, summary.duplicates_dropped) == (len(unique), len(raw) - len(unique))
    got = lake_frame(s)
    words = {"view": "view", "addtocart": "cart", "transaction": "purchase"}
    assert got["event_type"].value_counts().to_dict() == (
        unique["event"].map(words).value_counts().to_dict()
    )
    assert set(got["user_id"]) == set(raw["visitorid"])
    assert set(got["item_id"]) == set(raw["itemid"])
    # Sessions: a new one after more than 30 minutes without an event of the same user.
    expected = unique.assign(ms=unique["timestamp"].astype("int64")).sort_values(
        ["visitorid", "ms"]
    )
    new = (expected["visitorid"] != expected["visitorid"].shift()) | (
        expected["ms"].diff() > 30 * 60_000
    )
    expected = expected.assign(session=new.cumsum())
    key = got.assign(ms=got["ts"].astype("int64") // 1000)
    joined = key.merge(
        expected, left_on=["user_id", "item_id", "ms"], right_on=["visitorid", "itemid", "ms"]
    )
    assert len(joined) >= len(unique)
    pairs = joined.groupby("session_id")["session"].nunique()
    assert (pairs == 1).all() and joined["session"].nunique() == got["session_id"].nunique()
    assert not s.items_path.exists()  # no attributes on RetailRocket events


def expected_rees46_catalog(raw: pd.DataFrame) -> dict[str, tuple[str, float, datetime]]:
    """Category and price of each item's latest event; dated by its first event (so the
    point-in-time join knows the item from its first appearance on)."""
    kept = raw[raw["event_type"] != "remove_from_cart"].reset_index(drop=True)
    kept = kept.assign(order=range(len(kept))).sort_values(["event_time", "order"])
    out: dict[str, tuple[str, float, datetime]] = {}
    for row in kept.to_dict("records"):  # later rows overwrite: the latest event wins
        category = str(row["category_code"] or row["category_id"])
        when = datetime.strptime(str(row["event_time"]), "%Y-%m-%d %H:%M:%S UTC")
        item = str(row["product_id"])
        first = out[item][2] if item in out else when.replace(tzinfo=UTC)
        out[item] = (category, float(row["price"]), first)
    return out


def test_rees46_sample_and_its_catalog(ray_started: None, tmp_path: Path) -> None:
    raw = source(REES)
    kept = raw[raw["event_type"] != "remove_from_cart"]
    unique = kept.drop_duplicates(["user_id", "product_id", "event_type", "event_time"])
    s = workspace(tmp_path)
    summary = run(s, [REES], "rees46")
    assert (summary.rows_read, summary.quarantined) == (len(raw), 0)
    assert summary.dropped_types == {"remove_from_cart": len(raw) - len(kept)}
    assert (summary.accepted, summary.duplicates_dropped) == (len(unique), len(kept) - len(unique))
    got = lake_frame(s)
    assert sorted(got["session_id"].unique()) == sorted(unique["user_session"].unique())
    assert got["event_type"].value_counts().to_dict() == (
        unique["event_type"].value_counts().to_dict()
    )
    catalog = pq.read_table(s.items_path).to_pylist()
    assert {
        r["item_id"]: (r["category"], r["price"], r["created_ts"]) for r in catalog
    } == expected_rees46_catalog(raw)
    assert summary.items_from_events is not None
    assert summary.items_from_events.new_items == len(catalog)


@pytest.mark.parametrize(("mapping", "path"), [("retailrocket", RR), ("rees46", REES)])
def test_rerun_is_stable(ray_started: None, tmp_path: Path, mapping: str, path: Path) -> None:
    """Fresh workspaces give identical lakes and catalogs; the same one adds nothing."""
    one, two = workspace(tmp_path / "one"), workspace(tmp_path / "two")
    run(one, [path], mapping)
    run(two, [path], mapping)
    pd.testing.assert_frame_equal(lake_frame(one), lake_frame(two))
    if mapping == "rees46":
        assert pq.read_table(one.items_path).equals(pq.read_table(two.items_path))
    copy = tmp_path / "again" / path.name  # same bytes under another path: skipped
    copy.parent.mkdir()
    shutil.copy(path, copy)
    assert run(one, [copy], mapping).files_skipped == 1
    edited = tmp_path / "edited" / path.name  # a different file holding the same rows
    edited.parent.mkdir()
    edited.write_text(path.read_text() + path.read_text().splitlines()[1] + "\n")
    again = run(one, [edited], mapping)
    assert (again.files_read, again.accepted, again.quarantined) == (1, 0, 0)
    pd.testing.assert_frame_equal(lake_frame(one), lake_frame(two))


def test_retailrocket_in_two_runs_gives_the_sessions_of_one(
    ray_started: None, tmp_path: Path
) -> None:
    raw = source(RR)
    ms = raw["timestamp"].astype("int64")
    cut = int(ms.quantile(0.5))
    early, late = tmp_path / "early.csv", tmp_path / "late.csv"
    raw[ms <= cut].to_csv(early, index=False)
    raw[ms > cut].to_csv(late, index=False)
    split, whole = workspace(tmp_path / "split"), workspace(tmp_path / "whole")
    run(split, [early], "retailrocket")
    run(split, [late], "retailrocket")
    run(whole, [RR], "retailrocket")
    pd.testing.assert_frame_equal(lake_frame(split), lake_frame(whole))


def test_rees46_catalog_in_two_runs_keeps_the_first_date_and_the_newest_price(
    ray_started: None, tmp_path: Path
) -> None:
    """A later run updates category and price from its newer events, but never moves an
    item's date forward: training rows between its first and its newest event keep it."""
    raw = source(REES)
    ordered = raw.sort_values("event_time", kind="stable")
    half = len(ordered) // 2
    early, late = tmp_path / "early.csv", tmp_path / "late.csv"
    ordered.iloc[:half].to_csv(early, index=False)
    late_rows = ordered.iloc[half:].copy()
    late_rows["price"] = (late_rows["price"].astype(float) + 1.0).map(str)  # a price change
    late_rows.to_csv(late, index=False)
    s = workspace(tmp_path / "ws")
    run(s, [early], "rees46")
    run(s, [late], "rees46")
    got = {r["item_id"]: (r["category"], r["price"], r["created_ts"])
           for r in pq.read_table(s.items_path).to_pylist()}  # fmt: skip
    assert got == expected_rees46_catalog(pd.concat([ordered.iloc[:half], late_rows]))
    moved = [i for i, (_, price, _) in got.items() if i in set(late_rows["product_id"])]
    assert moved and all(
        got[i][1] == float(late_rows[late_rows["product_id"] == i]["price"].iloc[-1]) for i in moved
    )


def test_missing_source_column_fails_naming_it(ray_started: None, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    source(RR).drop(columns=["itemid"]).to_csv(path, index=False)
    s = workspace(tmp_path / "ws")
    with pytest.raises(InputFileError, match=r"needs column 'itemid' \(columns\.item_id\)"):
        run(s, [path], "retailrocket")
    assert lake.lake_files(s) == [] and not lake.state_path(s).exists()
