"""``flywheel gc`` and ``flywheel compact``: plan, then (unless a dry run) act, under the lock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.housekeeping import retention, swap
from flywheel.housekeeping.compact import (
    Compaction,
    closed_log_files,
    compact_lake_partition,
    compact_log_partition,
    lake_tables,
    partitioned_roots,
    partitions,
    prune_served_state,
)
from flywheel.housekeeping.protect import protected_from, protected_models
from flywheel.housekeeping.retention import Candidate

if TYPE_CHECKING:
    from flywheel.config import Settings


@dataclass(frozen=True)
class GcResult:
    """What gc found (and, unless ``dry_run``, deleted), and what it protected."""

    dry_run: bool
    candidates: list[Candidate]
    protected_from: date
    champion: str | None
    history: tuple[str, ...]
    recovered: int = 0

    @property
    def bytes(self) -> int:
        return sum(c.size for c in self.candidates)


@dataclass(frozen=True)
class CompactResult:
    """The partitions compaction merged (or would), and those it skipped, with why."""

    dry_run: bool
    compactions: list[Compaction] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    recovered: int = 0


@contextmanager
def _locked(settings: Settings, command: str, dry_run: bool) -> Iterator[None]:
    # A dry run writes nothing: it may look at a workspace a cycle is using.
    from flywheel.workspace_lock import workspace_lock

    with nullcontext() if dry_run else workspace_lock(settings, command):
        yield


def recover_all(settings: Settings) -> int:
    """Finish interrupted compactions and gc deletions under every partitioned root."""
    done = 0
    for root in partitioned_roots(settings):
        done += swap.recover(root)
        for hidden in sorted(root.glob(f"{retention.GC_PREFIX}*")) if root.is_dir() else []:
            if hidden.is_dir():
                _rmtree(hidden)
            else:
                hidden.unlink(missing_ok=True)
            done += 1
    return done


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def plan_gc(
    settings: Settings, *, now: datetime | None = None, keep_days: float | None = None
) -> GcResult:
    """Everything retention lets go (see :mod:`~flywheel.housekeeping.retention`).

    ``keep_days`` overrides ``retention.training_window_days``: data from
    :func:`~flywheel.housekeeping.protect.protected_from` on is never a candidate.
    """
    from flywheel.served import read_served_state

    now = now or datetime.now(UTC)
    floor = protected_from(settings, now, keep_days)
    models = protected_models(settings)
    runs = retention.kfp_runs(settings, now, models)
    found = [
        *retention.lake_partitions(settings, now, floor),
        *retention.serving_logs(settings, now, floor, read_served_state(settings)),
        *retention.quarantine(settings, now),
        *retention.command_logs(settings, now),
        *runs,
        *retention.kfp_cache_entries(settings, [c.path for c in runs]),
        *retention.models(settings, models),
        *retention.stale_staging(settings),
    ]
    return GcResult(True, found, floor, models.champion, models.history)


def _delete(settings: Settings, candidates: list[Candidate]) -> None:
    tags = [c.tag for c in candidates if c.tag]
    if tags:
        from flywheel.registry import model_store

        with model_store(settings) as store:
            for tag in tags:
                store.delete(tag)
    for c in candidates:
        if not c.tag and c.kind != "stale" and c.path.exists():
            retention.remove(c.path)


def _record_lake_retention(settings: Settings, candidates: list[Candidate]) -> None:
    """Note the first event day kept in the ingest state: the lake fingerprint (which KFP
    caching keys on) changes, so the next cycle rebuilds features without the old days."""
    from flywheel import lake

    days = [lake.partition_day(c.path) for c in candidates if c.kind == "lake/events"]
    kept_from = max((d for d in days if d), default=None)
    if kept_from is None:
        return
    state = lake.read_state(settings)
    events = dict(state.get("events", {}))
    events["deleted_through"] = kept_from.isoformat()
    lake.write_state(settings, {**state, "events": events})


def run_gc(
    settings: Settings,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    keep_days: float | None = None,
) -> GcResult:
    """Plan gc and, unless ``dry_run``, delete what it found, under the workspace lock.

    Never deleted: the champion and every model in its rollback history, the runs they came
    from, data from ``protected_from`` on. Raises WorkspaceBusyError (not on a dry run).
    """
    with _locked(settings, "gc", dry_run):
        recovered = 0 if dry_run else recover_all(settings)
        plan = plan_gc(settings, now=now, keep_days=keep_days)
        if not dry_run:
            _delete(settings, plan.candidates)
            _record_lake_retention(settings, plan.candidates)
            prune_served_state(settings)
    return GcResult(
        dry_run, plan.candidates, plan.protected_from, plan.champion, plan.history, recovered
    )


def run_compact(
    settings: Settings, *, dry_run: bool = False, now: datetime | None = None
) -> CompactResult:
    """Merge the small files of every lake table and serving log (see
    :mod:`~flywheel.housekeeping.compact`), under the workspace lock."""
    from flywheel.housekeeping.swap import ExchangeUnsupported
    from flywheel.predlog import log_dir
    from flywheel.served import read_served_state

    r = settings.retention
    clock = (now or datetime.now(UTC)).timestamp()
    done: list[Compaction] = []
    skipped: list[tuple[Path, str]] = []
    with _locked(settings, "compact", dry_run):
        recovered = 0 if dry_run else recover_all(settings)
        for _, root, schema in lake_tables(settings):
            folders = partitions(root)
            if folders:
                skipped.append((folders[-1], "newest partition: still being filled"))
            for folder in folders[:-1]:
                try:
                    merged = compact_lake_partition(
                        folder,
                        schema,
                        min_files=r.compact_min_files,
                        row_group_rows=r.compact_row_group_rows,
                        dry_run=dry_run,
                    )
                except ExchangeUnsupported as exc:
                    swap.recover(root)
                    skipped.append((folder, f"left as is: {exc}"))
                    continue
                if merged:
                    done.append(merged)
        state = read_served_state(settings)
        for kind in ("predictions", "feedback"):
            root = log_dir(settings, kind)  # type: ignore[arg-type]
            offsets = dict(state.get(kind, {}).get("files", {}))
            for folder, files in closed_log_files(settings, root, offsets, clock).items():
                if len(files) < r.compact_min_files:
                    continue
                try:
                    done.append(
                        compact_log_partition(settings, kind, root, folder, files, dry_run=dry_run)
                    )
                except ExchangeUnsupported as exc:
                    swap.recover(root)
                    skipped.append((folder, f"left as is: {exc}"))
        if not dry_run:
            prune_served_state(settings)
    return CompactResult(dry_run, done, skipped, recovered)
