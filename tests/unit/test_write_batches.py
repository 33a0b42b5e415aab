"""Online write batches sized from a memory budget (``flywheel.feature_store.write_batches``)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.feature_store import write_batches as wb


def test_row_bytes_counts_timestamps_values_and_list_elements():
    assert wb.row_bytes(3, 0) == 5 * wb.SCALAR_VALUE_BYTES
    assert wb.row_bytes(3, 10) == 5 * wb.SCALAR_VALUE_BYTES + 10 * wb.LIST_ELEMENT_BYTES


@pytest.mark.parametrize(
    ("budget", "per_row", "want"),
    [
        (100_000_000, 1_000, 100_000),  # fits: budget / row
        (10**12, 1_000, wb.MAX_ROWS),  # capped
        (1_000, 1_000, wb.MIN_ROWS),  # floored
        (1_000, 0, wb.MAX_ROWS),
    ],
)
def test_rows_for_budget_clamps(budget, per_row, want):
    assert wb.rows_for_budget(budget, per_row) == want


def test_mean_list_lengths_reads_the_footer(tmp_path: Path):
    path = tmp_path / "t.parquet"
    table = pa.table(
        {
            "user_id": ["a", "b", "c", "d"],
            "ui_items": [["x"], ["x", "y", "z"], ["y", "z"], ["x", "y"]],
            "ui_values": [[1.0] * 13, [2.0] * 39, [3.0] * 26, [4.0] * 26],
        }
    )
    pq.write_table(table, path, row_group_size=2)  # two row groups, summed
    got = wb.mean_list_lengths(path, ["ui_items", "ui_values"])
    assert got == {"ui_items": 2.0, "ui_values": 26.0}


def test_a_wide_view_gets_fewer_rows_than_a_narrow_one_and_lists_cost_by_length(tmp_path):
    import feature_repo.definitions as d

    budget = 384 * 2**20
    wide, narrow = (
        wb.view_batch_rows(d.user_activity, budget),
        wb.view_batch_rows(d.user_category, budget),
    )
    assert wb.MIN_ROWS <= wide < narrow <= wb.MAX_ROWS

    import copy

    view = copy.deepcopy(d.user_item_latest)
    path = tmp_path / "user_item_latest.parquet"
    pairs = 100
    pq.write_table(
        pa.table(
            {
                "user_id": ["a", "b"],
                "ui_items": [["i"] * pairs] * 2,
                "ui_values": [[0.5] * (13 * pairs)] * 2,
            }
        ),
        path,
    )
    view.batch_source.file_options.uri = str(path)
    assert view.batch_source.path == str(path)
    per_row = wb.row_bytes(3, 14 * pairs)
    assert wb.view_batch_rows(view, budget) == wb.rows_for_budget(budget, per_row)
    assert wb.view_batch_rows(view, budget) < wide
