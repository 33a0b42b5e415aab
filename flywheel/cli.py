"""The ``flywheel`` command line: thin translations from flags to core functions.

Every command builds one Settings object, calls core functions, and prints their summaries.
Heavy engines (Ray, Feast, BentoML) are imported inside the commands that need them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer

from flywheel.config import ConfigError, Settings, load_settings
from flywheel.console import console, setup_logging

app = typer.Typer(
    name="flywheel",
    help="Continuous training: event lake -> Feast features -> KFP/Ray training -> BentoML.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class _Global:
    profile: str | None
    config: Path | None
    workspace: Path | None


def _settings(ctx: typer.Context) -> Settings:
    g: _Global = ctx.obj
    try:
        return load_settings(profile=g.profile, config_file=g.config, workspace=g.workspace)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _clear_errors(fn: F) -> F:
    """Turn the core's input errors into one red line and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, KeyError, PermissionError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    ctx: typer.Context,
    profile: str | None = typer.Option(
        None, "--profile", help="local (default), kind or prod; env FLYWHEEL_PROFILE."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML settings file; env FLYWHEEL_CONFIG."
    ),
    workspace: Path | None = typer.Option(
        None,
        "--workspace",
        help="Where a local run writes (default ./.flywheel); env FLYWHEEL_WORKSPACE.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Flywheel: the continuous-training loop on your laptop and your cluster."""
    setup_logging(verbose)
    ctx.obj = _Global(profile=profile, config=config, workspace=workspace)


@app.command()
def settings(ctx: typer.Context) -> None:
    """Print the resolved settings (profile, workspace, Ray, Feast)."""
    console.print_json(_settings(ctx).model_dump_json())
