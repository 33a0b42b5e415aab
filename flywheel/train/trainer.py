"""Train the ranking model: data-parallel XGBoost on Ray Train over the preprocessed shards.

Input: a shards directory (:mod:`flywheel.train.shards`). Output (in ``out_dir``):
``model.ubj`` (the booster, which keeps its column names, so a model is always scored
on its own columns: :func:`~flywheel.train.booster.predict`), ``train_metrics.json`` and
the Ray Train run directory with its checkpoint under ``out_dir/ray_results``. The
workers run :func:`flywheel.train.worker._train_loop_per_worker`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from flywheel.ray_runtime import ensure_ray
from flywheel.train.booster import MODEL_FILENAME
from flywheel.train.shards import ShardsInfo, check_labels, inspect_shards
from flywheel.train.worker import _train_loop_per_worker

if TYPE_CHECKING:
    from flywheel.config import Settings, TrainSettings

# The name the stage has always logged under (one module before it became a package).
log = logging.getLogger("flywheel.train")

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
