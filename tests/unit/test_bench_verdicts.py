"""The benchmarks' verdict logic: targets, correctness checks, exit codes, log accounting.

Pure functions on figures built here; no benchmark runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from benchmarks import cycle_bench, feature_build, pit_retrieval, serving_bench
from benchmarks.harness import Check, Measurement, Target, judge, report_verdicts
from benchmarks.wrk import read_acks

FAST = Target("rows/s ratio", 12.0, 10.0, at_most=False, unit="x")
SLOW = Target("p99", 50.0, 40.0, at_most=True, unit=" ms")
OK = Check("tables equal", True)


def test_targets_are_met_or_missed_in_their_direction() -> None:
    verdicts = judge([FAST, SLOW, Target("peak", 3.0, 4.0, at_most=True)], [OK])
    assert verdicts.targets == {"rows/s ratio": "met", "p99": "missed", "peak": "met"}
    assert verdicts.exit_code == 0
    assert verdicts.lines[-1] == "verdict: checks passed; targets met 2 of 3"


def test_a_threshold_exactly_reached_is_met() -> None:
    assert Target("x", 3.0, 3.0, at_most=False).met()
    assert Target("y", 40.0, 40.0, at_most=True).met()


def test_a_failed_check_fails_every_target_and_the_exit_code() -> None:
    bad = Check("tables equal at 1,000,000 events", False, "differ: user_activity")
    verdicts = judge([FAST, SLOW], [OK, bad])
    assert verdicts.targets == {"rows/s ratio": "FAILED", "p99": "FAILED"}
    assert verdicts.exit_code == 1
    assert verdicts.failed_checks == ["tables equal at 1,000,000 events"]
    assert "  tables equal at 1,000,000 events: FAILED (differ: user_activity)" in verdicts.lines
    assert verdicts.lines[-1].startswith("verdict: FAILED (1 check(s) failed")
    assert not any(line.endswith(": met") for line in verdicts.lines)


def test_no_check_at_all_is_a_failure() -> None:
    verdicts = judge([FAST], [])
    assert verdicts.exit_code == 1
    assert verdicts.targets == {"rows/s ratio": "FAILED"}


@pytest.mark.parametrize("figure", [math.nan, math.inf, -math.inf])
def test_a_figure_that_is_not_finite_never_meets(figure: float) -> None:
    assert not Target("ratio", figure, 3.0, at_most=False).met()
    assert not Target("latency", figure, 3.0, at_most=True).met()


def test_target_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        judge([FAST, FAST], [OK])


def test_report_verdicts_prints_every_line() -> None:
    printed: list[str] = []
    verdicts = report_verdicts([FAST], [OK], echo=printed.append)
    assert printed == verdicts.lines
    assert "  rows/s ratio: 12x (target >= 10x): met" in printed


# ---- serving: the prediction log, per request id ----------------------------------------


def _log(records: list[tuple[str, int]]) -> pa.Table:
    ids, items = zip(*records, strict=True) if records else ((), ())
    return pa.table({"request_id": pa.array(ids, pa.string()), "item_id": pa.array(items)})


def test_an_unacknowledged_request_cannot_offset_a_lost_record() -> None:
    """The old count, max(0, ok * k - logged), gave 0 here: 2 x 3 acked, 6 logged."""
    acks = [("a", (1, 2, 3)), ("b", (4, 5, 6))]
    logged = _log([("a", 1), ("a", 2), ("a", 3), ("b", 4), ("b", 5), ("c", 7)])
    account = serving_bench.account_log(acks, logged)
    assert account.lost_records == 1
    assert account.unacked_requests == 1
    assert account.acked_requests == 2


def test_a_complete_log_has_nothing_lost() -> None:
    acks = [("a", (1, 2)), ("b", (3, 4))]
    logged = _log([("b", 4), ("a", 1), ("b", 3), ("a", 2)])
    account = serving_bench.account_log(acks, logged)
    assert (account.lost_records, account.extra_records, account.repeated_ids) == (0, 0, 0)
    assert account.unacked_requests == 0
    assert account.logged_records == 4


def test_wrong_items_repeats_and_missing_ids_are_counted() -> None:
    acks = [("a", (1, 2)), ("a", (1, 2)), ("-", (5,))]
    logged = _log([("a", 1), ("a", 9), ("a", 1)])
    account = serving_bench.account_log(acks, logged)
    assert account.repeated_ids == 1
    assert account.lost_records == 2  # item 2 of "a"; item 5 of the response with no id
    assert account.extra_records == 2  # item 9 and the second record of item 1


def _level(service: str, workers: int, c: int, rps: float, p99: float, **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "profile": "sqlite", "service": service, "workers": workers, "concurrency": c,
        "seconds": 15.0, "requests": int(rps * 15), "ok": int(rps * 15), "errors": 0,
        "acked": int(rps * 15), "rps": rps, "rps_per_worker": rps / workers, "p50_ms": 1.0,
        "p90_ms": 1.0, "p99_ms": p99, "max_ms": p99, "log": None,
    }  # fmt: skip
    if service == "flywheel":
        fields["log"] = serving_bench.LogAccount(fields["ok"], 0, 0, 0, 0, fields["ok"] * 10)
    return serving_bench.Level(**(fields | kw))


def _levels(**override: Any) -> list[Any]:
    return [
        _level(service, w, c, rps, p99, **override.get(f"{service}{w}{c}", {}))
        for w in (1, 2)
        for c in (1, 8, 32)
        for service, rps, p99 in (("flywheel", 100.0 * w, 10.0), ("naive", 50.0 * w, 90.0))
    ]


def test_serving_throughput_is_judged_at_equal_workers() -> None:
    verdicts = judge(serving_bench.targets(_levels()), serving_bench.checks(_levels()))
    assert verdicts.exit_code == 0
    # 2 workers against naive with 2 workers: 200 / 100, not 200 / 50.
    assert verdicts.targets["sqlite throughput c=8 2w flywheel / naive 2w"] == "missed"
    assert verdicts.targets["sqlite p99 c=8 2w"] == "met"
    assert serving_bench.throughput_ratio(_levels(), 2, 8) == 2.0


def test_serving_lost_records_or_miscounted_acks_fail_the_run() -> None:
    lost = serving_bench.LogAccount(1500, 3, 0, 0, 0, 14997)
    for override in ({"flywheel18": {"log": lost}}, {"naive232": {"acked": 1}}):
        levels = _levels(**override)
        verdicts = judge(serving_bench.targets(levels), serving_bench.checks(levels))
        assert verdicts.exit_code == 1
        assert set(verdicts.targets.values()) == {"FAILED"}


def _with_baseline(rps8: float, p99_1: float) -> list[Any]:
    """Ours (100 rps / 10 ms at every level) plus a baseline tree's service ("pre11")."""
    base = [
        _level("pre11", w, c, rps8 if c == 8 else 40.0, p99_1 if c == 1 else 90.0,
               baseline=True, log=serving_bench.LogAccount(600, 0, 0, 0, 0, 6000))
        for w in (1, 2)
        for c in (1, 8, 32)
    ]  # fmt: skip
    return _levels() + base


