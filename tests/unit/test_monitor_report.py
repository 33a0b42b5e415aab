"""``flywheel monitor`` over hand-written serving logs and a small shards directory (no
Feast: the skew check has its own tests): the JSON record, drift verdicts that follow a
deliberate shift, the delayed labels, and the HTML page rendered by headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.config import Settings
from flywheel.monitor import SCHEMA_VERSION, run_monitor
from flywheel.predlog import LogWriter, log_dir
from flywheel.ranking import MODEL_FEATURES, RAW_FEATURES, model_inputs
from flywheel.report import NoServingLogsError

T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
VERSION = "flywheel-ranker:abc"
N_REQUESTS, K = 300, 4


def _raw(rng: np.random.Generator, n: int, price_scale: float = 1.0) -> pd.DataFrame:
    frame = pd.DataFrame({f: rng.poisson(3.0, n).astype(float) for f in RAW_FEATURES})
    frame["price"] = rng.lognormal(3.0, 0.5, n) * price_scale
    frame["avg_price_7d"] = rng.lognormal(3.0, 0.5, n)
    frame["last_event_unix"] = T0.timestamp() - rng.uniform(0, 48 * 3600, n)
    return frame


def _shards(root: Path, rng: np.random.Generator) -> Path:
    raw = _raw(rng, 4_000)
    x = model_inputs(raw, T0.timestamp(), "ranking_v1")
    table = pd.DataFrame(x, columns=list(MODEL_FEATURES))
    table["label"] = (rng.random(len(table)) < 0.2).astype(np.int8)
    table["group_id"] = [str(i // 4) for i in range(len(table))]
    (root / "train").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), root / "train" / "p.parquet")
    meta = {"feature_service": "ranking_v1", "feature_columns": list(MODEL_FEATURES)}
    (root / "metadata.json").write_text(json.dumps(meta))
    return root


def _serve(settings: Settings, rng: np.random.Generator, price_scale: float) -> set[str]:
    """Requests one per minute from T0; position 0 is engaged in every third request."""
    writer = LogWriter(log_dir(settings, "predictions"), "predictions")
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    raw = _raw(rng, N_REQUESTS * K, price_scale)
    # As old as the training rows' activity was at T0, seen from each request's time.
    raw["last_event_unix"] += 60.0 * (np.arange(len(raw)) // K)
    engaged = set()
    for n in range(N_REQUESTS):
        ts = T0 + timedelta(minutes=n)
        rows = raw.iloc[n * K : (n + 1) * K]
        records = []
        for pos, (_, values) in enumerate(rows.iterrows()):
            features = {"category": "c1", **{k: float(v) for k, v in values.items()}}
            records.append(
                {
                    "request_id": f"r{n}",
                    "ts": ts,
                    "user_id": f"u{n % 7}",
                    "item_id": f"i{pos}",
                    "position": pos,
                    "score": float(rng.uniform(0.0, 0.6)) if pos else 0.9,
                    "model_version": VERSION,
                    "propensity": 0.9 if pos == 0 or n % 5 else 0.02,
                    "features": json.dumps(features),
                }
            )
        writer.append(records)
        if n % 3 == 0:
            at = ts + timedelta(minutes=5)
            feedback.append(
                [{"request_id": f"r{n}", "item_id": "i0", "event_type": "click", "ts": at}]
            )
            if n % 6 == 0:
                feedback.append(
                    [{"request_id": f"r{n}", "item_id": "i0", "event_type": "purchase", "ts": at}]
                )
            engaged.add(f"r{n}")
    return engaged


@pytest.fixture
def served(tmp_path: Path) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    settings = Settings(workspace=tmp_path / "ws")
    shards = _shards(tmp_path / "shards", rng)
    engaged = _serve(settings, rng, price_scale=3.0)
    return {"settings": settings, "shards": shards, "engaged": engaged, "out": tmp_path / "out"}


def test_record_holds_quality_drift_and_labels(served: dict[str, Any]) -> None:
    settings, out = served["settings"], served["out"]
    now = T0 + timedelta(hours=7)
    result = run_monitor(settings, out, reference=served["shards"], skew=False, now=now)
    record = json.loads(result.json_path.read_text())
    assert record == json.loads(json.dumps(result.record))
    assert record["schema_version"] == SCHEMA_VERSION == 1
    assert record["window"]["period"] == "hour"
    (version,) = record["quality"]["versions"]
    n = N_REQUESTS * K
    assert (version["model_version"], version["impressions"], version["requests"]) == (
        VERSION, n, N_REQUESTS,
    )  # fmt: skip
    assert version["ctr"]["successes"] == len(served["engaged"]) == 100
    assert version["ctr"]["low"] < 100 / n < version["ctr"]["high"]
    assert version["purchase_rate"]["successes"] == 50
    assert version["cart_rate"]["successes"] == 0
    # Position 1-3 of every fifth request was explored (propensity 0.02).
    assert version["explored_share"] == pytest.approx(60 * 3 / n)
    assert version["closed"] == n  # every window closed by T0 + 7 h
    assert version["auc"] > 0.9  # the engaged slot always had the top score, 0.9
    periods = record["quality"]["periods"]
    assert [p["impressions"] for p in periods] == [240, 240, 240, 240, 240]
    drift = record["drift"]
    status = {f["name"]: f["status"] for f in drift["features"]}
    assert set(status) == set(MODEL_FEATURES)
    # Prices served at three times the training prices: price and price_ratio alert.
    assert status["price"] == status["price_ratio"] == "alert"
    assert [f for f, s in status.items() if s != "ok"] == ["price", "price_ratio"]
    assert drift["prediction"] is None  # no champion model to score the training set
    assert drift["label"]["n_served"] == n
    assert drift["label_rates"]["served"] == pytest.approx(100 / n)
    assert any("price" in a for a in record["alerts"])
    assert record["skew"] == {"error": "skipped"}


def test_open_windows_are_not_labelled(served: dict[str, Any]) -> None:
    # At T0 + 2 h only requests served before T0 + 1 h have a closed attribution window.
    now = T0 + timedelta(hours=2)
    result = run_monitor(
        served["settings"], served["out"], reference=served["shards"], skew=False, now=now
    )
    assert result.record["totals"]["closed_impressions"] == 61 * K  # minutes 0..60


def test_no_reference_and_no_logs_say_why(tmp_path: Path, served: dict[str, Any]) -> None:
    result = run_monitor(served["settings"], served["out"], skew=False)
    assert "no champion" in result.record["drift"]["error"]
    assert result.record["quality"]["versions"]
    with pytest.raises(NoServingLogsError, match="serve first"):
        run_monitor(Settings(workspace=tmp_path / "empty"), tmp_path / "o", skew=False)
    with pytest.raises(ValueError, match="naive"):
        run_monitor(served["settings"], served["out"], since=datetime(2026, 1, 1))


def test_without_a_feast_registry_skew_says_why_and_writes_nothing(
    served: dict[str, Any],
) -> None:
    """The retrain CronJob mounts the workspace read-only: the skew check must not open
    (and so create) a Feast registry that is not there."""
    settings = served["settings"]
    result = run_monitor(settings, served["out"], reference=served["shards"])
    assert "no Feast registry" in result.record["skew"]["error"]
    assert "flywheel features" in result.record["skew"]["error"]
    assert not settings.feast_dir.exists()


def test_window_bounds_select_requests(served: dict[str, Any]) -> None:
    since, until = T0 + timedelta(minutes=60), T0 + timedelta(minutes=120)
    result = run_monitor(
        served["settings"],
        served["out"],
        since=since,
        until=until,
        reference=served["shards"],
        skew=False,
    )
    assert result.record["totals"]["requests"] == 60


def test_page_is_self_contained_and_renders_in_chromium(served: dict[str, Any]) -> None:
    result = run_monitor(
        served["settings"],
        served["out"],
        reference=served["shards"],
        skew=False,
        now=T0 + timedelta(hours=5),
    )
    page = result.html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 2
    assert "http://" not in page and "https://" not in page and "<script" not in page
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    shot = served["out"] / "page.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1200,1600", result.html_path.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1200)
    # Not blank: dark text and plot pixels on the white page, in many rows.
    assert pixels.std() > 10
    assert (pixels < 128).any(axis=1).sum() > 200
