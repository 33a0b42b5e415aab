"""Delta materialization against real online stores (SQLite, and a real ``redis-server``).

The feature tables come from ``benchmarks/delta_world.py``: a lake that grows a day at a
time with late events (stamped 1-3 days back), built with the feature build's own math.
What the online store receives is recorded at the store's ``online_write_batch`` (the rows
still go to the real store), and compared with a pandas reference computed from the
Parquet tables: per key, the latest row in ``[end - ttl, end]`` (event time, then created
time), and the keys whose latest row (features and event time) differs from the previous
day's. Online values are read back through ``flywheel.feature_store.online_features`` and
compared with a store filled by Feast's own window materialization (``materialize_range``).
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from flywheel import feature_store as fs
from flywheel.config import Settings
from flywheel.feature_store.online_digest import digest_dir
from flywheel.features import day_parts
from tests.redis_server import RedisServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from delta_world import World, build_day

pytestmark = pytest.mark.integration

WORLD = World(users=120, items=40, events_per_day=600, late_share=0.08, seed=5)
DAYS = 5
Key = tuple[str, ...]


# ---- the pandas reference ----------------------------------------------------------------


def _views(settings: Settings) -> dict[str, Any]:
    store = fs.get_store(settings)
    return {v.name: v for v in store.list_feature_views() if v.online}


def _canon(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, list | tuple | np.ndarray):
        return tuple(_canon(v) for v in list(value))
    if isinstance(value, np.generic):
        return _canon(value.item())
    if isinstance(value, pd.Timestamp):
        return value.value
    return value


def reference_latest(settings: Settings, end: datetime) -> dict[str, dict[Key, tuple]]:
    """Per online view, each key's latest row in [end - ttl, end] as a comparable tuple."""
    out: dict[str, dict[Key, tuple]] = {}
    for name, view in _views(settings).items():
        keys = [c.name for c in view.entity_columns]
        features = [f.name for f in view.features]
        frame = pq.read_table(settings.feature_data_dir / f"{name}.parquet").to_pandas()
        lo = pd.Timestamp(end - view.ttl) if view.ttl else pd.Timestamp.min.tz_localize("UTC")
        frame = frame[(frame.event_timestamp >= lo) & (frame.event_timestamp <= end)]
        frame = frame.sort_values(["event_timestamp", "created_timestamp"], kind="stable")
        latest = frame.groupby(keys, sort=False).tail(1)
        out[name] = {
            tuple(row[k] for k in keys): tuple(
                _canon(row[c]) for c in [*features, "event_timestamp"]
            )
            for row in latest.to_dict("records")
        }
    return out


def changed(before: dict[str, dict[Key, tuple]], after: dict[str, dict[Key, tuple]]):
    return {
        name: {k for k, row in rows.items() if before.get(name, {}).get(k) != row}
        for name, rows in after.items()
    }


# ---- recording what reaches the online store ---------------------------------------------


@pytest.fixture
def written(settings: Settings, monkeypatch) -> dict[str, list[Key]]:
    """Every key handed to the online store (``online_write_batch``, or the local store's
    ``write_arrow``), per view (cleared by
    the test between runs); the rows are still written to the real store."""
    cls = type(fs.get_store(settings)._get_provider().online_store)
    write = cls.online_write_batch
    seen: dict[str, list[Key]] = {}

    def recording(self, config, table, data, progress):
        for key, *_ in data:
            seen.setdefault(table.name, []).append(tuple(v.string_val for v in key.entity_values))
        return write(self, config, table, data, progress)

    monkeypatch.setattr(cls, "online_write_batch", recording)
    if hasattr(cls, "write_arrow"):  # the local store's direct path takes Arrow batches
        direct = cls.write_arrow

        def recording_arrow(self, config, table, batch):
            done = direct(self, config, table, batch)
            if done:
                columns = [batch.column(c.name).to_pylist() for c in table.entity_columns]
                seen.setdefault(table.name, []).extend(zip(*columns, strict=True))
            return done

        monkeypatch.setattr(cls, "write_arrow", recording_arrow)
    return seen


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def settings(request, tmp_path: Path) -> Settings:
    feast: dict[str, Any] = {"online_store": request.param}
    if request.param == "redis":
        feast["redis_connection_string"] = request.getfixturevalue("redis").url
        feast["project"] = f"t{time.monotonic_ns()}"
    return Settings(workspace=tmp_path / "ws", feast=feast)


def _day(settings: Settings, day: int) -> datetime:
    end = build_day(WORLD, day, settings.feature_data_dir)
    fs.apply(settings)
    return end


