"""Ingest from ``s3://`` on a real S3 API (a ``moto_server`` process) and a real local Ray.

The same raw files are ingested from a local folder and from the bucket; the two lakes,
catalogs and quarantines must agree row for row. Ray is started before the test pins
``AWS_*``, so its workers never see those variables: the S3 settings must travel with the
Ray tasks, as they must to a KubeRay cluster whose pods hold no keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel import lake, storage
from flywheel.config import RaySettings, Settings
from flywheel.ingest import InputFileError, ingest_events
from flywheel.ray_runtime import ensure_ray, shutdown_ray
from flywheel.schemas import EVENT_SCHEMA

pytestmark = pytest.mark.integration

NOW = datetime(2024, 3, 10, tzinfo=UTC)
T0 = datetime(2024, 3, 1, 20, 0, tzinfo=UTC)
FLYWHEEL = str(Path(sys.executable).parent / "flywheel")


@pytest.fixture(scope="module")
def ray_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    ensure_ray(Settings(workspace=tmp_path_factory.mktemp("ray"), ray=RaySettings(num_cpus=2)))
    yield
    shutdown_ray()


def _settings(root: Path) -> Settings:
    return Settings(workspace=root, ray=RaySettings(num_cpus=2, batch_size=1000))


def _events(n: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {
            "event_id": f"e{i}",
            "user_id": f"u{i % 7}",
            "item_id": f"sku-{i % 11}",
            "event_type": ["view", "cart", "purchase", "click"][i % 4],
            "ts": (T0 + timedelta(hours=i)).isoformat(),
            "session_id": f"s{i // 3}",
            "device": "web",
        }
        for i in range(n)
    ]
    rows[5] = {**rows[5], "ts": "2024-03-02T10:00:00"}  # naive: quarantined
    rows[9] = {**rows[9], "event_id": "e8"}  # a duplicate within the run
    return rows


def write_raw(raw: Path) -> None:
    """Events split over CSV, JSON lines and Parquet, plus a catalog with one bad row."""
    rows = _events(120)
    events = raw / "events"
    (events / "web").mkdir(parents=True)
    names = EVENT_SCHEMA.names
    csv_lines = [",".join(names)] + [",".join(str(r[n]) for n in names) for r in rows[:40]]
    (events / "day1.csv").write_text("\n".join(csv_lines) + "\n")
    (events / "web" / "day2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[40:80]))
    (events / "web" / "day3.jsonl").write_text("not json\n")
    parquet_rows = [{**r, "ts": datetime.fromisoformat(str(r["ts"]))} for r in rows[80:]]
    pq.write_table(pa.Table.from_pylist(parquet_rows), events / "day3.parquet")
    items = [
        {"item_id": f"sku-{i}", "category": f"c{i % 3}", "price": 1.5 + i, "created_ts": T0}
        for i in range(11)
    ]
    items[4]["price"] = -1.0
    pq.write_table(pa.Table.from_pylist(items), raw / "items.parquet")


def lake_rows(settings: Settings) -> list[dict[str, object]]:
    return lake.read_lake_events(settings).sort_by("event_id").to_pylist()


def quarantine_rows(settings: Settings) -> list[tuple[object, ...]]:
    """Quarantined records without their source path (local path vs URI) and time."""
    files = sorted(settings.quarantine_dir.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    keep = [c for c in table.column_names if c not in ("source_file", "quarantined_at")]
    return sorted(tuple(r[c] for c in keep) for r in table.to_pylist())


@pytest.fixture
def uploaded(tmp_path: Path, s3_bucket: str) -> tuple[Path, str]:
    """The raw folder on disk, and the same folder uploaded to the bucket."""
    raw = tmp_path / "raw"
    write_raw(raw)
    storage.upload([raw], s3_bucket + "/in")
    return raw, f"{s3_bucket}/in/raw"


def test_ingest_from_s3_twice_matches_the_local_ingest_row_for_row(
    tmp_path: Path, uploaded: tuple[Path, str], ray_started: None
) -> None:
    raw, uri = uploaded
    local, remote = _settings(tmp_path / "local"), _settings(tmp_path / "remote")
    from_disk = ingest_events(local, [raw / "events"], items=raw / "items.parquet", now=NOW)
    first = ingest_events(remote, [uri + "/events"], items=uri + "/items.parquet", now=NOW)

    assert first.files_read == from_disk.files_read == 4
    assert first.accepted == from_disk.accepted == 118  # 120 rows - a naive ts - a duplicate
    assert (first.quarantined, first.duplicates_dropped) == (2, 1)
    assert first.watermark == from_disk.watermark
    assert lake_rows(remote) == lake_rows(local)
    assert len(lake_rows(remote)) == first.accepted
    assert pq.read_table(remote.items_path).equals(pq.read_table(local.items_path))
    assert first.items is not None and first.items.quarantined == 1
    assert quarantine_rows(remote) == quarantine_rows(local)
    state = lake.read_state(remote)["events"]["files"]
    assert sorted(state) == sorted(
        f"{uri}/events/{name}"
        for name in ["day1.csv", "day3.parquet", "web/day2.jsonl", "web/day3.jsonl"]
    )

    again = ingest_events(remote, [uri + "/events"], items=uri + "/items.parquet", now=NOW)
    assert (again.files_read, again.files_skipped, again.accepted) == (0, 4, 0)
    assert again.items is not None and again.items.new_items == 0
    assert lake_rows(remote) == lake_rows(local)
    assert again.watermark == first.watermark


def test_a_missing_bucket_fails_before_anything_is_written(
    tmp_path: Path, s3_bucket: str, s3_server: object, ray_started: None
) -> None:
    settings = _settings(tmp_path / "ws")
    with pytest.raises(InputFileError) as err:
        ingest_events(settings, ["s3://no-such-bucket-here/raw/events"], now=NOW)
    assert str(err.value) == (
        "s3://no-such-bucket-here/raw/events: bucket 'no-such-bucket-here' does not exist at "
        f"{os.environ['AWS_ENDPOINT_URL']}"
    )
    assert not settings.workspace.exists()


def test_bad_credentials_fail_before_anything_is_written(
    tmp_path: Path, uploaded: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, uri = uploaded
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    settings = _settings(tmp_path / "ws")
    with pytest.raises(
        InputFileError, match=r"access to bucket '.*' at http://127\.0\.0\.1:\d+ denied"
    ):
        ingest_events(settings, [uri + "/events"], now=NOW)
    assert not settings.workspace.exists()


def test_a_missing_key_in_an_existing_bucket_is_a_missing_input(
    tmp_path: Path, s3_bucket: str
) -> None:
    with pytest.raises(InputFileError, match=r"/nothing/here: input path does not exist$"):
        ingest_events(_settings(tmp_path / "ws"), [s3_bucket + "/nothing/here"], now=NOW)


def _cli(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FLYWHEEL_RAY__NUM_CPUS": "2"}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [FLYWHEEL, "--workspace", str(workspace), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_upload_then_ingest_a_simulator_folder_from_the_bucket(
    tmp_path: Path, s3_bucket: str
) -> None:
    """The README's first-run path: upload the logs, ingest the bucket's folder."""
    raw = tmp_path / "raw"
    write_raw(raw)
    ws = tmp_path / "ws"
    up = _cli(ws, "upload", "--to", s3_bucket + "/logs", str(raw))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "uploaded 5 file(s)" in up.stdout
    assert f"next: flywheel ingest --events {s3_bucket}/logs/raw" in up.stdout

    done = _cli(ws, "ingest", "--events", f"{s3_bucket}/logs/raw")
    assert done.returncode == 0, done.stdout + done.stderr
    settings = _settings(ws)
    assert len(lake_rows(settings)) == 118
    assert pq.read_table(settings.items_path).num_rows == 10  # the catalog came along

    wrong = _cli(ws, "ingest", "--events", "s3://no-such-bucket-here/raw")
    lines = [line for line in (wrong.stdout + wrong.stderr).splitlines() if line.strip()]
    assert wrong.returncode == 1
    assert lines[0] == (
        "error: s3://no-such-bucket-here/raw: bucket 'no-such-bucket-here' does not exist at "
        f"{os.environ['AWS_ENDPOINT_URL']}"
    )
    assert len(lines) == 2 and lines[1].startswith("full log: "), lines
