"""Where data lives: local paths and ``s3://bucket/key`` URIs, through pyarrow filesystems.

A *location* is a local :class:`~pathlib.Path` or an ``s3://`` URI kept as a string
(``Path("s3://b/k")`` would fold the ``//``). :func:`resolve` turns either into a
``(pyarrow FileSystem, path)`` pair, so a stage reads and writes both the same way.

S3 is configured the AWS way, from the environment, here and nowhere else:
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``; for MinIO or any S3-compatible server),
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (optionally ``AWS_SESSION_TOKEN``) and
``AWS_REGION`` (or ``AWS_DEFAULT_REGION``; default ``us-east-1``). Credentials are not
Settings: ``flywheel settings`` prints Settings, and on a cluster the keys come from a
Kubernetes Secret mounted as environment variables. pyarrow's ``S3FileSystem`` does not read
``AWS_ENDPOINT_URL`` itself (it would dial ``s3.<region>.amazonaws.com``), so the endpoint
is passed as ``endpoint_override`` plus ``scheme``.

S3 failures come back as one :class:`StorageError` line naming the URI, the bucket and the
endpoint: a missing bucket, refused credentials, an unreachable endpoint.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import pyarrow.fs as pafs

S3_PREFIX = "s3://"
#: A local path, or an ``s3://bucket/key`` URI as a string.
Location = Path | str
DEFAULT_REGION = "us-east-1"

#: Words in pyarrow's S3 error text that mean the server refused the credentials.
_DENIED = (
    "access_denied",
    "accessdenied",
    "invalidaccesskeyid",
    "invalid_access_key_id",
    "signaturedoesnotmatch",
    "signature_does_not_match",
    "http status 403",
)


class StorageError(RuntimeError):
    """An object-store location that cannot be used; the message is one line."""


@dataclass(frozen=True)
class S3Options:
    """How to reach S3: endpoint, region and credentials (None: the AWS default chain)."""

    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Options:
        """The options the ``AWS_*`` variables of ``env`` (default: this process) describe.

        Raises:
            StorageError: only one of the key id and the secret is set, or the endpoint is
                not an ``http(s)://host[:port]`` URL (naming the variable).
        """
        env = os.environ if env is None else env
        endpoint_var = (
            "AWS_ENDPOINT_URL_S3" if env.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
        )
        endpoint = env.get(endpoint_var) or None
        if endpoint is not None:
            parts = urlsplit(endpoint)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
            ):
                raise StorageError(
                    f"{endpoint_var}={endpoint!r} is not an endpoint URL; "
                    "expected http(s)://host[:port], e.g. http://minio-service.kubeflow:9000"
                )
        key, secret = env.get("AWS_ACCESS_KEY_ID") or None, env.get("AWS_SECRET_ACCESS_KEY") or None
        if (key is None) != (secret is None):
            missing = "AWS_SECRET_ACCESS_KEY" if secret is None else "AWS_ACCESS_KEY_ID"
            raise StorageError(f"{missing} is not set; S3 credentials need both key id and secret")
        return cls(
            endpoint_url=endpoint.rstrip("/") if endpoint else None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
            access_key=key,
            secret_key=secret,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )

    @property
    def endpoint(self) -> str:
        """The endpoint as a user would name it in a message."""
        return self.endpoint_url or f"https://s3.{self.region}.amazonaws.com"

    def as_dict(self) -> dict[str, Any]:
        """Plain values for a Ray task (workers build their own filesystem from them)."""
        return asdict(self)

    def filesystem(self, *, create_buckets: bool = False) -> pafs.S3FileSystem:
        """A pyarrow S3 filesystem for these options (cached per options)."""
        return _s3_filesystem(self, create_buckets)


@functools.lru_cache(maxsize=8)
def _s3_filesystem(options: S3Options, create_buckets: bool = False) -> pafs.S3FileSystem:
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"region": options.region, "connect_timeout": 5, "request_timeout": 60}
    kwargs["allow_bucket_creation"] = create_buckets
    if options.endpoint_url:
        parts = urlsplit(options.endpoint_url)
        kwargs.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    if options.access_key:
        kwargs.update(
            access_key=options.access_key,
            secret_key=options.secret_key,
            session_token=options.session_token,
        )
    return pafs.S3FileSystem(**kwargs)


def is_uri(location: Location) -> bool:
    """Whether ``location`` is an ``s3://`` URI (anything else is a local path).

    Raises:
        StorageError: it names another scheme (``gs://``, ``http://``...): not supported.
    """
    if not isinstance(location, str):
        return False
    if location.startswith(S3_PREFIX):
        return True
    scheme = location.split("://", 1)[0] if "://" in location else ""
    if scheme and scheme.isidentifier():
        raise StorageError(f"{location}: unsupported scheme {scheme + '://'!r}; expected s3://")
    return False


def location_of(text: str | Path) -> Location:
    """A command-line argument as a location: ``s3://...`` stays a string, else a Path."""
    return text if isinstance(text, str) and is_uri(text) else Path(text)


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``.

    Raises:
        StorageError: no bucket name.
    """
    bucket, _, key = uri[len(S3_PREFIX) :].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket name; expected s3://bucket/key")
    return bucket, key.strip("/")


def resolve(location: Location, options: S3Options | None = None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding ``location`` and the path on it.

    ``options`` default to :meth:`S3Options.from_env` (only read for an ``s3://`` URI).
    """
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), str(location)
    bucket, key = split_uri(str(location))
    fs = (options or S3Options.from_env()).filesystem()
    return fs, f"{bucket}/{key}" if key else bucket


