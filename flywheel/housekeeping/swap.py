"""Replace what a partition directory holds in one atomic step: the directory exchange.

Readers find a partition's files by listing ``date=YYYY-MM-DD/`` (the lake's
``part-*.parquet``, the serving logs' ``*.jsonl``); none of them reads a manifest. Swapping
many small files for one merged file must therefore never show both, nor neither, to a
reader that lists the folder at any moment, including after a crash. File renames cannot
do that (the old parts go one by one); a directory exchange can. The new contents are
built in a hidden sibling folder, then ``renameat2(RENAME_EXCHANGE)`` swaps the two names
in one step: the partition's name now holds the new files, the hidden name the old ones.

Steps, and what a crash after each leaves (readers only ever see ``date=...``):

1. the new files are written into ``.compact-<partition>-<id>/`` (hidden; the partition
   is untouched);
2. a manifest ``.compact-<partition>-<id>.json`` names the files replaced and written;
3. the exchange: the partition holds the new files, the staging folder the old ones;
4. files the staging folder holds that the manifest does not name (one a writer added
   between the listing and the exchange) are moved back into the partition;
5. the staging folder, then the manifest, are removed.

Whatever step a crash stops at, the partition holds each record exactly once and the
staging folder is redundant: :func:`recover` (run before every compaction and gc) finishes
steps 4-5 for a manifest it finds and drops a staging folder that has none.

``RENAME_EXCHANGE`` needs Linux (3.15+) and a local filesystem that has it (ext4, xfs,
btrfs, tmpfs); elsewhere :func:`exchange` raises :class:`ExchangeUnsupported` and
compaction leaves the partition as it is.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

#: Name prefix of a compaction's hidden staging folder and manifest (beside the partition).
STAGING_PREFIX = ".compact-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class ExchangeUnsupported(OSError):
    """This platform or filesystem cannot exchange two directories atomically."""


def exchange(a: Path, b: Path) -> None:
    """Swap the names ``a`` and ``b`` (two directories on one filesystem) atomically.

    Raises:
        ExchangeUnsupported: not Linux, no ``renameat2`` in the C library, or the
            filesystem refuses ``RENAME_EXCHANGE``.
        OSError: any other failure of the call (a missing path, for instance).
    """
    if not sys.platform.startswith("linux"):
        raise ExchangeUnsupported(f"atomic directory exchange needs Linux, not {sys.platform}")
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        raise ExchangeUnsupported("the C library has no renameat2 (glibc >= 2.28 needed)")
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        raise ExchangeUnsupported(
            code, f"{os.strerror(code)}: the filesystem of {str(a)!r} cannot exchange folders"
        )
    raise OSError(code, os.strerror(code), str(a), None, str(b))


@dataclass(frozen=True)
class Staging:
    """Where one compaction of ``partition`` builds its new contents."""

    partition: Path
    folder: Path
    manifest: Path


def new_staging(partition: Path) -> Staging:
    """A fresh (created, empty) staging folder beside ``partition``."""
    stem = f"{STAGING_PREFIX}{partition.name}-{uuid.uuid4().hex[:12]}"
    folder = partition.parent / stem
    folder.mkdir()
    return Staging(partition, folder, partition.parent / f"{stem}.json")


def _write_manifest(staging: Staging, replaced: list[str], written: list[str]) -> None:
    payload = {"partition": staging.partition.name, "replaced": replaced, "written": written}
    tmp = staging.manifest.with_name(f".{staging.manifest.name}.tmp")
    with tmp.open("w") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, staging.manifest)


def _rescue(folder: Path, partition: Path, known: set[str]) -> list[str]:
    """Move files ``folder`` holds that the manifest does not name back into ``partition``."""
    moved = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name in known or path.name.startswith("."):
            continue
        os.replace(path, partition / path.name)
        moved.append(path.name)
    return moved


def _remove_staging(folder: Path, manifest: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    manifest.unlink(missing_ok=True)


def switch(staging: Staging, replaced: list[str], written: list[str]) -> list[str]:
    """Steps 2-5: make ``staging``'s files the partition's; returns the names rescued.

    ``replaced``: the partition's files the new ones replace; ``written``: the files in the
    staging folder (both plain names). Files of either folder named in neither list are
    kept in the partition.
    """
    _write_manifest(staging, replaced, written)
    exchange(staging.folder, staging.partition)
    moved = _rescue(staging.folder, staging.partition, set(replaced) | set(written))
    _remove_staging(staging.folder, staging.manifest)
    return moved


def _finish(manifest: Path) -> None:
    data = json.loads(manifest.read_text())
    folder = manifest.with_suffix("")
    partition = manifest.parent / str(data["partition"])
    known = {str(n) for n in [*data.get("replaced", []), *data.get("written", [])]}
    if folder.is_dir() and partition.is_dir():
        _rescue(folder, partition, known)
    _remove_staging(folder, manifest)


def stale(root: Path) -> list[Path]:
    """Staging folders and manifests an interrupted compaction left under ``root``."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(STAGING_PREFIX))


def recover(root: Path) -> int:
    """Finish or drop every interrupted compaction under ``root``; returns how many."""
    done = 0
    for manifest in [p for p in stale(root) if p.suffix == ".json"]:
        _finish(manifest)
        done += 1
    for folder in [p for p in stale(root) if p.is_dir()]:
        shutil.rmtree(folder, ignore_errors=True)  # no manifest: it held only new output
        done += 1
    return done
