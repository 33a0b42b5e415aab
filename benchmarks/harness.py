"""Benchmark harness: run a measured function in a fresh process, report time and peak memory.

Verdicts: every benchmark states its targets as :class:`Target` (a figure of this run against
its threshold) and its correctness checks as :class:`Check`, and ends with
:func:`report_verdicts`, which prints ``met`` / ``missed`` per target, or ``FAILED`` for every
target when any check failed, and returns the process exit code (1 on FAILED).

Each contender runs in its own child process so imports, caches and allocator state of one
cannot flatter or penalise another. Peak memory is the peak of the summed PSS (proportional
set size) of the child and all its descendants (Ray workers, raylet, ...), sampled every
100 ms: PSS splits shared pages between the processes that map them, so Ray's shared-memory
object store is counted once rather than once per worker.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil


@dataclass(frozen=True)
class Measurement:
    """What one contender did: seconds of wall time, peak memory and its own result dict."""

    name: str
    seconds: float
    peak_mib: float
    result: dict[str, Any]


def _tree_pss(proc: psutil.Process, cpu: dict[int, float] | None = None) -> int:
    """Summed PSS of ``proc`` and its descendants; records each one's CPU seconds in ``cpu``."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
            if cpu is not None:
                times = p.cpu_times()
                cpu[p.pid] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


class PeakPss:
    """Sample the summed PSS of process ``pid`` and its descendants every 100 ms while the
    ``with`` block runs; ``peak`` is the highest sum seen, in bytes.

    ``cpu_seconds`` is the user + system CPU time of the tree (each process's last sample,
    so up to 100 ms of a process's end is missed): unlike wall time, it barely moves when
    other jobs load the machine, so it is the steadier figure on a shared one.
    """

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        ps = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, _tree_pss(ps, self._cpu))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.1)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())

    @property
    def pids(self) -> set[int]:
        """Every process of the tree seen while sampling."""
        return set(self._cpu)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _child(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], conn: Any) -> None:
    try:
        start = time.perf_counter()
        result = fn(*args)
        conn.send(("ok", time.perf_counter() - start, result))
    except BaseException as exc:  # report any failure to the parent, then exit
        conn.send(("error", 0.0, {"error": f"{type(exc).__name__}: {exc}"}))
    finally:
        conn.close()


def measure(name: str, fn: Callable[..., dict[str, Any]], *args: Any) -> Measurement:
    """Run ``fn(*args)`` in a fresh process; ``fn`` returns a JSON-able dict of its own.

    The wall time is measured inside the child around ``fn`` (process start excluded);
    ``fn`` itself decides what it includes (e.g. ``ray.init``), and says so in its result.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, args, child))
    proc.start()
    with PeakPss(proc.pid) as sampled:
        status, seconds, result = parent.recv()
        proc.join()
    peak = sampled.peak
    if status != "ok":
        raise RuntimeError(f"benchmark {name!r} failed: {result['error']}")
    return Measurement(name=name, seconds=seconds, peak_mib=peak / 2**20, result=result)


def machine() -> str:
    """One line describing the machine the numbers came from, with its load right now."""
    mem = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, "
        f"{platform.platform()}, Python {platform.python_version()}, load average {load}"
    )


# ---- verdicts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A target: ``measured`` (a figure of this run) against ``threshold``.

    ``at_most``: the target is met when ``measured <= threshold`` (latency, memory); otherwise
    when ``measured >= threshold`` (throughput, speed-up). A measured figure that is not a
    finite number (a zero baseline, a level that did not run) cannot meet anything.
    """

    name: str
    measured: float
    threshold: float
    at_most: bool
    unit: str = ""

    def met(self) -> bool:
        if not math.isfinite(self.measured):
            return False
        return self.measured <= self.threshold if self.at_most else self.measured >= self.threshold

    def describe(self) -> str:
        sign = "<=" if self.at_most else ">="
        figure, limit = f"{self.measured:.4g}{self.unit}", f"{self.threshold:g}{self.unit}"
        return f"{self.name}: {figure} (target {sign} {limit})"


@dataclass(frozen=True)
class Check:
    """A correctness check of this run: ``passed`` False fails the benchmark."""

    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Verdicts:
    """What :func:`judge` decided: one verdict per target, the failed checks, the exit code."""

    targets: dict[str, str]
    failed_checks: list[str]
    lines: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed_checks else 0


def judge(targets: Sequence[Target], checks: Sequence[Check]) -> Verdicts:
    """Each target ``met`` or ``missed``, or all ``FAILED`` when any check failed.

    A run whose results are wrong says nothing about speed, so one failed check fails every
    target of the run. With no checks at all the run is FAILED too: a benchmark must check
    what it measured.
    """
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"target names must be unique; got {names}")
    failed = [c.name for c in checks if not c.passed]
    if not checks:
        failed = ["no correctness check ran"]
    lines = ["checks:"]
    for c in checks:
        detail = f" ({c.detail})" if c.detail else ""
        lines.append(f"  {c.name}: {'passed' if c.passed else 'FAILED'}{detail}")
    lines.append("targets:")
    verdicts = {}
    for t in targets:
        verdicts[t.name] = "FAILED" if failed else ("met" if t.met() else "missed")
        lines.append(f"  {t.describe()}: {verdicts[t.name]}")
    if failed:
        lines.append(f"verdict: FAILED ({len(failed)} check(s) failed: {'; '.join(failed)})")
    else:
        met = sum(v == "met" for v in verdicts.values())
        lines.append(f"verdict: checks passed; targets met {met} of {len(verdicts)}")
    return Verdicts(targets=verdicts, failed_checks=failed, lines=lines)


def report_verdicts(
    targets: Sequence[Target], checks: Sequence[Check], echo: Callable[[str], Any] = print
) -> Verdicts:
    """:func:`judge`, printed line by line; exit with ``.exit_code``."""
    verdicts = judge(targets, checks)
    for line in verdicts.lines:
        echo(line)
    return verdicts


def finish(
    out: Path,
    args: Any,
    started: float,
    targets: Sequence[Target],
    checks: Sequence[Check],
    **sections: Any,
) -> int:
    """End a benchmark's ``main``: print the verdicts, write ``out`` (machine, arguments,
    seconds since ``started``, ``sections``, targets, checks, verdicts), print where, and
    return the exit code."""
    print()
    verdicts = report_verdicts(targets, checks)
    payload = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
               "seconds": round(time.perf_counter() - started, 1), **sections,
               "targets": targets, "checks": checks, "verdicts": verdicts}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    dump(str(out), payload)
    print(f"\nmachine: {payload['machine']}\nwrote {out} in {payload['seconds']} s")
    return verdicts.exit_code


def dump(path: str, payload: dict[str, Any]) -> None:
    """Write benchmark results as JSON (for RESULTS.md and CI artefacts)."""
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, default=lambda o: asdict(o))
