"""Orchestration: :func:`ingest_events`, from input paths to a committed lake and watermark."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel import lake, storage
from flywheel.ingest.catalog import ItemIngestSummary, ingest_items, upsert_staged_items
from flywheel.ingest.commit import collect_quarantine, commit_partition
from flywheel.ingest.errors import InputFileError
from flywheel.ingest.mapping import SourceMapping, load_mapping
from flywheel.ingest.readers import expand_inputs
from flywheel.ingest.sessions import derive_staged_sessions
from flywheel.ingest.stage import stage_file
from flywheel.ingest.state import advance_state, new_run_id, pending_files
from flywheel.ingest.validate import EVENTS, InputKind

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSummary:
    """What one event ingest did.

    ``rows_read = accepted + duplicates_dropped + quarantined + dropped``, where ``dropped``
    counts rows whose event word the mapping drops (per word in ``dropped_types``).
    ``watermark`` is the max event ``ts`` ever accepted (ISO, UTC), after this run.
    ``items`` is the ``--items`` catalog file's upsert, ``items_from_events`` the catalog
    rows a mapping derived from event attributes.
    """

    run_id: str
    files_read: int
    files_skipped: int
    rows_read: int
    accepted: int
    duplicates_dropped: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    partitions_written: int
    columns_dropped: tuple[str, ...]
    watermark: str | None
    quarantine_file: str | None
    seconds: float
    items: ItemIngestSummary | None = None
    mapping: str | None = None
    dropped: int = 0
    dropped_types: dict[str, int] = field(default_factory=dict)
    items_from_events: ItemIngestSummary | None = None


def _ray_map(
    settings: Settings, fn: Callable[[dict[str, Any]], dict[str, Any]], tasks: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run ``fn`` over ``tasks`` with Ray Data, one block (task) per item; results unordered."""
    import ray.data

    from flywheel.ray_runtime import ensure_ray

    ensure_ray(settings)
    ds = ray.data.from_items(tasks, override_num_blocks=len(tasks)).map(fn)
    return list(ds.iter_rows())


def _validate_files(
    settings: Settings,
    kind: InputKind,
    files: list[storage.Location],
    staging: Path,
    now: datetime,
    mapping: SourceMapping | None,
    s3: storage.S3Options | None = None,
) -> list[dict[str, Any]]:
    log.info("validating %d %s file(s) with Ray Data", len(files), kind.name)
    tasks = [
        {
            "path": str(p),
            "file_idx": i,
            "kind": kind.name,
            "staging": str(staging),
            "now": now.isoformat(),
            "max_future_skew_s": settings.ingest.max_future_skew_s,
            "batch_size": settings.ray.batch_size,
            "mapping": mapping.model_dump() if mapping else None,
            # Ray task arguments stay inside the Ray cluster, like the pods holding the keys.
            "s3": s3.as_dict() if s3 else None,
        }
        for i, p in enumerate(files)
    ]
    results = _ray_map(settings, stage_file, tasks)
    errors = sorted(r["error"] for r in results if r["error"])
    if errors:
        raise InputFileError("; ".join(errors))
    for r in sorted(results, key=lambda r: r["path"]):
        log.info("%s: %d rows, %d valid", r["path"], r["rows"], r["valid"])
    return results


def _commit_partitions(
    settings: Settings, kind: InputKind, target: Path, staging: Path
) -> list[dict[str, Any]]:
    names = sorted(p.name for p in staging.iterdir() if lake.partition_day(p) is not None)
    if not names:
        return []
    log.info("deduplicating and committing %d partition(s)", len(names))
    tasks = [
        {"kind": kind.name, "partition": n, "staging": str(staging), "target": str(target)}
        for n in names
    ]
    return _ray_map(settings, commit_partition, tasks)


