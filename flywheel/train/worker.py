"""The Ray Train worker: read this worker's share of the shards, boost, report once.

Each ``ray.train.report()`` costs about 2 s on a small machine (FIELD_NOTES), so workers
report exactly once, after boosting ends: metrics plus a checkpoint from rank 0. Ray
pickles :func:`_train_loop_per_worker` by reference, so it lives here, in an importable
module (never in ``__main__``).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.train.booster import MODEL_FILENAME
from flywheel.train.shards import GROUP, LABEL, _feature_matrix

if TYPE_CHECKING:
    import pyarrow as pa
    import xgboost as xgb


def row_range(files: list[str], start: int, stop: int, columns: list[str]) -> pa.Table:
    """Rows ``[start, stop)`` of the files read as one table, reading only the row groups
    that hold them (a worker's share of a split, without loading the rest)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pieces: list[pa.Table] = []
    offset = 0
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.metadata.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            lo, hi = max(start, offset), min(stop, offset + rows)
            if lo < hi:
                table = parquet.read_row_group(group, columns=columns)
                pieces.append(table.slice(lo - offset, hi - lo))
            offset += rows
    if not pieces:
        return pa.table({c: pa.array([], type=pa.float32()) for c in columns})
    return pa.concat_tables(pieces)


def _shard_matrix(
    files: list[str], total_rows: int, features: list[str], grouped: bool = False
) -> xgb.DMatrix:
    """This worker's contiguous share of a split as a DMatrix (runs on a Ray Train worker).

    Rank ``r`` of ``w`` workers reads rows ``[n*r/w, n*(r+1)/w)`` straight from the split's
    Parquet files (a path every worker sees, as Ray Data's readers would need). Streaming
    the split through Ray Data instead cost a fixed 6-8 s per run on the 2-core machine
    (read tasks in fresh worker processes, a split coordinator) for 130 MB of shards.
    ``grouped`` (rank objectives): the groups starting in that range instead, whole and
    contiguous, with their ``qid`` (:func:`flywheel.objective.worker_rows`).
    """
    import ray.train
    import xgboost as xgb

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    start, stop = total_rows * rank // world, total_rows * (rank + 1) // world
    if grouped:
        return _grouped_matrix(files, total_rows, features, start, stop)
    table = row_range(files, start, stop, [*features, LABEL])
    if table.num_rows == 0:
        empty = np.zeros((0, len(features)), dtype=np.float32)
        return xgb.DMatrix(empty, label=np.zeros(0), feature_names=features)
    y = table.column(LABEL).to_numpy().astype(np.float32)
    return xgb.DMatrix(_feature_matrix(table, features), label=y, feature_names=features)


def _grouped_matrix(
    files: list[str], total_rows: int, features: list[str], start: int, stop: int
) -> xgb.DMatrix:
    """The whole query groups that start in rows ``[start, stop)``, with their ``qid``."""
    import xgboost as xgb

    from flywheel.objective import group_codes, worker_rows

    groups = row_range(files, 0, total_rows, [GROUP]).column(GROUP)
    plan = worker_rows(group_codes(groups.to_numpy(zero_copy_only=False)), start, stop)
    if len(plan.order) == 0:
        empty = np.zeros((0, len(features)), dtype=np.float32)
        return xgb.DMatrix(empty, label=np.zeros(0), feature_names=features)
    table = row_range(files, start, plan.read_stop, [*features, LABEL]).take(plan.order)
    y = table.column(LABEL).to_numpy().astype(np.float32)
    x = _feature_matrix(table, features)
    return xgb.DMatrix(x, label=y, qid=plan.qid, feature_names=features)


def _train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker body: load shards, boost with early stopping, report once."""
    import xgboost as xgb

    from flywheel.objective import is_ranking, stop_metric

    started_unix, started = time.time(), time.perf_counter()
    splits, features = config["splits"], config["feature_columns"]
    objective = config["params"]["objective"]
    grouped = is_ranking(objective)
    dtrain = _shard_matrix(splits["train"]["files"], splits["train"]["rows"], features, grouped)
    dvalid = _shard_matrix(splits["valid"]["files"], splits["valid"]["rows"], features, grouped)
    loaded = time.perf_counter()
    evals_result: dict[str, Any] = {}
    metric, maximize = stop_metric(objective)
    stopper = xgb.callback.EarlyStopping(
        rounds=config["early_stopping_rounds"],
        metric_name=metric,
        data_name="valid",
        maximize=maximize,
        save_best=True,
    )
    booster = xgb.train(
        config["params"],
        dtrain,
        num_boost_round=config["num_boost_round"],
        evals=[(dtrain, "train"), (dvalid, "valid")],
        evals_result=evals_result,
        callbacks=[stopper],
        verbose_eval=False,
    )
    metrics = _best_metrics(evals_result, metric, maximize)
    metrics.update(
        load_seconds=loaded - started,
        boost_seconds=time.perf_counter() - loaded,
        # Wall-clock stamps (same host clock locally) let the driver split the fit time.
        worker_started_unix=started_unix,
        worker_done_unix=time.time(),
        num_boosted_rounds=len(evals_result["valid"][metric]),
        worker_train_rows=dtrain.num_row(),
    )
    _report_once(booster, metrics)


def _best_metrics(
    evals_result: dict[str, Any], metric: str = "logloss", maximize: bool = False
) -> dict[str, Any]:
    """Metrics at the iteration early stopping kept (best valid ``metric``).

    ``*_logloss`` is NaN for a ranking objective (its scores are no probabilities) and
    ``*_ndcg_at_10`` is there for ranking objectives only; XGBoost's ``auc`` on a DMatrix
    with query groups is the mean AUC within the groups, not the AUC over all rows.
    """
    history = np.asarray(evals_result["valid"][metric])
    best = int(np.argmax(history) if maximize else np.argmin(history))
    out: dict[str, Any] = {"best_iteration": best, "stopped_on": f"valid {metric}"}
    for data in ("train", "valid"):
        for name, key in (("logloss", "logloss"), ("auc", "auc"), ("ndcg@10", "ndcg_at_10")):
            if name in evals_result[data]:
                out[f"{data}_{key}"] = float(evals_result[data][name][best])
            elif name == "logloss":
                out[f"{data}_{key}"] = math.nan
    return out


def _report_once(booster: xgb.Booster, metrics: dict[str, Any]) -> None:
    """Every worker must report; only rank 0 attaches the checkpoint (all hold the model)."""
    import ray.train

    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        booster.save_model(str(Path(tmp) / MODEL_FILENAME))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