def join(location: Location, *parts: str) -> Location:
    """``location / part / ...`` for either kind of location."""
    if is_uri(location):
        return "/".join([str(location).rstrip("/"), *(p.strip("/") for p in parts)])
    return Path(location).joinpath(*parts)


def suffix(location: Location) -> str:
    """The file extension, lower-cased (``.parquet``)."""
    name = str(location).rstrip("/") if is_uri(location) else Path(location).name
    return PurePosixPath(name).suffix.lower()


def explain(exc: OSError, location: Location, options: S3Options | None = None) -> StorageError:
    """One line for an S3 error: a missing bucket, refused credentials, no endpoint."""
    if not is_uri(location):
        return StorageError(f"{location}: {exc}")
    options = options or S3Options.from_env()
    bucket, _ = split_uri(str(location))
    text = str(exc)
    lower = text.lower().replace(" ", "_")
    at = f"at {options.endpoint}"
    if "no_such_bucket" in lower or "nosuchbucket" in lower:
        return StorageError(f"{location}: bucket {bucket!r} does not exist {at}")
    if any(word.replace(" ", "_") in lower for word in _DENIED):
        return StorageError(
            f"{location}: access to bucket {bucket!r} {at} denied; check AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY"
        )
    if "network_connection" in lower or "could_not_connect" in lower:
        return StorageError(
            f"{location}: cannot reach the S3 endpoint {options.endpoint} (AWS_ENDPOINT_URL)"
        )
    return StorageError(f"{location}: {text.splitlines()[0] if text else type(exc).__name__}")


def check_bucket(location: Location, options: S3Options | None = None) -> None:
    """Make sure an ``s3://`` location's bucket exists and the credentials may use it.

    A no-op for a local path. Raises:
        StorageError: the bucket is missing, the credentials are refused or the endpoint
            cannot be reached (one line naming bucket and endpoint).
    """
    if not is_uri(location):
        return
    import pyarrow.fs as pafs

    options = options or S3Options.from_env()
    bucket, _ = split_uri(str(location))
    try:
        info = options.filesystem().get_file_info(bucket)
    except OSError as exc:
        raise explain(exc, location, options) from exc
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{location}: bucket {bucket!r} does not exist at {options.endpoint}")


