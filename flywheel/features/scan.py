"""The lake scan and catalog read that start a full feature build.

The scan reads only Parquet footers and the dictionary-encoded id columns: event count,
the last event time, and the distinct user and item ids that become the run's dense keys
(:mod:`~flywheel.features.keys`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel.features.keys import KeySpace, distinct_sorted
from flywheel.features.partials import US_PER_HOUR, FeatureBuildError
from flywheel.schemas import ITEM_SCHEMA, TS_TYPE


@dataclass(frozen=True)
class LakeScan:
    """What a scan of the lake found: work units, event count and the distinct ids."""

    #: Units of work: (file, row group) pairs holding at least one event.
    row_groups: tuple[tuple[str, int], ...]
    events: int
    #: Sorted distinct user and item ids of the events.
    user_ids: pa.Array
    item_ids: pa.Array
    #: Epoch µs of the lake's latest event.
    last_us: int = 0

    @property
    def horizon(self) -> int:
        """The end (epoch hour) of the hour holding the lake's latest event."""
        return self.last_us // US_PER_HOUR + 1

    @property
    def user_range(self) -> tuple[int, int]:
        return 0, max(len(self.user_ids) - 1, 0)

    def key_space(self, catalog: pa.Table) -> KeySpace:
        """Keys for the lake's users and for the items of the lake and the catalog."""
        items = distinct_sorted([self.item_ids, catalog["item_id"]])
        return KeySpace(self.user_ids, items)


def lake_files(events_dir: Path) -> list[Path]:
    """The lake's event files (``date=YYYY-MM-DD/*.parquet``); raises if there are none."""
    files = sorted(events_dir.glob("date=*/*.parquet"))
    if not files:
        raise FeatureBuildError(
            f"event lake {str(events_dir)!r} is empty: expected date=YYYY-MM-DD/*.parquet files"
        )
    return files


ID_COLUMNS = ["user_id", "item_id"]


def _file_ids(path: Path) -> tuple[list[pa.Array], list[pa.Array]]:
    """A lake file's distinct user and item ids: the dictionaries of its id columns (read
    dictionary-encoded as Parquet stores them; the per-row indices are dropped at once)."""
    schema = pq.read_schema(path)
    for column in ID_COLUMNS:
        if schema.get_field_index(column) < 0:
            raise FeatureBuildError(f"lake file {str(path)!r} has no column {column!r}")
    table = pq.read_table(path, columns=ID_COLUMNS, read_dictionary=ID_COLUMNS)
    users, items = (
        [c.dictionary if pa.types.is_dictionary(c.type) else c for c in table[name].chunks]
        for name in ID_COLUMNS
    )
    return users, items


def _file_last_us(path: Path, md: pq.FileMetaData) -> int:
    """Epoch µs of a lake file's latest event: its footer statistics, else its ``ts``."""
    column = md.schema.to_arrow_schema().get_field_index("ts")
    if column < 0:
        raise FeatureBuildError(f"lake file {str(path)!r} has no column 'ts'")
    stats = [md.row_group(rg).column(column).statistics for rg in range(md.num_row_groups)]
    if all(s is not None and s.has_min_max for s in stats):
        highs = [pa.scalar(s.max, TS_TYPE) for s in stats if s is not None]
    else:
        highs = [pc.max(pq.read_table(path, columns=["ts"])["ts"]).cast(TS_TYPE)]
    return max(h.value for h in highs if h.is_valid)


def scan_lake(files: Sequence[Path]) -> LakeScan:
    """Count events, find the latest one and collect the distinct user/item ids; raises on
    an empty lake."""
    units: list[tuple[str, int]] = []
    users: list[pa.Array] = []
    items: list[pa.Array] = []
    events, last_us = 0, 0
    for path in files:
        md = pq.read_metadata(path)
        if md.num_rows == 0:
            continue
        events += md.num_rows
        units += [(str(path), rg) for rg in range(md.num_row_groups) if md.row_group(rg).num_rows]
        last_us = max(last_us, _file_last_us(path, md))
        user, item = _file_ids(path)
        users += user
        items += item
    if events == 0:
        raise FeatureBuildError(f"event lake files under {str(files[0].parent.parent)!r} are empty")
    return LakeScan(tuple(units), events, distinct_sorted(users), distinct_sorted(items), last_us)


def read_catalog(items_path: Path) -> pa.Table:
    """The item catalog; raises if it is missing or lacks contract columns."""
    if not items_path.is_file():
        raise FeatureBuildError(f"item catalog {str(items_path)!r} does not exist")
    return pq.read_table(items_path, columns=ITEM_SCHEMA.names)