def test_serving_is_judged_against_the_baseline_tree_at_one_worker() -> None:
    met = judge(serving_bench.targets(_with_baseline(50.0, 10.0)), [OK]).targets
    assert met["sqlite throughput c=8 1w flywheel / pre11"] == "met"  # 100 / 50 = 2.0x
    assert met["sqlite p99 c=1 1w flywheel / pre11"] == "met"  # 10 / 10 ms = 1.0x
    assert not any("2w flywheel / pre11" in name for name in met)
    missed = judge(serving_bench.targets(_with_baseline(51.0, 9.9)), [OK]).targets
    assert missed["sqlite throughput c=8 1w flywheel / pre11"] == "missed"
    assert missed["sqlite p99 c=1 1w flywheel / pre11"] == "missed"
    assert serving_bench.baseline_ratios(_with_baseline(25.0, 20.0), 2) == (8.0, 0.5)
    assert "sqlite throughput c=8 1w flywheel / pre11" not in serving_bench.targets(_levels())


def test_a_baseline_tree_losing_records_fails_the_run() -> None:
    levels = _with_baseline(50.0, 10.0)
    levels[-1] = levels[-1].__class__(
        **{**levels[-1].__dict__, "log": serving_bench.LogAccount(600, 2, 0, 0, 0, 5998)}
    )
    assert judge(serving_bench.targets(levels), serving_bench.checks(levels)).exit_code == 1


