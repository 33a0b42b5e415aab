"""Terminal output for the CLI: rich logging, the live progress line, tables for summaries.

Core stages only log (``logging.getLogger(__name__)``, progress events through
:mod:`flywheel.progress`) and return frozen dataclass summaries; this module is the one
place that turns those into what a person sees. Where a long command's framework output
goes instead (its log file) is :mod:`flywheel.runlog`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live
from rich.logging import RichHandler
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from flywheel.progress import kind_of

console = Console(stderr=False)


def setup_logging(verbose: bool = False) -> None:
    """Route the ``flywheel`` loggers to a rich handler (time-stamped progress lines)."""
    handler = RichHandler(console=console, show_path=False, markup=False, log_time_format="%X")
    root = logging.getLogger("flywheel")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    # Third-party chatter stays at WARNING unless asked for.
    for name in ("ray", "ray.data", "feast", "bentoml", "kfp"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def terminal_handler(verbose: bool) -> logging.Handler:
    """What a long command shows of its log records on the terminal.

    Quiet (the default): Flywheel's own warnings and errors, and any library's errors; the
    rest (INFO chatter, progress events, which :class:`ProgressHandler` shows) only goes
    to the log file. ``verbose``: every record.
    """
    handler = RichHandler(console=console, show_path=False, markup=False, log_time_format="%X")
    if not verbose:
        handler.addFilter(_quiet)
    return handler


def _quiet(record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
        return True
    return record.levelno >= logging.WARNING and record.name.startswith("flywheel")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class ProgressDisplay:
    """The live status line of a long command: phase, pipeline stage, elapsed times.

    ``phase`` comes from :func:`flywheel.progress.phase` records (``day 5/8: serving``),
    the stage from the pipeline's task events (:func:`flywheel.runlog.kfp_task_event`).
    On a terminal the line redraws four times a second and disappears at the end;
    elsewhere (a pipe, CI) only the milestone lines are printed.
    """

    def __init__(self, out: Console, stages: Sequence[str] = ()) -> None:
        self.console = out
        self.stages = tuple(stages)
        self.started = time.monotonic()
        self.phase = ""
        self.phase_started = self.started
        self.stage: str | None = None
        self.stage_started = self.started
        self._spinner = Spinner("dots", style="cyan")
        self._live: Live | None = None

    def set_phase(self, text: str) -> None:
        self.phase, self.phase_started, self.stage = text, time.monotonic(), None

    def set_stage(self, name: str | None) -> None:
        self.stage, self.stage_started = name, time.monotonic()

    def milestone(self, text: str) -> None:
        """One persistent line above the live one."""
        self.console.print(
            Text.assemble((f"{datetime.now():%X} ", "dim"), ("\u2713 ", "green"), text),
            highlight=False,
            soft_wrap=True,
        )

    def line(self) -> Text:
        """The status text as of now."""
        now = time.monotonic()
        text = Text(self.phase or "working")
        text.append(f" {_clock(now - self.phase_started)}", "dim")
        if self.stage:
            of = (
                f" {self.stages.index(self.stage) + 1}/{len(self.stages)}"
                if self.stage in self.stages
                else ""
            )
            text.append(f" \u00b7 stage{of} ")
            text.append(self.stage, "bold")
            text.append(f" {_clock(now - self.stage_started)}", "dim")
        text.append(f"  ({_clock(now - self.started)} in all)", "dim")
        return text

    def _render(self) -> RenderableType:
        self._spinner.update(text=self.line())
        return self._spinner

    def start(self) -> None:
        if self.console.is_terminal and self._live is None:
            self._live = Live(
                console=self.console,
                get_renderable=self._render,
                transient=True,
                refresh_per_second=4,
                redirect_stdout=False,  # flywheel.runlog owns sys.stdout during the run
                redirect_stderr=False,
            )
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class ProgressHandler(logging.Handler):
    """Feeds :mod:`flywheel.progress` records to a :class:`ProgressDisplay`."""

    def __init__(self, display: ProgressDisplay) -> None:
        super().__init__(logging.INFO)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        kind = kind_of(record)
        if kind == "phase":
            self.display.set_phase(record.getMessage())
        elif kind == "milestone":
            self.display.milestone(record.getMessage())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value) or "-"
    return str(value)


def summary_table(title: str, summary: Any) -> Table:
    """A two-column table of a dataclass summary's fields (or a plain dict)."""
    is_instance = dataclasses.is_dataclass(summary) and not isinstance(summary, type)
    items = dataclasses.asdict(summary) if is_instance else dict(summary)
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in items.items():
        table.add_row(key.replace("_", " "), _fmt(value))
    return table


def print_summary(title: str, summary: Any) -> None:
    console.print(summary_table(title, summary))
