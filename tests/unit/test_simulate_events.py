"""Raw web-log events: contracts, determinism, chunking, rhythm and learnable behaviour."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from flywheel.schemas import EVENT_SCHEMA, EVENT_TYPES, ITEM_SCHEMA
from flywheel.simulate import events as sim_events
from flywheel.simulate.events import SimulationError, simulate_events, users_for_events
from flywheel.simulate.naming import SHOP, NamingError
from flywheel.simulate.world import World, make_world

START = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday
DAYS = 7
CHUNK = 1000


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(400, 300, seed=3, start=START, drift_day=3.5, drift_share=0.5)


@pytest.fixture(scope="module")
def run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    summary = simulate_events(world, DAYS, out, chunk_events=CHUNK, seed=5)
    events = pq.read_table(out / "events").to_pandas()
    # The logs carry the world's ids (plain naming: decimal text); the checks use indices.
    return summary, out, events.astype({"user_id": np.int64, "item_id": np.int64})


def part_files(out: Path) -> list[Path]:
    return sorted((out / "events").glob("part-*.parquet"))


def view_share_by_category(world: World, views: pd.DataFrame, min_views: int = 10):
    counts = np.zeros((world.n_users, world.n_categories))
    np.add.at(counts, (views.user_id.to_numpy(), world.item_category[views.item_id]), 1)
    totals = counts.sum(axis=1)
    keep = totals >= min_views
    return keep, counts[keep] / totals[keep, None]


def test_files_match_the_contracts(run, world) -> None:
    _, out, _ = run
    for part in part_files(out):
        assert pq.read_schema(part).equals(EVENT_SCHEMA), part
    assert pq.read_schema(out / "items.parquet").equals(ITEM_SCHEMA)
    items = pq.read_table(out / "items.parquet").to_pandas()
    assert items.item_id.tolist() == [str(i) for i in range(world.n_items)]
    np.testing.assert_array_equal(items.price, world.item_price)
    names = np.array(world.category_names)
    assert (items.category.to_numpy() == names[world.item_category]).all()
    assert World.load(out / "world").params() == world.params()


def test_chunks_never_exceed_chunk_events(run) -> None:
    summary, out, df = run
    rows = [pq.ParquetFile(p).metadata.num_rows for p in part_files(out)]
    assert max(rows) <= CHUNK
    assert rows[:-1] == [CHUNK] * (len(rows) - 1)  # only the last part is partial
    assert len(rows) == summary.files == math.ceil(len(df) / CHUNK)


def test_days_are_simulated_in_bounded_session_batches(world, tmp_path, monkeypatch) -> None:
    """The structure that keeps 10M events out of memory: small batches, flushed chunks."""
    seen: list[tuple[int, int]] = []
    add = sim_events._ChunkWriter.add

    def spy(self, table):
        add(self, table)
        seen.append((table.column("session_id").to_pandas().nunique(), self.pending_rows))

    monkeypatch.setattr(sim_events, "SESSION_BATCH", 40)
    monkeypatch.setattr(sim_events._ChunkWriter, "add", spy)
    summary = simulate_events(world, 2, tmp_path, chunk_events=300, seed=1)
    assert len(seen) >= summary.sessions / 40
    assert max(n for n, _ in seen) <= 40
    assert max(pending for _, pending in seen) < 300


def test_same_seed_same_bytes_different_seed_different_data(run, world, tmp_path) -> None:
    _, out, df = run
    simulate_events(world, DAYS, tmp_path / "again", chunk_events=CHUNK, seed=5)
    for a, b in zip(part_files(out), part_files(tmp_path / "again"), strict=True):
        assert a.read_bytes() == b.read_bytes()
    simulate_events(world, DAYS, tmp_path / "other", chunk_events=CHUNK, seed=6)
    other = pq.read_table(tmp_path / "other" / "events").to_pandas()
    assert not other[["user_id", "item_id"]].equals(df[["user_id", "item_id"]])
    assert set(other.event_id).isdisjoint(df.event_id)  # ids carry the seed


def test_later_days_continue_the_same_timeline(world, tmp_path) -> None:
    simulate_events(world, 3, tmp_path / "all", seed=2)
    simulate_events(world, 1, tmp_path / "first", seed=2)
    simulate_events(world, 2, tmp_path / "rest", seed=2, start_day=1)
    whole = pq.read_table(tmp_path / "all" / "events").to_pandas()
    parts = [pq.read_table(tmp_path / p / "events").to_pandas() for p in ("first", "rest")]
    pd.testing.assert_frame_equal(whole, pd.concat(parts, ignore_index=True))


def test_values_are_valid_and_consistent(run, world) -> None:
    summary, _, df = run
    assert set(df.event_type) <= set(EVENT_TYPES)
    assert "click" not in set(df.event_type)  # clicks come from served traffic only
    assert df.event_id.is_unique
    assert set(df.device) <= {"desktop", "mobile", "tablet"}
    assert df.groupby("session_id")[["user_id", "device"]].nunique().max().max() == 1
    assert df.ts.min() >= START
    assert df.ts.max() < START + timedelta(days=DAYS)
    assert df.user_id.between(0, world.n_users - 1).all()
    assert df.item_id.between(0, world.n_items - 1).all()
    counts = df.event_type.value_counts()
    assert (summary.views, summary.carts, summary.purchases) == (
        counts["view"], counts["cart"], counts["purchase"],
    )  # fmt: skip
    assert summary.events == len(df) and summary.sessions == df.session_id.nunique()
    assert summary.active_users == df.user_id.nunique()


def test_purchases_follow_carts_and_carts_follow_views(run) -> None:
    _, _, df = run
    key = ["session_id", "user_id", "item_id"]
    first = df.groupby([*key, "event_type"]).ts.min().unstack()
    carted = first[first["cart"].notna()]
    assert (carted["view"] < carted["cart"]).all()
    bought = first[first["purchase"].notna()]
    assert (bought["cart"] < bought["purchase"]).all()


def test_evenings_are_busier_than_small_hours(run) -> None:
    _, _, df = run
    by_hour = df.ts.dt.hour.value_counts()
    assert by_hour.reindex([19, 20, 21]).sum() > 4 * by_hour.reindex([3, 4, 5]).sum()


def test_views_follow_tastes_and_switch_at_the_drift(run, world) -> None:
    _, _, df = run
    views = df[df.event_type == "view"]
    drift = world.drift_at
    keep, share = view_share_by_category(world, views[views.ts < drift])
    assert np.corrcoef(share.ravel(), world.taste[keep].ravel())[0, 1] > 0.6
    keep, share = view_share_by_category(world, views[views.ts >= drift])
    moved = world.drifted[keep]
    old, new = world.taste[keep][moved], world.new_taste[keep][moved]
    assert np.corrcoef(share[moved].ravel(), new.ravel())[0, 1] > 0.6
    assert abs(np.corrcoef(share[moved].ravel(), old.ravel())[0, 1]) < 0.3


def test_behaviour_reveals_price_sensitivity_popularity_and_quality(run, world) -> None:
    _, _, df = run
    views = df[df.event_type == "view"]
    viewed_price = views.groupby("user_id").item_id.agg(
        lambda s: np.log(world.item_price[s]).mean()
    )
    sens = world.price_sensitivity[viewed_price.index]
    assert np.corrcoef(sens, viewed_price)[0, 1] < -0.1
    n_views = views.item_id.value_counts().reindex(range(world.n_items), fill_value=0)
    assert np.corrcoef(np.log1p(n_views), np.log(world.item_popularity))[0, 1] > 0.6
    carts = df[df.event_type == "cart"].item_id.value_counts()
    carts = carts.reindex(range(world.n_items), fill_value=0)
    seen = n_views.to_numpy() >= 20
    cart_rate = carts.to_numpy()[seen] / n_views.to_numpy()[seen]
    assert np.corrcoef(cart_rate, world.item_quality[seen])[0, 1] > 0.2


def test_users_for_events_hits_the_target(tmp_path) -> None:
    target = 20_000
    w = make_world(users_for_events(target, 7), 500, seed=11, start=START)
    summary = simulate_events(w, 7, tmp_path, seed=11)
    assert abs(summary.events - target) / target < 0.15


def test_rejects_bad_arguments(world, tmp_path) -> None:
    with pytest.raises(SimulationError, match="chunk_events=0"):
        simulate_events(world, 1, tmp_path, chunk_events=0)


def test_rhythm_uses_clock_hours_when_start_is_not_midnight(tmp_path) -> None:
    start = datetime(2025, 3, 3, 15, 30, tzinfo=UTC)
    w = make_world(600, 100, seed=2, start=start)
    simulate_events(w, 2, tmp_path, seed=2)
    df = pq.read_table(tmp_path / "events").to_pandas()
    assert df.ts.min() >= start and df.ts.max() < start + timedelta(days=2)
    by_hour = df.ts.dt.hour.value_counts()
    assert by_hour.reindex([19, 20, 21]).sum() > 4 * by_hour.reindex([3, 4, 5]).sum()


def test_a_shop_naming_writes_its_ids_everywhere(tmp_path: Path) -> None:
    shop = make_world(40, 15, 3, seed=2, naming=SHOP)
    simulate_events(shop, 1, tmp_path, seed=1)
    events = pq.read_table(tmp_path / "events").to_pandas()
    items = pq.read_table(tmp_path / "items.parquet").to_pandas()
    assert items.item_id.tolist() == [f"sku-{i:05d}" for i in range(15)]
    assert events.user_id.str.fullmatch(r"u\d{6}").all()
    assert set(events.item_id) <= set(items.item_id)
    loaded = World.load(tmp_path / "world")
    assert loaded.naming == SHOP
    assert loaded.ids.item_indices(["sku-00014", "sku-00000"]) == [14, 0]
    assert loaded.ids.user_index(shop.ids.user_id(39)) == 39
    with pytest.raises(NamingError, match="'sku-00015'"):
        loaded.ids.item_indices(["sku-00015"])
