"""How many rows Feast converts to protos at once when it writes a view online.

Feast's local materialization turns each write batch into a Python list of
``(EntityKeyProto, {feature: ValueProto}, ts, created)`` tuples before the online store
writes it, and that list, not the Arrow data, is what sets the peak of a materialization.
Measured with Feast 0.67 / protobuf 6 (``_convert_arrow_to_proto``, RSS delta per row):
about 550 bytes per scalar value (features, join keys and the two timestamps alike; an
8-character and a 36-character string key cost the same) and about 24 bytes per element of
a list feature on top of one value for the list itself. ``user_activity`` (12 features)
costs ~6.3 kB a row, so a fixed 200k-row batch held ~1.2 GB of protos while
``user_category`` (2 features) held ~0.5 GB, and ``user_item_latest`` (two lists of a user's
pairs) several GB.

This module sizes each view's batch from a memory budget instead: rows = budget / the row
cost estimated from the view's schema and its Parquet footer (mean list length), within
``[MIN_ROWS, MAX_ROWS]``. Below ~10k rows Feast's fixed cost per batch dominates (a 10k
batch took 1.8x the time of 200k for ``user_category``), hence the floor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Bytes of Python protos per scalar value of a row (measured, see the module docstring).
SCALAR_VALUE_BYTES = 550
#: Bytes per element of a list feature's value (measured).
LIST_ELEMENT_BYTES = 24
#: Feast's two timestamps of a row (event, created), converted like any value.
TIMESTAMP_VALUES = 2
MIN_ROWS = 10_000
MAX_ROWS = 200_000


def mean_list_lengths(path: Path, columns: list[str]) -> dict[str, float]:
    """Mean number of elements per row of each list column, from the Parquet footers (of
    the file, or of every file of a folder).

    A Parquet column chunk's ``num_values`` counts the leaf values (elements, plus one slot
    per null or empty list), so this reads no data pages.
    """
    import pyarrow.parquet as pq

    from flywheel.features.day_parts import table_files

    leaves: dict[str, int] = dict.fromkeys(columns, 0)
    rows = 0
    for file in table_files(path):  # the file, or a day folder's
        meta = pq.ParquetFile(file).metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                top = chunk.path_in_schema.split(".", 1)[0]
                if top in leaves:
                    leaves[top] += chunk.num_values
    if rows == 0:
        return dict.fromkeys(columns, 0.0)
    return {name: count / rows for name, count in leaves.items()}


def row_bytes(scalar_values: int, list_elements: float) -> float:
    """Estimated proto bytes of one row with these many scalar values and list elements."""
    return (scalar_values + TIMESTAMP_VALUES) * SCALAR_VALUE_BYTES + (
        list_elements * LIST_ELEMENT_BYTES
    )


def rows_for_budget(budget_bytes: int, per_row: float) -> int:
    """Rows of ``per_row`` bytes that fit the budget, within ``[MIN_ROWS, MAX_ROWS]``."""
    if per_row <= 0:
        return MAX_ROWS
    return int(min(MAX_ROWS, max(MIN_ROWS, budget_bytes // per_row)))


def view_batch_rows(view: Any, budget_bytes: int) -> int:
    """Write-batch rows for a Feast ``FeatureView`` backed by one Parquet file.

    Args:
        view: the feature view (its features, join keys and ``batch_source.path``).
        budget_bytes: proto memory one batch may take.
    """
    from feast.types import Array

    lists = [f.name for f in view.features if isinstance(f.dtype, Array)]
    scalars = len(view.features) + len(view.join_keys)
    elements = 0.0
    if lists:
        path = Path(view.batch_source.path)
        elements = sum(mean_list_lengths(path, lists).values()) if path.exists() else 0.0
    return rows_for_budget(budget_bytes, row_bytes(scalars, elements))
