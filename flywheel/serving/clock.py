"""The serving clock: the wall clock, or a replay clock for a world stamped in the past."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: ``auto`` clock: replay when the lake's features end more than this before the wall clock.
REPLAY_LAG: Final = timedelta(days=1)


class ServingClock:
    """Wall-clock time shifted by a fixed offset (zero for the wall clock)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance_to(self, moment: datetime) -> None:
        """Jump forward to ``moment`` if it lies ahead; a clock never runs backwards."""
        ahead = moment - self.now()
        if ahead > timedelta(0):
            self.offset += ahead


def make_clock(
    settings: Settings, mode: str = "auto", wall_now: datetime | None = None
) -> ServingClock:
    """The clock for ``mode`` (``wall``, ``lake`` or ``auto``; see the module docstring).

    Raises:
        ValueError: ``mode`` is ``lake`` and the lake is empty, or ``mode`` is unknown.
    """
    from flywheel.lake import feature_time, watermark

    if mode not in ("auto", "wall", "lake"):
        raise ValueError(f"clock={mode!r}; expected 'auto', 'wall' or 'lake'")
    wall = wall_now or datetime.now(UTC)
    if mode == "wall" or (mode == "auto" and watermark(settings) is None):
        return ServingClock()
    lake_now = feature_time(settings) - timedelta(seconds=1)
    if mode == "auto" and wall - lake_now <= REPLAY_LAG:
        return ServingClock()
    log.info("serving on a replay clock starting at %s (the lake's feature time)", lake_now)
    return ServingClock(lake_now - wall)
