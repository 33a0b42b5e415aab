"""The feature build state: what the published tables were built from.

``settings.state_dir / "feature_build.json"`` holds, for the last published build: each lake
partition's version (``stat`` id, content id, the partial file), the catalog's digest, the
definition digest (table schemas, windows, the partials' layout version), and the horizon
(the end hour of the lake's last event hour). It is written only after every table is
published, and removed before publishing starts, so a build that dies half-way leaves no
state and the next build is a full one: the tables and the state never disagree.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.lake import read_json_state, write_json_atomic

if TYPE_CHECKING:
    from flywheel.config import Settings

STATE_FILE = "feature_build.json"
#: Bump when the partials' layout or meaning changes (forces a full rebuild).
PARTIALS_VERSION = 1


@dataclass(frozen=True)
class PartitionVersion:
    """One partition as the last build saw it."""

    stat: str
    content: str
    #: Path of its partials file, relative to the partial store.
    partials: str
    #: First and last hour (epoch hours) of its partials; -1 for an empty partition.
    first_hour: int
    last_hour: int


@dataclass(frozen=True)
class BuildState:
    """The state of the last published build (see the module docstring)."""

    definition: str
    catalog: str
    horizon: int
    partitions: dict[str, PartitionVersion] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildState:
        parts = {k: PartitionVersion(**v) for k, v in data.get("partitions", {}).items()}
        return cls(str(data["definition"]), str(data["catalog"]), int(data["horizon"]), parts)


def state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def read_build_state(settings: Settings) -> BuildState | None:
    """The last published build's state, or None (none yet, cleared, or unreadable)."""
    try:
        data = read_json_state(state_path(settings), "feature build state")
        return BuildState.from_json(data) if data else None
    except (ValueError, KeyError, TypeError):
        return None  # an unreadable state means "rebuild everything", never a wrong table


def write_build_state(settings: Settings, state: BuildState) -> None:
    write_json_atomic(state_path(settings), state.to_json())


def clear_build_state(settings: Settings) -> None:
    """Forget the last build: called before any table is replaced."""
    state_path(settings).unlink(missing_ok=True)


def definition_digest() -> str:
    """Digest of everything the tables' meaning depends on besides the events and catalog."""
    from flywheel.packed_history import HISTORY_FEATURES, HISTORY_TTL_S
    from flywheel.schemas import FEATURE_TABLES, SNAPSHOT_SECONDS, WINDOWS

    parts = {
        "partials": PARTIALS_VERSION,
        "tables": {name: schema.to_string() for name, schema in FEATURE_TABLES.items()},
        "windows": WINDOWS,
        "snapshot": SNAPSHOT_SECONDS,
        "history": [list(HISTORY_FEATURES), HISTORY_TTL_S],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def catalog_digest(items_path: Path) -> str:
    """Digest of the catalog file's bytes (any rewrite of the catalog rebuilds everything)."""
    digest = hashlib.sha256()
    with items_path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]
