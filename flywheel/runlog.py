"""A long command's log file: framework output to ``<workspace>/logs``, progress to the terminal.

Where the noise of a ``flywheel cycle`` or ``flywheel demo`` comes from, and how each
source is caught (all measured on kfp 2.16 / Ray 2.5x / Feast 0.5x):

* kfp.local logs through the *root* logger, but inside every task it swaps the root's
  handlers for a ``StreamHandler(sys.stdout)`` of its own, and it ``print``s each task's
  streamed output and its outputs (whole metrics, ROC curves) to ``sys.stdout``. So
  logging handlers alone cannot hold it back: ``sys.stdout`` and ``sys.stderr`` are
  replaced by a stream into the log file for the duration of the command.
* The pipeline's tasks are subprocesses whose output kfp.local reads through a pipe and
  prints (above). Processes that inherit our file descriptors instead (``bentoml serve``
  in the loop, Ray's own processes, C extensions writing to fd 2) bypass ``sys.stdout``:
  with ``capture_fds`` (the CLI) file descriptors 1 and 2 are pointed at the log file
  too, and the terminal gets a private duplicate of the original fd 1.
* Ray, Feast, BentoML and the rest log through :mod:`logging` (Ray's token-auth notice
  through ``logging.lastResort`` on stderr): the root logger gets a file handler.

The terminal keeps what a person needs: the live progress line, milestone lines, Flywheel's
own warnings, any library's errors (:func:`flywheel.console.terminal_handler`). With
``verbose`` every byte still goes to the log file and is echoed to the terminal as well.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, BinaryIO, Final

from flywheel.console import ProgressDisplay, ProgressHandler, console, terminal_handler

#: Libraries whose loggers the quiet console mutes; in the log file they log at INFO.
FRAMEWORK_LOGGERS: Final = ("ray", "ray.data", "feast", "bentoml", "kfp")
#: Log file format of Python logging records (kfp.local's own lines keep their format).
LOG_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
# kfp.local's task lines (colour codes removed): start, end, cache hit.
_KFP_START = re.compile(r"Executing task '([\w-]+)'")
_KFP_END = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
_KFP_CACHED = re.compile(r"Task '?([\w-]+)'? cache hit")
_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit)\b.*)$")


def log_path(workspace: Path, command: str, now: datetime | None = None) -> Path:
    """``<workspace>/logs/<command>-<local time>.log``, a new file per run (``-2``, ``-3``
    when one of that name exists already)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    path = workspace / "logs" / f"{command}-{stamp}.log"
    n = 1
    while path.exists():
        n += 1
        path = path.with_name(f"{command}-{stamp}-{n}.log")
    return path


def kfp_task_event(line: str) -> tuple[str, str] | None:
    """``(task, "running" | "SUCCESS" | "FAILURE" | "cached")`` for a kfp.local task line."""
    if "ask" not in line:  # cheap pre-check: most lines are task output
        return None
    if match := _KFP_START.search(line):
        return match.group(1), "running"
    if match := _KFP_END.search(line):
        return match.group(1), match.group(2)
    if match := _KFP_CACHED.search(line):
        return match.group(1), "cached"
    return None


