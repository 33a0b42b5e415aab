"""What the online store holds, per feature view: a digest of each key's latest row.

A delta materialization (:mod:`flywheel.feature_store.delta`) writes only the keys whose
latest row differs from the one written before. What was written before is this digest:
one Parquet file per feature view, ``<workspace>/state/online_digest/<view>.parquet``, with
the view's join keys and ``__h``, DuckDB's 64-bit ``hash`` of the row's features and event
timestamp (the created timestamp is left out: every build stamps it anew, and online reads
never return it), then where the row is: its event time, file name and row number
(:mod:`flywheel.feature_store.delta_scan`). ``manifest.json`` says which online store and
feature service the digests describe, and per view its definition (keys, features,
timestamp columns), the window ``[start, end]`` it was taken over and the identity of each
file it scanned.

A digest is trusted only when all of these match the run's (otherwise the view is written
whole, as on a first run): the manifest's format, DuckDB's version (``hash`` is not promised
stable across versions), the online store (SQLite file, or Redis connection string, and the
Feast project), the feature-service version, and the view's definition. A view's digest is
replaced (``os.replace`` of a finished file, then the manifest) only after its write to the
online store succeeded, so a failed write leaves the previous digest and the next run
rewrites every key that differs from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flywheel.config import Settings

#: Bumped when the digest's layout or hash input changes: older digests are then ignored
#: (2: each key's row location and the scanned files' identities).
FORMAT = 2
#: Column of a digest holding the hash of a key's latest row.
HASH_COLUMN = "__h"
MANIFEST = "manifest.json"


def digest_dir(settings: Settings) -> Path:
    """Where the digests live: ``<workspace>/state/online_digest``."""
    return settings.state_dir / "online_digest"


def store_identity(settings: Settings) -> dict[str, Any]:
    """What the digests must have been written against to be trusted."""
    import duckdb

    if settings.feast.online_store == "redis":
        where = settings.feast.redis_connection_string
    else:
        where = str((settings.feast_dir / "online.db").absolute())
    return {
        "format": FORMAT,
        "duckdb": duckdb.__version__,
        "online_store": settings.feast.online_store,
        "where": where,
        "project": settings.feast.project,
        "feature_service_version": settings.feast.feature_service_version,
    }


def view_signature(
    keys: tuple[str, ...], features: tuple[str, ...], ts: str, created: str | None
) -> str:
    """A short fingerprint of a view's definition, as far as the digest depends on it."""
    text = json.dumps([keys, features, ts, created])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class DigestState:
    """The digest folder of one workspace, read once per materialization."""

    root: Path
    identity: dict[str, Any]
    manifest: dict[str, Any]

    @classmethod
    def load(cls, settings: Settings) -> DigestState:
        root = digest_dir(settings)
        identity = store_identity(settings)
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = {}
        if not isinstance(manifest, dict) or manifest.get("identity") != identity:
            manifest = {}  # another store, service version or format: trust no digest
        return cls(root, identity, manifest)

    def path(self, view: str) -> Path:
        return self.root / f"{view}.parquet"

    def trusted(self, view: str, signature: str) -> Path | None:
        """The view's digest file, if it describes what this run's online store holds."""
        entry = self.manifest.get("views", {}).get(view)
        path = self.path(view)
        if not isinstance(entry, dict) or entry.get("signature") != signature:
            return None
        return path if path.is_file() else None

    def entry(self, view: str) -> dict[str, Any] | None:
        """The manifest's record of the view's last materialization."""
        entry = self.manifest.get("views", {}).get(view)
        return entry if isinstance(entry, dict) else None

    def staging(self, view: str) -> Path:
        """A fresh path for the view's next digest, next to the live one."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f".{view}.{os.getpid()}.tmp.parquet"
        path.unlink(missing_ok=True)
        return path

    def commit(
        self,
        view: str,
        staged: Path,
        signature: str,
        window: tuple[datetime, datetime],
        keys: int,
        files: dict[str, str],
    ) -> None:
        """Make ``staged`` the view's digest (call only after the online write succeeded);
        ``window``: the ``(start, end)`` it was taken over; ``files``: name -> identity of
        each file scanned."""
        os.replace(staged, self.path(view))
        views = dict(self.manifest.get("views", {}))
        views[view] = {
            "signature": signature,
            "start": window[0].astimezone(UTC).isoformat(),
            "end": window[1].astimezone(UTC).isoformat(),
            "files": files,
            "keys": keys,
            "written_at": datetime.now(UTC).isoformat(),
        }
        self.manifest = {"identity": self.identity, "views": views}
        tmp = self.root / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=1, sort_keys=True))
        os.replace(tmp, self.root / MANIFEST)
