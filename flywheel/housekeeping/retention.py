"""Which files retention lets go, kind by kind (pure apart from listing and stat calls).

Each function returns :class:`Candidate` rows; none deletes anything
(:mod:`flywheel.housekeeping.gc` does). Data (lake partitions, serving logs) ages by its
partition's day against :func:`~flywheel.housekeeping.protect.data_anchor`; everything
else by its modification time against the wall clock.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel import lake
from flywheel.housekeeping import swap
from flywheel.housekeeping.compact import (
    closed_log_files,
    lake_tables,
    partitioned_roots,
    partitions,
)
from flywheel.housekeeping.protect import (
    ProtectedModels,
    data_anchor,
    kfp_outputs,
    protected_runs,
    runs_dir,
)

if TYPE_CHECKING:
    from flywheel.config import Settings


@dataclass(frozen=True)
class Candidate:
    """One thing gc would delete: a file or folder (or a registered model, by ``tag``)."""

    path: Path
    kind: str
    size: int
    reason: str
    tag: str | None = None


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _age_days(path: Path, now: datetime) -> float:
    return (now.timestamp() - path.stat().st_mtime) / 86_400


def _cutoff(anchor: date, keep_days: int, floor: date) -> date:
    """The first day kept: ``keep_days`` before ``anchor``, never later than ``floor``."""
    return min(anchor - timedelta(days=keep_days), floor)


def lake_partitions(settings: Settings, now: datetime, floor: date) -> list[Candidate]:
    """Lake partitions older than ``retention.lake_days`` (none when it is ``None``)."""
    keep = settings.retention.lake_days
    if keep is None:
        return []
    first = _cutoff(data_anchor(settings, now), keep, floor)
    out = []
    for kind, root, _ in lake_tables(settings):
        for folder in partitions(root):
            day = lake.partition_day(folder)
            if day is not None and day < first:
                reason = f"before {first} (retention.lake_days={keep})"
                out.append(Candidate(folder, f"lake/{kind}", size_of(folder), reason))
    return out


def serving_logs(
    settings: Settings, now: datetime, floor: date, served_state: dict[str, Any]
) -> list[Candidate]:
    """Closed, fully ingested raw serving logs older than ``retention.serving_log_days``
    (the candidate log, which nothing ingests: closed and older)."""
    from flywheel.predlog import log_dir

    keep = settings.retention.serving_log_days
    if keep is None:
        return []
    first = _cutoff(data_anchor(settings, now), keep, floor)
    out = []
    for kind in ("predictions", "feedback", "candidates"):
        root = log_dir(settings, kind)  # type: ignore[arg-type]
        offsets = dict(served_state.get(kind, {}).get("files", {}))
        if kind == "candidates":  # read where it lies (the off-policy check): no ingest
            offsets = {p.relative_to(root).as_posix(): p.stat().st_size
                       for p in root.glob("date=*/*.jsonl")}  # fmt: skip
        for folder, files in closed_log_files(settings, root, offsets, now.timestamp()).items():
            day = lake.partition_day(folder)
            if day is None or day >= first:
                continue
            reason = f"ingested, before {first} (retention.serving_log_days={keep})"
            out += [Candidate(p, f"serving/{kind}", p.stat().st_size, reason) for p in files]
    return out


def _by_age(folder: Path, kind: str, days: int | None, setting: str, now: datetime) -> list[Any]:
    if days is None or not folder.is_dir():
        return []
    return [
        Candidate(p, kind, size_of(p), f"older than {days} d ({setting}={days})")
        for p in sorted(folder.iterdir())
        if not p.name.startswith(".") and _age_days(p, now) > days
    ]


def quarantine(settings: Settings, now: datetime) -> list[Candidate]:
    """Quarantine files older than ``retention.quarantine_days``."""
    days = settings.retention.quarantine_days
    folder = settings.quarantine_dir
    return _by_age(folder, "quarantine", days, "retention.quarantine_days", now)


def command_logs(settings: Settings, now: datetime) -> list[Candidate]:
    """Command logs (``logs/*.log``) older than ``retention.log_days``."""
    days = settings.retention.log_days
    found = _by_age(settings.workspace / "logs", "logs", days, "retention.log_days", now)
    return [c for c in found if c.path.suffix == ".log"]


def kfp_runs(settings: Settings, now: datetime, models: ProtectedModels) -> list[Candidate]:
    """KFP run folders and run records past ``kfp_runs_keep`` and ``kfp_run_days``.

    The newest ``kfp_runs_keep`` of each and any younger than ``kfp_run_days`` stay, and so
    does every run the champion or its rollback history came from (see
    :func:`~flywheel.housekeeping.protect.protected_runs`).
    """
    r = settings.retention
    ids, outputs = protected_runs(settings, models)
    out = []
    for folder, kind, keep in (
        (kfp_outputs(settings), "kfp-run", outputs),
        (runs_dir(settings), "run-record", ids),
    ):
        if not folder.is_dir():
            continue
        found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        found.sort(key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
        for path in found[r.kfp_runs_keep :]:
            if path.name in keep or (r.kfp_run_days and _age_days(path, now) <= r.kfp_run_days):
                continue
            age = f"older than {r.kfp_run_days} d, " if r.kfp_run_days else ""
            reason = f"{age}not among the newest {r.kfp_runs_keep} (retention.kfp_runs_keep)"
            out.append(Candidate(path, kind, size_of(path), reason))
    return out


def kfp_cache_entries(settings: Settings, gone: list[Path]) -> list[Candidate]:
    """kfp.local cache entries that name an output folder in ``gone`` (a cache hit on one
    would be a miss anyway: kfp.local checks the artifact files exist)."""
    cache = settings.workspace / "kfp" / "cache"
    names = [str(p) for p in gone if p.parent == kfp_outputs(settings)]
    if not names or not cache.is_dir():
        return []
    out = []
    for entry in sorted(cache.glob("*.json")):
        text = entry.read_text(errors="replace")
        if any(name + "/" in text for name in names):
            reason = "names a run folder gc removes"
            out.append(Candidate(entry, "kfp-cache", entry.stat().st_size, reason))
    return out


def models(settings: Settings, protected: ProtectedModels) -> list[Candidate]:
    """Registered models beyond the newest ``retention.models_keep`` that are neither the
    champion nor in its rollback history."""
    store_dir = settings.workspace / "bentoml" / "models"
    if not store_dir.is_dir():
        return []
    from bentoml.exceptions import NotFound

    from flywheel.registry import MODEL_NAME, model_store

    keep = settings.retention.models_keep
    with model_store(settings) as store:
        try:
            found = store.list(MODEL_NAME)
        except NotFound:
            return []
        others = [m for m in found if str(m.tag) not in protected.tags]
        others.sort(key=lambda m: m.creation_time, reverse=True)
        reason = (
            f"not champion or rollback history, beyond the newest {keep} (retention.models_keep)"
        )
        return [
            Candidate(Path(m.path), "model", size_of(Path(m.path)), reason, tag=str(m.tag))
            for m in others[keep:]
        ]


def stale_staging(settings: Settings) -> list[Candidate]:
    """Folders an interrupted compaction or gc left (recovered, not deleted blindly)."""
    roots = partitioned_roots(settings)
    return [
        Candidate(p, "stale", size_of(p), "left by an interrupted compaction or gc")
        for root in roots
        for p in swap.stale(root) + sorted(root.glob(f"{GC_PREFIX}*") if root.is_dir() else [])
    ]


#: Name prefix a lake partition takes while gc deletes it (gone from readers at once).
GC_PREFIX = ".gc-"


def remove(path: Path) -> None:
    """Delete a file, or a folder after renaming it out of readers' sight."""
    if path.is_dir():
        hidden = path.with_name(f"{GC_PREFIX}{path.name}")
        path.rename(hidden)
        shutil.rmtree(hidden)
    else:
        path.unlink(missing_ok=True)
