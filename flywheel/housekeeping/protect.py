"""What housekeeping never touches: the protected data window, the champion, its rollback
history, and the run folders their lineage (and the monitor's reference) points at."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flywheel.config import Settings

#: Days of events before the training window that its point-in-time features read (the
#: longest feature window, ``flywheel.schemas.WINDOWS["30d"]``).
FEATURE_LOOKBACK_DAYS = 30


def kfp_outputs(settings: Settings) -> Path:
    """kfp.local's pipeline root: one folder per pipeline run (``flywheel.cycle``)."""
    return settings.workspace / "kfp" / "outputs"


def runs_dir(settings: Settings) -> Path:
    """The cycles' step records, ``runs/<run_id>/<stage>.json``."""
    return settings.workspace / "runs"


def data_anchor(settings: Settings, now: datetime) -> date:
    """The day data ages count from: the lake's latest event, or today if that is earlier.

    Training windows run back from the data (``flywheel cycle --window-days``), so a lake
    replayed from the past keeps its window; a lake ahead of the clock counts from today.
    """
    from flywheel.lake import watermark

    today = now.astimezone(UTC).date()
    mark = watermark(settings)
    return min(mark.astimezone(UTC).date(), today) if mark else today


def protected_from(settings: Settings, now: datetime, window_days: float | None = None) -> date:
    """The first day of data never deleted: the training window and its feature lookback."""
    days = settings.retention.training_window_days if window_days is None else window_days
    span = math.ceil(days) + FEATURE_LOOKBACK_DAYS
    return data_anchor(settings, now) - timedelta(days=span)


@dataclass(frozen=True)
class ProtectedModels:
    """The champion, its rollback history, and every string their metadata holds."""

    champion: str | None
    history: tuple[str, ...]
    #: Metadata (lineage, source paths) of the protected models, as loaded.
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def tags(self) -> set[str]:
        return {t for t in (self.champion, *self.history) if t}


def protected_models(settings: Settings) -> ProtectedModels:
    """The champion pointer's models and their metadata (missing models are skipped)."""
    from flywheel.registry import champion_state

    state = champion_state(settings)
    tags = [t for t in (state.champion, *state.history) if t]
    metadata: dict[str, dict[str, Any]] = {}
    if tags and (settings.workspace / "bentoml" / "models").is_dir():
        from bentoml.exceptions import NotFound

        from flywheel.registry import model_store

        with model_store(settings) as store:
            for tag in tags:
                try:
                    info = store.get(tag).info.metadata
                except NotFound:
                    continue
                metadata[tag] = dict(info) if isinstance(info, dict) else {}
    return ProtectedModels(state.champion, tuple(state.history), metadata)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _record(folder: Path, stage: str) -> dict[str, Any]:
    try:
        data = json.loads((folder / f"{stage}.json").read_text())
    except (OSError, ValueError):
        return {}
    summary = data.get("summary") if isinstance(data, dict) else None
    return summary if isinstance(summary, dict) else {}


def protected_runs(settings: Settings, models: ProtectedModels) -> tuple[set[str], set[str]]:
    """``(run ids, kfp output folder names)`` the protected models depend on.

    A protected model's lineage ``run_id``, and every run whose dataset step had its data
    window (the monitor's fallback when the preprocess step was a KFP cache hit), keep
    their ``runs/<id>`` record; every ``kfp/outputs/<run>`` folder that a protected model's
    metadata or one of those records names (shards, model file) is kept too.
    """
    ids: set[str] = set()
    windows: list[tuple[Any, Any]] = []
    texts: list[str] = []
    for meta in models.metadata.values():
        found = meta.get("lineage")
        lineage: dict[str, Any] = found if isinstance(found, dict) else {}
        if lineage.get("run_id"):
            ids.add(str(lineage["run_id"]))
        window = lineage.get("data_window")
        if isinstance(window, dict):
            windows.append((window.get("start"), window.get("end")))
        texts += _strings(meta)
    runs = runs_dir(settings)
    for folder in sorted(runs.iterdir()) if runs.is_dir() else []:
        dataset = _record(folder, "dataset")
        same = (dataset.get("window_start"), dataset.get("window_end")) in windows
        if folder.name in ids or (same and windows):
            ids.add(folder.name)
            for stage_file in folder.glob("*.json"):
                texts += _strings(_record(folder, stage_file.stem))
    root = re.escape(str(kfp_outputs(settings).resolve()))
    pattern = re.compile(root + r"/([^/]+)")
    outputs = {m.group(1) for text in texts for m in pattern.finditer(text)}
    raw_root = re.escape(str(kfp_outputs(settings)))
    outputs |= {m.group(1) for text in texts for m in re.finditer(raw_root + r"/([^/]+)", text)}
    return ids, outputs
