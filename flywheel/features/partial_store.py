"""The partial store: each lake date partition's hourly partials, kept between builds.

Layout: ``settings.state_dir / "feature_partials" / "date=YYYY-MM-DD" / "<content id>.parquet"``.
A file holds the :func:`~flywheel.features.partials.hourly_partials` of one partition with
the ids themselves instead of a build's dense keys (``entity_id``; ``sub_id`` = the item of
a user x item row), so it stays valid when later partitions bring new ids. Partials do not
depend on the catalog (``hourly_partials`` never reads it), only on the events.

A partition's version is two-fold: its part files' names, sizes and mtimes (free to read),
and, when those changed, a content id (rows and an order-free hash of the columns the build
reads). Compaction rewrites the files without changing the events, so its content id is
unchanged and nothing is recomputed; a late event or a re-ingest changes it.

Files are named by content id and never overwritten while a build state refers to them; the
incremental build (:mod:`~flywheel.features.incremental`) deletes the ones no state refers to
after it has written a new state. ``flywheel gc`` never looks under ``state_dir``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel.features.keys import KeySpace, distinct_sorted
from flywheel.features.partials import (
    EVENT_COLUMNS,
    KIND_ITEM,
    KIND_USER,
    PARTIAL_DTYPES,
    CatalogIndex,
    Columns,
    concat_partials,
    hourly_partials,
)
from flywheel.lake import PART_GLOB, partition_day, write_parquet_atomic

if TYPE_CHECKING:
    from flywheel.config import Settings

STORE_DIR = "feature_partials"
_ID_COLUMNS = ["user_id", "item_id"]
#: Stored columns: the partial columns with ids in place of ``entity`` / ``sub``.
_NUMERIC = [c for c in PARTIAL_DTYPES if c not in ("entity", "sub")]
_NO_CATALOG = CatalogIndex(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int32), ())
STORE_SCHEMA = pa.schema(
    [
        pa.field("entity_id", pa.string()),
        pa.field("sub_id", pa.string()),
        *(pa.field(c, pa.from_numpy_dtype(PARTIAL_DTYPES[c])) for c in _NUMERIC),
    ]
)


def store_dir(settings: Settings) -> Path:
    """The partial store's root."""
    return settings.state_dir / STORE_DIR


@dataclass(frozen=True)
class Partition:
    """A lake date partition as the build sees it: its name, files and their stats."""

    name: str  # date=YYYY-MM-DD
    files: tuple[Path, ...]

    @property
    def stat_id(self) -> str:
        """Names, sizes and mtimes of the part files (changes on any rewrite)."""
        digest = hashlib.sha256()
        for path in self.files:
            st = path.stat()
            digest.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        return digest.hexdigest()[:32]


def lake_partitions(events_dir: Path) -> dict[str, Partition]:
    """Every ``date=`` partition of the lake holding at least one part file, by name."""
    if not events_dir.is_dir():
        return {}
    out = {}
    for sub in sorted(events_dir.iterdir()):
        if partition_day(sub) is None or not sub.is_dir():
            continue
        files = tuple(sorted(sub.glob(PART_GLOB)))
        if files:
            out[sub.name] = Partition(sub.name, files)
    return out


def _read_events(part: Partition) -> list[pa.Table]:
    return [
        pq.read_table(p, columns=EVENT_COLUMNS, read_dictionary=_ID_COLUMNS) for p in part.files
    ]


def content_id(part: Partition) -> str:
    """Rows and an order-independent hash of the build's columns: equal for the same events
    in any file layout (a compaction), different after a late event or a re-ingest."""
    import pandas as pd

    rows, total, mixed = 0, np.uint64(0), np.uint64(0)
    for table in _read_events(part):
        if table.num_rows == 0:
            continue
        frame = table.to_pandas()
        for c in [*_ID_COLUMNS, "event_type"]:
            frame[c] = frame[c].astype(str)
        hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy(np.uint64)
        rows += len(hashed)
        with np.errstate(over="ignore"):
            total = np.uint64(total + hashed.sum(dtype=np.uint64))
            mixed ^= np.bitwise_xor.reduce(hashed * np.uint64(0x9E3779B97F4A7C15))
    return f"{rows}-{int(total):016x}-{int(mixed):016x}"


