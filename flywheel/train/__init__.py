"""Train the ranking model: data-parallel XGBoost on Ray Train over the preprocessed shards.

Input: a shards directory ``D`` written by the preprocess stage, holding
``D/{train,valid,test}/*.parquet`` (the float32 model columns of the feature service the
shards were built through, :func:`~flywheel.ranking.model_features`; int8 ``label``, string
``group_id``, ids and ``event_timestamp``) and ``D/metadata.json`` (``feature_service``,
``feature_columns``). The booster keeps the column names, so a model is always scored on
its own columns (:func:`predict`, :func:`read_split`).
Output (in ``out_dir``): ``model.ubj`` (the booster), ``train_metrics.json`` and the Ray
Train run directory with its checkpoint under ``out_dir/ray_results``.

Each ``ray.train.report()`` costs about 2 s on a small machine (FIELD_NOTES), so workers
report exactly once, after boosting ends: metrics plus a checkpoint from rank 0.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from flywheel.ranking import FEATURE_SETS, MODEL_FEATURES
from flywheel.ray_runtime import ensure_ray

if TYPE_CHECKING:
    import pyarrow as pa
    import xgboost as xgb

    from flywheel.config import Settings, TrainSettings

log = logging.getLogger(__name__)

LABEL: Final = "label"
GROUP: Final = "group_id"
SPLITS: Final[tuple[str, ...]] = ("train", "valid", "test")
MODEL_FILENAME: Final = "model.ubj"
METRICS_FILENAME: Final = "train_metrics.json"

#: Booster parameters; anything here can be overridden through ``params``. Chosen for
#: 100k-1M rows of ~20 dense features: moderate depth, row/column subsampling against
#: overfitting, and a learning rate that converges in a few hundred rounds. The objective
#: and its eval metrics come from ``Settings.train`` (:func:`flywheel.objective.booster_params`);
#: the two here are that default's.
DEFAULT_PARAMS: Final[dict[str, Any]] = {
    "objective": "binary:logistic",
    # Early stopping watches the last metric listed, so logloss (smoother than AUC) is last.
    "eval_metric": ["auc", "logloss"],
    "tree_method": "hist",
    "eta": 0.1,
    "max_depth": 6,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "lambda": 1.0,
    "max_bin": 256,
}
#: Training-loop knobs accepted in ``params`` next to the booster parameters.
DEFAULT_NUM_BOOST_ROUND: Final = 1000
DEFAULT_EARLY_STOPPING_ROUNDS: Final = 30


class ShardError(ValueError):
    """The shards directory breaks the preprocess contract; the message says where and how."""


@dataclass(frozen=True)
class ShardsInfo:
    """What a validated shards directory holds."""

    root: Path
    metadata: dict[str, Any]
    files: dict[str, list[Path]]
    rows: dict[str, int]

    @property
    def feature_columns(self) -> list[str]:
        """The model input columns of these shards, in order."""
        return list(self.metadata["feature_columns"])


@dataclass(frozen=True)
class TrainSummary:
    """What one training run produced (paths) and how it went (metrics, timings)."""

    model_path: Path
    metrics_path: Path
    checkpoint_path: str
    best_iteration: int
    train_rows: int
    valid_rows: int
    valid_auc: float
    valid_logloss: float
    seconds: float


# ---- shard contract ------------------------------------------------------------------


def inspect_shards(shards_dir: str | Path, splits: tuple[str, ...] = SPLITS) -> ShardsInfo:
    """Validate a shards directory against the preprocess contract, reading only footers.

    Args:
        shards_dir: the directory holding ``metadata.json`` and one folder per split.
        splits: the splits that must be present and non-empty.

    Returns:
        The metadata, the Parquet files and the row count of each requested split.

    Raises:
        ShardError: missing/invalid ``metadata.json``, feature columns that differ from
            the model columns of its feature service, a missing or empty split, an
            unreadable Parquet file, or a file lacking a required column.
    """
    root = Path(shards_dir)
    metadata = _read_metadata(root)
    files: dict[str, list[Path]] = {}
    rows: dict[str, int] = {}
    for split in splits:
        files[split] = sorted((root / split).glob("*.parquet"))
        if not files[split]:
            raise ShardError(f"split {split!r} has no Parquet files in {root / split}")
        rows[split] = sum(_check_shard_file(f, metadata["feature_columns"]) for f in files[split])
        if rows[split] == 0:
            raise ShardError(f"split {split!r} in {root / split} has 0 rows; expected > 0")
    return ShardsInfo(root=root, metadata=metadata, files=files, rows=rows)


def _read_metadata(root: Path) -> dict[str, Any]:
    path = root / "metadata.json"
    if not path.is_file():
        raise ShardError(f"{path} does not exist; a shards directory needs its metadata.json")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ShardError(f"{path} must hold a JSON object; got {type(metadata).__name__}")
    for key, expected in (("label", LABEL), ("group", GROUP)):
        if metadata.get(key, expected) != expected:
            raise ShardError(f"{path}: {key!r} is {metadata[key]!r}; expected {expected!r}")
    # Shards written before services were versioned carry no name: ranking_v1's columns.
    service = metadata.get("feature_service", "ranking_v1")
    if service not in FEATURE_SETS:
        raise ShardError(
            f"{path}: feature_service {service!r} is unknown; expected one of "
            f"{', '.join(FEATURE_SETS)}"
        )
    want = list(FEATURE_SETS[service].model)
    columns = metadata.get("feature_columns")
    if columns != want:
        got = set(columns or [])
        raise ShardError(
            f"{path}: feature_columns do not match the model columns of {service} "
            f"(flywheel.ranking; missing {sorted(set(want) - got)}, unexpected "
            f"{sorted(got - set(want))}, order must match too); got {columns!r}"
        )
    return dict(metadata)


def _check_shard_file(path: Path, feature_columns: list[str]) -> int:
    """Return the row count of one shard after checking it opens and has the columns."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for bad files
        raise ShardError(f"shard {path} is not readable Parquet: {exc}") from exc
    names = set(parquet.schema_arrow.names)
    missing = [c for c in (*feature_columns, LABEL) if c not in names]
    if missing:
        raise ShardError(f"shard {path} lacks required columns {missing}")
    return int(parquet.metadata.num_rows)


