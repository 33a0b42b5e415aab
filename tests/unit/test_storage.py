"""flywheel.storage without a server: AWS_* parsing, URIs, local paths, error wording.

The S3 behaviour against a real S3 API (a ``moto_server`` process) is in
``tests/integration/test_storage_s3.py``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from flywheel import storage
from flywheel.storage import S3Options, StorageError

MOTO = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
    "AWS_ACCESS_KEY_ID": "key",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_REGION": "eu-west-3",
}


def test_options_from_env_read_every_aws_variable() -> None:
    opts = S3Options.from_env(MOTO)
    assert opts == S3Options("http://127.0.0.1:5000", "eu-west-3", "key", "secret")
    assert opts.endpoint == "http://127.0.0.1:5000"
    assert "secret" not in repr(opts)


def test_options_defaults_without_variables_are_aws_itself() -> None:
    opts = S3Options.from_env({})
    assert opts == S3Options(None, "us-east-1", None, None)
    assert opts.endpoint == "https://s3.us-east-1.amazonaws.com"


def test_options_region_falls_back_to_default_region_and_s3_endpoint_wins() -> None:
    env = {
        "AWS_DEFAULT_REGION": "ap-south-1",
        "AWS_ENDPOINT_URL": "http://a:1",
        "AWS_ENDPOINT_URL_S3": "https://minio.example:9000/",
    }
    opts = S3Options.from_env(env)
    assert opts.region == "ap-south-1"
    assert opts.endpoint_url == "https://minio.example:9000"


def test_the_process_environment_is_read_when_no_mapping_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in MOTO.items():
        monkeypatch.setenv(name, value)
    assert S3Options.from_env() == S3Options.from_env(MOTO)


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
    ],
)
def test_half_a_key_pair_names_the_missing_variable(present: str, missing: str) -> None:
    with pytest.raises(StorageError, match=f"^{missing} is not set"):
        S3Options.from_env({present: "x"})


@pytest.mark.parametrize("bad", ["minio:9000", "ftp://minio:9000", "http://", "http://m:9/path"])
def test_an_endpoint_that_is_not_a_url_names_the_variable(bad: str) -> None:
    with pytest.raises(StorageError, match=r"^AWS_ENDPOINT_URL='.*' is not an endpoint URL"):
        S3Options.from_env({"AWS_ENDPOINT_URL": bad})


def test_the_filesystem_gets_the_endpoint_pyarrow_would_not_read_itself() -> None:
    fs, path = storage.resolve("s3://bucket/a/b.parquet", S3Options.from_env(MOTO))
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == "bucket/a/b.parquet"
    assert fs.region == "eu-west-3"
    # The endpoint and scheme are in the filesystem's pickled arguments.
    args = fs.__reduce__()[1][0]
    assert args["endpoint_override"] == "127.0.0.1:5000"
    assert args["scheme"] == "http"
    assert args["access_key"] == "key"


def test_one_filesystem_per_options() -> None:
    opts = S3Options.from_env(MOTO)
    assert opts.filesystem() is S3Options.from_env(MOTO).filesystem()
    assert opts.filesystem() is not S3Options.from_env({**MOTO, "AWS_REGION": "x"}).filesystem()


def test_local_paths_resolve_to_the_local_filesystem(tmp_path: Path) -> None:
    fs, path = storage.resolve(tmp_path / "x.csv")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == str(tmp_path / "x.csv")


def test_uri_helpers() -> None:
    assert storage.is_uri("s3://b/k")
    assert not storage.is_uri("data/s3://x") and not storage.is_uri(Path("s3:/b"))
    assert storage.location_of("s3://b/k") == "s3://b/k"
    assert storage.location_of("raw/events") == Path("raw/events")
    assert storage.split_uri("s3://b/a/b/") == ("b", "a/b")
    assert storage.split_uri("s3://b") == ("b", "")
    assert storage.join("s3://b/raw/", "events", "x.csv") == "s3://b/raw/events/x.csv"
    assert storage.join(Path("raw"), "events") == Path("raw/events")
    assert storage.suffix("s3://b/a/E.CSV") == ".csv"
    assert storage.suffix(Path("a/b.parquet")) == ".parquet"


def test_other_schemes_and_missing_buckets_are_refused() -> None:
    with pytest.raises(StorageError, match=r"unsupported scheme 'gs://'; expected s3://"):
        storage.is_uri("gs://b/k")
    with pytest.raises(StorageError, match="no bucket name"):
        storage.split_uri("s3:///k")


# pyarrow 26's own wording of each failure, as seen against moto_server.
DENIED = (
    "When getting information for bucket 'b': AWS Error ACCESS_DENIED during HeadBucket "
    "operation: No response body."
)
NO_BUCKET = (
    "When listing objects under key '' in bucket 'b': AWS Error NO_SUCH_BUCKET during "
    "ListObjectsV2 operation: The specified bucket does not exist"
)
NO_ENDPOINT = (
    "When getting information for bucket 'b': AWS Error NETWORK_CONNECTION during HeadBucket "
    "operation: curlCode: 7, Could not connect to server"
)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (DENIED, "s3://b/k: access to bucket 'b' at http://127.0.0.1:5000 denied; check AWS_"),
        (NO_BUCKET, "s3://b/k: bucket 'b' does not exist at http://127.0.0.1:5000"),
        (NO_ENDPOINT, "s3://b/k: cannot reach the S3 endpoint http://127.0.0.1:5000"),
        ("first line\nsecond", "s3://b/k: first line"),
    ],
)
def test_s3_errors_become_one_line_naming_bucket_and_endpoint(text: str, line: str) -> None:
    err = storage.explain(OSError(text), "s3://b/k", S3Options.from_env(MOTO))
    assert str(err).startswith(line)
    assert "\n" not in str(err)


def test_local_listing_and_dirs(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["a/x.csv", "a/b/y.JSONL", "a/z.txt"]:
        (tmp_path / name).write_text("1")
    assert storage.list_files(tmp_path / "a", [".csv", ".jsonl"]) == [
        tmp_path / "a/b/y.JSONL",
        tmp_path / "a/x.csv",
    ]
    assert storage.is_dir(tmp_path / "a") and not storage.is_dir(tmp_path / "a/x.csv")
    storage.check_bucket(tmp_path)  # a local path has no bucket to check


def test_upload_needs_an_s3_destination(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"--to '/tmp/x': expected an s3://bucket/prefix"):
        storage.upload([tmp_path], "/tmp/x")
