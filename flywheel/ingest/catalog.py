"""The item catalog (``lake/items.parquet``): validated rows upserted by ``item_id``."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel import lake, storage
from flywheel.ingest.checks import CheckContext
from flywheel.ingest.commit import collect_quarantine
from flywheel.ingest.readers import expand_inputs, read_raw
from flywheel.ingest.stage import _FILE_COL, _ROW_COL, FIRST_TS_COL, latest_per_item
from flywheel.ingest.state import new_run_id
from flywheel.ingest.validate import ITEMS, reason_key, validate_table
from flywheel.schemas import ITEM_SCHEMA, QUARANTINE_SCHEMA

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemIngestSummary:
    """What one catalog ingest did."""

    run_id: str
    rows_read: int
    accepted: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    new_items: int
    updated_items: int
    catalog_items: int
    quarantine_file: str | None
    seconds: float


def upsert_items(catalog: pa.Table | None, incoming: pa.Table) -> tuple[pa.Table, int, int]:
    """Merge validated item rows into the catalog, one row per ``item_id``.

    The row with the latest ``created_ts`` wins; on a tie the newer ingest wins (incoming
    over catalog, a later row of the file over an earlier one). Returns the new catalog
    (sorted by ``item_id``), the number of new items and the number of changed items.
    """
    import pandas as pd

    old = (catalog if catalog is not None else ITEM_SCHEMA.empty_table()).to_pandas()
    new = incoming.to_pandas()
    both = pd.concat([old.assign(_src=0), new.assign(_src=1)], ignore_index=True)
    both["_row"] = np.arange(len(both))
    both = both.sort_values(["item_id", "created_ts", "_src", "_row"], kind="stable")
    winners = both.drop_duplicates("item_id", keep="last")
    known = set(old["item_id"].tolist())
    new_items = int((~winners["item_id"].isin(known)).sum())
    changed = winners[(winners["_src"] == 1) & winners["item_id"].isin(known)]
    before = old.set_index("item_id").loc[changed["item_id"]]
    after = changed.set_index("item_id")[before.columns]
    updated = int((before != after).any(axis=1).sum())
    out = winners.drop(columns=["_src", "_row"]).reset_index(drop=True)
    return pa.Table.from_pandas(out, schema=ITEM_SCHEMA, preserve_index=False), new_items, updated


def ingest_items(
    settings: Settings,
    path: storage.Location,
    *,
    now: datetime | None = None,
    run_id: str | None = None,
    s3: storage.S3Options | None = None,
) -> ItemIngestSummary:
    """Validate an item catalog file (or directory of them) and upsert it by ``item_id``.

    Bad rows (ids not integers, price not a finite number > 0, blank category, naive or
    unparseable ``created_ts``) go to ``quarantine_dir/<run-id>.parquet``. The catalog at
    ``settings.items_path`` is replaced atomically. See :func:`upsert_items` for who wins.

    Raises:
        InputFileError: the path is missing, unreadable or unsupported (before any write).
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    files = expand_inputs([path], s3)
    run_id = run_id or new_run_id(now)
    ctx = CheckContext(now, settings.ingest.max_future_skew_s)
    valid: list[pa.Table] = [ITEM_SCHEMA.empty_table()]
    quarantined: list[pa.Table] = [QUARANTINE_SCHEMA.empty_table()]
    reasons: Counter[str] = Counter()
    rows = 0
    for file in files:
        for batch in read_raw(file, settings.ray.batch_size, s3):
            checked = validate_table(batch.table, ITEMS, ctx, str(file))
            quarantined += [batch.rejects_table(str(file), now), checked.quarantine]
            valid.append(checked.valid)
            reasons.update(checked.reasons)
            reasons.update(reason_key(r) for r, _ in batch.rejects)
            rows += batch.table.num_rows + len(batch.rejects)
    incoming = pa.concat_tables(valid)
    catalog = pq.read_table(settings.items_path) if settings.items_path.exists() else None
    merged, new_items, updated = upsert_items(catalog, incoming)
    if incoming.num_rows:
        lake.write_parquet_atomic(merged, settings.items_path)
    bad = pa.concat_tables(quarantined)
    qfile = settings.quarantine_dir / f"{run_id}.parquet"
    if bad.num_rows:
        lake.write_parquet_atomic(bad, qfile)
    log.info("items: %d new, %d updated, %d quarantined", new_items, updated, bad.num_rows)
    return ItemIngestSummary(
        run_id=run_id,
        rows_read=rows,
        accepted=incoming.num_rows,
        quarantined=bad.num_rows,
        quarantine_reasons=dict(reasons.most_common()),
        new_items=new_items,
        updated_items=updated,
        catalog_items=merged.num_rows,
        quarantine_file=str(qfile) if bad.num_rows else None,
        seconds=time.perf_counter() - started,
    )


