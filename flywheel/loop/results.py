"""The loop's results: one row per cycle, the summary, and its error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    pass


#: Slate length served and scored.
SLATE_K: Final = 10
#: Arms in the order they are plotted.
ARMS: Final = ("flywheel", "frozen", "oracle")


@dataclass(frozen=True)
class GainInterval:
    """Mean of paired per-user differences with its two-sided confidence interval."""

    mean: float
    low: float
    high: float
    users: int


class LoopError(ValueError):
    """A loop parameter is out of range; the message names it."""


@dataclass(frozen=True)
class LoopRow:
    """One loop cycle: the arms measured at the start of ``day``, then serving and retrain.

    ``champion`` is the model the flywheel arm was measured with (and served during
    ``day``); ``served_ctr`` is the sampled CTR of that traffic (with exploration);
    ``blessed`` and ``next_champion`` are the outcome of the cycle run on that day's data;
    ``served_ingested`` counts the prediction-log rows that cycle ingested. The final row
    (``cycle == cycles``) measures the last retrain only: no traffic, no cycle run
    (``served_ctr``, ``blessed``, ``next_champion``, ``run_id`` are ``None``).
    ``gain`` is flywheel minus frozen expected CTR, paired by user, with its 95% interval.
    """

    cycle: int
    day: int
    after_drift: bool
    flywheel_ctr: float
    frozen_ctr: float
    oracle_ctr: float
    gain: GainInterval
    champion: str
    served_ctr: float | None
    blessed: bool | None
    next_champion: str | None
    served_ingested: int
    run_id: str | None
    seconds: float


@dataclass(frozen=True)
class LoopSummary:
    """What :func:`run_loop` measured; ``rows`` in cycle order.

    ``drift_gain`` pools the paired per-user gains of every row measured at least one day
    after the drift (once the flywheel could have retrained on post-drift data); ``None``
    without drift or without such a row.
    """

    rows: tuple[LoopRow, ...]
    frozen_model: str
    drift_day: float | None
    history_events: int
    plot_path: str
    seconds: float
    drift_gain: GainInterval | None = None
