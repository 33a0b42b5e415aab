"""Sessions by inactivity gap for a staged run (the driver step between stage and commit).

Session derivation needs each user's events in time order across the *whole* input, which
no per-file task sees, so it runs once in the driver over the staged rows' ``user_id`` and
``ts`` (plus the lake's events just before and during the run's time range, to continue a
session across a run boundary), then rewrites each staged file's ``session_id``. See
:mod:`flywheel.ingest.derive` for the rule and what happens at a run boundary.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel import lake
from flywheel.ingest.derive import session_ids, ts_micros
from flywheel.ingest.stage import _FILE_COL, _ROW_COL

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)


def derive_staged_sessions(settings: Settings, staging: Path, gap_minutes: float) -> int:
    """Fill in ``session_id`` of every staged event row; returns the rows rewritten."""
    files = sorted(staging.glob("date=*/*.parquet"))
    if not files:
        return 0
    cols = ["user_id", "ts", _FILE_COL, _ROW_COL]
    parts = [pq.read_table(f, columns=cols) for f in files]
    run = pa.concat_tables(parts)
    gap = timedelta(minutes=gap_minutes)
    start = pc.min(run.column("ts")).as_py() - gap
    end = pc.max(run.column("ts")).as_py() + timedelta(microseconds=1)
    users = run.column("user_id").combine_chunks()
    prior = lake.read_lake_events(settings, ["user_id", "ts", "session_id"], start, end)
    prior = prior.filter(pc.is_in(prior.column("user_id"), value_set=pc.unique(users)))
    log.info(
        "deriving sessions (gap %s min) for %d staged events, %d lake events in range",
        gap_minutes,
        run.num_rows,
        prior.num_rows,
    )
    tiebreak = (np.asarray(run.column(_FILE_COL).to_numpy(), np.int64) << 40) | np.asarray(
        run.column(_ROW_COL).to_numpy(), np.int64
    )
    ids = session_ids(
        pa.concat_arrays([prior.column("user_id").combine_chunks(), users]),
        np.concatenate([ts_micros(prior.column("ts")), ts_micros(run.column("ts"))]),
        pa.concat_arrays(
            [prior.column("session_id").combine_chunks(), pa.nulls(run.num_rows, pa.string())]
        ),
        np.concatenate([np.zeros(prior.num_rows, np.int64), tiebreak]),
        int(gap / timedelta(microseconds=1)),
    ).slice(prior.num_rows)
    offset = 0
    for path, part in zip(files, parts, strict=True):
        table = pq.read_table(path)
        column = table.schema.get_field_index("session_id")
        table = table.set_column(
            column, table.schema.field("session_id"), ids.slice(offset, part.num_rows)
        )
        pq.write_table(table, path)
        offset += part.num_rows
    return run.num_rows
