"""The champion's training set: the reference distribution drift is measured against.

Resolution: the champion pointer (:func:`flywheel.registry.current_champion`) names a
model whose lineage (BentoML metadata) holds the pipeline ``run_id`` and ``data_window``.
Its shards are the preprocess step's output of that run
(``<workspace>/runs/<run_id>/preprocess.json``, ``shards_dir``); when that step was a KFP
cache hit (no record in the run), the newest run whose dataset step had the same window
and that recorded a preprocess step is used. ``flywheel monitor --reference DIR`` names
a shards directory directly instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)


class ReferenceError(ValueError):
    """The champion's training set cannot be found; the message says where it looked."""


@dataclass(frozen=True)
class Reference:
    """The champion's training split: inputs by column, labels, the champion's scores."""

    champion: str | None
    feature_service: str
    shards_dir: Path
    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    scores: np.ndarray | None


def _run_record(settings: Settings, run_id: str, stage: str) -> dict[str, Any] | None:
    path = settings.workspace / "runs" / run_id / f"{stage}.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text()).get("summary")
    return summary if isinstance(summary, dict) else None


def lineage_shards(settings: Settings, lineage: dict[str, Any]) -> Path:
    """The shards directory of a model's lineage (see the module docstring)."""
    run_id = str(lineage.get("run_id", ""))
    record = _run_record(settings, run_id, "preprocess") if run_id else None
    if record and record.get("shards_dir"):
        return Path(record["shards_dir"])
    window = lineage.get("data_window") or {}
    runs = settings.workspace / "runs"
    for folder in sorted(runs.iterdir() if runs.is_dir() else [], reverse=True):
        dataset = _run_record(settings, folder.name, "dataset") or {}
        prep = _run_record(settings, folder.name, "preprocess") or {}
        same = (dataset.get("window_start"), dataset.get("window_end")) == (
            window.get("start"),
            window.get("end"),
        )
        if same and prep.get("shards_dir"):
            return Path(prep["shards_dir"])
    raise ReferenceError(
        f"no training shards recorded for run {run_id!r} (window {window}) under {runs}; "
        "pass the champion's shards with --reference DIR"
    )


def _champion_lineage(settings: Settings, tag: str) -> dict[str, Any]:
    from flywheel.registry import model_store

    with model_store(settings) as store:
        metadata = store.get(tag).info.metadata
    lineage = metadata.get("lineage") if isinstance(metadata, dict) else None
    return dict(lineage) if isinstance(lineage, dict) else {}


def load_reference(settings: Settings, shards_dir: Path | None = None) -> Reference:
    """The champion's training split (or ``shards_dir``'s) with the champion's scores on it.

    Raises:
        ReferenceError: no champion and no ``shards_dir``, or no shards recorded for it.
        ShardError: the shards break their contract.
    """
    from flywheel.ranking import service_with_columns
    from flywheel.registry import current_champion, load_champion_booster
    from flywheel.train import inspect_shards, predict, read_split

    tag = current_champion(settings)
    if shards_dir is None:
        if tag is None:
            raise ReferenceError(
                "no champion has been promoted yet and no --reference shards were given: "
                "drift needs the champion's training set"
            )
        shards_dir = lineage_shards(settings, _champion_lineage(settings, tag))
    info = inspect_shards(shards_dir, splits=("train",))
    loaded = load_champion_booster(settings) if tag is not None else None
    from flywheel.train import booster_features

    columns = booster_features(loaded[1]) if loaded else info.feature_columns
    x, y, _ = read_split(info, "train", columns)
    scores = predict(loaded[1], x) if loaded else None
    log.info("monitor reference: %d training rows from %s", len(y), shards_dir)
    return Reference(
        champion=tag,
        feature_service=service_with_columns(columns),
        shards_dir=Path(shards_dir),
        inputs={c: x[:, j] for j, c in enumerate(columns)},
        labels=y.astype(np.float64),
        scores=scores,
    )
