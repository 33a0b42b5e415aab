"""Baseline: one training cycle as a bare single-process script (pandas + xgboost only).

It does the work of ``flywheel cycle`` on the same raw events, without Feast, Ray or KFP:

1. validate and deduplicate the raw events and the catalog (plain pandas) and write them to
   a Parquet lake (``<workspace>/lake``), as ingest does;
2. label organic impressions in the training window and sample whole sessions
   (``flywheel.dataset.label_organic_impressions`` / ``sample_impressions``);
3. build the four feature tables with ``benchmarks/pandas_features.py``;
4. join them point-in-time with ``pandas.merge_asof`` (one per table, Feast's semantics:
   latest row at or before the impression, within the view's ttl);
5. encode with ``flywheel.ranking.model_inputs``, split 80/10/10 by time, and
   ``xgboost.train`` with ``flywheel.train.DEFAULT_PARAMS`` and the same early stopping;
6. score AUC on the test split.

    python benchmarks/bare_cycle.py --raw RAW_DIR --workspace WORK_DIR
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flywheel.schemas import EVENT_SCHEMA, EVENT_TYPES, ITEM_SCHEMA

log = logging.getLogger(__name__)

#: ttl of each feature view (``feature_repo/definitions.py``); ``None``: never expires.
TABLE_KEYS: Final[dict[str, tuple[list[str], timedelta | None]]] = {
    "user_activity": (["user_id"], timedelta(days=7)),
    "user_category": (["user_id", "category"], timedelta(days=7)),
    "item_activity": (["item_id"], timedelta(days=7)),
    "item_catalog": (["item_id"], None),
}
#: The feature service takes only ``price`` from the catalog view.
CATALOG_FEATURES: Final = ["price"]
#: Same as flywheel.ingest's default ``max_future_skew_s``.
MAX_FUTURE_SKEW: Final = timedelta(hours=1)


def validate_events(raw: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """Keep contract-valid events, first occurrence of each ``event_id``.

    Drops rows with a missing field, an unknown ``event_type`` (after trim + lower-case) or
    a ``ts`` more than :data:`MAX_FUTURE_SKEW` after ``now``.
    """
    ev = raw[EVENT_SCHEMA.names].dropna()
    kind = ev["event_type"].str.strip().str.lower()
    ok = kind.isin(EVENT_TYPES) & (ev["ts"] <= pd.Timestamp(now + MAX_FUTURE_SKEW))
    ev = ev.loc[ok].assign(event_type=kind[ok])
    return ev.drop_duplicates("event_id", keep="first", ignore_index=True)


def validate_items(raw: pd.DataFrame) -> pd.DataFrame:
    """Keep catalog rows with every field and a positive price; the last row per item wins."""
    items = raw[ITEM_SCHEMA.names].dropna()
    items = items.loc[items["price"] > 0]
    return items.drop_duplicates("item_id", keep="last").sort_values("item_id", ignore_index=True)


def write_lake(events: pd.DataFrame, items: pd.DataFrame, workspace: Path) -> None:
    """The validated events and catalog as Parquet under ``workspace/lake`` (contract types)."""
    lake = workspace / "lake"
    (lake / "events").mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(events, preserve_index=False).cast(EVENT_SCHEMA)
    pq.write_table(table, lake / "events" / "part-00000.parquet")
    table = pa.Table.from_pandas(items, preserve_index=False).cast(ITEM_SCHEMA)
    pq.write_table(table, lake / "items.parquet")


def impressions_in_window(
    events: pd.DataFrame, window_days: float, attribution: timedelta, max_rows: int, seed: int
) -> tuple[pd.DataFrame, int]:
    """Labelled, sampled impressions of the window ending at the last event (as dataset does).

    Returns the impressions and how many there were before sampling.
    """
    from flywheel.dataset import label_organic_impressions, sample_impressions

    end = events["ts"].max() + pd.Timedelta(microseconds=1)
    start = end - pd.Timedelta(days=window_days)
    window = events.loc[(events["ts"] >= start) & (events["ts"] < end)]
    labelled = label_organic_impressions(window, attribution, closed_before=end.to_pydatetime())
    return sample_impressions(labelled, max_rows, seed), len(labelled)


def point_in_time_join(
    impressions: pd.DataFrame, items: pd.DataFrame, tables: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """Each impression with the latest row of every table at or before its time, within ttl.

    Missing categories become ``unknown`` (as the dataset stage does); rows with no feature
    row in range get nulls.
    """
    frame = impressions.merge(items[["item_id", "category"]], on="item_id", how="left")
    frame["category"] = frame["category"].fillna("unknown")
    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns, UTC]")
    frame = frame.sort_values("event_timestamp", kind="stable", ignore_index=True)
    for name, (keys, ttl) in TABLE_KEYS.items():
        right = tables[name].drop(columns=["created_timestamp"])
        if name == "item_catalog":
            right = right[[*keys, "event_timestamp", *CATALOG_FEATURES]]
        right = right.rename(columns={"event_timestamp": "_feature_ts"})
        right["_feature_ts"] = right["_feature_ts"].astype("datetime64[ns, UTC]")
        frame = pd.merge_asof(
            frame,
            right.sort_values("_feature_ts", kind="stable"),
            left_on="event_timestamp",
            right_on="_feature_ts",
            by=keys,
            direction="backward",
            tolerance=pd.Timedelta(ttl) if ttl is not None else None,
        ).drop(columns=["_feature_ts"])
    return frame


def time_split(frame: pd.DataFrame, fractions: tuple[float, float] = (0.8, 0.9)) -> pd.Series:
    """``train``/``valid``/``test`` per row, cut at the timestamps' nearest quantiles."""
    cuts = frame["event_timestamp"].quantile(list(fractions), interpolation="nearest")
    ts = frame["event_timestamp"]
    split = np.where(ts <= cuts.iloc[0], "train", np.where(ts <= cuts.iloc[1], "valid", "test"))
    return pd.Series(split, index=frame.index)


