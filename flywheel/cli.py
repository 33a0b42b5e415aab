"""The ``flywheel`` command line: thin translations from flags to core functions.

Every command builds one Settings object, calls core functions, and prints their summaries.
Heavy engines (Ray, Feast, BentoML) are imported inside the commands that need them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import typer

from flywheel.config import ConfigError, Settings, load_settings
from flywheel.console import console, print_summary, setup_logging

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
        except (ValueError, FileNotFoundError, KeyError, PermissionError, RuntimeError) as exc:
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


@app.command()
@_clear_errors
def simulate(
    ctx: typer.Context,
    users: int = typer.Option(2_000, help="Simulated users."),
    items: int = typer.Option(500, help="Catalog size."),
    days: int = typer.Option(14, help="Days of web logs to write."),
    seed: int = typer.Option(0, help="Same seed, same world and events."),
    drift_day: float | None = typer.Option(
        None, help="Day (after the start) at which tastes shift; none by default."
    ),
    categories: int = typer.Option(12, help="Item categories."),
    start_day: int = typer.Option(0, help="Continue an earlier run's timeline from this day."),
    out: Path | None = typer.Option(
        None, help="Output folder (default: <workspace>/raw): events/, items.parquet, world/."
    ),
    ids: str = typer.Option(
        "plain",
        help='How the logs name users and items: plain ("42") or shop (u000042, sku-00017).',
    ),
) -> None:
    """Write raw web-log events and the item catalog of a simulated shop."""
    from flywheel.simulate import NAMINGS, World, make_world, simulate_events

    if ids not in NAMINGS:
        raise typer.BadParameter(f"--ids {ids!r}; expected one of {sorted(NAMINGS)}")

    s = _settings(ctx)
    out = out or s.workspace / "raw"
    world_dir = out / "world"
    if start_day > 0 and world_dir.exists():
        world = World.load(world_dir)  # continue the same users and catalog
    else:
        world = make_world(
            users, items, categories, seed=seed, drift_day=drift_day, naming=NAMINGS[ids]
        )
    summary = simulate_events(world, days, out, seed=seed, start_day=start_day)
    print_summary("simulate", summary)
    console.print(
        f"{summary.events_per_second:,.0f} events/s; next: flywheel ingest --events {out}"
    )


def _expand_event_inputs(paths: list[Path], items: Path | None) -> tuple[list[Path], Path | None]:
    """A simulator output folder (``events/`` + ``items.parquet``) stands for both inputs."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir() and (p / "events").is_dir():
            out.append(p / "events")
            if items is None and (p / "items.parquet").is_file():
                items = p / "items.parquet"
        else:
            out.append(p)
    return out, items


@app.command()
@_clear_errors
def ingest(
    ctx: typer.Context,
    events: list[Path] = typer.Option(
        ...,
        "--events",
        help="Event files or folders (Parquet, JSON lines, CSV); repeatable. A simulator "
        "output folder means its events/ and items.parquet.",
    ),
    items: Path | None = typer.Option(None, "--items", help="Item catalog file to upsert."),
    mapping: str | None = typer.Option(
        None,
        "--mapping",
        help="Source layout of the events: a built-in mapping (retailrocket, rees46) or a "
        "mapping YAML file; default: the files have the event contract's columns.",
    ),
) -> None:
    """Validate raw events into the date-partitioned event lake (idempotent)."""
    from flywheel.ingest import ingest_events

    s = _settings(ctx)
    paths, items = _expand_event_inputs(events, items)
    summary = ingest_events(s, paths, items=items, mapping=mapping)
    print_summary("ingest", summary)
    if summary.quarantined:
        console.print(
            f"[yellow]{summary.quarantined:,} rows quarantined[/yellow]: {summary.quarantine_file}"
        )


@app.command()
@_clear_errors
def features(
    ctx: typer.Context,
    materialize: bool = typer.Option(
        True, help="Also load the latest values into the online store (incremental)."
    ),
) -> None:
    """Build feature tables from the lake (Ray Data), `feast apply`, materialize online."""
    from flywheel import feature_store
    from flywheel.features import build_features

    s = _settings(ctx)
    print_summary("features", build_features(s))
    print_summary("feast apply", feature_store.apply(s))
    if materialize:
        from flywheel.lake import feature_time

        print_summary("feast materialize", feature_store.materialize(s, end=feature_time(s)))


@app.command("compile")
@_clear_errors
def compile_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(Path("pipeline.yaml"), "--out", help="KFP IR YAML to write."),
) -> None:
    """Compile the continuous-training pipeline to KFP IR YAML for the chosen profile."""
    from flywheel.cycle import compile_pipeline

    path = compile_pipeline(_settings(ctx), out)
    console.print(f"wrote {path}; submit with `flywheel submit` or `kfp run create`")