def _by_view(summary: fs.MaterializeSummary) -> dict[str, fs.MaterializedView]:
    return {v.name: v for v in summary.views}


def _online(settings: Settings, at: datetime, users: list[str], items: list[str]):
    store = fs.get_store(settings)
    frames = [fs.online_features(store, u, items, as_of=at) for u in users]
    return pd.concat(frames, ignore_index=True)


# ---- the tests ---------------------------------------------------------------------------


def test_delta_writes_exactly_the_changed_latest_rows(settings, written, tmp_path):
    """Day after day the keys written are exactly the reference's changed keys (new keys,
    newer rows, late corrections of old keys); a rerun over unchanged tables writes none;
    the online values then equal a store filled by Feast's window materialization."""
    before: dict[str, dict[Key, tuple]] = {}
    corrections = same_time = previous_end = skipped = 0
    for day in range(DAYS):
        end = _day(settings, day)
        latest = reference_latest(settings, end)
        want = changed(before, latest)
        written.clear()
        summary = _by_view(fs.materialize(settings, end=end))
        assert set(summary) == set(latest)
        for name, keys in want.items():
            got = written.get(name, [])
            assert len(got) == len(set(got)), name  # each key once
            assert set(got) == keys, (day, name)
            view = summary[name]
            assert view.mode == ("full" if day == 0 else "delta")
            assert (view.keys_scanned, view.keys_changed, view.keys_written) == (
                len(latest[name]), len(keys), len(keys),
            )  # fmt: skip
        if day > 0:  # fewer keys than a full write once the first day is loaded
            assert sum(map(len, want.values())) < sum(map(len, latest.values()))
            # day folders: only the days from the first rewritten one on are read
            skipped += sum(v.files_scanned < v.files_total for v in summary.values())
        for name, keys in want.items():  # keys seen before whose latest row changed
            for key in keys & set(before.get(name, {})):
                stamp, was = latest[name][key][-1], before[name][key][-1]
                corrections += stamp < previous_end  # before the last run's window end
                same_time += stamp == was  # only the values changed
        previous_end = pd.Timestamp(end).value
        before = latest
    # the late events did correct keys last written days ago, some at the same event time
    # (which Redis's timestamp check alone would have skipped)
    assert corrections > 0 and same_time > 0
    assert skipped > 0  # some runs read only the newest days of a folder, and were right

    written.clear()
    rerun = fs.materialize(settings, end=end)
    assert written == {} and all(v.keys_written == 0 for v in rerun.views)
    folders = [v for v in rerun.views if v.files_total and v.files_total > 1]
    assert folders and all(v.files_scanned <= 1 for v in folders)  # nothing changed

    # Online values equal those of a fresh store filled by the window path.
    full = Settings(
        workspace=tmp_path / "full",
        feast=settings.feast.model_dump() | {"project": settings.feast.project + "full"},
    )
    shutil.copytree(settings.feature_data_dir, full.feature_data_dir)
    fs.apply(full)
    fs.materialize_range(full, end=end, full=True)
    users = sorted({k[0] for k in before["user_activity_30d"]})[:40]
    items = [f"sku-{i}" for i in range(0, WORLD.items, 3)] + ["sku-none"]
    for at in (end - timedelta(seconds=1), end + timedelta(days=3)):
        got, want_frame = _online(settings, at, users, items), _online(full, at, users, items)
        assert got.notna().sum().sum() > len(got)  # values were compared, not only nulls
        pd.testing.assert_frame_equal(got, want_frame)


def test_a_correction_set_back_is_written(settings, written):
    """A latest row corrected to another value and then back to the first, at the same
    event time, is written both times (a store that dedupes by event time would skip both)
    and reads back as the last value written."""
    end = _day(settings, 1)
    fs.materialize(settings, end=end)
    # the last day's file of the folder (a file rewritten in place: a new identity)
    path = day_parts.table_files(settings.feature_data_dir / "user_activity.parquet")[-1]
    table = pq.read_table(path)
    frame = table.to_pandas()
    row = frame.event_timestamp.idxmax()
    user, first = frame.loc[row, "user_id"], int(frame.loc[row, "views_7d"])
    for value in (first + 1000, first):
        frame.loc[row, "views_7d"] = value
        pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), path)
        written.clear()
        summary = _by_view(fs.materialize(settings, end=end))
        assert written == {"user_activity": [(user,)]}
        assert summary["user_activity"].keys_changed == 1
        got = fs.online_features(settings, user, ["sku-0"], as_of=end - timedelta(seconds=1))
        assert got["views_7d"].tolist() == [value]


