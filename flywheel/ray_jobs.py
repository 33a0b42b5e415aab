"""Training in the cluster profiles: the same ``train_model``, run as a Ray job on KubeRay.

The pipeline's train task runs in a small KFP pod that only orchestrates:

1. its input shards (a KFP artifact, local to that pod) are copied into the shared
   workspace, ``<workspace>/jobs/<job id>/shards``, which the Ray pods mount too;
2. ``python -m flywheel.train --shards ... --out ... --settings-json ...`` is submitted to
   the Ray Jobs API of the KubeRay head (``settings.k8s.ray_jobs_address``): the job's
   driver runs :func:`flywheel.train.train_model` against the cluster it runs in;
3. the job's status is polled (each change logged) until it ends or
   ``settings.k8s.ray_job_timeout_s`` passes, when the job is stopped; a job that does not
   succeed raises with the tail of its log;
4. the model and its metrics are copied from the workspace into the task's model artifact.

The Jobs API client is a parameter (``client``): tests pass a fake, since no KubeRay
cluster runs here, and an integration test submits to a real local Ray head.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from flywheel.config import Settings
    from flywheel.train import TrainSummary

log = logging.getLogger(__name__)

#: Terminal states of a Ray job (``ray.job_submission.JobStatus`` values).
SUCCEEDED: Final = "SUCCEEDED"
TERMINAL: Final = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
#: Log lines quoted in the error of a failed job.
LOG_TAIL_LINES: Final = 40


class JobsClient(Protocol):
    """The part of ``ray.job_submission.JobSubmissionClient`` this module calls."""

    def submit_job(
        self,
        *,
        entrypoint: str,
        submission_id: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str: ...
    def get_job_info(self, job_id: str) -> Any: ...
    def get_job_logs(self, job_id: str) -> str: ...
    def stop_job(self, job_id: str) -> bool: ...


class RayJobError(RuntimeError):
    """A Ray job ended without succeeding; the message names the job, its state and log."""


class RayJobTimeout(RayJobError, TimeoutError):
    """A Ray job ran past its time limit and was stopped."""


@dataclass(frozen=True)
class RayJobResult:
    job_id: str
    status: str
    seconds: float


def train_entrypoint(
    settings: Settings, shards_dir: Path, out_dir: Path, seed: int, python: str = "python"
) -> str:
    """The shell command a training job runs: ``python -m flywheel.train ...``, quoted."""
    argv = [python, "-m", "flywheel.train", "--shards", str(shards_dir), "--out", str(out_dir)]
    argv += ["--settings-json", settings.model_dump_json(), "--seed", str(int(seed))]
    return shlex.join(argv)


def log_tail(client: JobsClient, job_id: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a job's driver log (a note if the log cannot be read)."""
    try:
        text = client.get_job_logs(job_id)
    except Exception as exc:  # the tail decorates an error; never hide the error itself
        return f"(log unavailable: {exc})"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def wait_for_job(
    client: JobsClient,
    job_id: str,
    timeout_s: float,
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RayJobResult:
    """Poll a job until it succeeds; log each change of state.

    Raises:
        RayJobError: the job ended FAILED or STOPPED (message: its state, Ray's reason and
            the tail of its log).
        RayJobTimeout: it had not ended after ``timeout_s`` seconds; it was stopped.
    """
    started = clock()
    seen = ""
    while True:
        info = client.get_job_info(job_id)
        status = str(getattr(info.status, "value", info.status))
        if status != seen:
            log.info("ray job %s: %s", job_id, status)
            seen = status
        if status == SUCCEEDED:
            return RayJobResult(job_id, status, round(clock() - started, 1))
        if status in TERMINAL:
            raise RayJobError(
                f"ray job {job_id} ended {status}: {info.message or 'no message'}\n"
                f"--- last lines of its log ---\n{log_tail(client, job_id)}"
            )
        if clock() - started > timeout_s:
            client.stop_job(job_id)
            raise RayJobTimeout(
                f"ray job {job_id} was still {status} after {timeout_s:.0f} s "
                f"(settings.k8s.ray_job_timeout_s); stopped it\n"
                f"--- last lines of its log ---\n{log_tail(client, job_id)}"
            )
        sleep(poll_s)


def jobs_client(settings: Settings) -> JobsClient:
    """A Ray Jobs API client for ``settings.k8s.ray_jobs_address``."""
    from ray.job_submission import JobSubmissionClient

    client: JobsClient = JobSubmissionClient(settings.k8s.ray_jobs_address)
    return client


#: The Jobs API's answer while the head's job agent is still starting (a fresh head pod).
NO_AGENT: Final = "No available agent to submit job"


def submit_when_ready(
    client: JobsClient,
    *,
    wait_s: float = 120.0,
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    **job: Any,
) -> str:
    """``client.submit_job(**job)``, retried while the head answers that no agent is ready.

    A head that has just started serves the Jobs API before its job agent registers; Ray
    then refuses submissions with a 500 naming :data:`NO_AGENT`. Any other error, or the
    same one after ``wait_s``, is raised.
    """
    deadline = clock() + wait_s
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as exc:
            if NO_AGENT not in str(exc) or clock() >= deadline:
                raise
            log.info("ray head has no job agent yet; retrying in %.0fs", poll_s)
            sleep(poll_s)


def run_job(
    settings: Settings,
    entrypoint: str,
    job_id: str,
    stage: str,
    *,
    client: JobsClient | None = None,
    poll_s: float = 2.0,
    env_vars: dict[str, str] | None = None,
) -> RayJobResult:
    """Submit ``entrypoint`` as Ray job ``job_id`` to ``settings.k8s.ray_jobs_address`` and
    wait for it to succeed (training here, the data stages in :mod:`flywheel.stage_jobs`).

    ``env_vars`` join the job's runtime environment. They are visible to anyone who can
    read the cluster's job list: never pass secrets (the Ray pods hold their own keys).

    Raises:
        RayJobError, RayJobTimeout: see :func:`wait_for_job`.
    """
    client = client or jobs_client(settings)
    submit_when_ready(
        client,
        entrypoint=entrypoint,
        submission_id=job_id,
        runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1", **(env_vars or {})}},
        metadata={"flywheel_stage": stage},
    )
    log.info("submitted ray job %s (%s) to %s", job_id, stage, settings.k8s.ray_jobs_address)
    return wait_for_job(client, job_id, settings.k8s.ray_job_timeout_s, poll_s)


def train_on_cluster(
    settings: Settings,
    shards_dir: str | Path,
    model_dir: str | Path,
    *,
    seed: int = 0,
    client: JobsClient | None = None,
    poll_s: float = 2.0,
    python: str = "python",
) -> TrainSummary:
    """Train as a Ray job on the cluster and bring the model back into ``model_dir``.

    Args:
        settings: a cluster profile's Settings (workspace on the shared volume, Jobs API
            address, job timeout).
        shards_dir: preprocessed shards, anywhere this process can read.
        model_dir: receives ``model.ubj`` and ``train_metrics.json`` (created if needed).
        seed: the booster's seed.
        client: a Jobs API client (default: :func:`jobs_client`).
        python: the interpreter the job's entry point runs with, on the Ray head.

    Returns:
        The job's :class:`~flywheel.train.TrainSummary`, its paths pointing into
        ``model_dir`` (the checkpoint stays in the workspace).

    Raises:
        RayJobError, RayJobTimeout: see :func:`wait_for_job`.
    """
    from flywheel.train import (
        METRICS_FILENAME,
        MODEL_FILENAME,
        SUMMARY_FILENAME,
        summary_from_json,
    )

    job_id = f"flywheel-train-{uuid.uuid4().hex[:10]}"
    job_dir = settings.workspace / "jobs" / job_id
    staged, out = job_dir / "shards", job_dir / "model"
    shutil.copytree(shards_dir, staged)
    try:
        run_job(
            settings,
            train_entrypoint(settings, staged, out, seed, python),
            job_id,
            "train",
            client=client,
            poll_s=poll_s,
        )
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # a copy; the artifact keeps the original
    missing = [
        n for n in (MODEL_FILENAME, METRICS_FILENAME, SUMMARY_FILENAME) if not (out / n).is_file()
    ]
    if missing:
        raise RayJobError(f"ray job {job_id} succeeded but wrote no {', '.join(missing)} in {out}")
    target = Path(model_dir)
    target.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILENAME, METRICS_FILENAME):
        shutil.copyfile(out / name, target / name)
    summary = summary_from_json((out / SUMMARY_FILENAME).read_text())
    return replace(
        summary, model_path=target / MODEL_FILENAME, metrics_path=target / METRICS_FILENAME
    )
