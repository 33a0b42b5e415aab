"""Synthetic preprocessed shards with a known ground truth, for train/evaluate tests.

The label is drawn from a logistic model over four of ranking_v1's model columns (one
pairwise interaction included, so trees have something to find); the other features are
pure noise. Because the true click probability of every row is known, a trained model's
AUC can be compared with the best AUC any model could reach on the same rows (the
"oracle" AUC, computed from the true probabilities).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.ranking import model_features

SPLITS = ("train", "valid", "test")
#: The features that carry signal, and their logistic weights.
TRUE_WEIGHTS = {
    "cat_affinity_7d": 1.2,
    "item_conversion_rate_7d": 0.9,
    "recency_hours": -0.7,
    "price_ratio": -0.4,
}
INTERACTION = ("cat_affinity_7d", "item_conversion_rate_7d", 0.6)
INTERCEPT = -1.0
START = datetime(2025, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SyntheticShards:
    """Where the shards are and the true click probability of every row, per split."""

    root: Path
    frames: dict[str, pd.DataFrame]
    true_prob: dict[str, np.ndarray]


def true_probability(features: pd.DataFrame) -> np.ndarray:
    """The ground-truth click probability of each row (the oracle's score)."""
    logit = np.full(len(features), INTERCEPT)
    for name, weight in TRUE_WEIGHTS.items():
        logit += weight * features[name].to_numpy(np.float64)
    a, b, w = INTERACTION
    logit += w * features[a].to_numpy(np.float64) * features[b].to_numpy(np.float64)
    return 1.0 / (1.0 + np.exp(-logit))


def make_frame(
    n_rows: int, seed: int, group_size: int = 10, service: str = "ranking_v1"
) -> tuple[pd.DataFrame, np.ndarray]:
    """Build ``n_rows`` rows in the shard contract, time-ordered, and their true probability."""
    rng = np.random.default_rng(seed)
    feats = {c: rng.standard_normal(n_rows).astype(np.float32) for c in model_features(service)}
    frame = pd.DataFrame(feats)
    prob = true_probability(frame)
    frame["label"] = (rng.random(n_rows) < prob).astype(np.int8)
    frame["group_id"] = [f"g{i // group_size:07d}" for i in range(n_rows)]
    # ids are strings in the shard contract
    frame["user_id"] = [f"u-{i // group_size}" for i in range(n_rows)]
    frame["item_id"] = [f"sku-{i}" for i in rng.integers(0, 5_000, n_rows)]
    seconds = np.sort(rng.uniform(0, 14 * 86_400, n_rows))
    frame["event_timestamp"] = pd.to_datetime(START) + pd.to_timedelta(seconds, unit="s")
    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[us, UTC]")
    return frame, prob


def write_shards(
    root: Path,
    n_rows: int = 20_000,
    seed: int = 0,
    files_per_split: int = 2,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    service: str = "ranking_v1",
) -> SyntheticShards:
    """Write ``root/{train,valid,test}/part-*.parquet`` and ``root/metadata.json``.

    Splits are by time, as the preprocess stage does: the earliest rows train, the latest
    test. Groups never straddle a split because split points are multiples of the group size.
    ``service``: whose model columns the shards hold (ranking_v1's shards, as written before
    services were versioned, name none).
    """
    frame, prob = make_frame(n_rows, seed, service=service)
    cut1 = int(n_rows * fractions[0]) // 10 * 10
    cut2 = int(n_rows * (fractions[0] + fractions[1])) // 10 * 10
    bounds = {"train": (0, cut1), "valid": (cut1, cut2), "test": (cut2, n_rows)}
    frames, probs = {}, {}
    for split, (lo, hi) in bounds.items():
        part = frame.iloc[lo:hi].reset_index(drop=True)
        frames[split], probs[split] = part, prob[lo:hi]
        write_split(root / split, part, files_per_split)
    meta = {
        **({} if service == "ranking_v1" else {"feature_service": service}),
        "feature_columns": list(model_features(service)),
        "label": "label",
        "group": "group_id",
        "data_window": {
            "start": START.isoformat(),
            "end": (START + timedelta(days=14)).isoformat(),
        },
        "rows": {s: len(f) for s, f in frames.items()},
    }
    (root / "metadata.json").write_text(json.dumps(meta, indent=2))
    return SyntheticShards(root=root, frames=frames, true_prob=probs)


def write_split(split_dir: Path, frame: pd.DataFrame, n_files: int) -> None:
    """Write one split as ``n_files`` Parquet files with float32 features and int8 labels."""
    split_dir.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), n_files)):
        table = pa.Table.from_pandas(frame.iloc[chunk], preserve_index=False)
        pq.write_table(table, split_dir / f"part-{i:03d}.parquet")