def last_error_line(path: Path, tail_bytes: int = 64_000) -> str | None:
    """The last ``SomeError: message`` line of a log file (a failed task's traceback)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, io.SEEK_END) - tail_bytes))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if match := _ERROR_LINE.match(line):
            return match.group(1).strip()[:300]
    return None


class _LogStream(io.TextIOBase):
    """A text stream into the log file (colour codes dropped); optionally echoed to the
    terminal, and each complete line offered to ``watch``."""

    def __init__(
        self,
        sink: BinaryIO,
        lock: threading.Lock,
        echo: IO[str] | None = None,
        watch: Callable[[str], None] | None = None,
        fd: int | None = None,
    ) -> None:
        super().__init__()
        self._sink, self._lock, self._echo, self._watch, self._fd = sink, lock, echo, watch, fd
        self._partial = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        if self._fd is None:
            raise io.UnsupportedOperation("fileno")
        return self._fd

    def write(self, s: str) -> int:
        plain = _ANSI.sub(b"", s.encode("utf-8", "replace"))
        with self._lock:
            self._sink.write(plain)
            if self._echo is not None:
                self._echo.write(s)
            if self._watch is not None:
                *lines, self._partial = (self._partial + plain.decode()).split("\n")
                for line in lines:
                    self._watch(line)
        return len(s)

    def flush(self) -> None:
        if self._echo is not None:
            self._echo.flush()


@dataclass
class CommandLog:
    """An open command log: its file, the live progress display (``None`` if verbose), and
    after a failure the last error line the log held (a failed task's exception)."""

    path: Path
    verbose: bool
    display: ProgressDisplay | None
    cause: str | None = None


def _watcher(display: ProgressDisplay | None) -> Callable[[str], None] | None:
    if display is None:
        return None

    def watch(line: str) -> None:
        event = kfp_task_event(line)
        if event is None:
            return
        task, status = event
        if status == "running":
            display.set_stage(task)
        elif display.stage == task:
            display.set_stage(None)

    return watch


@contextlib.contextmanager
def _route_logging(
    stream: _LogStream, verbose: bool, display: ProgressDisplay | None
) -> Iterator[None]:
    """Root and ``flywheel`` loggers to the log file, the terminal filter, the display."""
    to_file = logging.StreamHandler(stream)
    to_file.setFormatter(logging.Formatter(LOG_FORMAT))
    to_terminal = terminal_handler(verbose)
    root, fw = logging.getLogger(), logging.getLogger("flywheel")
    saved = (root.handlers[:], root.level, fw.handlers[:], fw.level, fw.propagate)
    # Ray (once initialised) gives its logger a stderr handler of its own and stops it
    # propagating; for the run, every framework logger goes through the root's handlers.
    framework = {
        name: (lg.level, lg.handlers[:], lg.propagate)
        for name in FRAMEWORK_LOGGERS
        for lg in [logging.getLogger(name)]
    }
    root.handlers[:] = [to_file, to_terminal]
    root.setLevel(logging.INFO)
    fw.handlers[:] = [to_file, to_terminal] + ([ProgressHandler(display)] if display else [])
    fw.setLevel(logging.DEBUG)
    fw.propagate = False
    for name in FRAMEWORK_LOGGERS:
        lg = logging.getLogger(name)
        lg.setLevel(logging.NOTSET)  # the root's INFO: all in the file
        lg.handlers[:] = []
        lg.propagate = True
    try:
        yield
    finally:
        root.handlers[:], fw.handlers[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        fw.setLevel(saved[3])
        fw.propagate = saved[4]
        for name, (level, handlers, propagate) in framework.items():
            lg = logging.getLogger(name)
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate = propagate


@contextlib.contextmanager
def _capture_fds(sink: BinaryIO, lock: threading.Lock, verbose: bool) -> Iterator[int]:
    """Point fds 1 and 2 at the log file (verbose: at a pipe copied to file and terminal);
    yield a private duplicate of the original fd 1 for the terminal."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    pump: threading.Thread | None = None
    if verbose:
        read_end, write_end = os.pipe()
        pump = threading.Thread(
            target=_pump, args=(read_end, sink, lock, saved[1]), daemon=True, name="runlog-tee"
        )
        pump.start()
        target = write_end
    else:
        target = sink.fileno()
    for fd in (1, 2):
        os.dup2(target, fd)
    if verbose:
        os.close(target)
    try:
        yield saved[1]
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)  # also drops our last reference to the pipe's write end
        if pump is not None:
            pump.join(timeout=5)  # a child that outlives us may hold the pipe open
        for copy in saved.values():
            os.close(copy)


def _pump(read_end: int, sink: BinaryIO, lock: threading.Lock, terminal_fd: int) -> None:
    with contextlib.suppress(OSError):
        while chunk := os.read(read_end, 65536):
            with lock:
                sink.write(_ANSI.sub(b"", chunk))
            os.write(terminal_fd, chunk)
    with contextlib.suppress(OSError):
        os.close(read_end)


def _terminal(original: IO[str], fd_copy: int | None) -> tuple[IO[str], bool]:
    """Where the console writes during the run, and whether we opened it (and must close it).

    A real terminal is reached through the duplicate of fd 1; a stream that is not fd 1
    (a test runner's buffer) is kept as it is."""
    try:
        is_fd1 = original.fileno() == 1
    except (AttributeError, OSError, ValueError):
        is_fd1 = False
    if fd_copy is not None and is_fd1:
        encoding = getattr(original, "encoding", None) or "utf-8"
        dup = os.dup(fd_copy)
        return open(dup, "w", buffering=1, encoding=encoding, errors="replace"), True
    return original, False


@contextlib.contextmanager
def command_log(
    path: Path,
    *,
    verbose: bool = False,
    capture_fds: bool = True,
    stages: Sequence[str] = (),
) -> Iterator[CommandLog]:
    """Send everything the command's libraries print or log to ``path``; keep the terminal
    for progress (see the module docstring). ``stages`` names the pipeline's tasks, for the
    progress line's ``stage 3/8``.

    Everything is put back on exit (streams, file descriptors, loggers, the console).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    saved_streams = (sys.stdout, sys.stderr)
    saved_console_file = getattr(console, "_file", None)  # None: follow sys.stdout
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(path.open("ab", buffering=0))
        fd_copy = stack.enter_context(_capture_fds(sink, lock, verbose)) if capture_fds else None
        terminal, opened = _terminal(saved_streams[0], fd_copy)
        if opened:
            stack.callback(terminal.close)
        console.file = terminal
        stack.callback(setattr, console, "_file", saved_console_file)
        display = None if verbose else ProgressDisplay(console, stages)
        watch = _watcher(display)
        fd = 1 if capture_fds else None
        out = _LogStream(sink, lock, terminal if verbose else None, watch, fd)
        sys.stdout = sys.stderr = out
        stack.callback(_restore_streams, saved_streams)
        file_only = _LogStream(sink, lock, None, watch)
        stack.enter_context(_route_logging(file_only, verbose, display))
        if display is not None:
            display.start()
            stack.callback(display.stop)
        run = CommandLog(path, verbose, display)
        try:
            yield run
        except BaseException:
            run.cause = last_error_line(path)  # before our own traceback lands there
            traceback.print_exc(file=file_only)  # the whole story stays in the file
            raise


def _restore_streams(saved: tuple[IO[str], IO[str]]) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    sys.stdout, sys.stderr = saved
