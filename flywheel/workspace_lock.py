"""One writer at a time per workspace: an advisory lock around commands that write.

``flywheel cycle``, ``ingest``, ``features`` (and the loop and demo, which run cycles) write
the lake, the feature tables, the online store and the champion pointer. Two of them on one
workspace would interleave those writes, so each holds ``<workspace>/.flywheel.lock`` while
it runs: an exclusive ``flock(2)``, which the kernel drops when the holder exits, however it
exits (a killed run leaves no stale lock). The file also says who holds it (command, pid,
host, since when), for the message the second run prints.

What a second run does is a setting, ``lock.on_busy``: ``fail`` (the default) exits at once
with a clear message; ``wait`` waits for the lock (up to ``lock.wait_timeout_s``).

The lock is re-entrant for the holder's own work: a cycle's kfp.local stages are child
processes that call the same ingest and feature code. The holder puts the lock's path in
``FLYWHEEL_LOCK_HELD``, which its children inherit; code that finds its workspace's lock
named there runs under the parent's lock instead of waiting for it forever.

``flock`` is advisory and local to one kernel (and to NFS servers that implement it): it
keeps two runs on one machine or one shared volume apart, not a cluster's KFP runs, which
Kubernetes schedules (a cluster's runs go through KFP).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from flywheel.config import Settings

LOCK_FILE = ".flywheel.lock"
HELD_ENV = "FLYWHEEL_LOCK_HELD"
_POLL_S = 0.2
#: Locks this process holds, by resolved path (nesting in one process is re-entrant).
_held: dict[str, int] = {}
F = TypeVar("F", bound=Callable[..., Any])


class WorkspaceBusyError(RuntimeError):
    """Another run holds the workspace's lock (``lock.on_busy=fail``, or the wait timed out)."""


def lock_path(workspace: Path) -> Path:
    return workspace / LOCK_FILE


def holder(workspace: Path) -> dict[str, Any] | None:
    """Who the lock file says holds the lock (None when unreadable or empty)."""
    try:
        text = lock_path(workspace).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another flywheel run"
    return (
        f"`flywheel {info.get('command', '?')}` (pid {info.get('pid', '?')} on "
        f"{info.get('host', '?')}, since {info.get('since', '?')})"
    )


def _inherited(path: str) -> bool:
    return path in os.environ.get(HELD_ENV, "").split(os.pathsep)


@contextlib.contextmanager
def workspace_lock(settings: Settings, command: str) -> Iterator[None]:
    """Hold the workspace's lock while the block runs.

    Args:
        settings: the workspace and ``lock`` settings (``on_busy``, ``wait_timeout_s``).
        command: what holds it, for the message another run prints (e.g. ``"cycle"``).

    Raises:
        WorkspaceBusyError: the lock is held elsewhere and ``on_busy`` is ``fail``, or the
            wait ran past ``wait_timeout_s``.
    """
    workspace = settings.workspace
    workspace.mkdir(parents=True, exist_ok=True)
    path = str(lock_path(workspace).resolve())
    if path in _held or _inherited(path):
        _held[path] = _held.get(path, 0) + 1
        try:
            yield
        finally:
            _held[path] -= 1
            if not _held[path]:
                del _held[path]
        return
    fh = open(path, "a+")  # noqa: SIM115 - held for the block's duration
    try:
        _acquire(fh, settings, workspace)
        fh.seek(0)
        fh.truncate()
        since = datetime.now(UTC).isoformat(timespec="seconds")
        info = {"command": command, "pid": os.getpid(), "host": socket.gethostname()}
        fh.write(json.dumps({**info, "since": since}))
        fh.flush()
        previous = os.environ.get(HELD_ENV)
        os.environ[HELD_ENV] = os.pathsep.join(p for p in (previous, path) if p)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
            if previous is None:
                os.environ.pop(HELD_ENV, None)
            else:
                os.environ[HELD_ENV] = previous
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


def _acquire(fh: IO[str], settings: Settings, workspace: Path) -> None:
    """Take the lock, or wait for it, or raise, as ``settings.lock`` says."""
    from flywheel.progress import phase

    deadline = time.monotonic() + settings.lock.wait_timeout_s
    announced = False
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        who = _describe(holder(workspace))
        if settings.lock.on_busy == "fail":
            raise WorkspaceBusyError(
                f"workspace {str(workspace)!r} is in use by {who}; wait for it to finish, or "
                "set lock.on_busy=wait (FLYWHEEL_LOCK__ON_BUSY=wait) to queue behind it"
            )
        if time.monotonic() >= deadline:
            raise WorkspaceBusyError(
                f"workspace {str(workspace)!r} is still in use by {who} after waiting "
                f"{settings.lock.wait_timeout_s:g} s (lock.wait_timeout_s)"
            )
        if not announced:
            import logging

            phase(logging.getLogger(__name__), f"waiting for the workspace: in use by {who}")
            announced = True
        time.sleep(_POLL_S)


def locked(command: str) -> Callable[[F], F]:
    """Run the decorated ``fn(settings, ...)`` under :func:`workspace_lock`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(settings: Settings, *args: Any, **kwargs: Any) -> Any:
            with workspace_lock(settings, command):
                return fn(settings, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
