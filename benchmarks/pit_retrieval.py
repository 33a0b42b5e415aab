"""Benchmark: point-in-time training-set retrieval, ASOF DuckDB vs Feast's stock stores.

Generates feature tables of realistic size in the contract shape (``flywheel.schemas``),
registers the Feast definitions once, then retrieves a training set for N entity rows
(user_id, item_id, category, event_timestamp) through the ranking feature service with each
offline store, each in a fresh process (``benchmarks.harness.measure``). All go through
``flywheel.feature_store.historical_features``, i.e. Feast's offline store API:
``duckdb-asof`` (``flywheel.feast_asof``, the contender), ``dask`` (Feast's default ``file``
store, the baseline) and ``duckdb`` (Feast's stock, ibis-based DuckDB store).

Ratios are the contender's rows/s and peak memory over each other store's, all of the same
run on the same entity rows. Target (only when dask ran in this run): >= 10x dask's rows/s
at <= 1/3 of its peak memory. The dask store needs about 5 GB per 100k entity rows, so at
sizes where it does not fit, leave it out (``--stores duckdb-asof,duckdb``): the dask target
is then not measured, rather than judged against a run of another size.

Checks (any failure prints FAILED and exits 1): every store returns one row per entity row
with the same features, and every other store's values on the first ``SAMPLE_ROWS`` entity
rows equal the contender's (the same nulls, at most ``SAMPLE_TOLERANCE`` apart).

    .venv/bin/python benchmarks/pit_retrieval.py --entity-rows 100000 --out bench-out/pit-100k.json
    .venv/bin/python benchmarks/pit_retrieval.py --entity-rows 1000000 \
        --stores duckdb-asof,duckdb --out bench-out/pit-1m.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import Check, Target, dump, machine, measure, report_verdicts
from flywheel.schemas import FEATURE_TABLES, SNAPSHOT_SECONDS

log = logging.getLogger("pit_retrieval")
END = pd.Timestamp("2024-03-31", tz="UTC")
N_CATEGORIES = 24
SAMPLE_ROWS = 5_000
#: Largest absolute difference allowed between two stores' values (features are < 500).
SAMPLE_TOLERANCE = 1e-9
CONTENDER = "duckdb-asof"
BASELINE = "dask"
SPEEDUP_TARGET = 10.0
MEMORY_RATIO_TARGET = 1 / 3


def _write(name: str, frame: pd.DataFrame, data_dir: Path, rng: np.random.Generator) -> int:
    """Fill the feature columns with random values of the contract type; write Parquet."""
    schema = FEATURE_TABLES[name]
    for field in schema:
        if field.name not in frame.columns:
            size = len(frame)
            ints = pa.types.is_integer(field.type)
            frame[field.name] = rng.integers(0, 500, size) if ints else rng.random(size) * 50
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    pq.write_table(table, data_dir / f"{name}.parquet")
    return len(frame)


def _hours(rng: np.random.Generator, size: int, days: int) -> pd.Series:
    """Hour-end snapshot times spread over the ``days`` before END."""
    hours = rng.integers(1, days * 24, size)
    stamps = END - pd.to_timedelta(hours * SNAPSHOT_SECONDS, unit="s")
    return pd.Series(stamps.as_unit("us"))


def build_tables(data_dir: Path, users: int, items: int, days: int, seed: int) -> dict[str, int]:
    """Write ranking_v1's four feature tables (what it retrieves); return their row counts."""
    rng = np.random.default_rng(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    categories = np.array([f"cat{c:02d}" for c in range(N_CATEGORIES)])
    n_ua = users * 20  # ~20 active hours per user in the window
    ua = pd.DataFrame(
        {"user_id": rng.integers(0, users, n_ua), "event_timestamp": _hours(rng, n_ua, days)}
    )
    ua = ua.drop_duplicates(["user_id", "event_timestamp"], ignore_index=True)
    ua["created_timestamp"] = ua["event_timestamp"]
    # One or two categories viewed per user snapshot.
    uc = pd.concat([ua[["user_id", "event_timestamp"]]] * 2, ignore_index=True)
    uc = uc.sample(frac=0.75, random_state=seed, ignore_index=True)
    uc["category"] = categories[rng.integers(0, N_CATEGORIES, len(uc))]
    uc = uc.drop_duplicates(["user_id", "category", "event_timestamp"], ignore_index=True)
    uc["created_timestamp"] = uc["event_timestamp"]
    n_ia = items * days * 12  # items active half of the hours
    ia = pd.DataFrame(
        {"item_id": rng.integers(0, items, n_ia), "event_timestamp": _hours(rng, n_ia, days)}
    )
    ia = ia.drop_duplicates(["item_id", "event_timestamp"], ignore_index=True)
    ia["created_timestamp"] = ia["event_timestamp"]
    created = END - pd.to_timedelta(rng.integers(days * 24, 400 * 24, items), unit="h")
    cat = pd.DataFrame(
        {"item_id": np.arange(items), "category": categories[np.arange(items) % N_CATEGORIES]}
    )
    cat["event_timestamp"] = cat["created_timestamp"] = pd.Series(created.as_unit("us"))
    return {
        "user_activity": _write("user_activity", ua, data_dir, rng),
        "user_category": _write("user_category", uc, data_dir, rng),
        "item_activity": _write("item_activity", ia, data_dir, rng),
        "item_catalog": _write("item_catalog", cat, data_dir, rng),
    }


def build_entities(path: Path, rows: int, users: int, items: int, days: int, seed: int) -> None:
    """Labelled-impression-like entity rows over the last ``days - 7`` days, with a row_id."""
    rng = np.random.default_rng(seed + 1)
    item = rng.integers(0, items, rows)
    seconds = rng.integers(0, (days - 7) * 86_400, rows)
    frame = pd.DataFrame(
        {
            "row_id": np.arange(rows),
            "user_id": rng.integers(0, users, rows),
            "item_id": item,
            "category": np.array([f"cat{c:02d}" for c in range(N_CATEGORIES)])[item % N_CATEGORIES],
            "event_timestamp": (END - pd.to_timedelta(seconds, unit="s")).as_unit("us"),
            "label": rng.integers(0, 2, rows),
        }
    )
    frame.to_parquet(path, index=False)


def retrieve(workspace: str, offline_store: str, entity_path: str) -> dict[str, Any]:
    """Child process: one training-set retrieval through the feature service.

    ``import feast`` (3-5 s, the same for every store) is timed apart, as
    ``import_seconds``; the retrieval time includes everything else: the store's own
    modules, registry, reading the feature tables, the join and the pandas result.
    ``cpu_seconds`` is the CPU time of this process (all threads) over the retrieval: on a
    shared machine it moves less with other load than the wall time does.
    """
    from flywheel import feature_store as fs
    from flywheel.config import FeastSettings, Settings

    # ranking_v1's four views, as every earlier run of this benchmark measured
    chosen = FeastSettings(offline_store=offline_store, feature_service_version=1)  # type: ignore[arg-type]
    settings = Settings(workspace=Path(workspace), feast=chosen)
    entities = pd.read_parquet(entity_path)
    start = time.perf_counter()
    import feast  # noqa: F401

    imported = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    result = fs.historical_features(settings, entities)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    sample = result[result["row_id"] < SAMPLE_ROWS].sort_values("row_id")
    # Sorted: stores may order the columns differently; samples compare by position.
    features = sorted(c for c in result.columns if c not in entities.columns)
    return {
        "rows": len(result),
        "retrieval_seconds": seconds,
        "import_seconds": imported,
        "cpu_seconds": cpu,
        "features": features,
        "sample": sample[["row_id", *features]].astype(float).to_numpy().tolist(),
    }


def compare_samples(a: dict[str, Any], b: dict[str, Any]) -> tuple[bool, str]:
    """Do two stores' sample rows agree (same shape and nulls, values within tolerance)?"""
    x, y = np.array(a["sample"], dtype=float), np.array(b["sample"], dtype=float)
    if x.shape != y.shape:
        return False, f"sample shapes differ: {x.shape} vs {y.shape}"
    if not np.array_equal(np.isnan(x), np.isnan(y)):
        return False, f"nulls differ in {int((np.isnan(x) != np.isnan(y)).sum())} cells"
    diff = float(np.nanmax(np.abs(x - y), initial=0.0))
    detail = f"{x.shape[0]} rows x {x.shape[1]} columns, max |diff| {diff:.3g}"
    return diff <= SAMPLE_TOLERANCE, detail


def checks(runs: dict[str, dict[str, Any]], entity_rows: int) -> list[Check]:
    """Row counts and feature counts of every store; samples against the contender's."""
    out = []
    features = {tuple(run["features"]) for run in runs.values()}
    for name, run in runs.items():
        detail = f"{run['rows']:,} rows for {entity_rows:,} entity rows"
        out.append(Check(f"{name}: one row per entity row", run["rows"] == entity_rows, detail))
    detail = f"{len(next(iter(features), ()))} features" if len(features) == 1 else str(features)
    out.append(Check("same feature columns from every store", len(features) == 1, detail))
    if CONTENDER in runs:
        for name, run in runs.items():
            if name != CONTENDER:
                same, detail = compare_samples(runs[CONTENDER], run)
                out.append(Check(f"{CONTENDER} values = {name} values", same, detail))
    return out


def targets(ratios: dict[str, dict[str, Any]], entity_rows: int) -> list[Target]:
    """The target against dask, when dask ran in this run; none otherwise."""
    if BASELINE not in ratios:
        print(f"target vs {BASELINE}: not measured ({BASELINE} did not run in this run)")
        return []
    at = f"at {entity_rows:,} entity rows"
    ratio = ratios[BASELINE]
    return [
        Target(f"rows/s {CONTENDER} / {BASELINE} {at}", ratio["speedup"], SPEEDUP_TARGET,
               at_most=False, unit="x"),
        Target(f"peak memory {CONTENDER} / {BASELINE} {at}", ratio["memory_ratio"],
               MEMORY_RATIO_TARGET, at_most=True, unit="x"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Generate data, run each store in a fresh process, print and write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entity-rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stores", default="duckdb-asof,duckdb,dask")
    parser.add_argument("--workspace", default="bench-out/pit-workspace")
    parser.add_argument("--out", default="bench-out/pit.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from flywheel import feature_store as fs
    from flywheel.config import Settings

    workspace = Path(args.workspace).absolute()
    settings = Settings(workspace=workspace)
    started = time.perf_counter()
    sizes = build_tables(settings.feature_data_dir, args.users, args.items, args.days, args.seed)
    entity_path = workspace / "entities.parquet"
    build_entities(entity_path, args.entity_rows, args.users, args.items, args.days, args.seed)
    log.info("generated %s in %.1f s", sizes, time.perf_counter() - started)
    fs.apply(settings)

    runs = {}
    for store in args.stores.split(","):
        log.info("retrieving %d entity rows with %s ...", args.entity_rows, store)
        m = measure(store, retrieve, str(workspace), store, str(entity_path))
        rate = m.result["rows"] / m.result["retrieval_seconds"]
        runs[store] = {
            "rows": m.result["rows"],
            "features": m.result["features"],
            "retrieval_seconds": m.result["retrieval_seconds"],
            "import_seconds": m.result["import_seconds"],
            "cpu_seconds": m.result["cpu_seconds"],
            "process_seconds": m.seconds,
            "rows_per_s": rate,
            "peak_mib": m.peak_mib,
            "sample": m.result["sample"],
        }
        print(
            f"{store:>11}: {rate:>10,.0f} rows/s  {m.result['retrieval_seconds']:7.1f} s  "
            f"cpu {m.result['cpu_seconds']:7.1f} s  "
            f"peak {m.peak_mib:8,.0f} MiB  ({m.result['rows']:,} rows, "
            f"{len(m.result['features'])} features)"
        )
    payload: dict[str, Any] = {
        "machine": machine(),
        "entity_rows": args.entity_rows,
        "feature_rows": sizes,
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "sample"} for k, v in runs.items()},
    }
    payload["ratios"] = ratios = _ratios(runs) if CONTENDER in runs else {}
    print()
    goals, checked = targets(ratios, args.entity_rows), checks(runs, args.entity_rows)
    verdicts = report_verdicts(goals, checked)
    payload |= {"targets": goals, "checks": checked, "verdicts": verdicts}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    dump(args.out, payload)
    print(f"\nmachine: {payload['machine']}\nwrote {args.out}")
    return verdicts.exit_code


def _ratios(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The contender's rows/s and peak memory over each other store's of this run, printed."""
    mine = runs[CONTENDER]
    out: dict[str, Any] = {}
    for name, run in runs.items():
        if name == CONTENDER:
            continue
        out[name] = ratio = {
            "speedup": mine["rows_per_s"] / run["rows_per_s"],
            "memory_ratio": mine["peak_mib"] / run["peak_mib"],
            # CPU seconds per entity row, theirs over ours: less sensitive to other load.
            "cpu_speedup": (run["cpu_seconds"] / run["rows"])
            / (mine["cpu_seconds"] / mine["rows"]),
        }
        print(
            f"{CONTENDER}/{name}: {ratio['speedup']:.1f}x rows/s "
            f"({ratio['cpu_speedup']:.1f}x in CPU s/row) at {ratio['memory_ratio']:.2f}x peak "
            "memory, same run"
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
