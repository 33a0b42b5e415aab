"""The commands about the live service: ``serve``, ``traffic``, ``report`` and ``monitor``.

Kept apart from :mod:`flywheel.cli` (which registers them) so the command table stays short.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from flywheel.cli_support import settings_of
from flywheel.cli_views import monitor_table, report_table
from flywheel.console import console, print_summary


def serve_command(
    ctx: typer.Context,
    port: int = typer.Option(3000, help="HTTP port."),
    workers: int = typer.Option(1, help="BentoML worker processes."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
) -> None:
    """Serve the champion with `bentoml serve` (POST /rank, POST /feedback, /metrics)."""
    from flywheel.serving import serve as run_server

    raise typer.Exit(run_server(settings_of(ctx), port=port, workers=workers, host=host))


def traffic_command(
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

    s = settings_of(ctx)
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


def report_command(
    ctx: typer.Context,
    out: Path | None = typer.Option(
        None, "--out", help="PNG (default <workspace>/reports/model_report.png)."
    ),
    since: datetime | None = typer.Option(None, help="Only what was served from this UTC time."),
) -> None:
    """How each served model version did: CTR, exploration, calibration (serving logs)."""
    from flywheel.report import model_report

    s = settings_of(ctx)
    start = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    report_table(model_report(s, out or s.workspace / "reports" / "model_report.png", since=start))


def monitor_command(
    ctx: typer.Context,
    since: datetime | None = typer.Option(None, help="Only what was served from this UTC time."),
    until: datetime | None = typer.Option(None, help="Only what was served before this UTC time."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for monitor.json and monitor.html (default <workspace>/monitor).",
    ),
    reference: Path | None = typer.Option(
        None, help="The champion's shards directory (default: found from its lineage)."
    ),
    skew: bool = typer.Option(True, help="Compare logged features with the offline store."),
    decide: bool = typer.Option(
        False,
        "--decide",
        help="Also apply the retrain policy (trigger in the JSON).",
    ),
) -> None:
    """Served quality, feature/prediction/label drift and training/serving skew."""
    from flywheel.monitor import run_monitor

    s = settings_of(ctx)
    start, end = (t.replace(tzinfo=UTC) if t and t.tzinfo is None else t for t in (since, until))
    result = run_monitor(
        s, out or s.workspace / "monitor", since=start, until=end, reference=reference, skew=skew
    )
    monitor_table(result)
    if decide:
        from flywheel.monitor.signals import add_trigger

        trigger = add_trigger(s, result, end or datetime.now(UTC))
        verdict = "[bold]retrain[/bold]" if trigger["fire"] else "no retrain"
        why = "; ".join(trigger["reasons"] + trigger["held"]) or "no rule fired"
        console.print(f"trigger: {verdict}: {why}")
