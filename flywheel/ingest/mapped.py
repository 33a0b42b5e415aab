"""Validating a batch of source rows through a mapping (pure, no Ray).

:func:`validate_mapped` is :func:`~flywheel.ingest.validate.validate_table` for a source
layout: rows whose event word the mapping drops are counted and removed first; the rest are
renamed to the event contract, checked with the mapping's vocabulary and timestamp format,
and given derived event ids. Quarantine records keep the *source* row and name the *source*
column (``visitorid is missing``, ``event is not one of addtocart|transaction|view: 'x'``).
Item attributes on events become validated catalog rows.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.ingest.checks import CheckContext, _mask, as_strings, check_vocabulary
from flywheel.ingest.derive import event_ids
from flywheel.ingest.mapping import MappingError, SourceMapping
from flywheel.ingest.timestamps import EpochUnit, check_timestamp
from flywheel.ingest.validate import (
    EVENTS,
    ITEMS,
    InputKind,
    Validation,
    rows_as_json,
    validate_table,
)
from flywheel.schemas import ITEM_SCHEMA, QUARANTINE_SCHEMA

#: Placeholder session id of rows whose session is derived after staging.
SESSION_PENDING = "-"
_EPOCH: dict[str, EpochUnit | None] = {"iso": None, "epoch_s": "s", "epoch_ms": "ms"}


@dataclass(frozen=True)
class MappedBatch:
    """One batch through a mapping.

    ``validation`` is as from ``validate_table`` but indexed on the source batch;
    ``dropped_types`` counts dropped rows per source word; ``items`` holds valid catalog
    rows (``ITEM_SCHEMA``) and ``items_index`` their source rows; ``items_quarantine`` and
    ``items_reasons`` the attribute rows that break the catalog rules (their events stay).
    """

    validation: Validation
    dropped_types: dict[str, int]
    items: pa.Table | None = None
    items_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    items_quarantine: pa.Table = field(default_factory=QUARANTINE_SCHEMA.empty_table)
    items_reasons: dict[str, int] = field(default_factory=dict)


def mapped_kind(mapping: SourceMapping) -> InputKind:
    """The events kind with the mapping's vocabulary and timestamp format."""
    ts = functools.partial(
        check_timestamp, zone=mapping.timestamps.zone, epoch=_EPOCH[mapping.timestamps.format]
    )
    vocabulary = functools.partial(check_vocabulary, vocabulary=mapping.event_types)
    return InputKind(
        name=EVENTS.name,
        schema=EVENTS.schema,
        checks={**EVENTS.checks, "event_type": vocabulary, "ts": ts},
        key=EVENTS.key,
        partition_by=EVENTS.partition_by,
    )


def _require_columns(raw: pa.Table, mapping: SourceMapping, source: str) -> None:
    keys = {v: f"columns.{k}" for k, v in reversed(mapping.columns.model_dump().items()) if v}
    if mapping.items is not None:
        keys |= {c: "items.category" for c in mapping.items.category}
        keys[mapping.items.price] = "items.price"
    for column in mapping.source_columns():
        if column not in raw.column_names:
            raise MappingError(
                f"{source}: mapping {mapping.name!r} needs column {column!r} ({keys[column]}); "
                f"the file has {raw.column_names}"
            )


def _renamer(mapping: SourceMapping) -> functools.partial[str]:
    return functools.partial(_rename, sources=mapping.field_sources())


def _rename(reason: str, sources: dict[str, str]) -> str:
    name, _, rest = reason.partition(" ")
    return f"{sources.get(name, name)} {rest}"


def _constant(value: str, n: int) -> pa.Array:
    return pa.array(np.full(n, value, dtype=object), pa.string())


def _blank_to_null(col: pa.ChunkedArray) -> pa.Array:
    text = pc.utf8_trim_whitespace(as_strings(col))
    return pc.if_else(pc.equal(text, ""), pa.nulls(len(text), pa.string()), text)


