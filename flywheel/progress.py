"""Progress events of long runs, as log records: the core says what it does, the CLI shows it.

Core modules stay free of terminal code: they log. A record made by :func:`phase` or
:func:`milestone` carries the attribute :data:`PROGRESS_ATTR`; the CLI's console
(:mod:`flywheel.console`) turns a *phase* into the live status line (what runs now, with
its elapsed time) and a *milestone* into one persistent line (a step finished, with its
result). Every such record is also an ordinary INFO record, so it lands in the run's log
file like any other, and without a console (tests, library use) it is just a log line.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final, Literal

#: The ``LogRecord`` attribute that marks a progress event; its value is the kind.
PROGRESS_ATTR: Final = "flywheel_progress"

Kind = Literal["phase", "milestone"]


def phase(logger: logging.Logger, msg: str, *args: Any) -> None:
    """What the run does now (e.g. ``day 5/8: serving 500 requests``); replaces the last."""
    logger.info(msg, *args, extra={PROGRESS_ATTR: "phase"})


def milestone(logger: logging.Logger, msg: str, *args: Any) -> None:
    """A step finished, with its result (e.g. ``day 5: cycle blessed in 76 s``)."""
    logger.info(msg, *args, extra={PROGRESS_ATTR: "milestone"})


def kind_of(record: logging.LogRecord) -> Kind | None:
    """``"phase"``, ``"milestone"`` or ``None`` for an ordinary record."""
    kind = getattr(record, PROGRESS_ATTR, None)
    return kind if kind in ("phase", "milestone") else None


class PhaseClock:
    """Seconds per phase of a run: ``lap(name)`` records the time since the previous lap
    (or the start) under ``name``; ``total()`` is the time since the start."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = self._mark = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._mark, 3)
        self._mark = now

    def total(self) -> float:
        return round(time.perf_counter() - self._start, 3)