def ensure_bucket(location: str, options: S3Options | None = None) -> bool:
    """Create the bucket of an ``s3://`` location unless it exists; True when created.

    Raises:
        StorageError: not an ``s3://`` URI, refused credentials, an unreachable endpoint.
    """
    import pyarrow.fs as pafs

    if not is_uri(location):
        raise StorageError(f"{location!r}: expected an s3://bucket URI")
    options = options or S3Options.from_env()
    bucket, _ = split_uri(location)
    fs = options.filesystem(create_buckets=True)
    try:
        if fs.get_file_info(bucket).type != pafs.FileType.NotFound:
            return False
        fs.create_dir(bucket)
    except OSError as exc:
        raise explain(exc, location, options) from exc
    return True


def file_info(location: Location, options: S3Options | None = None) -> pafs.FileInfo:
    """pyarrow's ``FileInfo`` of a location (type, size, mtime); errors as StorageError."""
    fs, path = resolve(location, options)
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise explain(exc, location, options) from exc


def list_files(
    location: Location, suffixes: Iterable[str], options: S3Options | None = None
) -> list[Location]:
    """Files under a directory (or prefix) whose extension is in ``suffixes``, sorted."""
    import pyarrow.fs as pafs

    fs, path = resolve(location, options)
    wanted = {s.lower() for s in suffixes}
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except OSError as exc:
        raise explain(exc, location, options) from exc
    found = sorted(
        i.path for i in infos if i.type == pafs.FileType.File and suffix(i.path) in wanted
    )
    if not is_uri(location):
        return [Path(p) for p in found]
    return [S3_PREFIX + p for p in found]


def is_dir(location: Location, options: S3Options | None = None) -> bool:
    """Whether a location is a directory (on S3: a prefix holding objects)."""
    import pyarrow.fs as pafs

    if not is_uri(location):
        return Path(location).is_dir()
    return file_info(location, options).type == pafs.FileType.Directory


def is_file(location: Location, options: S3Options | None = None) -> bool:
    """Whether a location is a file (on S3: an object)."""
    import pyarrow.fs as pafs

    if not is_uri(location):
        return Path(location).is_file()
    return file_info(location, options).type == pafs.FileType.File


def upload(
    sources: Iterable[Path],
    destination: str,
    options: S3Options | None = None,
    *,
    create_bucket: bool = False,
) -> list[tuple[Path, str]]:
    """Copy local files and folders to ``s3://bucket/prefix``; returns (source, URI) pairs.

    A file lands at ``destination/<name>``; a folder's files keep their layout under
    ``destination/<folder name>/``. Existing objects are overwritten. ``create_bucket``:
    make the bucket first if it does not exist (else a missing bucket is an error).

    Raises:
        StorageError: the destination is not an ``s3://`` URI, its bucket is missing or
            the credentials are refused (checked before any copy).
        FileNotFoundError: a source does not exist.
    """
    import pyarrow.fs as pafs

    if not is_uri(destination):
        raise StorageError(f"--to {destination!r}: expected an s3://bucket/prefix URI")
    options = options or S3Options.from_env()
    if create_bucket:
        ensure_bucket(destination, options)
    check_bucket(destination, options)
    pairs: list[tuple[Path, str]] = []
    for source in sources:
        if source.is_dir():
            pairs += [
                (f, str(join(destination, source.name, *f.relative_to(source).parts)))
                for f in sorted(source.rglob("*"))
                if f.is_file()
            ]
        elif source.is_file():
            pairs.append((source, str(join(destination, source.name))))
        else:
            raise FileNotFoundError(f"{source}: no such file or folder to upload")
    local = pafs.LocalFileSystem()
    for src, uri in pairs:
        fs, path = resolve(uri, options)
        try:
            pafs.copy_files(str(src.resolve()), path, local, fs)
        except OSError as exc:
            raise explain(exc, uri, options) from exc
    return pairs
