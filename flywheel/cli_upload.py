"""``flywheel upload``: copy local raw logs (or any files) into an S3 bucket.

The first step of a cluster run: the pipeline's ingest reads ``s3://`` URIs, so the logs
must be in the bucket first. Apart from ``flywheel.cli`` to keep that module small.
"""

from __future__ import annotations

from pathlib import Path

import typer

from flywheel.console import console


def upload(
    paths: list[Path] = typer.Argument(None, help="Local files or folders to copy."),
    to: str = typer.Option(
        ...,
        "--to",
        help="Destination s3://bucket/prefix; a folder lands under prefix/<folder name>/. "
        "Endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.",
    ),
    create_bucket: bool = typer.Option(
        False, "--create-bucket", help="Create the bucket first if it does not exist."
    ),
) -> None:
    """Copy files or folders to S3 (e.g. raw logs for `ingest --events s3://...`).

    With no paths and --create-bucket, only makes sure the bucket exists.
    """
    from flywheel import storage

    paths = paths or []
    if not paths and not create_bucket:
        raise typer.BadParameter("give files or folders to upload (or --create-bucket alone)")
    pairs = storage.upload(paths, to, create_bucket=create_bucket)
    if not paths:
        console.print(f"bucket of {to} ready")
        return
    size = sum(src.stat().st_size for src, _ in pairs)
    console.print(f"uploaded {len(pairs)} file(s), {size:,} bytes, to {to}")
    first = storage.join(to, paths[0].name)
    console.print(f"next: flywheel ingest --events {first}")
