"""The ``flywheel watch`` controller: decisions logged, cycles run when the policy fires,
runs remembered across restarts, busy workspaces, and clean stops on SIGTERM (real
processes for the signal and lock cases)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flywheel.config import Settings
from flywheel.policy import Signals
from flywheel.watch import load_runs, watch
from flywheel.workspace_lock import WorkspaceBusyError

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 1, tzinfo=UTC)
QUIET = Signals(champion_age_h=1.0)
DRIFTED = Signals(champion_age_h=1.0, score_psi=0.9)


def _clock(step_h: float):
    ticks = iter(range(10_000))
    return lambda: T0 + timedelta(hours=step_h * next(ticks))


def test_it_runs_a_cycle_only_when_the_policy_fires_and_logs_every_decision(tmp_path):
    settings = Settings(workspace=tmp_path)
    drift_from = T0 + timedelta(hours=3)
    cycles: list[int] = []
    summary = watch(
        settings,
        0,
        signals=lambda now: DRIFTED if now >= drift_from else QUIET,
        cycle=lambda: cycles.append(1),
        max_ticks=12,
        clock=_clock(1.0),
    )
    # Drift from hour 3 on: a run at 3, then held 6 h (min_interval_h) -> the next at 9.
    assert summary.ticks == 12 and summary.fired == 2 == len(cycles) == summary.cycles_ok
    lines = [json.loads(line) for line in Path(summary.decisions).read_text().splitlines()]
    assert [d["fire"] for d in lines] == [h in (3, 9) for h in range(12)]
    assert lines[4]["held"][0].startswith("min_interval_h 6")
    assert lines[3]["reasons"] == ["drift: score PSI 0.900 > 0.25"] and lines[3]["cycle"] == "ok"
    assert load_runs(settings) == [T0 + timedelta(hours=3), T0 + timedelta(hours=9)]


def test_runs_are_remembered_across_restarts(tmp_path):
    settings = Settings(workspace=tmp_path)
    watch(settings, 0, lambda now: DRIFTED, lambda: None, max_ticks=1, clock=lambda: T0)
    again = watch(settings, 0, lambda now: DRIFTED, lambda: None, max_ticks=1,
                  clock=lambda: T0 + timedelta(hours=1))  # fmt: skip
    assert again.fired == 0  # held: 1 h after the first watcher's run


def test_a_busy_workspace_is_logged_and_not_counted_as_a_run(tmp_path):
    settings = Settings(workspace=tmp_path)

    def busy():
        raise WorkspaceBusyError("workspace is in use by `flywheel cycle`")

    summary = watch(settings, 0, lambda now: DRIFTED, busy, max_ticks=2, clock=_clock(1.0))
    assert summary.busy == 2 and summary.cycles_ok == 0 and load_runs(settings) == []
    last = json.loads(Path(summary.decisions).read_text().splitlines()[-1])
    assert last["cycle"].startswith("busy: workspace is in use")


def test_a_failed_cycle_is_logged_and_the_watcher_goes_on(tmp_path):
    settings = Settings(workspace=tmp_path, retrain={"min_interval_h": 0})

    def broken():
        raise RuntimeError("stage 'train' failed")

    summary = watch(settings, 0, lambda now: DRIFTED, broken, max_ticks=3, clock=_clock(1.0))
    assert summary.cycles_failed == 3 and summary.ticks == 3


WATCHER = """
import sys, time
from pathlib import Path
from flywheel.config import Settings
from flywheel.policy import Signals
from flywheel.watch import watch
from flywheel.workspace_lock import workspace_lock
ws, interval, cycle_s = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
s = Settings(workspace=ws, retrain={"min_interval_h": 0})
def cycle():  # holds the workspace lock as run_cycle does
    with workspace_lock(s, "cycle"):
        (ws / f"started-{time.time()}").touch()
        print("cycle", flush=True)
        time.sleep(cycle_s)
        (ws / f"ended-{time.time()}").touch()
