"""The data stages as Ray jobs on the Ray cluster: ingest, the feature build, preprocess.

With ``settings.ray.data_stages == "cluster"`` (the prod profile's default) a pipeline's
``ingest``, ``features`` and ``preprocess`` tasks do what the train task does
(:mod:`flywheel.ray_jobs`): the KFP pod only orchestrates, and the work runs as a Ray job on
the KubeRay cluster, whose driver calls the same core function as the local profile
(:func:`flywheel.ingest.ingest_events`, :func:`flywheel.features.build_features`,
:func:`flywheel.preprocess.preprocess`) joined to
that cluster (``$RAY_ADDRESS``), so Ray Data spreads the tasks over its worker pods. With
``in_process`` the stage runs in its own Ray inside its pod: faster for small data, where
starting a job costs more than the work.

The job's driver reads and writes the shared workspace (the RWX volume the Ray pods mount):
the lake and the feature tables are there already; preprocess's input (a KFP artifact, local
to its pod) is copied in first and its shards copied back out, as training's are. The job
writes its summary as JSON to ``<workspace>/jobs/<job id>/summary.json``.

Ingest reads raw logs from ``s3://`` there: the endpoint and region travel with the job
(``AWS_ENDPOINT_URL``, ``AWS_REGION`` of the submitting pod, not secret), the keys never do
(job environments are readable by anyone who can list the cluster's jobs): the Ray pods
hold their own, from the ``flywheel-s3`` Secret of their namespace (``k8s/base/raycluster.yaml``,
optional) or the pods' cloud identity.

Entry point: ``python -m flywheel.stage_jobs STAGE --settings-json S --args-json A --out F``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from flywheel.config import Settings
    from flywheel.ray_jobs import JobsClient

log = logging.getLogger(__name__)

#: The stages that can run as Ray jobs.
STAGES: Final = ("ingest", "features", "preprocess")
#: Not secret S3 settings a stage job carries from the submitting pod (never the keys).
S3_PASS_THROUGH: Final = ("AWS_ENDPOINT_URL", "AWS_REGION")


def jsonable(summary: Any) -> dict[str, Any]:
    """A stage summary (a dataclass or a mapping) as plain JSON values."""
    is_instance = dataclasses.is_dataclass(summary) and not isinstance(summary, type)
    data = dataclasses.asdict(summary) if is_instance else dict(summary)
    return dict(json.loads(json.dumps(data, default=str)))


def run_stage(settings: Settings, stage: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one data stage in this process's Ray (a job's driver joins its cluster)."""
    if stage == "ingest":
        from flywheel.ingest import ingest_events, mapping_from_argument
        from flywheel.storage import location_of

        items = args.get("items") or ""
        result = ingest_events(
            settings,
            [location_of(uri) for uri in args["events"]],
            items=location_of(items) if items else None,
            mapping=mapping_from_argument(args.get("mapping", "")),
        )
        return jsonable(result)
    if stage == "features":
        from flywheel.features import build_features

        return jsonable(build_features(settings))
    if stage == "preprocess":
        from flywheel.preprocess import preprocess

        summary = preprocess(
            settings,
            Path(args["training_set"]),
            Path(args["out_dir"]),
            data_window=args.get("data_window"),
        )
        return jsonable(summary)
    raise ValueError(f"stage={stage!r}; expected one of {list(STAGES)}")


def stage_entrypoint(
    settings: Settings, stage: str, args: dict[str, Any], out: Path, python: str = "python"
) -> str:
    """The shell command a stage job runs, quoted."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}; expected one of {list(STAGES)}")
    argv = [python, "-m", "flywheel.stage_jobs", stage, "--out", str(out)]
    argv += ["--settings-json", settings.model_dump_json(), "--args-json", json.dumps(args)]
    return shlex.join(argv)


def run_stage_on_cluster(
    settings: Settings,
    stage: str,
    args: dict[str, Any] | None = None,
    *,
    client: JobsClient | None = None,
    poll_s: float = 2.0,
    python: str = "python",
) -> dict[str, Any]:
    """Run ``stage`` as a Ray job at ``settings.k8s.ray_jobs_address``; return its summary.

    Raises:
        RayJobError, RayJobTimeout: the job failed or ran too long
            (:func:`flywheel.ray_jobs.wait_for_job`); also when it wrote no summary.
    """
    from flywheel.ray_jobs import RayJobError, run_job

    job_id = f"flywheel-{stage}-{uuid.uuid4().hex[:10]}"
    out = settings.workspace / "jobs" / job_id / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    entrypoint = stage_entrypoint(settings, stage, args or {}, out, python)
    env = {name: os.environ[name] for name in S3_PASS_THROUGH if os.environ.get(name)}
    result = run_job(
        settings, entrypoint, job_id, stage, client=client, poll_s=poll_s, env_vars=env
    )
    if not out.is_file():
        raise RayJobError(f"ray job {job_id} ({stage}) succeeded but wrote no {out}")
    summary: dict[str, Any] = json.loads(out.read_text())
    summary["ray_job"] = {"job_id": job_id, "seconds": result.seconds}
    return summary


def preprocess_on_cluster(
    settings: Settings,
    training_set: Path,
    shards_dir: Path,
    data_window: dict[str, str] | None = None,
    **job: Any,
) -> dict[str, Any]:
    """Preprocess as a Ray job: the training set is staged into the workspace, the job
    writes the shards there, and they are copied into ``shards_dir`` (replaced)."""
    stage_dir = settings.workspace / "jobs" / f"preprocess-{uuid.uuid4().hex[:10]}"
    staged_in, staged_out = stage_dir / "training_set", stage_dir / "shards"
    if training_set.is_dir():
        shutil.copytree(training_set, staged_in)
    else:
        staged_in.parent.mkdir(parents=True, exist_ok=True)
        staged_in = staged_in.with_suffix(training_set.suffix or ".parquet")
        shutil.copyfile(training_set, staged_in)
    try:
        args = {"training_set": str(staged_in), "out_dir": str(staged_out)}
        if data_window:
            args["data_window"] = data_window  # type: ignore[assignment]
        summary = run_stage_on_cluster(settings, "preprocess", args, **job)
        if shards_dir.exists():
            shutil.rmtree(shards_dir)
        shutil.copytree(staged_out, shards_dir)
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m flywheel.stage_jobs STAGE --settings-json S --args-json A --out F``."""
    import argparse

    from flywheel.config import Settings

    parser = argparse.ArgumentParser(prog="python -m flywheel.stage_jobs", description=__doc__)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--settings-json", required=True, help="the run's Settings as JSON")
    parser.add_argument("--args-json", default="{}", help="the stage's arguments as JSON")
    parser.add_argument("--out", required=True, help="file for the stage's summary (JSON)")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.model_validate_json(ns.settings_json)
    summary = run_stage(settings, ns.stage, json.loads(ns.args_json))
    out = Path(ns.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
