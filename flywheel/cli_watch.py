"""``flywheel watch``: monitor the live model every interval and retrain when the policy fires.

Kept apart from :mod:`flywheel.cli` (which registers it) so the command table stays short.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from flywheel.cli_support import logged, settings_of
from flywheel.console import console, print_summary


def watch_command(
    ctx: typer.Context,
    interval: float = typer.Option(3600.0, "--interval", help="Seconds between decisions."),
    lookback_hours: float = typer.Option(
        24.0, help="Window of serving logs each decision monitors (hours back from now)."
    ),
    max_cycles: int | None = typer.Option(None, help="Stop after this many cycles."),
    max_ticks: int | None = typer.Option(None, help="Stop after this many decisions."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for each tick's monitor.json/html (default <workspace>/monitor).",
    ),
    submit_host: str | None = typer.Option(
        None,
        "--submit-host",
        help="KFP API server: when the policy fires, create a KFP run there (the cluster "
        "CronJob) instead of running a cycle here.",
    ),
    param: list[str] = typer.Option(
        [], "--param", help="With --submit-host: pipeline argument name=value; repeatable."
    ),
) -> None:
    """Monitor every --interval seconds; run a cycle when the retrain policy fires."""
    from flywheel.cycle import run_cycle
    from flywheel.monitor import run_monitor
    from flywheel.monitor.signals import signals_from_record
    from flywheel.policy import Signals
    from flywheel.report import NoServingLogsError
    from flywheel.watch import watch

    s = settings_of(ctx)
    folder = out or s.workspace / "monitor"

    def signals(now: datetime) -> Signals:
        try:
            result = run_monitor(s, folder, since=now - timedelta(hours=lookback_hours), now=now)
        except NoServingLogsError:
            return signals_from_record(s, {}, now)
        return signals_from_record(s, result.record, now)

    def on_decision(d: object) -> None:
        fire, reasons, held = d.fire, d.reasons, d.held  # type: ignore[attr-defined]
        when = datetime.now(UTC).isoformat(timespec="seconds")
        what = "retrain" if fire else ("held" if held else "no action")
        console.print(f"{when} {what}: {'; '.join(reasons + held) or 'no rule fired'}")

    def cycle() -> object:
        if submit_host is None:
            return run_cycle(s)
        from flywheel.submit import submit

        result = submit(s, submit_host, params=param)
        console.print(f"watch: created KFP {result.kind} {result.id}: {result.url}")
        return result

    with logged(ctx, s, "watch", "watch: monitoring the live model"):
        summary = watch(
            s,
            interval,
            signals,
            cycle,
            max_ticks=max_ticks,
            max_cycles=max_cycles,
            on_decision=on_decision,
        )
    print_summary("watch", summary)
    if summary.cycles_failed and (max_ticks is not None or max_cycles is not None):
        # A bounded watch (the retrain CronJob's one tick) whose retraining failed exits 1,
        # so its Kubernetes Job shows Failed, not Complete.
        console.print(f"[red]watch: {summary.cycles_failed} retraining run(s) failed[/red]")
        raise typer.Exit(1)
