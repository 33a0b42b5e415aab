"""The PIT query builder's planning step (flywheel.feast_asof), with real Feast objects.

``plan_view``, ``_stock_reason`` and ``check_sources`` were reached only through a Feast
retrieval in the integration tier; mutation testing showed no unit test would notice a
wrong join key, a dropped ttl or a feature taken from the wrong column.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel import feast_asof as fa


def _view(
    tmp_path: Path,
    *,
    ttl: timedelta | None,
    created: str = "created",
    mapping: dict[str, str] | None = None,
) -> Any:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, String

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    source = FileSource(
        name="src",
        path="t/acts.parquet",
        timestamp_field="ts",
        created_timestamp_column=created,
        # source column -> the name the view uses
        field_mapping={"uid": "user_id", "raw_views": "views"} if mapping is None else mapping,
    )
    return FeatureView(
        name="acts",
        entities=[user],
        schema=[
            Field(name="user_id", dtype=String),
            Field(name="views", dtype=Float64),
            Field(name="carts", dtype=Float64),
        ],
        source=source,
        ttl=ttl,
    )


def test_plan_maps_keys_features_timestamps_and_ttl(tmp_path: Path) -> None:
    config: Any = SimpleNamespace(repo_path=tmp_path)
    view = _view(tmp_path, ttl=timedelta(hours=2))
    refs = ["acts:views", "acts:carts", "other:views"]
    plan = fa.plan_view(config, view, refs, full_feature_names=False)
    assert plan == fa.ViewPlan(
        name="acts",
        scan=f"read_parquet('{tmp_path / 't' / 'acts.parquet'}')",
        keys=(("uid", "user_id"),),
        timestamp="ts",
        created="created",
        features=(("raw_views", "views"), ("carts", "carts")),
        ttl_us=2 * 3600 * 1_000_000,
    )
    full = fa.plan_view(config, view, ["acts:carts"], full_feature_names=True)
    assert full is not None and full.features == (("carts", "acts__carts"),)


def test_plan_of_an_aliased_view_with_a_join_key_map(tmp_path: Path) -> None:
    config: Any = SimpleNamespace(repo_path=tmp_path)
    view = _view(tmp_path, ttl=None).with_name("mine").with_join_key_map({"user_id": "buyer"})
    plan = fa.plan_view(config, view, ["mine:views", "acts:carts"], full_feature_names=True)
    assert plan is not None
    assert plan.keys == (("uid", "buyer"),)
    assert plan.features == (("raw_views", "mine__views"),)
    assert plan.ttl_us is None


def test_a_join_key_the_field_mapping_does_not_rename_keeps_its_name(tmp_path: Path) -> None:
    """The source column of an unmapped join key is the key itself (the feature repo's
    own views map nothing), as it is for an unmapped feature."""
    config: Any = SimpleNamespace(repo_path=tmp_path)
    view = _view(tmp_path, ttl=None, mapping={"raw_views": "views"})
    plan = fa.plan_view(config, view, ["acts:views"], full_feature_names=False)
    assert plan is not None
    assert plan.keys == (("user_id", "user_id"),)
    assert plan.features == (("raw_views", "views"),)
    aliased = fa.plan_view(
        config, view.with_join_key_map({"user_id": "buyer"}), ["acts:views"], False
    )
    assert aliased is not None and aliased.keys == (("user_id", "buyer"),)


@pytest.mark.parametrize("ttl", [None, timedelta(0)])
def test_no_ttl_and_zero_ttl_never_expire(tmp_path: Path, ttl: timedelta | None) -> None:
    config: Any = SimpleNamespace(repo_path=tmp_path)
    plan = fa.plan_view(config, _view(tmp_path, ttl=ttl, created=""), ["acts:views"], False)
    assert plan is not None and plan.ttl_us is None and plan.created is None


def test_a_source_duckdb_cannot_read_here_plans_nothing(tmp_path: Path) -> None:
    from feast import FileSource

    config: Any = SimpleNamespace(repo_path=tmp_path)
    view = _view(tmp_path, ttl=None)
    view.batch_source = FileSource(name="s3", path="s3://b/a.parquet", timestamp_field="ts")
    assert fa.plan_view(config, view, ["acts:views"], False) is None


def test_a_file_name_with_url_characters_is_kept_whole(tmp_path: Path) -> None:
    from feast import FileSource
    from feast.data_format import ParquetFormat

    config: Any = SimpleNamespace(repo_path=tmp_path)
    source = FileSource(
        name="s", path="t/a#1.parquet", timestamp_field="ts", file_format=ParquetFormat()
    )
    assert fa._parquet_path(config, source) == str(tmp_path / "t" / "a#1.parquet")


def _plan(scan: str, created: str | None = "created") -> fa.ViewPlan:
    return fa.ViewPlan(
        name="acts",
        scan=scan,
        keys=(("uid", "user_id"),),
        timestamp="ts",
        created=created,
        features=(("v", "views"),),
        ttl_us=None,
    )


def test_check_sources_names_the_view_and_the_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    pq.write_table(pa.table({"uid": ["u"], "ts": [t0], "v": [1.0], "created": [t0]}), path)
    fa.check_sources([_plan(fa._scan(str(path)))])  # all there: no error
    pq.write_table(pa.table({"uid": ["u"], "ts": [t0]}), tmp_path / "b.parquet")
    with pytest.raises(fa.AsofSourceError, match=r"'acts'.*lacks column\(s\) 'v', 'created'"):
        fa.check_sources([_plan(fa._scan(str(tmp_path / "b.parquet")))])
    fa.check_sources([_plan(fa._scan(str(path)), created=None)])
    with pytest.raises(fa.AsofSourceError, match=r"feature view 'acts': read_parquet"):
        fa.check_sources([_plan(fa._scan(str(tmp_path / "missing.parquet")))])


def test_stock_reason_says_why_the_stock_store_must_answer() -> None:
    frame = pd.DataFrame({"user_id": ["u"]})
    plan = _plan("read_parquet('x')")
    substrait: Any = SimpleNamespace(mode="substrait")
    python: Any = SimpleNamespace(mode="python")
    assert fa._stock_reason(frame, False, [plan], [python]) == ""
    assert "not a DataFrame" in fa._stock_reason("SELECT 1", False, [plan], [])
    assert "filter_by_created_timestamp" in fa._stock_reason(frame, True, [plan], [])
    assert "not a local Parquet" in fa._stock_reason(frame, False, [plan, None], [])
    assert "substrait" in fa._stock_reason(frame, False, [plan], [python, substrait])  # type: ignore[list-item]


# ---- the SQL pieces -------------------------------------------------------------------------


def test_identifiers_and_literals_escape_their_quotes(tmp_path: Path) -> None:
    assert fa._quote('a"b') == '"a""b"'
    assert fa._literal("it's") == "'it''s'"
    assert fa._scan(str(tmp_path)) == (
        f"read_parquet('{tmp_path / '**' / '*.parquet'}', hive_partitioning=true)"
    )


def test_bounds_of_entity_times() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    column = pa.array([t0, None, t0 + timedelta(hours=1)], pa.timestamp("us", tz="UTC"))
    assert fa._bounds(pa.table({"t": column}), "t") == (t0, t0 + timedelta(hours=1))
    assert fa._bounds(pa.table({"t": column.slice(0, 1)}), "t") == (t0, t0)
    assert fa._bounds(pa.table({"t": column.slice(1, 1)}), "t") is None
    assert fa._bounds(pa.table({"t": column.slice(0, 0)}), "t") is None


def test_view_rows_outside_the_entity_times_are_filtered_in_the_scan() -> None:
    plan = fa.ViewPlan("v", "read_parquet('x')", (("uid", "user_id"),), "ts", None, (), 10)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    bounded = fa.view_sql(plan, "event_timestamp", (t0, t0))
    low = "TIMESTAMPTZ '2024-01-01T00:00:00+00:00'"
    # the window's own rows, and before it each key's latest row still inside the ttl
    assert f'WHERE "ts" >= {low} AND "ts" <= {low}' in bounded
    assert f'WHERE "ts" < {low} AND "ts" >= {low} - INTERVAL 10 MICROSECONDS' in bounded
    assert 'PARTITION BY "uid" ORDER BY "ts" DESC) = 1' in bounded
    assert "WHERE" not in fa.view_sql(plan, "event_timestamp", None)


def test_rows_before_the_first_entity_time_answer_as_if_all_were_kept(tmp_path: Path) -> None:
    """Random rows, many per key before the first entity time: the ASOF answer equals a
    brute-force point-in-time lookup (latest event time <= the entity's, latest created on
    a tie, nulled past the ttl)."""
    rng = np.random.default_rng(3)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    n = 400
    hours = rng.integers(0, 20 * 24, n)
    rows = pd.DataFrame(
        {
            "uid": rng.choice(["a", "b", "c", "d"], n),
            "ts": [t0 + timedelta(hours=int(h)) for h in hours],
            "created": [t0 + timedelta(hours=int(h), seconds=i) for i, h in enumerate(hours)],
            "val": np.arange(n, dtype=float),
        }
    )
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), tmp_path / "t.parquet")
    m = 60  # entity times in the last 5 of the 20 days
    entities = pd.DataFrame(
        {
            "user_id": rng.choice(["a", "b", "c", "d", "e"], m),
            "event_timestamp": [
                t0 + timedelta(days=15, minutes=int(x)) for x in rng.integers(0, 5 * 1440, m)
            ],
        }
    )
    for ttl in (timedelta(days=3), None):
        plan = fa.ViewPlan(
            "v", fa._scan(str(tmp_path / "t.parquet")), (("uid", "user_id"),), "ts",
            "created", (("val", "val"),), ttl // timedelta(microseconds=1) if ttl else None,
        )  # fmt: skip
        config = fa.DuckDBAsofOfflineStoreConfig()
        job = fa.AsofRetrievalJob(entities, "event_timestamp", [plan], config)
        got = job.to_df()["val"].to_numpy(float)
        want = []
        for user, at in zip(entities["user_id"], entities["event_timestamp"], strict=True):
            seen = rows[(rows["uid"] == user) & (rows["ts"] <= at)]
            if ttl is not None:
                seen = seen[seen["ts"] >= at - ttl]
            best = seen.sort_values(["ts", "created"]).tail(1)
            want.append(best["val"].iloc[0] if len(best) else np.nan)
        np.testing.assert_array_equal(got, want)
        assert np.isfinite(got).sum() > m // 2  # most entity rows found a row


def test_two_features_and_tz_aware_or_naive_entity_times(tmp_path: Path) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    table = pa.table(
        {"uid": ["u"], "ts": pa.array([t0], pa.timestamp("us", tz="UTC")), "a": [1.0], "b": [2.0]}
    )
    pq.write_table(table, tmp_path / "t.parquet")
    plan = fa.ViewPlan(
        "v", fa._scan(str(tmp_path / "t.parquet")), (("uid", "user_id"),), "ts", None,
        (("a", "fa"), ("b", "fb")), None,
    )  # fmt: skip
    config = fa.DuckDBAsofOfflineStoreConfig()
    later = pd.Timestamp(t0 + timedelta(hours=1))
    for stamps in (
        pd.Series([later.tz_convert("Europe/Berlin")]),  # tz-aware, not UTC
        pd.Series([later.tz_localize(None)]),  # naive: taken as UTC
    ):
        entities = pd.DataFrame({"user_id": ["u"], "event_timestamp": stamps})
        got = fa.AsofRetrievalJob(entities, "event_timestamp", [plan], config).to_df()
        assert got[["fa", "fb"]].values.tolist() == [[1.0, 2.0]]
        assert str(got["event_timestamp"].dt.tz) == "UTC"
        assert got["event_timestamp"].tolist() == [later]
