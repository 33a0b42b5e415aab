"""The loop's plot: expected CTR per cycle for the three arms."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

from flywheel.loop.results import ARMS, LoopRow


def plot_loop(rows: tuple[LoopRow, ...], drift_day: float | None, out_png: Path) -> Path:
    """Line plot of the expected CTR per simulated day for the three arms, drift marked."""
    from flywheel.evaluation_report import new_figure

    fig = new_figure()
    fig.set_size_inches(6.5, 4.5)
    ax = fig.add_subplot()
    days = [r.day for r in rows]
    for arm, style in zip(ARMS, ("o-", "s--", "^:"), strict=True):
        ax.plot(days, [getattr(r, f"{arm}_ctr") for r in rows], style, label=arm)
    if drift_day is not None:
        ax.axvline(drift_day, color="grey", linestyle="-.", label="drift")
    ax.set_xticks(days)
    ax.set_xlabel("simulated day (arms measured at its start)")
    ax.set_ylabel("expected CTR (clicks per impression)")
    ax.set_title("Flywheel vs frozen model vs oracle under drift")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    return out_png