def _partitioned_ingest(
    settings: Settings,
    kind: InputKind,
    target: Path,
    files: list[storage.Location],
    now: datetime,
    run_id: str,
    mapping: SourceMapping | None = None,
    s3: storage.S3Options | None = None,
) -> dict[str, Any]:
    """Validate, stage, dedupe and commit ``files`` of a partitioned kind; then the state.

    With a mapping: sessions are derived over the whole staged run before the commit (when
    the source has none), and the catalog rows derived from event attributes are upserted
    after it; both before the watermark, so a crash before it re-derives the same values.
    """
    state = lake.read_state(settings)
    todo, prints = pending_files(files, state.get(kind.name, {}), s3)
    counts: dict[str, Any] = {"files_read": len(todo), "files_skipped": len(files) - len(todo)}
    if counts["files_skipped"]:
        log.info("skipping %d file(s) already ingested", counts["files_skipped"])
    if not todo:
        return {**counts, "watermark": state.get(kind.name, {}).get("watermark")}
    staging = settings.lake_dir / "_staging" / run_id
    started = time.perf_counter()
    derived_items = None
    try:
        staged = _validate_files(settings, kind, todo, staging, now, mapping, s3)
        if mapping is not None and mapping.columns.session_id is None:
            derive_staged_sessions(settings, staging, mapping.sessions.gap_minutes)
        committed = _commit_partitions(settings, kind, target, staging)
        quarantine = collect_quarantine(
            staging / "_quarantine", settings.quarantine_dir / f"{run_id}.parquet"
        )
        if mapping is not None and mapping.items is not None:
            item_counts = {
                "rows": sum(s["item_rows"] for s in staged),
                "reasons": _summed(staged, "item_reasons"),
            }
            derived_items = upsert_staged_items(settings, staging, run_id, item_counts, started)
        max_ts = max(
            (c["max_ts"] for c in committed if c["max_ts"]),
            default=None,
            key=datetime.fromisoformat,
        )
        new_state = advance_state(state, kind, {p: prints[p] for p in todo}, run_id, max_ts)
        lake.write_state(settings, new_state)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    reasons = _summed(staged, "reasons")
    dropped_types = _summed(staged, "dropped_types")
    return {
        **counts,
        "rows_read": sum(s["rows"] for s in staged),
        "accepted": sum(c["accepted"] for c in committed),
        "duplicates_dropped": sum(c["dup_run"] + c["dup_lake"] for c in committed),
        "quarantined": sum(reasons.values()),
        "quarantine_reasons": dict(reasons.most_common()),
        "dropped": sum(dropped_types.values()),
        "dropped_types": dict(dropped_types.most_common()),
        "partitions_written": sum(1 for c in committed if c["accepted"]),
        "columns_dropped": tuple(sorted({c for s in staged for c in json.loads(s["dropped"])})),
        "watermark": new_state[kind.name]["watermark"],
        "quarantine_file": quarantine,
        "items_from_events": derived_items,
    }


def _summed(staged: list[dict[str, Any]], key: str) -> Counter[str]:
    total: Counter[str] = Counter()
    for s in staged:
        total.update(json.loads(s[key]))
    return total


def ingest_events(
    settings: Settings,
    paths: Sequence[storage.Location],
    items: storage.Location | None = None,
    *,
    mapping: str | Path | SourceMapping | None = None,
    now: datetime | None = None,
) -> IngestSummary:
    """Ingest raw event files (and optionally an item catalog file) into the event lake.

    Args:
        settings: where the lake, quarantine and state live; Ray and ingest rules.
        paths: files, or directories meaning every ``*.parquet``/``*.jsonl``/``*.json``/
            ``*.csv`` under them (recursive, sorted); local paths or ``s3://`` URIs (a
            prefix is a directory), reached with the ``AWS_*`` settings
            (:mod:`flywheel.storage`).
        items: an item catalog file (or directory) to upsert after the events, see
            :func:`ingest_items`.
        mapping: the source layout of ``paths``: a built-in mapping name (``retailrocket``,
            ``rees46``), a mapping YAML path, or a :class:`SourceMapping`; None means the
            files already have the event contract's columns.
        now: the ingest clock for the future-skew check (default: the current time).

    Returns:
        An :class:`IngestSummary` of counts, quarantine reasons and timing.

    Raises:
        InputFileError: an input path is missing, unreadable or unsupported, lacks a
            column the mapping reads, or lies in a bucket that is missing or refuses the
            credentials (before any write).
        MappingError: the mapping is unknown or invalid (naming the key).
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    if mapping is not None and not isinstance(mapping, SourceMapping):
        mapping = load_mapping(mapping)
    remote = any(storage.is_uri(p) for p in [*paths, items] if p is not None)
    s3 = storage.S3Options.from_env() if remote else None
    files = expand_inputs(paths, s3)
    if items is not None:
        expand_inputs([items], s3)
    run_id = new_run_id(now)
    log.info("ingest run %s: %d event file(s)", run_id, len(files))
    result = _partitioned_ingest(
        settings, EVENTS, settings.events_dir, files, now, run_id, mapping, s3
    )
    item_summary = (
        ingest_items(settings, items, now=now, run_id=f"{run_id}-items", s3=s3)
        if items is not None
        else None
    )
    summary = IngestSummary(
        run_id=run_id,
        files_read=result["files_read"],
        files_skipped=result["files_skipped"],
        rows_read=result.get("rows_read", 0),
        accepted=result.get("accepted", 0),
        duplicates_dropped=result.get("duplicates_dropped", 0),
        quarantined=result.get("quarantined", 0),
        quarantine_reasons=result.get("quarantine_reasons", {}),
        partitions_written=result.get("partitions_written", 0),
        columns_dropped=result.get("columns_dropped", ()),
        watermark=result["watermark"],
        quarantine_file=result.get("quarantine_file"),
        seconds=time.perf_counter() - started,
        items=item_summary,
        mapping=mapping.name if mapping else None,
        dropped=result.get("dropped", 0),
        dropped_types=result.get("dropped_types", {}),
        items_from_events=result.get("items_from_events"),
    )
    if summary.columns_dropped:
        log.info("dropped extra columns %s", ", ".join(summary.columns_dropped))
    log.info(
        "ingested %d new event(s), %d duplicate(s), %d quarantined in %.1f s",
        summary.accepted,
        summary.duplicates_dropped,
        summary.quarantined,
        summary.seconds,
    )
    return summary
