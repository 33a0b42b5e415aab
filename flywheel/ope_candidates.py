"""The off-policy check's exact target propensities from the candidate log.

Serving logs one record per request with every candidate (``serving.log_candidates``;
``CANDIDATE_LOG_SCHEMA``, written by :func:`flywheel.serving.records._candidate_record`):
item ids, the raw values the champion scored, the served order and the slate's epsilon.
For a slate with such a record the challenger scores **every** candidate from those
values, and at each served position ``k`` its epsilon-greedy probability of the logged
item given the logged prefix is exact:

    q = (1 - epsilon) [the item is the best of the candidates not served above k]
        + epsilon / (C - k)

with ``C`` the request's candidate count and "best" the first candidate (in logged order)
of the highest challenger score among those left: serving's own tie rule
(:func:`flywheel.serving.exploration.epsilon_greedy`), so ``q`` sums to 1 over the
candidates left at every slot. A slate without a record (candidates not logged, sampled
out, or a record that disagrees with the served log: another item at a position, or a
candidate count that does not fit the logged propensity) keeps the served-only
approximation of :mod:`flywheel.evaluate_ope`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from flywheel.evaluate_ope import OpeUnavailable

if TYPE_CHECKING:
    import pandas as pd
    import xgboost as xgb

    from flywheel.config import Settings

#: Scores of stacked candidates: their raw columns (one row per candidate) and each row's
#: scoring time in epoch seconds.
Scorer = Callable[["pd.DataFrame", np.ndarray], np.ndarray]


@dataclass(frozen=True)
class FullTargets:
    """Per row of the slots frame: ``target`` (``q``; NaN where not ``full``) and ``full``
    (its slate has a usable candidate record); ``slates`` with one; ``mismatched``: slates
    whose record disagreed with the served log (left to the served-only path)."""

    target: np.ndarray
    full: np.ndarray
    slates: int
    mismatched: int


def candidate_records(
    settings: Settings, champion: str, since: datetime, until: datetime
) -> pd.DataFrame:
    """The champion's normal-traffic candidate records with ``since <= ts < until``, one per
    request (the first if a request was logged twice); empty when none were logged."""
    import pyarrow.compute as pc

    from flywheel.predlog import read_candidate_logs

    table = read_candidate_logs(settings, since)
    if table.num_rows:
        keep = pc.and_(
            pc.equal(table["model_version"], champion),
            pc.invert(pc.fill_null(table["degraded"], False)),
        )
        table = table.filter(keep)
    frame = table.to_pandas()
    if len(frame):
        frame = frame.loc[frame["ts"] < until]
    return frame.drop_duplicates("request_id", keep="first").reset_index(drop=True)


def booster_scorer(booster: xgb.Booster, service: str) -> Scorer:
    """The challenger's scores from raw values, as :func:`flywheel.evaluate_ope.challenger_scores`
    computes them for served items."""

    def score(raw: pd.DataFrame, at_unix: np.ndarray) -> np.ndarray:
        from flywheel.ranking import feature_set, model_inputs
        from flywheel.train import booster_features, predict

        spec = feature_set(service)
        missing = [n for n in spec.raw if n not in raw.columns]
        if missing:
            raise OpeUnavailable(
                f"the candidate log lacks raw features of the challenger's service "
                f"{service!r} (e.g. {missing[0]!r}; logged by a model of another service)"
            )
        x = model_inputs(raw, at_unix, service)
        columns = dict(zip(spec.model, x.T, strict=True))
        return predict(booster, np.column_stack([columns[c] for c in booster_features(booster)]))

    return score


def _stack(records: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Every record's candidates stacked: raw columns (those all records carry), each row's
    scoring time, and each record's candidate count."""
    import pandas as pd

    from flywheel.monitor.drift import unix_seconds
    from flywheel.serving.records import candidate_columns

    counts = records["item_ids"].map(len).to_numpy(dtype=np.int64)
    parsed = [candidate_columns(r) for r in records.to_dict("records")]
    names = sorted(set.intersection(*(set(p) for p in parsed))) if parsed else []
    raw = pd.DataFrame({n: np.concatenate([p[n] for p in parsed]) for n in names})
    at = np.repeat(unix_seconds(records["ts"]), counts)
    return raw, at, counts


