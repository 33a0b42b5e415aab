"""Run ids and the watermark: which files were ingested, and the latest event time."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flywheel import storage
from flywheel.ingest.validate import InputKind


def fingerprint(path: storage.Location, s3: storage.S3Options | None = None) -> dict[str, Any]:
    """Size, mtime and SHA-256 of a file: how the watermark recognises ingested files.

    ``path`` may be an ``s3://`` URI (its object's size and last-modified time).
    """
    digest = hashlib.sha256()
    fs, where = storage.resolve(path, s3)
    with fs.open_input_stream(where) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if not storage.is_uri(path):
        stat = Path(path).stat()
        return {"size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest.hexdigest()}
    info = storage.file_info(path, s3)
    mtime = info.mtime.timestamp() if info.mtime is not None else None
    return {"size": info.size, "mtime": mtime, "sha256": digest.hexdigest()}


def new_run_id(now: datetime) -> str:
    """A sortable, unique run id such as ``20240501T120000Z-1a2b3c4d``."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def pending_files(
    files: list[storage.Location],
    kind_state: dict[str, Any],
    s3: storage.S3Options | None = None,
) -> tuple[list[storage.Location], dict[storage.Location, dict[str, Any]]]:
    """Files whose (size, hash) the watermark has not seen, and every file's fingerprint."""
    seen = {(f["size"], f["sha256"]) for f in kind_state.get("files", {}).values()}
    prints = {p: fingerprint(p, s3) for p in files}
    todo = [p for p in files if (prints[p]["size"], prints[p]["sha256"]) not in seen]
    return todo, prints


def advance_state(
    state: dict[str, Any],
    kind: InputKind,
    prints: dict[storage.Location, dict[str, Any]],
    run_id: str,
    max_ts: str | None,
) -> dict[str, Any]:
    """The state after a run: files recorded with their fingerprint, watermark advanced."""
    kind_state = dict(state.get(kind.name, {}))
    files = dict(kind_state.get("files", {}))
    for path, fp in prints.items():
        files[str(path)] = {**fp, "run_id": run_id}
    marks = [m for m in (kind_state.get("watermark"), max_ts) if m]
    kind_state["files"] = files
    kind_state["watermark"] = max(marks, key=datetime.fromisoformat) if marks else None
    return {**state, kind.name: kind_state, "version": 1}
