"""The delta materialization's parts without Feast: DuckDB's latest-row query and hash
(against a hand-written pandas answer) and when a digest is trusted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.config import Settings
from flywheel.feature_store.delta import connect
from flywheel.feature_store.delta_scan import Spec, latest_sql
from flywheel.feature_store.online_digest import DigestState, digest_dir, view_signature

T = datetime(2024, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
SPEC = Spec("v", "", ("user_id",), ("x", "y"), "event_timestamp", "created_timestamp")


def _write(path, rows):
    ts = pa.timestamp("us", tz="UTC")
    schema = pa.schema(
        [("user_id", pa.string()), ("event_timestamp", ts), ("created_timestamp", ts),
         ("x", pa.int64()), ("y", pa.float64())]
    )  # fmt: skip
    frame = pd.DataFrame(rows, columns=schema.names)
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)


def _latest(tmp_path, rows, start, end):
    path = tmp_path / "t.parquet"
    _write(path, rows)
    spec = Spec(**{**SPEC.__dict__, "path": str(path)})
    con = connect(Settings(workspace=tmp_path, feast={"offline_memory_limit": None}))
    got = con.sql(latest_sql(spec, [path], start, end)).df()
    table = pq.read_table(path).to_pylist()
    # each record points at its row: the row's own values, read back by row number
    return {r["user_id"]: {**table[r["__row"]], **r} for r in got.to_dict("records")}


def test_latest_row_per_key_within_inclusive_bounds_ties_by_created(tmp_path):
    rows = [
        ("a", T - H, T - H, 1, 1.0),
        ("a", T, T + 5 * H, 2, 2.0),  # tie at T: created later wins
        ("a", T, T + H, 3, 3.0),
        ("b", T - 2 * H, T, 4, None),  # exactly at start: kept
        ("c", T - 3 * H, T, 5, 5.0),  # before start: no row
        ("d", T + H, T, 6, 6.0),  # exactly at end: kept
        ("e", T + 2 * H, T, 7, 7.0),  # after end
    ]
    got = _latest(tmp_path, rows, T - 2 * H, T + H)
    assert sorted(got) == ["a", "b", "d"]
    assert got["a"]["x"] == 2 and got["b"]["x"] == 4 and pd.isna(got["b"]["y"])


def test_the_hash_follows_values_and_event_time_not_created_time(tmp_path):
    base = ("a", T, T, 1, 1.5)
    h = _latest(tmp_path, [base], T - H, T + H)["a"]["__h"]
    same = _latest(tmp_path, [("a", T, T + 3 * H, 1, 1.5)], T - H, T + H)["a"]["__h"]
    value = _latest(tmp_path, [("a", T, T, 1, 1.25)], T - H, T + H)["a"]["__h"]
    null = _latest(tmp_path, [("a", T, T, 1, None)], T - H, T + H)["a"]["__h"]
    moved = _latest(tmp_path, [("a", T + H, T, 1, 1.5)], T - H, T + H)["a"]["__h"]
    assert h == same
    assert len({h, value, null, moved}) == 4


def test_a_digest_is_trusted_only_for_its_store_service_and_definition(tmp_path):
    settings = Settings(workspace=tmp_path)
    sig = view_signature(("user_id",), ("x",), "event_timestamp", "created_timestamp")
    state = DigestState.load(settings)
    assert state.trusted("v", sig) is None  # first run
    staged = state.staging("v")
    staged.write_bytes(b"digest")
    state.commit("v", staged, sig, (T - H, T), keys=1, files={"t.parquet": "1:2:3"})
    assert DigestState.load(settings).entry("v")["files"] == {"t.parquet": "1:2:3"}
    assert not staged.exists()
    assert DigestState.load(settings).trusted("v", sig) == digest_dir(settings) / "v.parquet"
    other_def = view_signature(("user_id",), ("x", "z"), "event_timestamp", "created_timestamp")
    assert DigestState.load(settings).trusted("v", other_def) is None
    for changed in (
        {"feature_service_version": 1},
        {"online_store": "redis"},
        {"project": "other"},
    ):
        assert (
            DigestState.load(Settings(workspace=tmp_path, feast=changed)).trusted("v", sig) is None
        )
    (digest_dir(settings) / "v.parquet").unlink()
    assert DigestState.load(settings).trusted("v", sig) is None
    (digest_dir(settings) / "manifest.json").write_text("{not json")
    assert DigestState.load(settings).manifest == {}


def test_the_features_command_shows_keys_per_view():
    from flywheel.cli_views import materialize_table
    from flywheel.console import console
    from flywheel.feature_store import MaterializedView, MaterializeSummary

    views = (
        MaterializedView("user_activity", T - H, T, 10, "delta", 1234, 56, 56, 0.5, 2, 30),
        MaterializedView("item_catalog", T - H, T, 10, "range"),
    )
    with console.capture() as captured:
        materialize_table(MaterializeSummary("sqlite", views, 1.25))
    text = captured.get()
    assert "user_activity" in text and "1,234" in text and "56" in text and "2/30" in text
    assert "range" in text and "-" in text.split("item_catalog", 1)[1]
