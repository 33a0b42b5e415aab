"""Log records of a ranked request: one per served item (the prediction log) and one with
every candidate (the candidate log)."""

from __future__ import annotations

import base64
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


#: Compact JSON of a record's feature values (one encoder for every request).
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def raw_matrix(features: pd.DataFrame | Mapping[str, Any], raw: Sequence[str]) -> np.ndarray:
    """The raw columns ``raw`` of every candidate as one float64 matrix (NaN: missing),
    built once per request for both records."""
    first = feature_column(features, raw[0])
    out = np.empty((len(first), len(raw)), dtype=np.float64)
    out[:, 0] = first
    for j, name in enumerate(raw[1:], start=1):
        out[:, j] = feature_column(features, name)
    return out


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
    matrix: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One log record per served item; ``features`` holds the raw values the model saw
    (a DataFrame or a mapping of columns: ``item_id``, ``category`` and ``raw``, the raw
    features of the model's feature service). Only the served rows are read.

    ``degraded``: ranked without the online store; each record then carries
    ``"degraded": true`` (normal records leave the optional field out), which the dataset
    stage and the monitor exclude. ``matrix``: :func:`raw_matrix` of ``features``, when the
    caller has it already."""
    served = np.asarray(slate.indices, dtype=np.int64)
    names = tuple(raw)
    values_of = (raw_matrix(features, names) if matrix is None else matrix)[served]
    items, categories = list(features["item_id"]), list(features["category"])
    user, dumps = str(user_id), _dumps
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
    matrix: np.ndarray | None = None,
) -> dict[str, Any]:
    """The request's candidate record (``CANDIDATE_LOG_SCHEMA``): every candidate, the
    champion's scores, the served order, ``epsilon`` and the raw values the champion scored.

    A raw column every candidate shares (the user's own features; all missing counts as
    shared) goes into the ``features`` JSON once; the others (``varying``) as one float64
    matrix, candidates x columns, NaN for missing, in ``values`` (base64 of its
    little-endian bytes): exact, and ~100x cheaper to encode than the same numbers as JSON
    text. ``category``: one value when shared, else the list. ``degraded`` as in
    :func:`_prediction_records`; ``matrix`` as there."""
    names = tuple(raw)
    if matrix is None:
        matrix = raw_matrix(features, names)
    missing = np.isnan(matrix)
    same = ((matrix == matrix[0]) | missing).all(axis=0) & (missing.all(0) | ~missing.any(0))
    categories = list(features["category"])
    shared: dict[str, Any] = {
        "category": categories[0] if len(set(categories)) == 1 else categories
    }
    first = matrix[0].tolist()
    shared.update(
        (n, None if m else first[j])
        for j, (n, m) in enumerate(zip(names, missing.all(0).tolist(), strict=True))
        if same[j]
    )
    varying = [n for n, k in zip(names, same.tolist(), strict=True) if not k]
    values = np.ascontiguousarray(matrix[:, ~same], dtype="<f8")
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
        "features": _dumps(shared),
        "varying": varying,
        "values": base64.b64encode(values.tobytes()).decode("ascii"),
    }
    if degraded:
        record["degraded"] = True
    return record


def candidate_columns(record: Mapping[Any, Any]) -> dict[str, Any]:
    """A candidate record's raw values back as columns (one entry per candidate): the
    inverse of :func:`_candidate_record`'s encoding."""
    n = int(record["candidates"])
    shared = json.loads(record["features"]) if record.get("features") else {}
    columns: dict[str, Any] = {}
    for name, v in shared.items():
        if name == "category":
            columns[name] = np.array(v if isinstance(v, list) else [v] * n, dtype=object)
        else:
            columns[name] = np.full(n, np.nan if v is None else float(v))
    listed = record.get("varying")
    varying = [] if listed is None else [str(v) for v in listed]
    if varying:
        flat = np.frombuffer(base64.b64decode(record["values"]), dtype="<f8")
        matrix = flat.reshape(n, len(varying))
        columns.update((name, matrix[:, j]) for j, name in enumerate(varying))
    return columns
