"""Prediction records: what the log holds for each served item."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.ranking import RAW_FEATURES, feature_column
from flywheel.serving.exploration import Slate

if TYPE_CHECKING:
    import pandas as pd


def _prediction_records(
    request_id: str,
    at: datetime,
    user_id: str,
    model_version: str,
    features: pd.DataFrame | Mapping[str, Any],
    scores: np.ndarray,
    slate: Slate,
    raw: Sequence[str] = RAW_FEATURES,
    degraded: bool = False,
) -> list[dict[str, Any]]:
    """One log record per served item; ``features`` holds the raw values the model saw
    (a DataFrame or a mapping of columns: ``item_id``, ``category`` and ``raw``, the raw
    features of the model's feature service). Only the served rows are read.

    ``degraded``: ranked without the online store; each record then carries
    ``"degraded": true`` (normal records leave the optional field out), which the dataset
    stage and the monitor exclude."""
    served = np.asarray(slate.indices, dtype=np.int64)
    names = tuple(raw)
    values_of = np.column_stack([feature_column(features, n)[served] for n in names])
    items, categories = list(features["item_id"]), list(features["category"])
    user, dumps = str(user_id), json.JSONEncoder(separators=(",", ":")).encode
    records = []
    for position, (i, p, row) in enumerate(
        zip(served.tolist(), slate.propensities.tolist(), values_of.tolist(), strict=True)
    ):
        values: dict[str, Any] = {"category": categories[i]}
        values.update((n, None if math.isnan(v) else v) for n, v in zip(names, row, strict=True))
        record = {
            "request_id": request_id,
            "ts": at,
            "user_id": user,
            "item_id": str(items[i]),
            "position": position,
            "score": float(scores[i]),
            "model_version": model_version,
            "propensity": float(p),
            "features": dumps(values),
        }
        if degraded:
            record["degraded"] = True
        records.append(record)
    return records


def _shared_or_list(values: np.ndarray) -> Any:
    """One value when every candidate has it (NaN as ``None``), else the list."""
    missing = np.isnan(values)
    if missing.all():
        return None
    if not missing.any() and (values == values[0]).all():
        return float(values[0])
    return [None if m else v for m, v in zip(missing.tolist(), values.tolist(), strict=True)]


def _candidate_record(
    request_id: str,
    at: datetime,
    user_id: str,
    model_version: str,
    features: pd.DataFrame | Mapping[str, Any],
    scores: np.ndarray,
    slate: Slate,
    epsilon: float,
    raw: Sequence[str] = RAW_FEATURES,
    degraded: bool = False,
) -> dict[str, Any]:
    """The request's candidate record (``CANDIDATE_LOG_SCHEMA``): every candidate, the
    champion's scores, the served order, ``epsilon`` and the raw values the champion scored,
    column by column (a column every candidate shares is written once). ``degraded`` as in
    :func:`_prediction_records`."""
    categories = list(features["category"])
    if len(set(categories)) == 1:
        category: Any = categories[0]
    else:
        category = categories
    columns: dict[str, Any] = {"category": category}
    columns.update((n, _shared_or_list(feature_column(features, n))) for n in raw)
    record: dict[str, Any] = {
        "request_id": request_id,
        "ts": at,
        "user_id": str(user_id),
        "model_version": model_version,
        "epsilon": float(epsilon),
        "candidates": len(categories),
        "served": np.asarray(slate.indices, dtype=np.int64).tolist(),
        "item_ids": [str(i) for i in features["item_id"]],
        "scores": np.asarray(scores, dtype=np.float64).tolist(),
        "features": json.JSONEncoder(separators=(",", ":")).encode(columns),
    }
    if degraded:
        record["degraded"] = True
    return record
