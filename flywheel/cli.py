"""The ``flywheel`` command line: thin translations from flags to core functions.

Every command builds one Settings object, calls core functions, and prints their summaries.
Heavy engines (Ray, Feast, BentoML) are imported inside the commands that need them.
Long commands (ingest, features, cycle, loop, demo) run inside
:func:`flywheel.cli_support.logged`: framework
output goes to ``<workspace>/logs/<command>-<time>.log``, the terminal shows progress.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from flywheel import progress
from flywheel.cli_housekeeping import compact_command, gc_command
from flywheel.cli_live import monitor_command, report_command, serve_command, traffic_command
from flywheel.cli_support import (
    GlobalOptions,
    clear_errors,
    expand_event_inputs,
    log_footer,
    logged,
    mapping_option,
    settings_of,
)
from flywheel.cli_upload import upload
from flywheel.cli_views import (
    loop_table,
    materialize_table,
    quick_demo_table,
    stage_table,
)
from flywheel.cli_watch import watch_command
from flywheel.console import console, print_summary, setup_logging

log = logging.getLogger("flywheel.cli")

app = typer.Typer(
    name="flywheel",
    help="Continuous training: event lake -> Feast features -> KFP/Ray training -> BentoML.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("upload")(clear_errors(upload))


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
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Debug logging; long commands also show their whole log (kfp.local, Ray, "
        "Feast) on the terminal, not only in <workspace>/logs.",
    ),
) -> None:
    """Flywheel: the continuous-training loop on your laptop and your cluster."""
    setup_logging(verbose)
    ctx.obj = GlobalOptions(profile=profile, config=config, workspace=workspace, verbose=verbose)


@app.command()
def settings(ctx: typer.Context) -> None:
    """Print the resolved settings (profile, workspace, Ray, Feast)."""
    console.print_json(settings_of(ctx).model_dump_json())


@app.command()
@clear_errors
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

    s = settings_of(ctx)
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


@app.command()
@clear_errors
def ingest(
    ctx: typer.Context,
    events: list[str] = typer.Option(
        ...,
        "--events",
        help="Event files or folders (Parquet, JSON lines, CSV), local or s3://bucket/prefix "
        "(AWS_* settings); repeatable. A simulator output folder means its events/ and "
        "items.parquet.",
    ),
    items: str | None = typer.Option(
        None, "--items", help="Item catalog file to upsert (local or s3://)."
    ),
    mapping: str | None = mapping_option(""),
) -> None:
    """Validate raw events into the date-partitioned event lake (idempotent)."""
    from flywheel.ingest import ingest_events
    from flywheel.storage import location_of
    from flywheel.workspace_lock import workspace_lock

    s = settings_of(ctx)
    paths, item_path = expand_event_inputs(
        [location_of(e) for e in events], location_of(items) if items else None
    )
    with (
        logged(ctx, s, "ingest", "ingest: validating events with Ray Data") as run,
        workspace_lock(s, "ingest"),
    ):
        summary = ingest_events(s, paths, items=item_path, mapping=mapping)
    print_summary("ingest", summary)
    if summary.quarantined:
        console.print(
            f"[yellow]{summary.quarantined:,} rows quarantined[/yellow]: {summary.quarantine_file}"
        )
    log_footer(run)


@app.command()
@clear_errors
def features(
    ctx: typer.Context,
    materialize: bool = typer.Option(
        True,
        help="Also write the keys whose latest values changed into the online store.",
    ),
    full_reload: bool = typer.Option(
        False,
        "--full",
        "--full-reload",
        help="Write every key's latest values, not only the changed ones: for an online "
        "store that lost its rows (a Redis restarted empty).",
    ),
    incremental: bool | None = typer.Option(
        None,
        "--incremental/--no-incremental",
        help="Recompute only the lake partitions that changed since the last recorded build "
        "(equal to the full build cell for cell), or force the full Ray build. Default: the "
        "features.build setting (full).",
    ),
    full_rebuild: bool = typer.Option(
        False,
        "--full-rebuild",
        help="Rebuild every table with Ray Data and record the build state, so the next "
        "incremental build starts from it.",
    ),
) -> None:
    """Build feature tables from the lake (Ray Data), `feast apply`, materialize online."""
    from flywheel import feature_store
    from flywheel.features import build_features
    from flywheel.workspace_lock import workspace_lock

    s = settings_of(ctx)
    with (
        logged(ctx, s, "features", "features: building tables with Ray Data") as run,
        workspace_lock(s, "features"),
    ):
        if full_rebuild and incremental is None:
            incremental = True  # the full build, then the state the next incremental one needs
        built = build_features(s, full_rebuild=full_rebuild, incremental=incremental)
        progress.phase(log, "features: feast apply")
        applied = feature_store.apply(s)
        materialized = None
        if materialize:
            from flywheel.lake import feature_time

            progress.phase(log, "features: feast materialize")
            materialized = feature_store.materialize(s, end=feature_time(s), full=full_reload)
    print_summary("features", built)
    print_summary("feast apply", applied)
    if materialized is not None:
        materialize_table(materialized)
    log_footer(run)


@app.command("compile")
@clear_errors
def compile_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(Path("pipeline.yaml"), "--out", help="KFP IR YAML to write."),
) -> None:
    """Compile the continuous-training pipeline to KFP IR YAML for the chosen profile."""
    from flywheel.cycle import compile_pipeline

    path = compile_pipeline(settings_of(ctx), out)
    console.print(f"wrote {path}; submit with `flywheel submit` or `kfp run create`")


@app.command()
@clear_errors
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
    mapping: str | None = mapping_option(" (sent as its YAML text: pods cannot read it)"),
) -> None:
    """Compile for the chosen profile and create a run (or recurring run) on Kubeflow Pipelines."""
    from flywheel.submit import submit as submit_pipeline

    result = submit_pipeline(
        settings_of(ctx),
        host,
        experiment=experiment,
        params=param,
        schedule=schedule,
        name=name,
        package=out,
        mapping=mapping,
    )
    print_summary("submit", result)
    console.print(f"{result.kind} {result.id}: {result.url}")


@app.command()
@clear_errors
def cycle(
    ctx: typer.Context,
    events: Path | None = typer.Option(
        None,
        "--events",
        help="New raw events to ingest first (file or folder; a simulator "
        "output folder means its events/ and items.parquet).",
    ),
    items: Path | None = typer.Option(None, "--items", help="Item catalog to upsert."),
    mapping: str | None = mapping_option(" (needs --events)"),
    window_days: float = typer.Option(14.0, help="Training window, days back from the data."),
    attribution_minutes: int = typer.Option(60, help="Attribution window of a positive."),
    max_rows: int = typer.Option(1_000_000, help="Cap on training impressions."),
    seed: int = typer.Option(0, help="Sampling and training seed."),
    min_auc: float = typer.Option(0.55, help="Blessing floor on test AUC."),
    min_improvement: float = typer.Option(0.0, help="AUC margin over the champion."),
    min_lift_over_popularity: float = typer.Option(
        0.01, help="AUC margin a first model needs over the item-popularity baseline."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Disable KFP caching."),
) -> None:
    """Run one full cycle of the pipeline locally with kfp.local."""
    from flywheel.cycle import run_cycle
    from flywheel.evaluate import BlessingRule

    s = settings_of(ctx)
    events_uri, items_uri = "", ""
    if events is not None:
        paths, item_path = expand_event_inputs([events], items)
        events_uri, items_uri = (
            str(Path(paths[0]).resolve()),
            str(Path(item_path).resolve()) if item_path else "",
        )
    with logged(ctx, s, "cycle", "cycle: kfp.local pipeline") as run:
        summary = run_cycle(
            s,
            events_uri,
            items_uri,
            mapping=mapping or "",
            window_days=window_days,
            attribution_minutes=attribution_minutes,
            max_rows=max_rows,
            seed=seed,
            rule=BlessingRule(
                min_auc=min_auc,
                min_improvement=min_improvement,
                min_lift_over_popularity=min_lift_over_popularity,
            ),
            caching=not no_cache,
        )
    stage_table(summary)
    log_footer(run)


@app.command()
@clear_errors
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

    s = settings_of(ctx)
    if quick:  # the single-cycle smoke run, in the workspace itself
        with logged(ctx, s, "demo-quick") as run:
            quick_result = run_quick_demo(s, users, items, history_days + cycles, seed)
        quick_demo_table(s.workspace, quick_result)
        log_footer(run)
        return
    with logged(ctx, s, "demo") as run:
        result = run_demo(s, users, items, history_days, cycles, drift_day=drift_day, seed=seed)
    loop_table(result, drift_day)
    log_footer(run)


# ---- the live service (flywheel.cli_live) -----------------------------------------------
app.command("serve")(clear_errors(serve_command))
app.command("traffic")(clear_errors(traffic_command))
app.command("report")(clear_errors(report_command))
app.command("monitor")(clear_errors(monitor_command))

app.command("watch")(clear_errors(watch_command))

# ---- housekeeping (flywheel.cli_housekeeping) --------------------------------------------
app.command("gc")(clear_errors(gc_command))
app.command("compact")(clear_errors(compact_command))


@app.command()
@clear_errors
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

    s = settings_of(ctx)
    with logged(ctx, s, "loop") as run:
        result = run_loop(s, users, items, history_days, cycles, requests, drift_day, seed, out)
    loop_table(result, drift_day)
    log_footer(run)
