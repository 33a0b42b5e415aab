"""Benchmark harness: run a measured function in a fresh process, report time and peak memory.

Each contender runs in its own child process so imports, caches and allocator state of one
cannot flatter or penalise another. Peak memory is the peak of the summed PSS (proportional
set size) of the child and all its descendants (Ray workers, raylet, ...), sampled every
100 ms: PSS splits shared pages between the processes that map them, so Ray's shared-memory
object store is counted once rather than once per worker.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psutil


@dataclass(frozen=True)
class Measurement:
    """What one contender did: seconds of wall time, peak memory and its own result dict."""

    name: str
    seconds: float
    peak_mib: float
    result: dict[str, Any]


def _tree_pss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


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
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        ps = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                peak = max(peak, _tree_pss(ps))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    status, seconds, result = parent.recv()
    stop.set()
    proc.join()
    sampler.join()
    if status != "ok":
        raise RuntimeError(f"benchmark {name!r} failed: {result['error']}")
    return Measurement(name=name, seconds=seconds, peak_mib=peak / 2**20, result=result)


def machine() -> str:
    """One line describing the machine the numbers came from."""
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, "
        f"{platform.platform()}, Python {platform.python_version()}"
    )


def dump(path: str, payload: dict[str, Any]) -> None:
    """Write benchmark results as JSON (for RESULTS.md and CI artefacts)."""
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, default=lambda o: asdict(o))
