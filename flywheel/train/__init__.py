"""The train stage: data-parallel XGBoost on Ray Train over the preprocessed shards.

One module per concern; this package re-exports the names the rest of Flywheel imports:

- :mod:`~flywheel.train.shards`: the shards contract (``D/{train,valid,test}/*.parquet``
  plus ``D/metadata.json``): validate a directory, count labels, read a split.
- :mod:`~flywheel.train.booster`: load ``model.ubj``, a booster's columns, its scores.
- :mod:`~flywheel.train.trainer`: :func:`train_model` (booster parameters, the
  XGBoostTrainer run on the driver, ``train_metrics.json``).
- :mod:`~flywheel.train.worker`: the Ray Train worker body (row ranges, DMatrix, boost
  with early stopping, report once).
- :mod:`~flywheel.train.job`: ``python -m flywheel.train``, the cluster profile's Ray job.

Importing this package loads no Ray and no XGBoost; those are imported where they are used.
"""

from flywheel.train.booster import MODEL_FILENAME, booster_features, load_booster, predict
from flywheel.train.job import SUMMARY_FILENAME, main, summary_from_json, summary_to_json
from flywheel.train.shards import (
    GROUP,
    LABEL,
    SPLITS,
    ShardError,
    ShardsInfo,
    check_labels,
    inspect_shards,
    read_split,
)
from flywheel.train.trainer import (
    DEFAULT_EARLY_STOPPING_ROUNDS,
    DEFAULT_NUM_BOOST_ROUND,
    DEFAULT_PARAMS,
    METRICS_FILENAME,
    TrainSummary,
    _split_params,
    train_model,
)
from flywheel.train.worker import _best_metrics, row_range

__all__ = [
    "DEFAULT_EARLY_STOPPING_ROUNDS",
    "DEFAULT_NUM_BOOST_ROUND",
    "DEFAULT_PARAMS",
    "GROUP",
    "LABEL",
    "METRICS_FILENAME",
    "MODEL_FILENAME",
    "SPLITS",
    "SUMMARY_FILENAME",
    "ShardError",
    "ShardsInfo",
    "TrainSummary",
    "_best_metrics",
    "_split_params",
    "booster_features",
    "check_labels",
    "inspect_shards",
    "load_booster",
    "main",
    "predict",
    "read_split",
    "row_range",
    "summary_from_json",
    "summary_to_json",
    "train_model",
]