def train_and_score(frame: pd.DataFrame, seed: int) -> dict[str, Any]:
    """xgboost.train as flywheel.train does it (params, early stopping); AUC on test."""
    import xgboost as xgb

    from flywheel.evaluate import auc
    from flywheel.ranking import MODEL_FEATURES, model_inputs
    from flywheel.train import (
        DEFAULT_EARLY_STOPPING_ROUNDS,
        DEFAULT_NUM_BOOST_ROUND,
        DEFAULT_PARAMS,
    )

    x = model_inputs(frame, frame["event_timestamp"].astype("int64").to_numpy() / 1e9)
    y = frame["label"].to_numpy().astype(np.float32)
    split = time_split(frame).to_numpy()
    names = list(MODEL_FEATURES)
    mats = {s: xgb.DMatrix(x[split == s], label=y[split == s], feature_names=names) for s in
            ("train", "valid", "test")}  # fmt: skip
    evals: dict[str, Any] = {}
    stopper = xgb.callback.EarlyStopping(
        rounds=DEFAULT_EARLY_STOPPING_ROUNDS, metric_name="logloss", data_name="valid",
        save_best=True,
    )  # fmt: skip
    booster = xgb.train(
        {**DEFAULT_PARAMS, "seed": seed}, mats["train"], num_boost_round=DEFAULT_NUM_BOOST_ROUND,
        evals=[(mats["train"], "train"), (mats["valid"], "valid")], evals_result=evals,
        callbacks=[stopper], verbose_eval=False,
    )  # fmt: skip
    best = int(np.argmin(evals["valid"]["logloss"]))
    test_y = mats["test"].get_label()
    return {
        "rows": {s: int(m.num_row()) for s, m in mats.items()},
        "best_iteration": best,
        "valid_auc": float(evals["valid"]["auc"][best]),
        "test_auc": float(auc(test_y, booster.predict(mats["test"]))),
    }


def bare_cycle(
    raw_dir: str,
    workspace: str,
    window_days: float = 14.0,
    attribution_minutes: int = 60,
    max_rows: int = 1_000_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the whole baseline on ``raw_dir/events`` + ``raw_dir/items.parquet``.

    Returns a JSON-able dict: seconds per step (and ``total``), row counts, test AUC.
    """
    from pandas_features import pandas_features

    marks = [("start", time.perf_counter())]
    ws, raw = Path(workspace), Path(raw_dir)
    events = validate_events(pq.read_table(raw / "events").to_pandas(), datetime.now(UTC))
    items = validate_items(pd.read_parquet(raw / "items.parquet"))
    write_lake(events, items, ws)
    marks.append(("ingest", time.perf_counter()))
    attribution = timedelta(minutes=attribution_minutes)
    impressions, labelled = impressions_in_window(events, window_days, attribution, max_rows, seed)
    accepted = len(events)
    del events  # the feature build reads the lake it was written to
    marks.append(("label", time.perf_counter()))
    tables = pandas_features(ws)
    rows = {name: len(t) for name, t in tables.items()}
    marks.append(("features", time.perf_counter()))
    frame = point_in_time_join(impressions, items, tables)
    del tables
    marks.append(("join", time.perf_counter()))
    scores = train_and_score(frame, seed)
    marks.append(("train", time.perf_counter()))
    seconds = {b[0]: round(b[1] - a[1], 2) for a, b in itertools.pairwise(marks)}
    seconds["total"] = round(marks[-1][1] - marks[0][1], 2)
    return {
        "seconds": seconds,
        "accepted": accepted,
        "impressions": len(frame),
        "sampled_from": labelled,
        "positive_rate": round(float(frame["label"].mean()), 4),
        "feature_rows": rows,
        **scores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", required=True, help="folder with events/ and items.parquet")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--window-days", type=float, default=14.0)
    parser.add_argument("--max-rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = bare_cycle(
        args.raw, args.workspace, args.window_days, max_rows=args.max_rows, seed=args.seed
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
