"""``flywheel watch``: a local controller that retrains when the policy says so.

Every ``interval_s`` it asks for the monitor's :class:`~flywheel.policy.Signals`, decides
with :func:`~flywheel.policy.decide`, appends the decision (with its reasons and signals)
to ``<workspace>/watch/decisions.jsonl``, and runs a cycle when it fires. It is one loop in
one process, so it never runs two cycles at once; the cycle itself takes the workspace lock,
so a cycle started by hand meanwhile makes the watcher's attempt end as ``busy`` (logged,
tried again at the next tick) instead of interleaving with it.

The start times of the runs it made are kept in ``<workspace>/watch/runs.json`` (written
atomically), so the policy's interval and daily cap hold across restarts. SIGTERM or SIGINT
stops it cleanly: at once while it waits, after the running cycle otherwise. The decision
log keeps its last ``MAX_DECISIONS`` lines.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.policy import Decision, Signals, decide

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

MAX_DECISIONS = 10_000


@dataclass(frozen=True)
class WatchSummary:
    """What a watch did before it stopped."""

    ticks: int
    fired: int
    cycles_ok: int
    cycles_failed: int
    busy: int
    stopped_by: str
    decisions: str


def watch_dir(settings: Settings) -> Path:
    return settings.workspace / "watch"


def load_runs(settings: Settings) -> list[datetime]:
    """Start times of the runs the watcher made (none when the file is absent)."""
    path = watch_dir(settings) / "runs.json"
    if not path.is_file():
        return []
    return [datetime.fromisoformat(t) for t in json.loads(path.read_text())]


def _save_runs(settings: Settings, runs: list[datetime]) -> None:
    path = watch_dir(settings) / "runs.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([t.isoformat() for t in runs[-1000:]]))
    os.replace(tmp, path)


def _append_decision(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    if path.stat().st_size > MAX_DECISIONS * 400:  # roughly: trim only now and then
        lines = path.read_text().splitlines()[-MAX_DECISIONS:]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)


def watch(
    settings: Settings,
    interval_s: float,
    signals: Callable[[datetime], Signals],
    cycle: Callable[[], Any],
    *,
    max_ticks: int | None = None,
    max_cycles: int | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    stop: threading.Event | None = None,
    on_decision: Callable[[Decision], None] | None = None,
) -> WatchSummary:
    """Monitor, decide and retrain until stopped.

    Args:
        interval_s: seconds between decisions.
        signals: the monitor's figures at a time (e.g. over the last day of serving logs).
        cycle: runs one cycle (e.g. :func:`flywheel.cycle.run_cycle` with its arguments).
        max_ticks / max_cycles: stop after that many decisions / cycles (None: never).
        clock: the time decisions are made at (tests and replays pass their own).
        stop: set it to stop; SIGTERM and SIGINT set it when called from the main thread.
    """
    from flywheel.workspace_lock import WorkspaceBusyError

    stop = stop or threading.Event()
    stopped_by = ["limit"]
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def handler(signum: int, _frame: Any) -> None:
            stopped_by[0] = signal.Signals(signum).name
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    out = watch_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    decisions = out / "decisions.jsonl"
    runs = load_runs(settings)
    ticks = fired = ok = failed = busy = 0
    try:
        while not stop.is_set():
            now = clock()
            decision = decide(settings.retrain, signals(now), runs, now)
            ticks += 1
            record = decision.as_json()
            if decision.fire:
                fired += 1
                runs.append(now)
                _save_runs(settings, runs)
                log.info("watch: retraining: %s", "; ".join(decision.reasons))
                try:
                    cycle()
                    record["cycle"] = "ok"
                    ok += 1
                except WorkspaceBusyError as exc:
                    runs.pop()
                    _save_runs(settings, runs)
                    record["cycle"] = f"busy: {exc}"
                    busy += 1
                except Exception as exc:  # a failed cycle is logged; the watcher goes on
                    record["cycle"] = f"failed: {exc}"
                    failed += 1
                    log.error("watch: cycle failed: %s", exc)
            elif decision.held:
                log.info("watch: would retrain, held: %s", "; ".join(decision.held))
            _append_decision(decisions, record)
            if on_decision:
                on_decision(decision)
            if (max_ticks is not None and ticks >= max_ticks) or (
                max_cycles is not None and ok + failed >= max_cycles
            ):
                break
            stop.wait(interval_s)
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
    if stop.is_set() and stopped_by[0] == "limit":
        stopped_by[0] = "stop"
    return WatchSummary(
        ticks=ticks,
        fired=fired,
        cycles_ok=ok,
        cycles_failed=failed,
        busy=busy,
        stopped_by=stopped_by[0],
        decisions=str(decisions),
    )