@app.command()
@_clear_errors
def submit(
    ctx: typer.Context,
    host: str = typer.Option(..., "--host", help="KFP API server, e.g. http://localhost:8080."),
    experiment: str = typer.Option("flywheel", help="KFP experiment (created if missing)."),
    schedule: str | None = typer.Option(
        None, help="Cron schedule: create a recurring run ('0 3 * * *', KFP's 6 fields, @daily)."
    ),
    name: str | None = typer.Option(None, help="Run name; required with --schedule."),
    param: list[str] = typer.Option(
        [], "--param", help="Pipeline argument name=value; repeatable."
    ),
    out: Path | None = typer.Option(None, "--out", help="Also keep the compiled package here."),
) -> None:
    """Compile for the chosen profile and create a run (or recurring run) on Kubeflow Pipelines."""
    from flywheel.submit import submit as submit_pipeline

    result = submit_pipeline(
        _settings(ctx),
        host,
        experiment=experiment,
        params=param,
        schedule=schedule,
        name=name,
        package=out,
    )
    print_summary("submit", result)
    console.print(f"{result.kind} {result.id}: {result.url}")


def _stage_table(summary: Any) -> None:
    from rich.table import Table

    table = Table(title=f"cycle {summary.run_id}", header_style="bold")
    for col in ("stage", "status", "seconds", "detail"):
        table.add_column(col, overflow="fold")
    for s in summary.stages:
        table.add_row(s.stage, s.status, f"{s.seconds:.1f}", s.detail)
    console.print(table)
    decision = {True: "blessed", False: "not blessed", None: "not evaluated"}[summary.blessed]
    console.print(
        f"decision: [bold]{decision}[/bold]; champion {summary.champion_before} -> "
        f"{summary.champion_after}; {summary.seconds:.1f}s"
    )