def check_labels(info: ShardsInfo, split: str) -> dict[int, int]:
    """Count each label value in a split; raise ShardError unless both 0 and 1 occur.

    A single-class split cannot train a classifier nor score AUC, so it is refused early.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts: dict[int, int] = {}
    for path in info.files[split]:
        column = _read_columns(pq, path, [LABEL]).column(LABEL)
        for entry in pc.value_counts(column).to_pylist():
            counts[int(entry["values"])] = counts.get(int(entry["values"]), 0) + entry["counts"]
    if set(counts) - {0, 1}:
        raise ShardError(f"split {split!r}: label values {sorted(counts)}; expected 0 and 1")
    if len(counts) < 2:
        raise ShardError(
            f"split {split!r}: label has one class only ({counts}); expected both 0 and 1"
        )
    return counts


def _read_columns(pq: Any, path: Path, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except Exception as exc:  # a valid footer can still hide corrupt pages
        raise ShardError(f"shard {path} could not be read: {exc}") from exc


def read_split(
    info: ShardsInfo, split: str, features: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load one split in-process: ``(X float32 [n, n_features], y int8 [n], group_id [n])``.

    ``features``: the model columns to read (default: the shards' own); a ranking_v1
    champion reads its 21 from ranking_v2 shards, whose columns start with v1's.

    Raises:
        ShardError: a requested column is not in the shards.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = info.feature_columns if features is None else list(features)
    absent = [c for c in features if c not in info.feature_columns]
    if absent:
        raise ShardError(
            f"shards {info.root} ({info.metadata.get('feature_service', 'ranking_v1')}) lack "
            f"the model columns {absent}"
        )
    columns = [*features, LABEL, GROUP]
    table = pa.concat_tables(_read_columns(pq, p, columns) for p in info.files[split])
    x = _feature_matrix(table, features)
    y = table.column(LABEL).to_numpy().astype(np.int8)
    groups = table.column(GROUP).to_numpy(zero_copy_only=False)
    return x, y, groups


def _feature_matrix(table: pa.Table, features: list[str]) -> np.ndarray:
    """The model inputs of a shard table: float32, columns in ``features`` order."""
    return np.column_stack([table.column(c).to_numpy().astype(np.float32) for c in features])


# ---- model helpers -------------------------------------------------------------------


def load_booster(path: str | Path) -> xgb.Booster:
    """Load an XGBoost booster saved by :func:`train_model` (``model.ubj``)."""
    import xgboost as xgb

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster


def booster_features(booster: xgb.Booster) -> list[str]:
    """The input columns a booster was trained on (ranking_v1's if it kept no names)."""
    return list(booster.feature_names or MODEL_FEATURES)


def predict(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """The booster's scores (float64, shape ``[n]``) for a ``[n, n_features]`` matrix whose
    columns are the booster's own (:func:`booster_features`): click probabilities for a
    binary:logistic model, unnormalised ranking scores for a rank:* one
    (:func:`flywheel.objective.score_kind`)."""
    import xgboost as xgb

    names = booster_features(booster)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(
            f"X has shape {x.shape}; expected (n, {len(names)}): the model's columns "
            f"{names[0]!r}..{names[-1]!r} (was it scored with its own feature service?)"
        )
    matrix = xgb.DMatrix(np.asarray(x, dtype=np.float32), feature_names=names)
    return np.asarray(booster.predict(matrix), dtype=np.float64)


# ---- Ray Train -----------------------------------------------------------------------


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


def _split_params(
    params: dict[str, Any] | None, seed: int, train: TrainSettings | None = None
) -> dict[str, Any]:
    """Merge the objective of ``train`` (default: binary:logistic) and the overrides into
    the defaults, and pull out the training-loop knobs.

    Raises:
        ValueError: an objective override that is not one :mod:`flywheel.objective` knows.
    """
    from flywheel.config import TrainSettings
    from flywheel.objective import booster_params, check_objective

    objective = booster_params(train or TrainSettings())
    merged = {**DEFAULT_PARAMS, **objective, "seed": seed, **(params or {})}
    check_objective(merged["objective"])
    return {
        "num_boost_round": int(merged.pop("num_boost_round", DEFAULT_NUM_BOOST_ROUND)),
        "early_stopping_rounds": int(
            merged.pop("early_stopping_rounds", DEFAULT_EARLY_STOPPING_ROUNDS)
        ),
        "params": merged,
    }


def _fit(settings: Settings, info: ShardsInfo, config: dict[str, Any], out_dir: Path) -> Any:
    """Run the XGBoostTrainer and return its Result."""
    import ray.train
    from ray.train.xgboost import XGBoostTrainer

    # Workers read their share of each split themselves (see _shard_matrix).
    splits = {
        split: {"files": [str(p.resolve()) for p in info.files[split]], "rows": info.rows[split]}
        for split in ("train", "valid")
    }
    trainer = XGBoostTrainer(
        _train_loop_per_worker,
        train_loop_config={**config, "splits": splits, "feature_columns": info.feature_columns},
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.ray.num_workers,
            resources_per_worker={"CPU": settings.ray.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            # A fresh name per call: Train V2 treats a same-named run as a restart of it.
            name=f"xgboost-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
            storage_path=str((out_dir / "ray_results").resolve()),
        ),
    )
    return trainer.fit()


def train_model(
    settings: Settings,
    shards_dir: str | Path,
    out_dir: str | Path,
    *,
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> TrainSummary:
    """Train the ranking model on the train split, early-stopped on the valid split.

    Args:
        settings: Ray address and worker sizing (``settings.ray``); the objective
            (``settings.train``, :mod:`flywheel.objective`: binary click probabilities by
            default, or a rank:* objective on the shards' query groups).
        shards_dir: preprocessed shards (see the module docstring).
        out_dir: created if needed; receives ``model.ubj``, ``train_metrics.json`` and
            ``ray_results/`` (the Ray Train run with its checkpoint).
        params: XGBoost parameters overriding :data:`DEFAULT_PARAMS`, plus optionally
            ``num_boost_round`` and ``early_stopping_rounds``.
        seed: the booster's random seed (subsampling), fixed for reproducibility.

    Returns:
        A :class:`TrainSummary`.

    Raises:
        ShardError: the shards break the contract (names the file or split and the problem).
    """
    marks = {"start": time.time()}  # wall-clock stamps: workers report the same clock
    out = Path(out_dir)
    info = inspect_shards(shards_dir, splits=("train", "valid"))
    for split in ("train", "valid"):
        check_labels(info, split)
    config = _split_params(params, seed, settings.train)
    log.info("training on %s train / %s valid rows", f"{info.rows['train']:,}", info.rows["valid"])
    out.mkdir(parents=True, exist_ok=True)
    marks["validated"] = time.time()
    ensure_ray(settings)
    marks["fit_start"] = time.time()
    result = _fit(settings, info, config, out)
    marks["fit_done"] = time.time()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run in {out / 'ray_results'} reported no checkpoint")
    model_path = out / MODEL_FILENAME
    with result.checkpoint.as_directory() as ckpt_dir:
        shutil.copyfile(Path(ckpt_dir) / MODEL_FILENAME, model_path)
    metrics = _metrics_record(info, config, dict(result.metrics), settings, seed)
    metrics["checkpoint_path"] = result.checkpoint.path
    metrics["seconds"] = _timings(marks, metrics)
    metrics_path = out / METRICS_FILENAME
    metrics_path.write_text(json.dumps(metrics, indent=2))
    log.info(
        "trained %d rounds (best %d): valid auc %.4f, logloss %.4f in %.1fs",
        metrics["num_boosted_rounds"],
        metrics["best_iteration"],
        metrics["valid_auc"],
        metrics["valid_logloss"],
        metrics["seconds"]["total"],
    )
    return TrainSummary(
        model_path=model_path,
        metrics_path=metrics_path,
        checkpoint_path=str(result.checkpoint.path),
        best_iteration=int(metrics["best_iteration"]),
        train_rows=info.rows["train"],
        valid_rows=info.rows["valid"],
        valid_auc=float(metrics["valid_auc"]),
        valid_logloss=float(metrics["valid_logloss"]),
        seconds=float(metrics["seconds"]["total"]),
    )


def _timings(marks: dict[str, float], metrics: dict[str, Any]) -> dict[str, float]:
    """Where the wall time went; moves the workers' raw timing fields out of ``metrics``."""
    worker_start, worker_done = metrics.pop("worker_started_unix"), metrics.pop("worker_done_unix")
    return {
        "total": time.time() - marks["start"],
        "validate_shards": marks["validated"] - marks["start"],
        "ray_init": marks["fit_start"] - marks["validated"],
        "fit": marks["fit_done"] - marks["fit_start"],
        "fit_worker_start": worker_start - marks["fit_start"],
        "fit_load_shards": metrics.pop("load_seconds"),
        "fit_boost": metrics.pop("boost_seconds"),
        "fit_report_and_teardown": marks["fit_done"] - worker_done,
    }


def _metrics_record(
    info: ShardsInfo,
    config: dict[str, Any],
    reported: dict[str, Any],
    settings: Settings,
    seed: int,
) -> dict[str, Any]:
    """The content of ``train_metrics.json`` (checkpoint and timings are added after)."""
    return {
        **reported,
        "rows": {"train": info.rows["train"], "valid": info.rows["valid"]},
        "feature_service": info.metadata.get("feature_service", "ranking_v1"),
        "feature_columns": info.feature_columns,
        "data_window": info.metadata.get("data_window"),
        "params": config["params"],
        "objective": config["params"]["objective"],
        "num_boost_round": config["num_boost_round"],
        "early_stopping_rounds": config["early_stopping_rounds"],
        "seed": seed,
        "num_workers": settings.ray.num_workers,
        "cpus_per_worker": settings.ray.cpus_per_worker,
    }


# ---- entry point of the cluster profile's training Ray job ----------------------------

#: Written next to the model by :func:`main`: the :class:`TrainSummary` as JSON.
SUMMARY_FILENAME: Final = "train_summary.json"


def summary_to_json(summary: TrainSummary) -> str:
    """A :class:`TrainSummary` as JSON (paths as strings); :func:`summary_from_json` inverts it."""
    from dataclasses import asdict

    return json.dumps(asdict(summary), default=str, indent=2)


def summary_from_json(text: str) -> TrainSummary:
    """Read back what :func:`summary_to_json` wrote."""
    data = json.loads(text)
    data["model_path"], data["metrics_path"] = Path(data["model_path"]), Path(data["metrics_path"])
    return TrainSummary(**data)


def main(argv: list[str] | None = None) -> int:
    """``python -m flywheel.train --shards D --out O --settings-json S [--seed N]``.

    What the cluster profile's Ray job runs (``flywheel.ray_jobs``): the same
    :func:`train_model` as the local profile, on the shared workspace, joining the Ray
    cluster the job runs in (``$RAY_ADDRESS``, which Ray sets for a job's driver, or
    ``settings.ray.address``). Writes the model, its metrics and
    ``train_summary.json`` to ``--out``; returns the exit code.
    """
    import argparse

    from flywheel.config import Settings

    parser = argparse.ArgumentParser(prog="python -m flywheel.train", description=main.__doc__)
    parser.add_argument("--shards", required=True, help="preprocessed shards directory")
    parser.add_argument("--out", required=True, help="directory for the model and metrics")
    parser.add_argument("--settings-json", required=True, help="the run's Settings as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.model_validate_json(args.settings_json)
    summary = train_model(settings, args.shards, args.out, seed=args.seed)
    (Path(args.out) / SUMMARY_FILENAME).write_text(summary_to_json(summary))
    return 0