def test_full_reload_and_untrusted_digests_write_everything(settings, written):
    end = _day(settings, 2)
    fs.materialize(settings, end=end)
    latest = reference_latest(settings, end)
    everything = {name: set(keys) for name, keys in latest.items() if keys}

    written.clear()
    summary = _by_view(fs.materialize(settings, end=end, full=True))
    assert {n: set(k) for n, k in written.items()} == everything
    assert all(v.mode == "full" and v.keys_changed == 0 for v in summary.values())
    assert {n: v.keys_written for n, v in summary.items()} == {n: len(k) for n, k in latest.items()}

    # another feature-service version: the digests do not describe what it serves
    other = settings.model_copy(update={"feast": settings.feast.model_copy(
        update={"feature_service_version": 1})})  # fmt: skip
    written.clear()
    assert {v.mode for v in fs.materialize(other, end=end).views} == {"full"}
    assert {n: set(k) for n, k in written.items()} == everything

    # a digest that is missing: that view alone is written whole
    fs.materialize(settings, end=end)  # digests for `settings` again
    (digest_dir(settings) / "item_catalog.parquet").unlink()
    written.clear()
    summary = _by_view(fs.materialize(settings, end=end))
    assert {n for n, v in summary.items() if v.mode == "full"} == {"item_catalog"}
    assert {n: set(k) for n, k in written.items()} == {"item_catalog": everything["item_catalog"]}


@pytest.mark.redis
def test_a_failed_write_keeps_the_digest_and_the_next_run_writes_it(redis, tmp_path):
    settings = Settings(
        workspace=tmp_path / "ws",
        feast={"online_store": "redis", "redis_connection_string": redis.url, "project": "o"},
    )
    first = _day(settings, 0)
    fs.materialize(settings, end=first)
    before = reference_latest(settings, first)
    digests = {p.name: p.read_bytes() for p in digest_dir(settings).iterdir()}
    end = _day(settings, 1)
    want = changed(before, reference_latest(settings, end))

    redis.stop()
    with pytest.raises(fs.OnlineStoreUnavailableError, match="unreachable"):
        fs.materialize(settings, end=end)
    assert {p.name: p.read_bytes() for p in digest_dir(settings).iterdir()} == digests

    redis.start()  # back, but empty: the delta writes what changed since the last success
    store = fs.get_store(settings)
    cls = type(store._get_provider().online_store)
    seen: dict[str, set[Key]] = {}
    write = cls.online_write_batch

    def recording(self, config, table, data, progress):
        seen.setdefault(table.name, set()).update(
            tuple(v.string_val for v in k.entity_values) for k, *_ in data
        )
        return write(self, config, table, data, progress)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cls, "online_write_batch", recording)
        summary = fs.materialize(settings, end=end)
    assert seen == {name: keys for name, keys in want.items() if keys}
    assert all(v.mode == "delta" for v in summary.views)
    assert {p.name: p.read_bytes() for p in digest_dir(settings).iterdir()} != digests


def test_a_removed_latest_row_is_found_again_in_an_older_day(settings, written):
    """A key whose latest row leaves the newest day file (a re-ingest with fewer events)
    takes its latest row from an older day, which the day shortcut did not scan: the delta
    writes exactly that key, the online value is the older row's, and a rerun writes
    nothing (the digest agrees with the tables)."""
    end = _day(settings, 3)
    fs.materialize(settings, end=end)
    files = day_parts.table_files(settings.feature_data_dir / "user_activity.parquet")
    last = pq.read_table(files[-1])
    before = reference_latest(settings, end)
    candidates = sorted(set(last["user_id"].to_pylist()))
    for user in candidates:  # one whose older rows are still within the view's window
        pq.write_table(last.filter(pc.not_equal(last["user_id"], user)), files[-1])
        after = reference_latest(settings, end)
        if (user,) in after["user_activity"]:
            break
    else:
        pytest.fail("no user of the last day has an older row in the window")
    assert after["user_activity"][(user,)] != before["user_activity"][(user,)]
    written.clear()
    summary = _by_view(fs.materialize(settings, end=end))
    assert written == {"user_activity": [(user,)]}
    view = summary["user_activity"]
    assert view.files_scanned < view.files_total and view.keys_changed == 1
    features = [f.name for f in _views(settings)["user_activity"].features]
    got = fs.online_features(settings, user, ["sku-0"], as_of=end - timedelta(seconds=1))
    want = after["user_activity"][(user,)][features.index("views_7d")]
    assert got["views_7d"].tolist() == [want]
    written.clear()
    fs.materialize(settings, end=end)
    assert written == {}
