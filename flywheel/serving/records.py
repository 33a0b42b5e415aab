"""Prediction records: what the log holds for each served item."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.ranking import RAW_FEATURES
from flywheel.serving.exploration import Slate

if TYPE_CHECKING:
    import pandas as pd


def _prediction_records(
    request_id: str,
    at: datetime,
    user_id: str,
    model_version: str,
    features: pd.DataFrame,
    scores: np.ndarray,
    slate: Slate,
) -> list[dict[str, Any]]:
    """One log record per served item; ``features`` holds the raw values the model saw."""
    raw = features[list(RAW_FEATURES)].to_numpy(dtype=np.float64)
    items = features["item_id"].tolist()
    categories = features["category"].tolist()
    records = []
    for position, (i, p) in enumerate(zip(slate.indices, slate.propensities, strict=True)):
        values: dict[str, Any] = {"category": categories[i]}
        values.update(
            (n, None if math.isnan(v) else v)
            for n, v in zip(RAW_FEATURES, raw[i].tolist(), strict=True)
        )
        records.append(
            {
                "request_id": request_id,
                "ts": at,
                "user_id": str(user_id),
                "item_id": str(items[i]),
                "position": position,
                "score": float(scores[i]),
                "model_version": model_version,
                "propensity": float(p),
                "features": json.dumps(values, separators=(",", ":")),
            }
        )
    return records