@app.command()
@_clear_errors
def cycle(
    ctx: typer.Context,
    events: Path | None = typer.Option(
        None,
        "--events",
        help="New raw events to ingest first (file or folder; a simulator "
        "output folder means its events/ and items.parquet).",
    ),
    items: Path | None = typer.Option(None, "--items", help="Item catalog to upsert."),
    window_days: float = typer.Option(14.0, help="Training window, days back from the data."),
    attribution_minutes: int = typer.Option(60, help="Attribution window of a positive."),
    max_rows: int = typer.Option(1_000_000, help="Cap on training impressions."),
    seed: int = typer.Option(0, help="Sampling and training seed."),
    min_auc: float = typer.Option(0.55, help="Blessing floor on test AUC."),
    min_improvement: float = typer.Option(0.0, help="AUC margin over the champion."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Disable KFP caching."),
) -> None:
    """Run one full cycle of the pipeline locally with kfp.local."""
    from flywheel.cycle import run_cycle
    from flywheel.evaluate import BlessingRule

    s = _settings(ctx)
    events_uri, items_uri = "", ""
    if events is not None:
        paths, item_path = _expand_event_inputs([events], items)
        events_uri, items_uri = (
            str(paths[0].resolve()),
            str(item_path.resolve()) if item_path else "",
        )
    summary = run_cycle(
        s,
        events_uri,
        items_uri,
        window_days=window_days,
        attribution_minutes=attribution_minutes,
        max_rows=max_rows,
        seed=seed,
        rule=BlessingRule(min_auc=min_auc, min_improvement=min_improvement),
        caching=not no_cache,
    )
    _stage_table(summary)


@app.command()
@_clear_errors
def demo(
    ctx: typer.Context,
    users: int = typer.Option(2_000, help="Simulated users."),
    items: int = typer.Option(300, help="Catalog size."),
    history_days: int = typer.Option(4, help="Days of history before the first model."),
    cycles: int = typer.Option(4, help="Serve-then-retrain cycles, one simulated day each."),
    drift_day: float = typer.Option(5.0, help="Day at which tastes and price weight shift."),
    seed: int = typer.Option(0, help="Seed of the world, events and training."),
    quick: bool = typer.Option(
        False, "--quick", help="One pipeline cycle over the same days and a ranking check."
    ),
) -> None:
    """Flywheel vs frozen first model vs oracle through a drift, in <workspace>/demo."""
    from flywheel.demo import run_demo, run_quick_demo

    s = _settings(ctx)
    if quick:  # the single-cycle smoke run, in the workspace itself
        _quick_demo_table(s, run_quick_demo(s, users, items, history_days + cycles, seed))
        return
    result = run_demo(s, users, items, history_days, cycles, drift_day=drift_day, seed=seed)
    _loop_table(result, drift_day)


def _quick_demo_table(s: Settings, result: Any) -> None:
    from rich.table import Table

    _stage_table(result.cycle)
    q = result.quality
    table = Table(
        title=f"top-{q.k} rankings for {q.users} users from online features "
        f"({q.candidates} candidates each)",
        header_style="bold",
    )
    table.add_column("ranker")
    table.add_column("expected carts per ranking", justify="right")
    for name, value in (("random", q.random), ("champion model", q.model), ("oracle", q.oracle)):
        table.add_row(name, f"{value:.4f}")
    console.print(table)
    console.print(
        f"the model captures {q.share_of_oracle:.0%} of the oracle's lift over random; "
        f"{result.events:,} events; demo took {result.seconds:.0f}s. "
        f"Workspace: {s.workspace}"
    )


@app.command()
@_clear_errors
def serve(
    ctx: typer.Context,
    port: int = typer.Option(3000, help="HTTP port."),
    workers: int = typer.Option(1, help="BentoML worker processes."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
) -> None:
    """Serve the champion with `bentoml serve` (POST /rank, POST /feedback, /metrics)."""
    from flywheel.serving import serve as run_server

    raise typer.Exit(run_server(_settings(ctx), port=port, workers=workers, host=host))


@app.command()
@_clear_errors
def traffic(
    ctx: typer.Context,
    url: str = typer.Option("http://127.0.0.1:3000", help="The ranking service."),
    requests: int = typer.Option(200, "--requests", help="Ranking requests to send."),
    k: int = typer.Option(10, help="Items per ranking."),
    seed: int = typer.Option(0, help="Which users ask, and what they do."),
    world: Path | None = typer.Option(
        None, help="Simulated world (default: <workspace>/raw/world)."
    ),
) -> None:
    """Play simulated users against a running service: rank, react, post feedback."""
    from flywheel.lake import feature_time
    from flywheel.simulate import World, http_feedback, http_ranker, run_traffic

    s = _settings(ctx)
    w = World.load(world or s.workspace / "raw" / "world")
    # Users act at the time the lake's data ends, as the service's replay clock does.
    summary = run_traffic(
        w,
        http_ranker(url, ids=w.ids),
        requests,
        seed=seed,
        at=feature_time(s),
        k=k,
        feedback=http_feedback(url, ids=w.ids),
    )
    print_summary("traffic", summary)


@app.command()
@_clear_errors
def report(
    ctx: typer.Context,
    out: Path | None = typer.Option(
        None, "--out", help="PNG (default <workspace>/reports/model_report.png)."
    ),
    since: datetime | None = typer.Option(None, help="Only what was served from this UTC time."),
) -> None:
    """How each served model version did: CTR, exploration, calibration (serving logs)."""
    from rich.table import Table

    from flywheel.report import model_report, version_rows

    s = _settings(ctx)
    start = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    result = model_report(s, out or s.workspace / "reports" / "model_report.png", since=start)
    rows = version_rows(result)
    table = Table(title="served model versions", header_style="bold")
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "model version" else "right")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    console.print(
        f"{result.impressions:,} impressions, {result.feedback_events:,} feedback events "
        f"({result.unmatched_feedback:,} unmatched); figure: {result.png}"
    )


@app.command()
@_clear_errors
def loop(
    ctx: typer.Context,
    users: int = typer.Option(2_000, help="Simulated users."),
    items: int = typer.Option(300, help="Catalog size."),
    history_days: int = typer.Option(4, help="Days of history before the first model."),
    cycles: int = typer.Option(4, help="Serve-then-retrain cycles after the first model."),
    requests: int = typer.Option(500, help="Simulated ranking requests per cycle."),
    drift_day: float = typer.Option(5.0, help="Day at which tastes and price weight shift."),
    seed: int = typer.Option(0, help="Seed of everything."),
    out: Path | None = typer.Option(None, help="PNG of CTR per cycle for the three arms."),
) -> None:
    """The closed-loop drift experiment: flywheel vs frozen first model vs oracle."""
    from flywheel.loop import run_loop

    s = _settings(ctx)
    result = run_loop(s, users, items, history_days, cycles, requests, drift_day, seed, out)
    _loop_table(result, drift_day)


def _loop_table(result: Any, drift_day: float) -> None:
    """The loop's rows as a table, then the pooled gain after the drift and the plot."""
    from rich.table import Table

    table = Table(title="expected CTR per simulated day (measured at its start)")
    for col in ("day", "flywheel", "frozen", "oracle", "gain ± 95% CI", "served", "blessed"):
        table.add_column(col, justify="right")
    for r in result.rows:
        g = r.gain  # a t-interval: symmetric around the mean
        table.add_row(
            f"{r.day}{' (drift)' if r.after_drift and r.day == int(drift_day) else ''}",
            f"{r.flywheel_ctr:.4f}",
            f"{r.frozen_ctr:.4f}",
            f"{r.oracle_ctr:.4f}",
            f"{g.mean:+.4f} ± {g.high - g.mean:.4f}",
            "-" if r.served_ctr is None else f"{r.served_ctr:.3f}",
            "-" if r.blessed is None else str(r.blessed),
        )
    console.print(table)
    gain = result.drift_gain
    if gain is not None:
        console.print(
            f"gain = flywheel - frozen expected CTR, paired by user. From a day after the "
            f"drift: {gain.mean:+.4f} (95% CI {gain.low:+.4f} to {gain.high:+.4f}, "
            f"{gain.users} user-days)"
        )
    console.print(f"plot: {result.plot_path}; {result.seconds:.0f}s")
