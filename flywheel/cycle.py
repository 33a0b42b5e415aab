"""Compile the continuous-training pipeline, and run one cycle of it locally with kfp.local.

The local cycle executes the *same* compiled pipeline a cluster runs: every stage is a
kfp.local subprocess task with KFP artifacts under ``<workspace>/kfp``, KFP's cache keyed
on the data fingerprints, ``dsl.If`` around register/deploy.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel import progress
from flywheel.pipeline_steps import RUN_ID_ENV
from flywheel.workspace_lock import locked

if TYPE_CHECKING:
    from flywheel.config import Settings
    from flywheel.evaluate import BlessingRule

log = logging.getLogger(__name__)

STAGES = ("ingest", "features", "dataset", "preprocess", "train", "evaluate", "register", "deploy")


class CycleError(RuntimeError):
    """A pipeline stage failed; the message names it. The champion is left as it was."""


@dataclass(frozen=True)
class StageReport:
    stage: str
    status: str  # ran | cached | skipped
    seconds: float
    detail: str


@dataclass(frozen=True)
class CycleSummary:
    run_id: str
    blessed: bool | None
    champion_before: str | None
    champion_after: str | None
    seconds: float
    stages: list[StageReport] = field(default_factory=list)


def compile_pipeline(settings: Settings, out: Path) -> Path:
    """Write the pipeline's KFP IR YAML for ``settings`` (its image, its Settings).

    Raises:
        ConfigError: the prod profile with an image not pinned to a registry and digest
            (:func:`flywheel.image_ref.check_pipeline_image`); nothing is written.
    """
    from kfp import compiler

    from flywheel.image_ref import check_pipeline_image
    from pipelines.continuous_training import make_pipeline

    check_pipeline_image(settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(make_pipeline(settings), str(out))
    log.info("compiled pipeline for profile %s -> %s", settings.profile, out)
    return out


def _detail(stage: str, summary: dict[str, Any]) -> str:
    pick = {
        "ingest": ("mapping", "accepted", "quarantined", "lake_version"),
        "features": ("rows",),
        "dataset": ("impressions", "positive_rate"),
        "preprocess": ("rows",),
        "train": ("valid_auc", "best_iteration"),
        "evaluate": ("blessed", "reason"),
        "register": ("model_tag",),
        "deploy": ("status", "model_tag"),
    }[stage]
    parts = []
    for key in pick:
        if summary.get(key) is not None:
            value = summary[key]
            if key == "reason":
                value = str(value)[:80]
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def collect_report(settings: Settings, run_id: str) -> list[StageReport]:
    """Stage reports of a run from ``<workspace>/runs/<run id>/<stage>.json``."""
    folder = settings.workspace / "runs" / run_id
    reports = []
    for stage in STAGES:
        path = folder / f"{stage}.json"
        if path.exists():
            data = json.loads(path.read_text())
            reports.append(
                StageReport(stage, "ran", data["seconds"], _detail(stage, data["summary"]))
            )
        else:
            reports.append(StageReport(stage, "cached/skipped", 0.0, ""))
    return reports


@locked("cycle")
def run_cycle(
    settings: Settings,
    events_uri: str = "",
    items_uri: str = "",
    *,
    mapping: str = "",
    window_days: float = 14.0,
    attribution_minutes: int = 60,
    max_rows: int = 1_000_000,
    seed: int = 0,
    rule: BlessingRule | None = None,
    caching: bool = True,
    shared_ray_runtime: bool = True,
) -> CycleSummary:
    """Run one cycle of the pipeline through kfp.local (SubprocessRunner, this interpreter).

    With ``shared_ray_runtime`` (local profile) the cycle starts one local Ray that every
    stage joins, instead of each stage starting its own. ``mapping`` is the events' source
    layout (a built-in name, a mapping file or its YAML text; "" for none): it is validated
    before any stage runs and reaches ingest as :func:`~flywheel.ingest.mapping_argument`
    makes it, the same argument a cluster run gets.

    Holds the workspace's lock while it runs (:mod:`flywheel.workspace_lock`).

    Raises:
        WorkspaceBusyError: another run holds the workspace (``lock.on_busy``).
        ValueError: a mapping without ``events_uri``; MappingError: a bad mapping.
        CycleError: naming the failed stage; stages before it keep their outputs, the
            champion pointer is untouched (register/deploy never ran or rolled back).
    """
    from kfp import local

    from flywheel.evaluate import BlessingRule
    from flywheel.ingest.mapping import mapping_argument
    from flywheel.ray_runtime import shutdown_ray, start_shared_ray
    from flywheel.registry import current_champion
    from pipelines.continuous_training import make_pipeline

    if mapping and not events_uri:
        raise ValueError("mapping given without events_uri: a mapping reads new events only")
    mapping = mapping_argument(mapping)
    # Component subprocesses may start elsewhere: give them absolute paths.
    settings = settings.model_copy(update={"workspace": settings.workspace.resolve()})
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    kfp_root = settings.workspace / "kfp"
    kfp_root.mkdir(parents=True, exist_ok=True)
    before = current_champion(settings)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(kfp_root / "outputs"),
        enable_caching=caching,
        cache_root=str(kfp_root / "cache"),
        raise_on_error=True,
    )
    pipeline = make_pipeline(settings)
    started = time.perf_counter()
    # One local Ray for every stage of the run (they join it through the environment).
    shared_ray = start_shared_ray(settings) if shared_ray_runtime else None
    os.environ[RUN_ID_ENV] = run_id
    log.info("cycle %s: running %d stages with kfp.local", run_id, len(STAGES))
    try:
        pipeline(
            events_uri=events_uri,
            items_uri=items_uri,
            mapping=mapping,
            # kfp type-checks arguments strictly: 7 is not a float.
            window_days=float(window_days),
            attribution_minutes=int(attribution_minutes),
            max_rows=int(max_rows),
            seed=int(seed),
            rule_json=(rule or BlessingRule()).model_dump_json(),
        )
    except RuntimeError as exc:
        stages = collect_report(settings, run_id)
        failed = next((s.stage for s in stages if s.status != "ran"), "unknown")
        raise CycleError(f"cycle {run_id} failed at stage {failed!r}: {exc}") from exc
    finally:
        os.environ.pop(RUN_ID_ENV, None)
        if shared_ray:
            shutdown_ray()
    stages = collect_report(settings, run_id)
    blessed = None
    eval_file = settings.workspace / "runs" / run_id / "evaluate.json"
    if eval_file.exists():
        blessed = bool(json.loads(eval_file.read_text())["summary"]["blessed"])
    summary = CycleSummary(
        run_id=run_id,
        blessed=blessed,
        champion_before=before,
        champion_after=current_champion(settings),
        seconds=round(time.perf_counter() - started, 1),
        stages=stages,
    )
    decision = {True: "blessed", False: "not blessed", None: "not evaluated"}[blessed]
    progress.milestone(log, "cycle %s: %s in %.0f s", run_id, decision, summary.seconds)
    return summary