def test_read_acks_parses_ids_and_items(tmp_path: Path) -> None:
    path = tmp_path / "run.acks"
    path.write_text("abc-1 4,sku-5,6\n- 7\n- \n")
    assert read_acks(path) == (("abc-1", ("4", "sku-5", "6")), ("-", ("7",)), ("-", ()))


# ---- the other benchmarks' verdicts -------------------------------------------------------


def _m(seconds: float, peak: float, **result: Any) -> Measurement:
    return Measurement(name="x", seconds=seconds, peak_mib=peak, result=result)


def test_feature_build_fails_when_its_tables_differ() -> None:
    result = {"events": 1_000_000, "throughput_ratio": 1.5, "memory_ratio": 0.4}
    equal = {**result, "tables_equal": {"user_activity": True, "item_catalog": True}}
    differ = {**result, "tables_equal": {"user_activity": False, "item_catalog": True}}
    passed = judge(feature_build.targets([equal]), feature_build.checks([equal]))
    assert passed.targets == {"throughput pandas s / Ray s at 1,000,000 events": "met"}
    failed = judge(feature_build.targets([differ]), feature_build.checks([differ]))
    assert failed.exit_code == 1
    assert failed.targets == {"throughput pandas s / Ray s at 1,000,000 events": "FAILED"}


def test_pit_checks_its_own_samples_and_judges_dask_only_from_this_run() -> None:
    features = ["a", "b"]
    run = {"rows": 3, "features": features, "sample": [[0, 1.0, math.nan], [1, 2.0, 3.0]]}
    off = {**run, "sample": [[0, 1.0, math.nan], [1, 2.0, 3.5]]}
    nulls = {**run, "sample": [[0, 1.0, 0.0], [1, 2.0, 3.0]]}
    runs = {"duckdb-asof": run, "duckdb": run, "dask": off}
    checks = pit_retrieval.checks(runs, entity_rows=3)
    assert [c.passed for c in checks if c.name.endswith("values")] == [True, False]
    assert not pit_retrieval.compare_samples(run, nulls)[0]
    assert not all(c.passed for c in pit_retrieval.checks({"duckdb-asof": run}, entity_rows=4))
    assert pit_retrieval.targets({"duckdb": {"speedup": 20.0, "memory_ratio": 0.1}}, 3) == []
    ratios = {"dask": {"speedup": 20.0, "memory_ratio": 0.5}}
    verdicts = judge(
        pit_retrieval.targets(ratios, 3), pit_retrieval.checks({"duckdb-asof": run}, 3)
    )
    assert sorted(verdicts.targets.values()) == ["met", "missed"]


def test_cycle_fails_on_a_stage_that_did_not_run_or_a_different_auc() -> None:
    stages = ["ran"] * len(cycle_bench.STAGES)

    def size(events: int, fw_auc: float, statuses: list[str]) -> dict[str, Any]:
        fw = _m(150.0, 3000.0, test_auc=fw_auc, statuses=statuses)
        return {"events": events, "flywheel": fw, "bare": _m(110.0, 6000.0, test_auc=0.72),
                "ratio": 150.0 / 110.0}  # fmt: skip

    overhead = size(20_000, 0.5, stages)  # a tiny test set: its AUC is not checked
    good = judge(
        cycle_bench.targets([size(10_000_000, 0.719, stages)], overhead),
        cycle_bench.checks([size(10_000_000, 0.719, stages)], overhead),
    )
    assert good.exit_code == 0
    assert set(good.targets.values()) == {"met", "missed"}  # 150 s overhead: missed
    for bad in (size(10_000_000, 0.69, stages), size(10_000_000, 0.719, ["ran", "cached"])):
        assert judge([], cycle_bench.checks([bad], overhead)).exit_code == 1


def test_finish_writes_the_report_and_returns_the_exit_code(tmp_path: Path) -> None:
    import argparse
    import json
    import time

    from benchmarks.harness import finish

    args = argparse.Namespace(out=tmp_path / "sub" / "r.json", seed=3)
    started = time.perf_counter()
    assert finish(args.out, args, started, [FAST], [OK], worlds={"shop": 1}) == 0
    payload = json.loads(args.out.read_text())
    assert payload["args"] == {"out": str(args.out), "seed": "3"}
    assert payload["worlds"] == {"shop": 1} and payload["seconds"] >= 0
    assert payload["verdicts"]["targets"] == {FAST.name: "met"}
    assert finish(args.out, args, started, [FAST], [Check("tables equal", False)]) == 1
