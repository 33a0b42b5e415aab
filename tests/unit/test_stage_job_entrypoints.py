"""The data stages' Ray-job path without a cluster: the entry point a job runs, the summary
it must leave, and the setting that picks the path. The Jobs API is the boundary that
cannot run in a unit test (a recording client stands in for it); real jobs on a real
two-node Ray are ``tests/integration/test_stage_jobs.py``."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flywheel.config import KubernetesSettings, RaySettings, Settings, load_settings
from flywheel.ray_jobs import RayJobError
from flywheel.stage_jobs import run_stage, run_stage_on_cluster, stage_entrypoint


class RecordingJobsClient:
    """Records the submission; on success writes ``summary`` where the job would."""

    def __init__(self, summary: dict[str, Any] | None, status: str = "SUCCEEDED") -> None:
        self.summary, self.status = summary, status
        self.submitted: list[dict[str, Any]] = []

    def submit_job(self, *, entrypoint: str, submission_id: str, **kwargs: Any) -> str:
        argv = shlex.split(entrypoint)
        self.submitted.append({"argv": argv, "submission_id": submission_id, **kwargs})
        if self.summary is not None and self.status == "SUCCEEDED":
            Path(argv[argv.index("--out") + 1]).write_text(json.dumps(self.summary))
        return submission_id

    def get_job_info(self, job_id: str) -> Any:
        return SimpleNamespace(status=self.status, message="boom")

    def get_job_logs(self, job_id: str) -> str:
        return "Traceback ...\nFeatureBuildError: the lake is empty"

    def stop_job(self, job_id: str) -> bool:
        return True


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        workspace=tmp_path,
        ray=RaySettings(data_stages="cluster"),
        k8s=KubernetesSettings(ray_jobs_address="http://ray-head:8265", ray_job_timeout_s=5),
    )


def test_the_entry_point_carries_the_stage_settings_and_arguments(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    args = {"training_set": "/ws/jobs/x/ts.parquet", "note": 'it\'s "quoted" $HOME'}
    argv = shlex.split(stage_entrypoint(settings, "preprocess", args, tmp_path / "s.json"))
    assert argv[:4] == ["python", "-m", "flywheel.stage_jobs", "preprocess"]
    got = Settings.model_validate_json(argv[argv.index("--settings-json") + 1])
    assert got == settings
    assert json.loads(argv[argv.index("--args-json") + 1]) == args
    with pytest.raises(ValueError, match="stage='dataset'"):
        stage_entrypoint(settings, "dataset", {}, tmp_path / "s.json")
    with pytest.raises(ValueError, match="stage='train'"):
        run_stage(settings, "train", {})


def test_a_job_returns_the_summary_it_wrote_and_carries_no_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-not-for-the-job")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-the-job")
    client = RecordingJobsClient({"events_read": 12, "rows": {"user_activity": 3}})
    summary = run_stage_on_cluster(_settings(tmp_path), "features", client=client, poll_s=0)
    assert summary["events_read"] == 12 and summary["rows"] == {"user_activity": 3}
    (job,) = client.submitted
    assert summary["ray_job"]["job_id"] == job["submission_id"]
    assert job["submission_id"].startswith("flywheel-features-")
    assert job["metadata"] == {"flywheel_stage": "features"}
    env = job["runtime_env"]["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert "not-for-the-job" not in json.dumps(job)


def test_a_job_that_wrote_no_summary_or_failed_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RayJobError, match="wrote no"):
        run_stage_on_cluster(_settings(tmp_path), "features", client=RecordingJobsClient(None))
    failed = RecordingJobsClient({"events_read": 1}, status="FAILED")
    with pytest.raises(RayJobError, match=r"(?s)ended FAILED: boom.*lake is empty"):
        run_stage_on_cluster(_settings(tmp_path), "features", client=failed, poll_s=0)


def test_prod_runs_the_data_stages_on_the_cluster_and_local_in_process() -> None:
    assert load_settings("prod").ray.data_stages == "cluster"
    assert load_settings("local").ray.data_stages == "in_process"
    assert load_settings("kind").ray.data_stages == "in_process"
