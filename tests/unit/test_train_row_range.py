"""A worker's share of a split: ``row_range`` reads exactly rows [start, stop) of the files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.train import row_range


@pytest.fixture
def files(tmp_path) -> list[str]:
    """Three files of 7, 0 and 13 rows, in row groups of 3 (groups straddle every cut)."""
    paths, start = [], 0
    for index, rows in enumerate((7, 0, 13)):
        path = tmp_path / f"part-{index}.parquet"
        values = list(range(start, start + rows))
        table = pa.table(
            {
                "x": pa.array(values, pa.float32()),
                "label": pa.array([v % 2 for v in values], pa.int8()),
            }
        )
        pq.write_table(table, path, row_group_size=3)
        paths.append(str(path))
        start += rows
    return paths


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_ranks_cover_every_row_once_in_order(files, world):
    total = 20
    seen = []
    for rank in range(world):
        start, stop = total * rank // world, total * (rank + 1) // world
        table = row_range(files, start, stop, ["x", "label"])
        assert table.num_rows == stop - start
        seen += table.column("x").to_pylist()
    assert seen == [float(v) for v in range(total)]


def test_reads_only_the_requested_columns_and_rows(files):
    table = row_range(files, 5, 9, ["label"])
    assert table.column_names == ["label"]
    assert table.column("label").to_pylist() == [1, 0, 1, 0]


def test_an_empty_range_is_an_empty_table(files):
    assert row_range(files, 20, 20, ["x"]).num_rows == 0
