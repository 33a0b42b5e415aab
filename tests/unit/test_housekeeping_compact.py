"""Compaction of lake partitions and serving logs: same records, crash-safe, dedupe intact.

Real files, real pyarrow, the real ``renameat2`` exchange; a "crash" is an exception raised
from inside one step of the switch (BaseException, so no handler tidies up after it).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel import lake
from flywheel.config import RetentionSettings, Settings
from flywheel.housekeeping import run_compact, swap
from flywheel.predlog import encode_records, log_dir, scan_logs
from flywheel.schemas import EVENT_SCHEMA, FEEDBACK_SCHEMA
from flywheel.served import append_deduped, feedback_dir, ingest_served

DAY0 = datetime(2025, 3, 1, tzinfo=UTC)


class Crash(BaseException):
    """Stands for the process dying at this point."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workspace=tmp_path / "ws")


def _events(day: int, part: int, n: int = 5) -> pa.Table:
    rows = [
        {
            "event_id": f"e{day}-{part}-{i}",
            "user_id": f"u{i % 3}",
            "item_id": f"i{(i + part) % 4}",
            "event_type": "view",
            # parts interleave in time, so a merge must sort, not just concatenate
            "ts": DAY0 + timedelta(days=day, minutes=7 * i + part),
            "session_id": f"s{part}",
            "device": "web",
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)


def _fill_lake(settings: Settings, days: int = 3, parts: int = 4) -> Counter[str]:
    ids: Counter[str] = Counter()
    for day in range(days):
        folder = settings.events_dir / lake.partition_name((DAY0 + timedelta(days=day)).date())
        for part in range(parts):
            table = _events(day, part)
            lake.commit_part(table, folder)
            ids.update(table["event_id"].to_pylist())
    return ids


def _lake_ids(settings: Settings) -> Counter[str]:
    return Counter(lake.read_lake_events(settings, ["event_id"])["event_id"].to_pylist())


def _glob_ids(settings: Settings) -> Counter[str]:
    """What the feature build's own listing (``date=*/*.parquet``) reads."""
    files = sorted(settings.events_dir.glob("date=*/*.parquet"))
    return Counter(i for f in files for i in pq.read_table(f)["event_id"].to_pylist())


def _parts(settings: Settings, day: int) -> list[Path]:
    folder = settings.events_dir / lake.partition_name((DAY0 + timedelta(days=day)).date())
    return sorted(folder.glob(lake.PART_GLOB))


def _crashing_compact(monkeypatch: Any, settings: Any, module: Any, step: str) -> None:
    """Run ``compact`` with ``module.step`` raising :class:`Crash`, then undo the patch."""

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise Crash(step)

    monkeypatch.setattr(module, step, crash)
    with pytest.raises(Crash):
        run_compact(settings)
    monkeypatch.undo()


def test_compaction_keeps_the_same_rows_in_one_time_sorted_part(settings: Settings) -> None:
    ids = _fill_lake(settings)
    before = lake.read_lake_events(settings).sort_by([("event_id", "ascending")])

    result = run_compact(settings)

    assert [len(_parts(settings, d)) for d in range(3)] == [1, 1, 4]  # newest left alone
    assert {c.files_before for c in result.compactions} == {4}
    after = lake.read_lake_events(settings).sort_by([("event_id", "ascending")])
    assert after.equals(before)
    assert _lake_ids(settings) == ids and _glob_ids(settings) == ids
    ts = pq.read_table(_parts(settings, 0)[0])["ts"].to_pylist()
    assert ts == sorted(ts)
    assert not list(settings.events_dir.glob(".*")), "no staging left behind"


def test_dry_run_lists_but_changes_nothing(settings: Settings) -> None:
    _fill_lake(settings)
    files = sorted(p for p in settings.workspace.rglob("*"))

    result = run_compact(settings, dry_run=True)

    assert len(result.compactions) == 2 and not any(c.done for c in result.compactions)
    assert sorted(p for p in settings.workspace.rglob("*")) == files


def test_small_partitions_are_left_alone(settings: Settings) -> None:
    _fill_lake(settings, parts=2)
    s = settings.model_copy(update={"retention": RetentionSettings(compact_min_files=3)})
    assert run_compact(s).compactions == []
    assert len(_parts(settings, 0)) == 2


# The steps of a compaction in order; a crash just before each one.
CRASH_POINTS = ["_write_part", "_write_manifest", "exchange", "_rescue", "_remove_staging"]


@pytest.mark.parametrize("step", CRASH_POINTS)
def test_crash_before_any_step_leaves_each_event_exactly_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    from flywheel.housekeeping import compact

    ids = _fill_lake(settings)
    _crashing_compact(monkeypatch, settings, compact if step == "_write_part" else swap, step)

    # Readers right after the crash, before any recovery: every event exactly once.
    assert _lake_ids(settings) == ids
    assert _glob_ids(settings) == ids
    # The next run finishes (or drops) the interrupted one and compacts.
    result = run_compact(settings)
    assert result.recovered >= 1
    assert _lake_ids(settings) == ids and _glob_ids(settings) == ids
    assert [len(_parts(settings, d)) for d in range(2)] == [1, 1]
    assert not list(settings.events_dir.glob(f"{swap.STAGING_PREFIX}*"))


def test_a_file_added_during_the_switch_is_kept(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _fill_lake(settings)
    late = _events(0, 99)
    original = swap._write_manifest
    added: list[Path] = []

    def write_then_add(staging: swap.Staging, *args: Any) -> None:
        original(staging, *args)
        if not added:  # a writer commits a part between the listing and the exchange
            added.append(lake.commit_part(late, staging.partition))

    monkeypatch.setattr(swap, "_write_manifest", write_then_add)
    run_compact(settings)

    assert added and added[0].exists()
    assert _lake_ids(settings) == ids + Counter(late["event_id"].to_pylist())


def test_unsupported_exchange_leaves_the_partition_as_is(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _fill_lake(settings)

    def refuse(a: Path, b: Path) -> None:
        raise swap.ExchangeUnsupported("this filesystem cannot exchange folders")

    monkeypatch.setattr(swap, "exchange", refuse)
    result = run_compact(settings)

    assert result.compactions == [] and any("cannot exchange" in w for _, w in result.skipped)
    assert len(_parts(settings, 0)) == 4 and _lake_ids(settings) == ids
    assert not list(settings.events_dir.glob(".*"))


def test_exchange_swaps_two_folders(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("from a")
    swap.exchange(a, b)
    assert (b / "x").read_text() == "from a" and not list(a.iterdir())


def test_dedupe_still_drops_everything_after_compaction(settings: Settings) -> None:
    """Served feedback dedupes against whatever parts a partition holds (no Ray needed)."""
    rows = [
        {
            "request_id": f"r{i}",
            "item_id": "i1",
            "event_type": "click",
            "ts": DAY0 + timedelta(hours=i),
        }
        for i in range(6)
    ]
    table = pa.Table.from_pylist(rows, schema=FEEDBACK_SCHEMA)
    root = feedback_dir(settings)
    for chunk in (table.slice(0, 2), table.slice(2, 2), table.slice(4, 2)):
        assert (
            append_deduped(chunk, root, ("request_id", "item_id", "event_type", "ts")).accepted == 2
        )
    later = pa.Table.from_pylist(
        [{**rows[0], "request_id": "late", "ts": DAY0 + timedelta(days=1)}], schema=FEEDBACK_SCHEMA
    )
    append_deduped(later, root, ("request_id",))  # a newer partition, so day 0 compacts
    run_compact(settings)
    assert len(list((root / "date=2025-03-01").glob(lake.PART_GLOB))) == 1

    again = append_deduped(table, root, ("request_id", "item_id", "event_type", "ts"))
    assert again.accepted == 0 and again.dup_lake == 6


# ---- serving logs ------------------------------------------------------------------------


def _pred(rid: str, ts: datetime) -> dict[str, Any]:
    return {
        "request_id": rid,
        "ts": ts,
        "user_id": "u1",
        "item_id": f"i-{rid}",
        "position": 0,
        "score": 0.5,
        "model_version": "m:1",
        "propensity": 1.0,
        "features": json.dumps({"views_7d": 1}),
    }


def _log_file(settings: Settings, day: date, name: str, rids: list[str], old: bool) -> Path:
    folder = log_dir(settings, "predictions") / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    ts = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    path = folder / name
    path.write_bytes(encode_records([_pred(r, ts) for r in rids]))
    if old:
        stamp = (datetime.now(UTC) - timedelta(days=3)).timestamp()
        os.utime(path, (stamp, stamp))
    return path


def _rids(settings: Settings) -> Counter[str]:
    return Counter(scan_logs(settings, "predictions").table["request_id"].to_pylist())


def test_closed_ingested_logs_merge_and_are_not_read_again(settings: Settings) -> None:
    d0, d1 = date(2025, 3, 1), date(2025, 3, 2)
    a = _log_file(settings, d0, "1-a.jsonl", ["a1", "a2"], old=True)
    _log_file(settings, d0, "2-b.jsonl", ["b1"], old=True)
    _log_file(settings, d0, "3-c.jsonl", ["c1", "c2", "c3"], old=True)
    live = _log_file(settings, d0, "4-live.jsonl", ["l1"], old=False)  # written lately
    _log_file(settings, d1, "5-new.jsonl", ["n1"], old=True)  # the newest partition
    ingest_served(settings, now=datetime(2025, 3, 3, tzinfo=UTC))
    before = _rids(settings)
    live_inode = live.stat().st_ino

    result = run_compact(settings)

    done = [c for c in result.compactions if c.kind == "serving/predictions"]
    assert [(c.files_before, c.records) for c in done] == [(3, 6)]
    names = sorted(p.name for p in a.parent.iterdir())
    assert len(names) == 2 and "4-live.jsonl" in names
    assert live.stat().st_ino == live_inode, "an open log keeps its inode"
    assert _rids(settings) == before
    # Served ingest knows the merged file as read: nothing is read or added again.
    again = ingest_served(settings, now=datetime(2025, 3, 3, tzinfo=UTC))
    assert again.bytes_read == 0 and again.predictions_accepted == 0
    state = json.loads((settings.state_dir / "served_state.json").read_text())
    assert not any(k.startswith("date=2025-03-01/1-a") for k in state["predictions"]["files"])


def test_unread_logs_are_not_merged(settings: Settings) -> None:
    d0 = date(2025, 3, 1)
    for i in range(3):
        _log_file(settings, d0, f"{i}-x.jsonl", [f"r{i}"], old=True)
    _log_file(settings, date(2025, 3, 2), "9-new.jsonl", ["n"], old=True)
    # no served ingest yet: nothing is read to its end, so nothing merges
    assert [c for c in run_compact(settings).compactions if c.kind.startswith("serving")] == []
    assert len(list((log_dir(settings, "predictions") / "date=2025-03-01").iterdir())) == 3


@pytest.mark.parametrize("step", ["_write_served_state", "exchange", "_remove_staging"])
def test_log_compaction_crash_loses_and_repeats_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    from flywheel.housekeeping import compact

    d0 = date(2025, 3, 1)
    for i in range(3):
        _log_file(settings, d0, f"{i}-x.jsonl", [f"r{i}a", f"r{i}b"], old=True)
    _log_file(settings, date(2025, 3, 2), "9-new.jsonl", ["n"], old=True)
    clock = datetime(2025, 3, 3, tzinfo=UTC)
    first = ingest_served(settings, now=clock)
    before = _rids(settings)
    module = compact if step == "_write_served_state" else swap
    _crashing_compact(monkeypatch, settings, module, step)

    assert _rids(settings) == before
    assert ingest_served(settings, now=clock).predictions_accepted == 0
    run_compact(settings)
    assert _rids(settings) == before
    again = ingest_served(settings, now=clock)
    assert again.bytes_read == 0 and first.predictions_accepted == 7
