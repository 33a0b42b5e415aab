"""Training as a Ray job, orchestration only, against a FAKE Ray Jobs API client.

The boundary faked here is the Ray dashboard's Jobs API of a KubeRay cluster (none runs in
unit tests): ``FakeJobsClient`` records the submission, plays the job's states and, on
success, writes what the real entry point writes. A real job on a real local Ray head is
``tests/integration/test_ray_job_train.py``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flywheel.config import KubernetesSettings, Settings
from flywheel.ray_jobs import RayJobError, RayJobTimeout, train_on_cluster, wait_for_job
from flywheel.train import TrainSummary, summary_to_json


class FakeJobsClient:
    def __init__(self, states: list[str], log: str = "", message: str = "") -> None:
        self.states, self.log, self.message = list(states), log, message
        self.submitted: list[dict[str, Any]] = []
        self.staged_files: list[str] = []
        self.stopped: list[str] = []

    def submit_job(self, *, entrypoint: str, submission_id: str, **kwargs: Any) -> str:
        argv = shlex.split(entrypoint)
        self.submitted.append({"entrypoint": argv, "submission_id": submission_id, **kwargs})
        shards = Path(argv[argv.index("--shards") + 1])
        self.staged_files = sorted(str(p.relative_to(shards)) for p in shards.rglob("*"))
        if "SUCCEEDED" in self.states:
            self._write_outputs(Path(argv[argv.index("--out") + 1]))
        return submission_id

    def _write_outputs(self, out: Path) -> None:
        out.mkdir(parents=True)
        (out / "model.ubj").write_bytes(b"booster")
        (out / "train_metrics.json").write_text('{"valid_auc": 0.7}')
        summary = TrainSummary(out / "model.ubj", out / "train_metrics.json", "/ws/ckpt", 12,
                               700, 150, 0.7, 0.5, 3.0)  # fmt: skip
        (out / "train_summary.json").write_text(summary_to_json(summary))

    def get_job_info(self, job_id: str) -> Any:
        status = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return SimpleNamespace(status=status, message=self.message)

    def get_job_logs(self, job_id: str) -> str:
        return self.log

    def stop_job(self, job_id: str) -> bool:
        self.stopped.append(job_id)
        return True


def _shards(root: Path) -> Path:
    for split in ("train", "valid", "test"):
        (root / split).mkdir(parents=True)
        (root / split / "part-0.parquet").write_bytes(split.encode())
    (root / "metadata.json").write_text("{}")
    return root


def _settings(tmp_path: Path, timeout_s: float = 60.0) -> Settings:
    return Settings(
        profile="kind",
        workspace=tmp_path / "ws",
        k8s=KubernetesSettings(ray_job_timeout_s=timeout_s),
    )


def test_job_trains_on_staged_shards_and_the_model_comes_back(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    client = FakeJobsClient(["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"])
    shards = _shards(tmp_path / "artifact" / "shards")
    summary = train_on_cluster(
        settings, shards, tmp_path / "artifact" / "model", seed=5, client=client, poll_s=0
    )
    (job,) = client.submitted
    argv = job["entrypoint"]
    assert argv[:3] == ["python", "-m", "flywheel.train"]
    staged = Path(argv[argv.index("--shards") + 1])
    assert staged.parent.parent == settings.workspace / "jobs"  # on the shared volume
    assert staged.parent.name == job["submission_id"]
    assert client.staged_files == sorted(
        str(p.relative_to(shards)) for p in shards.rglob("*")
    )  # the whole artifact was there when the job started
    assert not staged.exists()  # the staged copy is cleaned up afterwards
    assert Settings.model_validate_json(argv[argv.index("--settings-json") + 1]) == settings
    assert argv[argv.index("--seed") + 1] == "5"
    model_dir = tmp_path / "artifact" / "model"
    assert (model_dir / "model.ubj").read_bytes() == b"booster"
    assert summary.model_path == model_dir / "model.ubj"
    assert summary.metrics_path == model_dir / "train_metrics.json"
    assert (summary.best_iteration, summary.valid_auc, summary.checkpoint_path) == (
        12,
        0.7,
        "/ws/ckpt",
    )


def test_failed_job_raises_with_its_reason_and_log_tail(tmp_path: Path) -> None:
    log = "\n".join(f"line {i}" for i in range(100))
    client = FakeJobsClient(["RUNNING", "FAILED"], log=log, message="exit code 1")
    with pytest.raises(RayJobError) as info:
        train_on_cluster(
            _settings(tmp_path), _shards(tmp_path / "s"), tmp_path / "m", client=client, poll_s=0
        )
    text = str(info.value)
    assert "ended FAILED: exit code 1" in text
    assert "line 99" in text and "line 60" in text and "line 59" not in text  # last 40 lines
    assert not (tmp_path / "m").exists()
    assert list((tmp_path / "ws" / "jobs").glob("*/shards")) == []


def test_job_past_its_timeout_is_stopped() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    client = FakeJobsClient(["PENDING", "RUNNING"], log="still boosting")
    with pytest.raises(RayJobTimeout, match=r"(?s)still RUNNING after 30 s.*still boosting"):
        wait_for_job(client, "j1", timeout_s=30, poll_s=7, clock=lambda: now[0], sleep=sleep)
    assert client.stopped == ["j1"]
    assert 30 < now[0] <= 37  # gave up at the first poll past the limit


def test_job_claiming_success_without_a_model_is_an_error(tmp_path: Path) -> None:
    client = FakeJobsClient(["SUCCEEDED"])
    client._write_outputs = lambda out: None  # type: ignore[method-assign]
    with pytest.raises(RayJobError, match=r"succeeded but wrote no model.ubj"):
        train_on_cluster(
            _settings(tmp_path), _shards(tmp_path / "s"), tmp_path / "m", client=client, poll_s=0
        )


class _NotReadyYet(FakeJobsClient):
    """A fresh head: refuses the first ``refusals`` submissions as Ray does."""

    def __init__(self, refusals: int, error: str) -> None:
        super().__init__(["SUCCEEDED"])
        self.refusals, self.error, self.calls = refusals, error, 0

    def submit_job(self, *, entrypoint: str, submission_id: str, **kwargs: Any) -> str:
        self.calls += 1
        if self.calls <= self.refusals:
            raise RuntimeError(f"Request failed with status code 500: {self.error}.")
        return super().submit_job(entrypoint=entrypoint, submission_id=submission_id, **kwargs)


def test_submission_waits_for_the_heads_job_agent(tmp_path: Path) -> None:
    from flywheel.ray_jobs import NO_AGENT, submit_when_ready

    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    client = _NotReadyYet(2, f"{NO_AGENT}, please try again later")
    shards = _shards(tmp_path / "s")
    job = {"entrypoint": f"python -m x --shards {shards} --out {tmp_path / 'o'}"}
    got = submit_when_ready(client, clock=lambda: now[0], sleep=sleep, submission_id="j1", **job)
    assert got == "j1" and client.calls == 3 and now[0] == 4.0
    # Past the wait, or any other error, is raised as it is.
    late = _NotReadyYet(100, f"{NO_AGENT}, please try again later")
    with pytest.raises(RuntimeError, match=NO_AGENT):
        submit_when_ready(
            late, wait_s=10, clock=lambda: now[0], sleep=sleep, submission_id="j2", **job
        )
    other = _NotReadyYet(1, "job j3 already exists")
    with pytest.raises(RuntimeError, match="already exists"):
        submit_when_ready(other, clock=lambda: now[0], sleep=sleep, submission_id="j3", **job)
    assert other.calls == 1