def full_targets(
    slots: pd.DataFrame,
    records: pd.DataFrame,
    remaining: np.ndarray,
    epsilon: float,
    score: Scorer,
) -> FullTargets:
    """Exact ``q`` for the rows of ``slots`` (served slots: ``request_id``, ``item_id``,
    ``position``) whose request has a record in ``records`` (:func:`candidate_records`).

    Args:
        remaining: each slot's candidate count read back from its logged propensity
            (:func:`flywheel.evaluate_ope.remaining_candidates`): a record must agree.
        epsilon: the target's exploration rate; the records must have been served with it.
        score: the challenger's scorer (:func:`booster_scorer`).

    Raises:
        OpeUnavailable: records served with another epsilon, or lacking the scorer's inputs.
    """
    n_rows = len(slots)
    none = FullTargets(np.full(n_rows, np.nan), np.zeros(n_rows, dtype=bool), 0, 0)
    if records.empty or not n_rows:
        return none
    records = records.loc[records["request_id"].isin(slots["request_id"])].reset_index(drop=True)
    if records.empty:
        return none
    eps = records["epsilon"].to_numpy(dtype=np.float64)
    if not np.allclose(eps, epsilon, rtol=0, atol=1e-12):
        raise OpeUnavailable(
            f"candidate records were served with epsilon {float(eps[0]):g}, not "
            f"ope.epsilon={epsilon}: set it to serving's epsilon"
        )
    raw, at, counts = _stack(records)
    scores = np.asarray(score(raw, at), dtype=np.float64)
    n, width = len(records), int(counts.max())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(scores)) - np.repeat(starts, counts)
    matrix = np.full((n, width), -np.inf)
    matrix[np.repeat(np.arange(n), counts), col] = scores
    served_lists = records["served"].map(list).tolist()
    depth = max(len(s) for s in served_lists)
    served = np.full((n, depth), -1, dtype=np.int64)
    for row, s in enumerate(served_lists):
        served[row, : len(s)] = s
    q = _greedy_targets(matrix, counts, served, epsilon)

    # Each slot of a slate with a record: its record row and position, checked against it.
    row_of = {rid: r for r, rid in enumerate(records["request_id"])}
    found = slots["request_id"].map(row_of).to_numpy(dtype=np.float64)
    has = ~np.isnan(found)
    r_int = np.where(has, found, 0).astype(np.int64)
    k = slots["position"].to_numpy(dtype=np.int64)
    in_range = has & (k < np.array([len(s) for s in served_lists])[r_int])
    k_safe = np.where(in_range, k, 0)
    index = served[r_int, k_safe]
    items = records["item_ids"].to_numpy()
    logged = slots["item_id"].astype(str).to_numpy()
    agree = in_range & (counts[r_int] - k_safe == np.asarray(remaining).astype(np.int64))
    pairs = zip(agree.tolist(), r_int.tolist(), index.tolist(), logged, strict=True)
    agree &= np.array([a and str(items[i][j]) == it for a, i, j, it in pairs], dtype=bool)
    # A slate is full only if every one of its slots agrees with its record.
    bad_slates = set(slots["request_id"].to_numpy()[has & ~agree])
    full = has & ~slots["request_id"].isin(bad_slates).to_numpy()
    target = np.where(full, q[r_int, k_safe], np.nan)
    full_slates = int(slots.loc[full, "request_id"].nunique())
    return FullTargets(target, full, full_slates, len(bad_slates))


def _greedy_targets(
    scores: np.ndarray, counts: np.ndarray, served: np.ndarray, epsilon: float
) -> np.ndarray:
    """``q[r, k]``: the target's probability of ``served[r, k]`` at position ``k`` given the
    items served above it, from ``scores`` ``[n, width]`` (``-inf`` padding past
    ``counts[r]``; ``served`` padded with -1)."""
    n, width = scores.shape
    taken = np.arange(width)[None, :] >= counts[:, None]
    rows = np.arange(n)
    q = np.zeros(served.shape)
    for k in range(served.shape[1]):
        live = served[:, k] >= 0
        best = np.argmax(np.where(taken, -np.inf, scores), axis=1)
        left = np.maximum(counts - k, 1)
        q[:, k] = np.where(live, epsilon / left + (1.0 - epsilon) * (served[:, k] == best), 0.0)
        taken[rows[live], served[live, k]] = True
    return q