summary = watch(s, interval, lambda now: Signals(champion_age_h=None), cycle)
print("stopped", summary.stopped_by, summary.cycles_ok, summary.busy, flush=True)
"""


def _watcher(ws: Path, interval: float, cycle_s: float) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    return subprocess.Popen(
        [sys.executable, "-c", WATCHER, str(ws), str(interval), str(cycle_s)],
        stdout=subprocess.PIPE, text=True, env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_sigterm_while_waiting_stops_at_once(tmp_path):
    proc = _watcher(tmp_path, 3600, 0)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "cycle"
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert out.split() == ["stopped", "SIGTERM", "1", "0"]


def test_sigterm_during_a_cycle_lets_it_finish(tmp_path):
    proc = _watcher(tmp_path, 3600, 3)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "cycle"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert out.split() == ["stopped", "SIGTERM", "1", "0"]
    assert len(list(tmp_path.glob("ended-*"))) == 1


def test_two_watchers_on_one_workspace_never_run_two_cycles_at_once(tmp_path):
    a, b = _watcher(tmp_path, 0.2, 1.5), _watcher(tmp_path, 0.2, 1.5)
    time.sleep(6)
    for p in (a, b):
        p.send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=60)[0].split()[-4:] for p in (a, b)]
    spans = sorted(
        (float(s.name.split("-", 1)[1]), float(e.name.split("-", 1)[1]))
        for s, e in zip(
            sorted(tmp_path.glob("started-*"), key=lambda p: p.name),
            sorted(tmp_path.glob("ended-*"), key=lambda p: p.name),
            strict=True,
        )
    )
    assert len(spans) >= 2
    assert all(nxt[0] >= prev[1] for prev, nxt in itertools.pairwise(spans))
    assert sum(int(o[3]) for o in outs) >= 1  # one of them found the workspace busy


def test_cli_watch_once_creates_a_kfp_run_when_the_policy_fires(tmp_path, monkeypatch):
    """The cluster CronJob's command. The KFP API server cannot run here: the client is the
    recording fake of test_submit (the boundary); the decision and the package are real."""
    from typer.testing import CliRunner

    from flywheel import submit as submit_module
    from flywheel.cli import app
    from tests.unit.test_submit import FakeKfpClient

    clients: list[FakeKfpClient] = []
    monkeypatch.setattr(
        submit_module,
        "default_client",
        lambda host: clients.append(FakeKfpClient(host)) or clients[-1],
    )
    args = ["--profile", "kind", "--workspace", str(tmp_path), "watch", "--max-ticks", "1",
            "--submit-host", "http://ml-pipeline.kubeflow:8888", "--param", "seed=3"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "schedule: no champion yet" in result.output
    ((kind, call),) = clients[0].calls
    assert kind == "run"
    assert clients[0].host == "http://ml-pipeline.kubeflow:8888" and call["arguments"]["seed"] == 3
    (decision,) = [
        json.loads(x) for x in (tmp_path / "watch" / "decisions.jsonl").read_text().splitlines()
    ]
    assert decision["fire"] and decision["cycle"] == "ok"
    assert len(load_runs(Settings(workspace=tmp_path))) == 1


def test_a_bounded_watch_whose_submission_failed_exits_1(tmp_path, monkeypatch):
    """So the retrain CronJob's Job shows Failed; the decision is still logged. The KFP API
    is the boundary: a client whose run creation raises stands in for it."""
    from typer.testing import CliRunner

    from flywheel import submit as submit_module
    from flywheel.cli import app
    from tests.unit.test_submit import FakeKfpClient

    class RefusingClient(FakeKfpClient):
        def create_run_from_pipeline_package(self, *args, **kwargs):
            raise RuntimeError("(503) ml-pipeline is unavailable")

    monkeypatch.setattr(submit_module, "default_client", RefusingClient)
    args = ["--profile", "kind", "--workspace", str(tmp_path), "watch", "--max-ticks", "1",
            "--submit-host", "http://ml-pipeline.kubeflow:8888"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "1 retraining run(s) failed" in result.output
    (decision,) = [
        json.loads(x) for x in (tmp_path / "watch" / "decisions.jsonl").read_text().splitlines()
    ]
    assert decision["fire"] and decision["cycle"].startswith("failed:")
    assert "ml-pipeline is unavailable" in decision["cycle"]
