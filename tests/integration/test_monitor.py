"""``flywheel monitor`` over a short simulated loop (real Ray ingest and feature build,
Feast point-in-time retrieval): a 3-day shop, a training set and its shards as the
reference, then requests served on day 3 with the raw values a correct online path gives
(the offline store's, as of the request). The skew check finds them equal; the same
traffic logged with a broken online value (``views_7d`` doubled) is caught on that
feature alone. The CLI prints the summary table and writes both files."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flywheel import feature_store
from flywheel.cli import app
from flywheel.config import RaySettings, Settings
from flywheel.dataset import build_dataset
from flywheel.features import build_features
from flywheel.ingest import ingest_events
from flywheel.monitor import run_monitor
from flywheel.predlog import LogWriter, log_dir
from flywheel.preprocess import preprocess
from flywheel.ranking import feature_set
from flywheel.simulate import SHOP, make_world, simulate_events

pytestmark = pytest.mark.integration

N_REQUESTS, K = 60, 5
SERVICE = "ranking_v2"


def _log(settings: Settings, world: Any, rng: np.random.Generator, day_start: Any) -> None:
    """Requests every 5 minutes from 08:00 on day 3; the first half logged correctly, the
    second half with views_7d doubled (the broken online path)."""
    items = pq.read_table(settings.items_path, columns=["item_id", "category"]).to_pandas()
    rows = []
    for n in range(N_REQUESTS):
        user = world.ids.user_id(int(rng.integers(0, 300)))
        picked = items.sample(K, random_state=int(rng.integers(1 << 30)))
        for pos, (item, category) in enumerate(
            zip(picked["item_id"], picked["category"], strict=True)
        ):
            ts = day_start + timedelta(hours=8, minutes=5 * n)
            rows.append(
                {
                    "n": n,
                    "pos": pos,
                    "user_id": user,
                    "item_id": item,
                    "category": category,
                    "event_timestamp": ts,
                }
            )
    entity = pd.DataFrame(rows)
    entity["event_timestamp"] = pd.to_datetime(entity["event_timestamp"], utc=True)
    values = feature_store.historical_features(settings, entity, feature_service=SERVICE)
    values = values.sort_values(["n", "pos"]).reset_index(drop=True)
    writer = LogWriter(log_dir(settings, "predictions"), "predictions")
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    raw = feature_set(SERVICE).raw
    for n, request in values.groupby("n", sort=True):
        records = []
        for _, row in request.iterrows():
            features = {"category": row["category"]}
            for name in raw:
                v = row[name]
                features[name] = None if pd.isna(v) else float(v)
            if n >= N_REQUESTS // 2 and features["views_7d"] is not None:
                features["views_7d"] *= 2
            records.append(
                {
                    "request_id": f"req-{n}", "ts": row["event_timestamp"].to_pydatetime(),
                    "user_id": row["user_id"], "item_id": row["item_id"],
                    "position": int(row["pos"]),
                    "score": float(rng.uniform(0, 1)), "model_version": "flywheel-ranker:sim",
                    "propensity": 0.9, "features": json.dumps(features),
                }
            )  # fmt: skip
        writer.append(records)
        if n % 4 == 0:
            at = records[0]["ts"] + timedelta(minutes=3)
            feedback.append(
                [
                    {
                        "request_id": f"req-{n}",
                        "item_id": records[0]["item_id"],
                        "event_type": "click",
                        "ts": at,
                    }
                ]
            )


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("monitor")
    world = make_world(300, 60, seed=5, naming=SHOP)
    simulate_events(world, days=3, out_dir=root / "raw", seed=5)
    settings = Settings(workspace=root / "ws", ray=RaySettings(num_cpus=2))
    ingest_events(settings, [root / "raw" / "events"], items=root / "raw" / "items.parquet")
    build_features(settings)
    feature_store.apply(settings)
    training = root / "training_set"
    build_dataset(
        settings,
        training / "part-00000.parquet",
        window_days=2,
        max_rows=20_000,
        end=world.start + timedelta(days=2),
    )
    preprocess(settings, training, root / "shards", engine="local")
    day3 = world.start + timedelta(days=2)
    _log(settings, world, np.random.default_rng(0), day3)
    return {"settings": settings, "shards": root / "shards", "root": root, "start": day3}


def test_correct_online_values_show_no_skew(loop: dict[str, Any]) -> None:
    start = loop["start"]
    half = start + timedelta(hours=8, minutes=5 * (N_REQUESTS // 2))
    result = run_monitor(
        loop["settings"], loop["root"] / "ok", until=half, reference=loop["shards"]
    )
    skew = result.record["skew"]
    assert skew["feature_service"] == SERVICE
    assert skew["rows"] == (N_REQUESTS // 2) * K
    assert [f["feature"] for f in skew["features"]] == list(feature_set(SERVICE).raw)
    assert all(f["status"] == "ok" for f in skew["features"]), skew
    assert all(f["equal_share"] == 1.0 for f in skew["features"])
    drift = result.record["drift"]
    assert drift["feature_service"] == SERVICE
    assert {f["name"] for f in drift["features"]} == set(feature_set(SERVICE).model)
    assert all(f["n_served"] == (N_REQUESTS // 2) * K for f in drift["features"])
    (version,) = result.record["quality"]["versions"]
    assert version["ctr"]["successes"] == len(range(0, N_REQUESTS // 2, 4))


def test_broken_online_value_is_caught(loop: dict[str, Any]) -> None:
    half = loop["start"] + timedelta(hours=8, minutes=5 * (N_REQUESTS // 2))
    result = run_monitor(
        loop["settings"], loop["root"] / "broken", since=half, reference=loop["shards"]
    )
    skew = {f["feature"]: f for f in result.record["skew"]["features"]}
    skewed = [name for name, f in skew.items() if f["status"] == "skewed"]
    assert skewed == ["views_7d"]
    # Equal only where the true count is 0 (or missing on both sides).
    assert skew["views_7d"]["equal_share"] < 0.9
    assert any("skew: views_7d" in a for a in result.record["alerts"])


def test_cli_writes_the_files_and_prints_the_table(
    loop: dict[str, Any], restore_logging: None
) -> None:
    out = loop["root"] / "cli"
    ws = str(loop["settings"].workspace)
    result = CliRunner().invoke(
        app, ["--workspace", ws, "monitor", "--reference", str(loop["shards"]), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "served quality per model version" in result.output
    assert "skew:" in result.output and "views_7d" in result.output
    record = json.loads((out / "monitor.json").read_text())
    assert record["totals"]["requests"] == N_REQUESTS
    assert (out / "monitor.html").read_text().startswith("<!DOCTYPE html>")