def _event_table(t: pa.Table, mapping: SourceMapping) -> pa.Table:
    """Source rows renamed to the event contract; derived fields as placeholders."""
    cols, n = mapping.columns, t.num_rows
    device = (
        pc.coalesce(_blank_to_null(t.column(cols.device)), mapping.device)
        if cols.device
        else _constant(mapping.device, n)
    )
    return pa.table(
        {
            "event_id": t.column(cols.event_id) if cols.event_id else _constant("-", n),
            "user_id": t.column(cols.user_id),
            "item_id": t.column(cols.item_id),
            "event_type": t.column(cols.event_type),
            "ts": t.column(cols.ts),
            "session_id": (
                t.column(cols.session_id) if cols.session_id else _constant(SESSION_PENDING, n)
            ),
            "device": device,
        }
    )


def _quarantine(
    raw: pa.Table, rows: np.ndarray, checked: Validation, rename: functools.partial[str]
) -> pa.Table:
    """``checked``'s quarantine, reasons renamed, rows taken from ``raw`` at ``rows``."""
    q = checked.quarantine
    reasons = [rename(r) for r in q.column("reason").to_pylist()]
    return pa.Table.from_arrays(
        [
            q.column("source_file"),
            pa.array(reasons, pa.string()),
            pa.array(rows_as_json(raw, rows), pa.string()),
            q.column("quarantined_at"),
        ],
        schema=QUARANTINE_SCHEMA,
    )


def validate_mapped(
    raw: pa.Table, mapping: SourceMapping, ctx: CheckContext, source: str = "<memory>"
) -> MappedBatch:
    """Validate one batch of source rows through ``mapping`` (see the module docstring).

    Raises:
        MappingError: the batch lacks a column the mapping reads (naming it and its key).
    """
    _require_columns(raw, mapping, source)
    rename = _renamer(mapping)
    words = pc.utf8_lower(
        pc.utf8_trim_whitespace(as_strings(raw.column(mapping.columns.event_type)))
    )
    drop = _mask(pc.is_in(words, pa.array(mapping.drop_event_types, pa.string())))
    dropped = Counter(words.filter(pa.array(drop)).to_pylist())
    kept = np.flatnonzero(~drop)
    t = raw.take(pa.array(kept, pa.int64()))
    checked = validate_table(_event_table(t, mapping), mapped_kind(mapping), ctx, source)
    bad = np.setdiff1d(np.arange(t.num_rows), checked.valid_index)
    valid = checked.valid
    if mapping.columns.event_id is None:
        valid = valid.set_column(0, valid.schema.field("event_id"), event_ids(valid))
    used = set(mapping.source_columns())
    validation = Validation(
        valid=valid,
        valid_index=kept[checked.valid_index],
        quarantine=_quarantine(raw, kept[bad], checked, rename),
        reasons={rename(k): v for k, v in checked.reasons.items()},
        dropped_columns=tuple(c for c in raw.column_names if c not in used),
    )
    batch = MappedBatch(validation, {str(k): v for k, v in dropped.items()})
    if mapping.items is None:
        return batch
    return _with_items(batch, t, kept, checked.valid_index, mapping, ctx, source, raw)


def _with_items(
    batch: MappedBatch,
    t: pa.Table,
    kept: np.ndarray,
    valid_index: np.ndarray,
    mapping: SourceMapping,
    ctx: CheckContext,
    source: str,
    raw: pa.Table,
) -> MappedBatch:
    """Catalog rows from the valid events' item attributes, checked by the catalog rules."""
    assert mapping.items is not None
    take = pa.array(valid_index, pa.int64())
    rows = t.take(take)
    category = pc.coalesce(*[_blank_to_null(rows.column(c)) for c in mapping.items.category])
    valid = batch.validation.valid
    attributes = pa.table(
        {
            "item_id": valid.column("item_id"),
            "category": category,
            "price": rows.column(mapping.items.price),
            "created_ts": valid.column("ts"),
        }
    )
    checked = validate_table(attributes, ITEMS, ctx, source)
    assert checked.valid.schema == ITEM_SCHEMA
    rename = _renamer(mapping)
    at_source = kept[valid_index]
    bad = np.setdiff1d(np.arange(attributes.num_rows), checked.valid_index)
    return MappedBatch(
        validation=batch.validation,
        dropped_types=batch.dropped_types,
        items=checked.valid,
        items_index=at_source[checked.valid_index],
        items_quarantine=_quarantine(raw, at_source[bad], checked, rename),
        items_reasons={rename(k): v for k, v in checked.reasons.items()},
    )
