"""flywheel.storage against a real S3 API: a ``moto_server`` process on loopback.

The server checks signatures against IAM (see ``tests/s3_server.py``), so a wrong secret
is refused the way MinIO or AWS refuse it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel import storage
from flywheel.storage import StorageError
from tests.ports import refused_port
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


def test_parquet_round_trip_through_the_endpoint(s3_bucket: str) -> None:
    table = pa.table({"a": [1, 2, 3]})
    fs, path = storage.resolve(storage.join(s3_bucket, "t", "x.parquet"))
    pq.write_table(table, path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs).equals(table)
    storage.check_bucket(s3_bucket)


def test_a_missing_bucket_is_one_line_naming_bucket_and_endpoint(
    s3_bucket: str, s3_server: S3Server
) -> None:
    with pytest.raises(StorageError) as err:
        storage.check_bucket("s3://no-such-bucket-here/raw")
    assert str(err.value) == (
        f"s3://no-such-bucket-here/raw: bucket 'no-such-bucket-here' does not exist at "
        f"{s3_server.endpoint_url}"
    )
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist at"):
        storage.list_files("s3://no-such-bucket-here/raw", [".csv"])


def test_bad_credentials_are_one_line_naming_the_variables(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, s3_server: S3Server
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StorageError) as err:
        storage.check_bucket(s3_bucket + "/raw")
    bucket = s3_bucket.removeprefix("s3://")
    assert str(err.value) == (
        f"{s3_bucket}/raw: access to bucket {bucket!r} at {s3_server.endpoint_url} denied; "
        "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )


def test_an_unreachable_endpoint_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with refused_port() as port:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        with pytest.raises(
            StorageError, match=f"cannot reach the S3 endpoint http://127.0.0.1:{port}"
        ):
            storage.check_bucket("s3://any-bucket/x")


def test_upload_keeps_a_folders_layout_and_lists_back(s3_bucket: str, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "events").mkdir(parents=True)
    (raw / "events" / "day1.csv").write_text("a\n1\n")
    (raw / "items.parquet").write_bytes(b"PAR1")
    (tmp_path / "one.jsonl").write_text("{}\n")
    pairs = storage.upload([raw, tmp_path / "one.jsonl"], s3_bucket + "/in")
    assert [uri for _, uri in pairs] == [
        f"{s3_bucket}/in/raw/events/day1.csv",
        f"{s3_bucket}/in/raw/items.parquet",
        f"{s3_bucket}/in/one.jsonl",
    ]
    assert storage.list_files(s3_bucket + "/in", [".csv", ".jsonl"]) == [
        f"{s3_bucket}/in/one.jsonl",
        f"{s3_bucket}/in/raw/events/day1.csv",
    ]
    assert storage.is_dir(s3_bucket + "/in/raw/events")
    assert not storage.is_dir(s3_bucket + "/in/one.jsonl")
    fs, path = storage.resolve(f"{s3_bucket}/in/raw/events/day1.csv")
    with fs.open_input_stream(path) as fh:
        assert fh.read() == b"a\n1\n"


def test_upload_to_a_missing_bucket_copies_nothing(s3_bucket: str, tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        storage.upload([tmp_path / "x.csv"], "s3://no-such-bucket-here/in")
    with pytest.raises(FileNotFoundError, match="no such file or folder to upload"):
        storage.upload([tmp_path / "nope"], s3_bucket)


def test_ensure_bucket_creates_once_then_upload_can_create_its_bucket(
    s3_bucket: str, tmp_path: Path
) -> None:
    fresh = s3_bucket + "-new"
    assert storage.ensure_bucket(fresh + "/raw") is True
    assert storage.ensure_bucket(fresh) is False
    storage.check_bucket(fresh)
    (tmp_path / "x.csv").write_text("a\n")
    other = s3_bucket + "-up"
    pairs = storage.upload([tmp_path / "x.csv"], other + "/in", create_bucket=True)
    assert pairs == [(tmp_path / "x.csv", f"{other}/in/x.csv")]


def test_ensure_bucket_with_bad_credentials_names_them(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StorageError, match="denied; check AWS_ACCESS_KEY_ID"):
        storage.ensure_bucket(s3_bucket + "-x")


def test_cli_create_bucket_alone(s3_bucket: str, restore_logging: None) -> None:
    from typer.testing import CliRunner

    from flywheel.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["upload", "--create-bucket", "--to", s3_bucket + "-cli"])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == f"bucket of {s3_bucket}-cli ready"
    storage.check_bucket(s3_bucket + "-cli")
    nothing = runner.invoke(app, ["upload", "--to", s3_bucket])
    assert nothing.exit_code == 2 and "give files or folders to upload" in nothing.output
