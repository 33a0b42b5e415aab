"""The incremental feature build equals the full Ray Data rebuild, table for table.

One multi-day lake (38 days, so the 30-day windows' lookback and its carried latest-event
stamps are exercised) goes through what happens to a lake: new days, late events into an old
partition, a re-ingest of a day, a compaction, a removed partition (gc), a crash between the
partials and the publish and one during the publish, a catalog change. After each step
every table of the incremental build equals ``rebuild_all`` (today's full path) of a copy
of the same lake, column for column and row for row (``created_timestamp`` aside: it is when
a row was computed; floats to 1e-12 relative, since a window's float sums depend on which
entities share a bucket).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.config import FeatureSettings, Settings
from flywheel.features import FeatureBuildSummary, build_features, incremental, publish
from flywheel.features import build_state as bs
from flywheel.features.build import rebuild_all
from flywheel.features.day_parts import DAY_PARTED
from flywheel.features.partial_store import store_dir
from flywheel.ray_runtime import ensure_ray, shutdown_ray
from flywheel.schemas import EVENT_SCHEMA, FEATURE_TABLES, ITEM_SCHEMA

pytestmark = pytest.mark.integration

DAY0 = datetime(2025, 1, 1, tzinfo=UTC)
USERS = [f"u-{i}" for i in range(9)] + ["10", "9", "Ω-1"]
ITEMS = [f"sku-{i}" for i in range(1, 15)]


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    ensure_ray(Settings(workspace=tmp_path_factory.mktemp("ray"), ray={"num_cpus": 2}))
    yield
    shutdown_ray()


def _items(price_bump: float = 0.0) -> pa.Table:
    frame = pd.DataFrame(
        {
            "item_id": ITEMS,
            "category": [f"c{i % 4}" for i in range(len(ITEMS))],
            "price": np.round(np.linspace(3.0, 80.0, len(ITEMS)), 2) + price_bump,
            "created_ts": [DAY0 - timedelta(days=10 + i) for i in range(len(ITEMS))],
        }
    )
    return pa.Table.from_pandas(frame, schema=ITEM_SCHEMA, preserve_index=False)


def _events(day: int, n: int, seed: int) -> pa.Table:
    """``n`` events on day ``day``; some exactly on hour boundaries, some unknown items."""
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, 86_400, n)
    seconds[: n // 5] = seconds[: n // 5] // 3600 * 3600
    frame = pd.DataFrame(
        {
            "event_id": [f"e{seed}-{i}" for i in range(n)],
            "user_id": rng.choice(USERS, n),
            "item_id": rng.choice([*ITEMS[:13], "77", "sku-78"], n),
            "event_type": rng.choice(["view"] * 6 + ["cart", "purchase", "click"], n),
            "ts": [DAY0 + timedelta(days=day, seconds=int(s)) for s in seconds],
            "session_id": "s",
            "device": "mobile",
        }
    )
    return pa.Table.from_pandas(frame[EVENT_SCHEMA.names], schema=EVENT_SCHEMA)


def _folder(settings: Settings, day: int) -> Path:
    return settings.events_dir / f"date={(DAY0 + timedelta(days=day)).date().isoformat()}"


def _add(settings: Settings, day: int, n: int, seed: int, name: str = "part-0") -> None:
    folder = _folder(settings, day)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(_events(day, n, seed), folder / f"{name}.parquet")


def _one_event(day: int, hour: int, user: str, item: str) -> pa.Table:
    row: dict[str, object] = {"event_id": f"one-{user}-{day}", "user_id": user, "item_id": item}
    row |= {"event_type": "view", "ts": DAY0 + timedelta(days=day, hours=hour)}
    return pa.Table.from_pylist([row | {"session_id": "s", "device": "mobile"}], EVENT_SCHEMA)


def _full_rebuild_of_copy(settings: Settings, tmp: Path) -> Settings:
    """``rebuild_all`` of a copy of the lake in a fresh workspace."""
    other = Settings(workspace=tmp / "full", ray={"num_cpus": 2, "batch_size": 1000})
    shutil.rmtree(other.workspace, ignore_errors=True)
    shutil.copytree(settings.lake_dir, other.lake_dir)
    rebuild_all(other)
    return other


def _assert_equal_to_full(settings: Settings, tmp: Path) -> None:
    other = _full_rebuild_of_copy(settings, tmp)
    for name, schema in FEATURE_TABLES.items():
        mine = pq.read_table(settings.feature_data_dir / f"{name}.parquet")
        full = pq.read_table(other.feature_data_dir / f"{name}.parquet")
        assert mine.schema.equals(schema), name
        assert mine.num_rows == full.num_rows, name
        for column in schema.names:
            if column == "created_timestamp":
                continue
            a, b = mine[column].combine_chunks(), full[column].combine_chunks()
            if pa.types.is_floating(a.type):
                x = a.to_numpy(zero_copy_only=False)
                y = b.to_numpy(zero_copy_only=False)
                np.testing.assert_allclose(x, y, rtol=1e-12, err_msg=f"{name}.{column}")
            elif pa.types.is_list(a.type) and pa.types.is_floating(a.type.value_type):
                assert a.offsets.equals(b.offsets), f"{name}.{column}"
                np.testing.assert_allclose(
                    a.flatten().to_numpy(zero_copy_only=False),
                    b.flatten().to_numpy(zero_copy_only=False),
                    rtol=1e-12,
                    err_msg=f"{name}.{column}",
                )
            else:
                assert a.equals(b), f"{name}.{column}"


def _day_files(settings: Settings) -> dict[tuple[str, str], int]:
    """(table, file name) -> inode of every day file of the per-entity tables."""
    out = {}
    for name in DAY_PARTED:
        for path in (settings.feature_data_dir / f"{name}.parquet").iterdir():
            out[name, path.name] = path.stat().st_ino
    return out


def _build(settings: Settings) -> FeatureBuildSummary:
    return build_features(settings, incremental=True)


@pytest.fixture
def lake(ray_session: None, tmp_path: Path) -> Settings:
    settings = Settings(workspace=tmp_path / "ws", ray={"num_cpus": 2, "batch_size": 1000})
    for day in range(36):
        _add(settings, day, 40 + 7 * (day % 5), seed=day)
    settings.items_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_items(), settings.items_path)
    return settings


def test_incremental_equals_full_rebuild_through_a_lakes_life(
    lake: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = lake
    real_touched, kept = incremental.touched, []

    def spy(combined: dict, since: int, horizon: int) -> dict:  # type: ignore[type-arg]
        out = real_touched(combined, since, horizon)
        kept.append((len(out["entity"]), len(combined["entity"])))
        return out

    monkeypatch.setattr(incremental, "touched", spy)
    # users seen on day 1 only: 35 days on, nothing of theirs leaves a window any more, so
    # the daily builds below leave them out (and stay equal to the full rebuild)
    ghosts = _events(1, 30, seed=999)
    ids = pa.array([f"ghost-{i % 4}" for i in range(ghosts.num_rows)])
    ghosts = ghosts.set_column(ghosts.schema.get_field_index("user_id"), "user_id", ids)
    pq.write_table(ghosts, _folder(settings, 1) / "part-ghosts.parquet")
    # a user seen on day 20 and on day 37 alone: its pair's latest row is day 37's until
    # that event is removed, when it is day 27's (day 20's 7d window leaving)
    pq.write_table(_one_event(20, 3, "u-once", "sku-1"), _folder(settings, 20) / "part-u.parquet")
    caplog.set_level(logging.INFO, logger="flywheel.features.latest_incr")
    first = _build(settings)
    assert (first.path, first.partitions, first.partitions_recomputed) == ("full", 36, 36)
    _assert_equal_to_full(settings, tmp_path)

    for day in (36, 37):  # new days
        before = _day_files(settings)
        _add(settings, day, 60, seed=100 + day)
        if day == 37:
            once = _one_event(37, 5, "u-once", "sku-1")
            pq.write_table(once, _folder(settings, day) / "part-u.parquet")
        caplog.clear()
        summary = _build(settings)
        assert "user_item_latest updated from the previous one" in caplog.text, day
        assert (summary.path, summary.partitions_recomputed) == ("incremental", 1), day
        _assert_equal_to_full(settings, tmp_path)
        after = _day_files(settings)
        # per-entity tables are day folders; the days before the new one are the same files
        # (hard links), the new day's are new, the day of the cut is rewritten
        assert set(before) < set(after), day
        older = [k for k in before if k[1] < f"part-{DAY0.date() + timedelta(days=day - 1)}"]
        assert older and all(after[k] == before[k] for k in older), day
        assert any(k[1].startswith(f"part-{DAY0.date() + timedelta(days=day)}") for k in after)

    # a re-ingest of the newest day with fewer events (u-once's gone): user_item_latest
    # cannot be updated (its pair's latest row went) and is recomputed
    (_folder(settings, 37) / "part-u.parquet").unlink()
    caplog.clear()
    assert _build(settings).partitions_recomputed == 1
    assert "pairs lost their rows after the cut" in caplog.text
    assert "user_item_latest recomputed" in caplog.text
    _assert_equal_to_full(settings, tmp_path)

    _add(settings, 20, 15, seed=200, name="part-late")  # late events into an old partition
    summary = _build(settings)
    assert (summary.path, summary.partitions_recomputed) == ("incremental", 1)
    _assert_equal_to_full(settings, tmp_path)

    folder = _folder(settings, 30)  # a re-ingest of a day: other events, other file
    shutil.rmtree(folder)
    _add(settings, 30, 25, seed=300, name="part-again")
    assert _build(settings).partitions_recomputed == 1
    _assert_equal_to_full(settings, tmp_path)

    folder = _folder(settings, 10)  # a compaction: same events, one new file
    merged = pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("*.parquet")))
    shutil.rmtree(folder)
    folder.mkdir()
    pq.write_table(
        merged.slice(0).take(np.arange(merged.num_rows)[::-1]), folder / "part-c.parquet"
    )
    before = (settings.feature_data_dir / "user_item.parquet").stat().st_mtime_ns
    summary = _build(settings)
    assert (summary.path, summary.partitions_recomputed) == ("incremental", 0)
    assert (settings.feature_data_dir / "user_item.parquet").stat().st_mtime_ns == before
    _assert_equal_to_full(settings, tmp_path)

    shutil.rmtree(_folder(settings, 0))  # a removed partition (retention)
    summary = _build(settings)
    assert summary.path == "incremental"
    assert not (store_dir(settings) / _folder(settings, 0).name).exists()  # pruned
    _assert_equal_to_full(settings, tmp_path)

    # a crash between the partials and the publish: the state is the old one
    _add(settings, 38, 50, seed=138)

    compute = incremental._compute

    def crash(*args: object, **kwargs: object) -> None:
        compute(*args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("injected crash before publish")

    with monkeypatch.context() as patch:
        patch.setattr(incremental, "_compute", crash)
        with pytest.raises(RuntimeError, match="injected"):
            _build(settings)
    assert bs.read_build_state(settings) is not None  # not cleared before the publish began
    assert list(store_dir(settings).glob(f"{_folder(settings, 38).name}/*.parquet"))
    summary = _build(settings)
    assert summary.path == "incremental"
    _assert_equal_to_full(settings, tmp_path)

    # a crash during the publish (some tables replaced): no state, the next build is full
    _add(settings, 39, 50, seed=139)
    real, calls = publish.publish_days, []

    def flaky(*args: object, **kwargs: object) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected crash during publish")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(incremental, "publish_days", flaky)
        with pytest.raises(RuntimeError, match="during publish"):
            _build(settings)
    assert bs.read_build_state(settings) is None
    assert _build(settings).path == "full"
    _assert_equal_to_full(settings, tmp_path)

    # the builds above left some entities out (nothing of theirs after the cut) and were
    # still equal to the full rebuild
    assert kept and any(n < total for n, total in kept), kept

    pq.write_table(_items(price_bump=1.5), settings.items_path)  # a catalog change
    summary = _build(settings)
    assert (summary.path, summary.partitions_recomputed) == ("full", 0)  # partials reused
    _assert_equal_to_full(settings, tmp_path)


def test_full_rebuild_flag_records_state_and_next_build_is_incremental(
    lake: Settings, tmp_path: Path
) -> None:
    settings = lake
    summary = build_features(settings, full_rebuild=True, incremental=True)
    assert (summary.path, summary.partitions, summary.partitions_recomputed) == ("full", 36, 36)
    assert summary.buckets > 0  # the Ray Data pipeline ran
    _add(settings, 36, 60, seed=136)
    summary = build_features(settings, incremental=True)
    assert (summary.path, summary.partitions_recomputed) == ("incremental", 1)
    _assert_equal_to_full(settings, tmp_path)


def test_features_build_setting_chooses_the_path(lake: Settings) -> None:
    """``features.build`` decides what ``build_features`` (and so every pipeline stage) runs
    when the caller does not say; an explicit ``incremental`` wins over it."""
    incremental = lake.model_copy(update={"features": FeatureSettings(build="incremental")})
    first = build_features(incremental)
    assert first.path == "full" and first.buckets == 0  # no state yet: the driver's full pass
    _add(lake, 36, 40, seed=236)
    again = build_features(incremental)
    assert (again.path, again.partitions_recomputed) == ("incremental", 1)
    forced = build_features(incremental, incremental=False)
    assert forced.path == "full" and forced.buckets > 0  # the Ray Data build ran
    assert build_features(lake).buckets > 0  # the default setting: the full Ray build


def test_gc_keeps_the_partial_store(lake: Settings, tmp_path: Path) -> None:
    """``flywheel gc`` deletes old lake partitions but never the partial store; the build
    after it drops the deleted days' partials and still equals a full rebuild."""
    from flywheel.housekeeping import run_gc

    settings = lake.model_copy(
        update={"retention": lake.retention.model_copy(update={"lake_days": 1})}
    )
    _build(settings)
    stored = sorted(store_dir(settings).rglob("*.parquet"))
    result = run_gc(
        settings, now=DAY0 + timedelta(days=36), keep_days=1
    )  # keeps the 31 days before day 36
    gone = {c.path for c in result.candidates}
    assert not any(store_dir(settings) in p.parents or p == store_dir(settings) for p in gone)
    assert sorted(store_dir(settings).rglob("*.parquet")) == stored
    assert not _folder(settings, 0).exists()  # gc did delete old days
    summary = _build(settings)
    assert summary.path == "incremental"
    assert len(list(store_dir(settings).glob("date=*"))) == summary.partitions
    _assert_equal_to_full(settings, tmp_path)