def compute_partials(part: Partition) -> pa.Table:
    """The partition's hourly partials with ids (one file's events at a time)."""
    tables = [t for t in _read_events(part) if t.num_rows]
    if not tables:
        return STORE_SCHEMA.empty_table()
    users = distinct_sorted([t["user_id"] for t in tables])
    items = distinct_sorted([t["item_id"] for t in tables])
    keys = KeySpace(users, items)
    parts = [hourly_partials(t, _NO_CATALOG, keys) for t in tables]
    return _to_ids(concat_partials(parts), keys)


def _to_ids(cols: Columns, keys: KeySpace) -> pa.Table:
    kind = cols["kind"]
    is_item, pair = kind == KIND_ITEM, kind > KIND_ITEM
    entity = cols["entity"].astype(np.int64)
    users = keys.ids("user", np.where(is_item, 0, entity))
    items = keys.ids("item", np.where(is_item, entity, 0))
    sub = keys.ids("item", np.where(pair, cols["sub"], 0).astype(np.int64))
    data = {
        "entity_id": pc.if_else(pa.array(is_item), items, users),
        "sub_id": pc.if_else(pa.array(pair), sub, pa.scalar(None, pa.string())),
    }
    data |= {c: pa.array(cols[c]) for c in _NUMERIC}
    return pa.table(data, schema=STORE_SCHEMA)


def partial_path(settings: Settings, name: str, content: str) -> Path:
    return store_dir(settings) / name / f"{content}.parquet"


def write_partials(settings: Settings, name: str, content: str, table: pa.Table) -> Path:
    """Write a partition's partials under their content id (atomic; an existing file with
    the same content id is the same partials and is kept)."""
    path = partial_path(settings, name, content)
    if not path.exists():
        write_parquet_atomic(table, path)
    return path


def read_partials(paths: list[Path]) -> pa.Table:
    """The stored partials of several partitions as one table; the id columns stay
    dictionary-encoded as stored (each file's chunk has its own dictionary), so the ids are
    looked up once per distinct value, not once per row."""
    ids = pa.dictionary(pa.int32(), pa.string())
    schema = pa.schema(
        [pa.field(f.name, ids) if f.name in ("entity_id", "sub_id") else f for f in STORE_SCHEMA]
    )
    tables = [pq.read_table(p, read_dictionary=["entity_id", "sub_id"]) for p in paths]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.cast(schema) for t in tables])


def _distinct_of_kind(ids: pa.ChunkedArray, mask: np.ndarray) -> list[pa.Array]:
    """Per chunk of a dictionary column, the distinct values of the rows in ``mask``."""
    out, at = [], 0
    for chunk in ids.chunks:
        mine = mask[at : at + len(chunk)]
        at += len(chunk)
        if not pa.types.is_dictionary(chunk.type):
            out.append(pc.unique(chunk.filter(pa.array(mine))).cast(pa.string()))
            continue
        used = np.unique(chunk.indices.to_numpy(zero_copy_only=False)[mine])
        out.append(chunk.dictionary.take(pa.array(used, pa.int32())).cast(pa.string()))
    return out


def id_space(partials: pa.Table, catalog_items: pa.Array | pa.ChunkedArray) -> KeySpace:
    """The key space a full build of the same lake would use: users and items of the events
    (every event makes a user and an item row) and the catalog's items."""
    kind = partials["kind"].to_numpy()
    ent = partials["entity_id"]
    users = distinct_sorted(_distinct_of_kind(ent, kind == KIND_USER))
    items = distinct_sorted([*_distinct_of_kind(ent, kind == KIND_ITEM), catalog_items])
    return KeySpace(users, items)


def to_keys(partials: pa.Table, keys: KeySpace) -> Columns:
    """Stored partials as ``PARTIAL_DTYPES`` columns in ``keys``'s dense keys."""
    if partials.num_rows == 0:
        return concat_partials([])
    kind = partials["kind"].to_numpy()
    is_item = kind == KIND_ITEM
    pair = kind > KIND_ITEM
    ent = partials["entity_id"]  # dictionary-encoded: one lookup per distinct id
    user_key, item_key = keys.user_keys(ent), keys.item_keys(ent)
    entity = np.where(is_item, item_key, user_key)
    sub = np.where(pair, keys.item_keys(partials["sub_id"]), -1)
    if (entity < 0).any() or (sub[pair] < 0).any():
        raise ValueError("a stored partial's id is missing from the build's key space")
    cols = {"entity": entity, "sub": sub}
    cols |= {c: partials[c].to_numpy() for c in _NUMERIC}
    return concat_partials([cols])