def _dated_from_first_event(
    merged: pa.Table, catalog: pa.Table | None, first_seen: dict[str, Any]
) -> pa.Table:
    """Date each item the events touched from its first sighting, not its newest event.

    The newest event decides an item's category and price (:func:`upsert_items`), but its
    ``created_ts`` becomes the earliest of its first event in this run and the date the
    catalog already had, so the point-in-time join finds the item (its price, its
    category) for every event after it first appeared, not only after its latest one.
    """
    if not first_seen:
        return merged
    before = (
        dict(zip(catalog["item_id"].to_pylist(), catalog["created_ts"].to_pylist(), strict=True))
        if catalog is not None
        else {}
    )
    dates = [
        min(d for d in (ts, first_seen.get(item), before.get(item)) if d is not None)
        if item in first_seen
        else ts
        for item, ts in zip(
            merged["item_id"].to_pylist(), merged["created_ts"].to_pylist(), strict=True
        )
    ]
    index = merged.schema.get_field_index("created_ts")
    return merged.set_column(index, "created_ts", pa.array(dates, merged.schema.field(index).type))


def upsert_staged_items(
    settings: Settings, staging: Path, run_id: str, counts: dict[str, Any], started: float
) -> ItemIngestSummary:
    """Upsert the catalog rows a mapping derived from events (one write per run).

    Each staged chunk holds a batch's latest row per item; across chunks the latest
    ``created_ts`` (the event time) wins, ties to the later (file, row), and
    :func:`upsert_items` merges the result into the catalog, so an item's newest event
    sets its category and price, while its ``created_ts`` is the time of its first event
    (:func:`_dated_from_first_event`). Attribute rows that broke the catalog rules are written to
    ``quarantine_dir/<run-id>-items.parquet`` (their events are in the lake). ``counts``
    holds ``rows`` and ``reasons`` summed over the run's files.
    """
    chunks = [pq.read_table(p) for p in sorted((staging / "_items").glob("*.parquet"))]
    incoming = ITEM_SCHEMA.empty_table()
    first_seen: dict[str, Any] = {}
    if chunks:
        latest = latest_per_item(pa.concat_tables(chunks))
        by = ["created_ts", _FILE_COL, _ROW_COL]  # upsert_items: later rows win ties
        latest = latest.sort_by([(c, "ascending") for c in by])
        incoming = latest.select(ITEM_SCHEMA.names).cast(ITEM_SCHEMA)
        first_seen = dict(
            zip(latest["item_id"].to_pylist(), latest[FIRST_TS_COL].to_pylist(), strict=True)
        )
    catalog = pq.read_table(settings.items_path) if settings.items_path.exists() else None
    merged, new_items, updated = upsert_items(catalog, incoming)
    merged = _dated_from_first_event(merged, catalog, first_seen)
    if incoming.num_rows:
        lake.write_parquet_atomic(merged, settings.items_path)
    qfile = collect_quarantine(
        staging / "_items_quarantine", settings.quarantine_dir / f"{run_id}-items.parquet"
    )
    reasons: Counter[str] = Counter(counts["reasons"])
    log.info("items from events: %d new, %d updated", new_items, updated)
    return ItemIngestSummary(
        run_id=f"{run_id}-items",
        rows_read=counts["rows"],
        accepted=counts["rows"] - sum(reasons.values()),
        quarantined=sum(reasons.values()),
        quarantine_reasons=dict(reasons.most_common()),
        new_items=new_items,
        updated_items=updated,
        catalog_items=merged.num_rows,
        quarantine_file=qfile,
        seconds=time.perf_counter() - started,
    )
