"""The training objective: what the booster optimises, and what its scores mean.

``Settings.train.objective`` (:class:`flywheel.config.TrainSettings`) picks one of:

- ``binary:logistic`` (the default): pointwise log loss; a score is the click
  **probability** of one impression, in ``[0, 1]``, comparable across users and requests.
  Early stopping watches the valid split's log loss.
- ``rank:ndcg`` / ``rank:pairwise``: XGBoost's LambdaMART on query groups, the shards'
  ``group_id`` (the browsing session of an organic impression, the request of a served
  one); ``lambdarank_pair_method`` (``topk``: pairs with the top
  ``lambdarank_num_pair_per_sample`` documents of the model's ranking; ``mean``: that
  many random pairs per document) says how pairs are built. A score is an **unnormalised
  ranking score** (any real number): only its order within one query is trained, so it
  is no probability and its level across queries means little. Early stopping watches the
  valid split's ``ndcg@10``.

XGBoost needs a query's rows contiguous (``qid`` non-decreasing). The shards are in time
order, where sessions interleave, and Ray Train gives each worker a contiguous row range,
which cuts the sessions open at its edges. :func:`worker_rows` therefore gives each
worker the groups that *start* in its range, whole: it reads past its range's end to the
last row of those groups and skips the rows of groups that started before its range (the
previous worker has them). Every row is used once, no group is split, and within a group
the shard's row order (time order) is kept.

``lambdarank_unbiased`` is not offered: XGBoost takes a row's place within its query as
its display position, and the shards carry no position (served impressions lose theirs in
the dataset stage; an organic session's order is browsing order, not a served slot).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

if TYPE_CHECKING:
    import xgboost as xgb

    from flywheel.config import TrainSettings

Objective = Literal["binary:logistic", "rank:ndcg", "rank:pairwise"]
OBJECTIVES: Final[tuple[str, ...]] = ("binary:logistic", "rank:ndcg", "rank:pairwise")
ScoreKind = Literal["probability", "ranking"]
#: The valid-split metric ranking objectives early-stop on (higher is better).
RANKING_STOP_METRIC: Final = "ndcg@10"


def is_ranking(objective: str) -> bool:
    """Whether ``objective`` trains on query groups (and scores are not probabilities)."""
    return objective.startswith("rank:")


def booster_params(train: TrainSettings) -> dict[str, Any]:
    """The XGBoost parameters of the configured objective (objective, eval metrics, pairs)."""
    if not is_ranking(train.objective):
        # Early stopping watches the last metric listed, so logloss (smoother than AUC) is last.
        return {"objective": train.objective, "eval_metric": ["auc", "logloss"]}
    return {
        "objective": train.objective,
        "eval_metric": ["auc", RANKING_STOP_METRIC],
        "lambdarank_pair_method": train.lambdarank_pair_method,
        "lambdarank_num_pair_per_sample": train.lambdarank_num_pair_per_sample,
    }


def stop_metric(objective: str) -> tuple[str, bool]:
    """``(metric name, maximize)`` early stopping watches on the valid split."""
    return (RANKING_STOP_METRIC, True) if is_ranking(objective) else ("logloss", False)


def check_objective(objective: object) -> str:
    """``objective`` if it is one of :data:`OBJECTIVES`; ValueError naming the field if not."""
    if objective not in OBJECTIVES:
        raise ValueError(
            f"train params: objective={objective!r} is not supported; expected one of "
            f"{', '.join(OBJECTIVES)} (Settings.train.objective)"
        )
    return str(objective)


def score_kind(booster: xgb.Booster) -> ScoreKind:
    """``probability`` for a binary:logistic booster, ``ranking`` for a rank:* one.

    Read from the booster's own saved configuration, so a registered model says what its
    scores mean without any side file.
    """
    name = json.loads(booster.save_config())["learner"]["objective"]["name"]
    return "ranking" if is_ranking(str(name)) else "probability"


@dataclass(frozen=True)
class WorkerRows:
    """Which rows of a split one worker trains on, grouped: see :func:`worker_rows`.

    ``read_stop``: read rows ``[start, read_stop)``; ``order``: indices into those rows,
    the kept ones, group by group; ``qid``: the query id of each kept row (non-decreasing).
    """

    read_stop: int
    order: np.ndarray
    qid: np.ndarray


def group_codes(groups: np.ndarray) -> np.ndarray:
    """Each row's group as an int code numbered by first appearance (0, 1, ... in row order)."""
    import pandas as pd

    codes, _ = pd.factorize(np.asarray(groups), sort=False)
    return np.asarray(codes, dtype=np.int64)


def worker_rows(codes: np.ndarray, start: int, stop: int) -> WorkerRows:
    """The rows of the groups that start in ``[start, stop)``, whole and contiguous.

    Args:
        codes: :func:`group_codes` of the whole split (first-appearance order, so the
            groups starting in the range are exactly the codes ``[codes[start] ..]`` up
            to the first code of the next range).
        start, stop: this worker's nominal row range.

    Returns:
        A :class:`WorkerRows`; a range in which no group starts keeps nothing.
    """
    n = len(codes)
    if start >= stop or start >= n:
        return WorkerRows(start, np.zeros(0, np.int64), np.zeros(0, np.int64))
    # First-appearance codes: the groups first seen before ``start`` are 0..max(codes[:start]).
    lo = int(codes[:start].max()) + 1 if start else 0
    hi = int(codes[: min(stop, n)].max()) + 1
    if lo >= hi:
        return WorkerRows(start, np.zeros(0, np.int64), np.zeros(0, np.int64))
    tail = codes[start:]
    mine = (tail >= lo) & (tail < hi)
    read_stop = start + int(np.flatnonzero(mine)[-1]) + 1
    kept = np.flatnonzero(mine[: read_stop - start])
    order = kept[np.argsort(tail[kept], kind="stable")]
    return WorkerRows(read_stop, order, tail[order] - lo)


def group_sizes(qid: np.ndarray) -> np.ndarray:
    """Rows per query of a non-decreasing ``qid`` (for checks and logs)."""
    if len(qid) == 0:
        return np.zeros(0, np.int64)
    return np.diff(np.r_[np.flatnonzero(np.r_[True, qid[1:] != qid[:-1]]), len(qid)])
