"""Terminal output for the CLI: rich logging for progress, tables for summaries.

Core stages only log (``logging.getLogger(__name__)``) and return frozen dataclass summaries;
this module is the one place that turns those into what a person sees.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

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
