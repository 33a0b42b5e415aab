"""Run the ``flywheel`` CLI with its workspace read-only except some folders (a script).

The retrain CronJob mounts the workspace read-only and only ``monitor/``, ``watch/`` and
``logs/`` writable (k8s/base/retrain-cron.yaml). The tests may run as root, for whom file
modes are no barrier, and cannot mount anything, so this script enforces the same rule
inside the process with an audit hook (PEP 578): opening a workspace file for writing, or
making, renaming, removing, linking or chmod-ing a path in the workspace outside the
writable folders raises ``OSError(EROFS)``, as the kernel would on the read-only mount.
Writes from native code that bypass Python's audit events (a C library writing a file
itself) are not seen; the decision's writes (JSON, HTML, logs) all go through Python.

Usage: ``python readonly_workspace.py WORKSPACE "monitor watch logs" [flywheel args...]``
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

_WRITES = {
    "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link", "os.truncate",
    "os.chmod", "os.chown", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move",
}  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def guard(workspace: str, writable: list[str]) -> None:
    """Install the audit hook (it cannot be removed: for a process of its own)."""
    root = os.path.realpath(workspace)
    allowed = tuple(os.path.join(root, d) + os.sep for d in writable)

    def check(path: Any) -> None:
        if not isinstance(path, str | bytes | os.PathLike):
            return
        p = os.path.realpath(os.fsdecode(path))
        inside = p == root or p.startswith(root + os.sep)
        if inside and not (p + os.sep).startswith(allowed):
            raise OSError(errno.EROFS, "Read-only file system (readonly_workspace.py)", p)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and args and not isinstance(args[0], int | None):
            mode, flags = args[1] or "", args[2] or 0
            if any(c in mode for c in "wax+") or flags & _WRITE_FLAGS:
                check(args[0])
        elif event == "os.mkdir" and os.path.lexists(args[0]):
            return  # the kernel reports EEXIST before EROFS: mkdir(exist_ok=True) passes
        elif event in _WRITES:
            for arg in args[:2]:
                check(arg)

    sys.addaudithook(hook)


if __name__ == "__main__":
    guard(sys.argv[1], sys.argv[2].split())
    from flywheel.cli import app

    sys.argv = ["flywheel", *sys.argv[3:]]
    app()
