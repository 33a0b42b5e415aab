"""How command results look on the terminal: the cycle, loop, demo and report tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from flywheel.console import console

if TYPE_CHECKING:
    from flywheel.cycle import CycleSummary
    from flywheel.demo import DemoSummary
    from flywheel.feature_store import MaterializeSummary
    from flywheel.loop import LoopSummary
    from flywheel.monitor import MonitorResult
    from flywheel.report import ModelReport


def stage_table(summary: CycleSummary) -> None:
    """The stages of one cycle (status, seconds, detail) and the blessing decision."""
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


def materialize_table(summary: MaterializeSummary) -> None:
    """``features``: per online view, how it was written and the keys scanned, changed and
    written (``-`` for a time-window materialization, which does not count keys)."""
    table = Table(
        title=f"feast materialize ({summary.online_store}, {summary.seconds:.1f}s)",
        header_style="bold",
    )
    cols = ("view", "mode", "files read", "keys scanned", "changed", "written", "seconds")
    for col in cols:
        left = col in ("view", "mode")
        table.add_column(col, justify="left" if left else "right", no_wrap=col == "view")
    for v in summary.views:
        counts = (v.keys_scanned, v.keys_changed, v.keys_written)
        files = "-" if v.files_scanned is None else f"{v.files_scanned}/{v.files_total}"
        table.add_row(
            v.name,
            v.mode,
            files,
            *("-" if c is None else f"{c:,}" for c in counts),
            f"{v.seconds:.1f}",
        )
    console.print(table)


def quick_demo_table(workspace: Path, result: DemoSummary) -> None:
    """``demo --quick``: the cycle's stages, then the rankings against random and oracle."""
    stage_table(result.cycle)
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
        f"Workspace: {workspace}"
    )


def loop_table(result: LoopSummary, drift_day: float) -> None:
    """The loop's rows as a table, then the pooled gain after the drift and the plot."""
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


def report_table(result: ModelReport) -> None:
    """``flywheel report``: one row per served model version, then the totals and figure."""
    from flywheel.report import version_rows

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


def monitor_table(result: MonitorResult) -> None:
    """``flywheel monitor``: served quality per version, drift and skew counts, alerts."""
    record = result.record
    table = Table(title="served quality per model version", header_style="bold")
    for col in ("model version", "impressions", "CTR [95% CI]", "purchase rate", "explored"):
        table.add_column(col, justify="left" if col == "model version" else "right")
    for col in ("closed", "ECE", "AUC"):
        table.add_column(col, justify="right")

    def rate(p: dict[str, float | None]) -> str:
        if p["rate"] is None:
            return "-"
        return f"{p['rate']:.4f} [{p['low']:.4f}, {p['high']:.4f}]"

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for v in record["quality"]["versions"]:
        table.add_row(
            v["model_version"], f"{v['impressions']:,}", rate(v["ctr"]), rate(v["purchase_rate"]),
            f"{num(v['explored_share'])}", f"{v['closed']:,}", num(v["ece"]), num(v["auc"]),
        )  # fmt: skip
    console.print(table)
    drift, skew = record["drift"], record["skew"]
    if "error" in drift:
        console.print(f"drift: not measured ({drift['error']})")
    else:
        statuses = [f["status"] for f in drift["features"]]
        console.print(
            f"drift: {len(statuses)} inputs, {statuses.count('alert')} alert, "
            f"{statuses.count('warn')} warn; scores "
            f"{(drift['prediction'] or {}).get('status', '-')}; label {drift['label']['status']}"
        )
    if "error" in skew:
        console.print(f"skew: not checked ({skew['error']})")
    else:
        bad = [f["feature"] for f in skew["features"] if f["status"] == "skewed"]
        console.print(f"skew: {skew['rows']} rows, {len(bad)} skewed features {bad or ''}")
    for alert in record["alerts"]:
        console.print(f"[bold red]{alert}[/bold red]")
    console.print(f"report: {result.json_path} and {result.html_path}; {result.seconds:.1f}s")
