"""What every ``flywheel`` command shares: global options, settings, errors, the run log."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from flywheel.config import ConfigError, Settings, load_settings
from flywheel.console import console
from flywheel.progress import phase as progress_phase

if TYPE_CHECKING:
    from flywheel.runlog import CommandLog
    from flywheel.storage import Location

log = logging.getLogger("flywheel.cli")

F = TypeVar("F", bound=Callable[..., Any])

#: Errors of the core shown as one red line (no traceback).
INPUT_ERRORS = (ValueError, FileNotFoundError, KeyError, PermissionError, RuntimeError)


def mapping_option(what: str) -> Any:
    """The ``--mapping NAME_OR_FILE`` option of ingest, cycle and submit, one wording."""
    return typer.Option(
        None,
        "--mapping",
        help="Source layout of the events: a built-in mapping (retailrocket, rees46) or a "
        f"mapping YAML file{what}; default: the files have the event contract's columns.",
    )


@dataclass
class GlobalOptions:
    """The options before the command name (``flywheel --workspace w -v cycle``)."""

    profile: str | None
    config: Path | None
    workspace: Path | None
    verbose: bool = False


def settings_of(ctx: typer.Context) -> Settings:
    g: GlobalOptions = ctx.obj
    try:
        return load_settings(profile=g.profile, config_file=g.config, workspace=g.workspace)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def clear_errors(fn: F) -> F:
    """Turn the core's input errors into one red line and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise  # click's Exit is a RuntimeError: already reported, not "error: 1"
        except INPUT_ERRORS as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def logged(ctx: typer.Context, s: Settings, command: str, phase: str = "") -> Iterator[CommandLog]:
    """Run a long command with its framework output in a log file under the workspace.

    The terminal shows the live progress line and milestones (``-v``: the whole log as
    well). A failure prints one red line, the last error line of the log, and the log's
    path; exit code 1.
    """
    from flywheel.cycle import STAGES
    from flywheel.runlog import command_log, log_path

    path = log_path(s.workspace, command)
    verbose = ctx.obj.verbose if isinstance(ctx.obj, GlobalOptions) else False
    run: CommandLog | None = None
    try:
        with command_log(path, verbose=verbose, stages=STAGES) as run:
            if phase:
                progress_phase(log, phase)
            yield run
    except INPUT_ERRORS as exc:
        _line(f"[red]error:[/red] {exc}")
        cause = run.cause if run else None
        if cause and cause not in str(exc):
            _line(f"[red]cause:[/red] {cause}")
        _line(f"full log: {path}")
        raise typer.Exit(1) from exc
    except BaseException:
        _line(f"full log: {path}")
        raise


def _line(text: str) -> None:
    """One line, never wrapped (paths and errors stay copy-pasteable)."""
    console.print(text, highlight=False, soft_wrap=True)


def log_footer(run: CommandLog) -> None:
    """The last line of a long command: where its whole log is."""
    _line(f"full log: {run.path}")


def expand_event_inputs(
    paths: Sequence[Location], items: Location | None
) -> tuple[list[Location], Location | None]:
    """A simulator output folder (``events/`` + ``items.parquet``) stands for both inputs.

    Local folders and ``s3://`` prefixes alike (an uploaded simulator folder, for one).
    """
    from flywheel import storage

    out: list[Location] = []
    for p in paths:
        events, catalog = storage.join(p, "events"), storage.join(p, "items.parquet")
        if storage.is_dir(p) and storage.is_dir(events):
            out.append(events)
            if items is None and storage.is_file(catalog):
                items = catalog
        else:
            out.append(p)
    return out, items
