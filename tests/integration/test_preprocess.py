"""Preprocess: Ray Data and the in-process engine write identical, time-ordered shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from flywheel.config import Settings
from flywheel.preprocess import PreprocessError, preprocess
from flywheel.ranking import FEATURE_SETS

pytestmark = pytest.mark.integration
#: What a training set read through the default service (ranking_v2) holds.
V2 = FEATURE_SETS["ranking_v2"]


def _training_set(path: Path, n: int = 5_000) -> Path:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({c: rng.random(n) for c in V2.raw})
    df.loc[rng.random(n) < 0.1, "views_7d"] = np.nan  # cold-start gaps
    # string ids (the training set's contract); string order is not numeric order
    df["user_id"] = [f"u-{i}" for i in rng.integers(0, 100, n)]
    df["item_id"] = [f"sku {i}" for i in rng.integers(0, 50, n)]
    df["category"] = "c"
    df["event_timestamp"] = pd.to_datetime(
        rng.integers(1_700_000_000, 1_700_000_000 + 86_400 * 5, n), unit="s", utc=True
    )
    df["label"] = (rng.random(n) < 0.2).astype("int8")
    df["group_id"] = [f"g{i // 4}" for i in range(n)]
    df.to_parquet(path)
    return path


def _split(root: Path, name: str) -> pd.DataFrame:
    frame = pq.read_table(root / name).to_pandas()
    return frame.sort_values(["event_timestamp", "group_id", "item_id"]).reset_index(drop=True)


def test_engines_agree_and_splits_are_time_ordered(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    ts = _training_set(tmp_path / "ts.parquet")
    ray_summary = preprocess(settings, ts, tmp_path / "ray", engine="ray")
    local_summary = preprocess(settings, ts, tmp_path / "local", engine="local")
    assert ray_summary.rows == local_summary.rows
    assert sum(ray_summary.rows.values()) == 5_000
    for name in ("train", "valid", "test"):
        a, b = _split(tmp_path / "ray", name), _split(tmp_path / "local", name)
        pd.testing.assert_frame_equal(a[sorted(a.columns)], b[sorted(b.columns)])
        assert list(V2.model) == [c for c in a.columns if c in V2.model]
        schema = pq.read_schema(next((tmp_path / "ray" / name).glob("*.parquet")))
        assert str(schema.field("user_id").type) in ("string", "large_string"), name
        assert str(schema.field("item_id").type) in ("string", "large_string"), name
    source = pd.read_parquet(ts)
    shards = pd.concat(_split(tmp_path / "ray", n) for n in ("train", "valid", "test"))
    # every row keeps its exact ids (sorted, since splits reorder rows)
    assert sorted(zip(shards.user_id, shards.item_id, strict=True)) == sorted(
        zip(source.user_id, source.item_id, strict=True)
    )
    train, test = _split(tmp_path / "ray", "train"), _split(tmp_path / "ray", "test")
    assert train["event_timestamp"].max() < test["event_timestamp"].min()
    meta = json.loads((tmp_path / "ray" / "metadata.json").read_text())
    assert meta["feature_service"] == "ranking_v2"
    assert meta["feature_columns"] == list(V2.model)


def test_too_few_timestamps_for_three_splits_is_a_clear_error(tmp_path: Path) -> None:
    df = pd.read_parquet(_training_set(tmp_path / "ts.parquet", n=50))
    df["event_timestamp"] = pd.Timestamp("2025-01-01", tz="UTC")
    df.to_parquet(tmp_path / "one.parquet")
    with pytest.raises(PreprocessError, match="empty"):
        preprocess(
            Settings(workspace=tmp_path), tmp_path / "one.parquet", tmp_path / "o", engine="local"
        )
