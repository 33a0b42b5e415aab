"""``flywheel gc`` and ``flywheel compact``: housekeeping commands and their tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from flywheel.cli_support import settings_of
from flywheel.console import console

if TYPE_CHECKING:
    from pathlib import Path

    from flywheel.housekeeping import CompactResult, GcResult


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _short(path: Path, workspace: Path) -> str:
    """``path`` relative to the workspace when it lies inside it."""
    return str(path.relative_to(workspace)) if path.is_relative_to(workspace) else str(path)


def gc_table(result: GcResult, workspace: Path) -> None:
    """What gc deletes (or would): path (in the workspace), kind, size, reason; totals."""
    verb = "would go" if result.dry_run else "went"
    table = Table(title=f"gc: what {verb} (paths in {workspace})", header_style="bold")
    for col in ("path", "kind", "size", "reason"):
        table.add_column(col, overflow="fold", justify="right" if col == "size" else "left")
    totals: dict[str, list[int]] = {}
    for c in result.candidates:
        table.add_row(c.tag or _short(c.path, workspace), c.kind, _size(c.size), c.reason)
        count = totals.setdefault(c.kind, [0, 0])
        count[0], count[1] = count[0] + 1, count[1] + c.size
    console.print(table)
    for kind, (n, size) in sorted(totals.items()):
        console.print(f"  {kind}: {n} item(s), {_size(size)}")
    console.print(
        f"total: {len(result.candidates)} item(s), {_size(result.bytes)} {verb}"
        f"{' (dry run: nothing deleted)' if result.dry_run else ''}"
    )
    kept = ", ".join([result.champion or "none", *result.history]) or "none"
    console.print(
        f"kept: data from {result.protected_from} on; champion and rollback history: {kept}"
    )


def compact_table(result: CompactResult, workspace: Path) -> None:
    """The partitions compaction merged (or would), files before/after, and the skips."""
    verb = "would merge" if result.dry_run else "merged"
    table = Table(title=f"compact: partitions {verb}", header_style="bold")
    for col in ("path", "kind", "files", "size", "records"):
        table.add_column(
            col, overflow="fold", justify="left" if col in ("path", "kind") else "right"
        )
    for c in result.compactions:
        records = f"{c.records:,}" if c.records >= 0 else "-"
        files = f"{c.files_before} -> {c.files_after}"
        table.add_row(_short(c.path, workspace), c.kind, files, _size(c.bytes_before), records)
    console.print(table)
    before = sum(c.files_before for c in result.compactions)
    after = sum(c.files_after for c in result.compactions)
    console.print(
        f"total: {len(result.compactions)} partition(s), {before} file(s) -> {after}"
        f"{' (dry run: nothing changed)' if result.dry_run else ''}"
    )
    for path, why in result.skipped:
        console.print(f"  skipped {_short(path, workspace)}: {why}")
    if result.recovered:
        console.print(f"  finished {result.recovered} interrupted compaction(s) first")


def gc_command(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; delete nothing."),
    keep_days: float | None = typer.Option(
        None,
        "--keep-days",
        min=0,
        help="Training window to protect, days back from the data (default "
        "retention.training_window_days, 14); its 30-day feature lookback is kept too.",
    ),
) -> None:
    """Apply retention: old lake days, serving logs, quarantine, KFP runs, models, logs."""
    from flywheel.housekeeping import run_gc

    s = settings_of(ctx)
    gc_table(run_gc(s, dry_run=dry_run, keep_days=keep_days), s.workspace)


def compact_command(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would merge; change nothing."),
) -> None:
    """Merge each lake partition's part files, and closed serving logs, into one file."""
    from flywheel.housekeeping import run_compact

    s = settings_of(ctx)
    compact_table(run_compact(s, dry_run=dry_run), s.workspace)
