"""Ranking-quality figures against a world's truth: expected AUC and graded NDCG@10.

A world that knows each impression's true probability ``p`` of a positive lets a scorer be
judged without the noise of which impressions happened to turn positive:

* **expected AUC** (``expected_auc``): the probability that a positive outranks a
  negative when each impression ``i`` is a positive with probability ``p_i``, independently:
  ``sum_{i != j} p_i (1 - p_j) [s_i > s_j] / sum_{i != j} p_i (1 - p_j)``, ties counting
  one half. It is the AUC with the oracle's probabilities as soft labels (each impression
  weighs ``p_i`` as a positive and ``1 - p_i`` as a negative, pairs of an impression with
  itself left out), i.e. the ratio of the expected correctly-ordered pair weight to the
  expected pair weight. With 0/1 ``p`` it is the ordinary AUC. Sorting by ``p`` maximises
  it (each pair contributes ``max(p_i (1 - p_j), p_j (1 - p_i))``), so the oracle is the
  ceiling, and a scorer that ignores the impressions (constant) gets 0.5.
* **graded NDCG@10** (``graded_ndcg_at_k``): NDCG@k per query with gain ``p_i``, the ideal
  order being by ``p``; averaged over queries with some gain. Ties in score are broken
  pessimistically (lowest gain first), as ``flywheel.evaluate.ndcg_at_k`` does for labels.
* **lift share** (``lift_share``): ``(AUC - 0.5) / (AUC_oracle - 0.5)``, how much of the
  oracle's lift over random a scorer achieves.
"""

from __future__ import annotations

import math

import numpy as np


def expected_auc(scores: np.ndarray, p: np.ndarray) -> float:
    """AUC of ``scores`` with soft labels ``p`` (see the module docstring); NaN if undefined."""
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if s.shape != p.shape:
        raise ValueError(f"scores {s.shape} and p {p.shape} differ in shape")
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1 or np.isnan(p).any()):
        raise ValueError("p must be probabilities in [0, 1]")
    _, group = np.unique(s, return_inverse=True)  # group = rank of the distinct score
    pos = np.bincount(group, weights=p)
    neg = np.bincount(group, weights=1.0 - p)
    below = np.cumsum(neg) - neg  # negative weight of strictly lower scores
    self_pairs = float(np.sum(p * (1.0 - p)))
    numerator = float(np.sum(pos * below) + 0.5 * (np.sum(pos * neg) - self_pairs))
    denominator = float(pos.sum() * neg.sum() - self_pairs)
    return numerator / denominator if denominator > 0 else math.nan


def graded_ndcg_at_k(scores: np.ndarray, p: np.ndarray, groups: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over groups with a positive total gain; gains are the probabilities ``p``."""
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    _, gid = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(gid.max()) + 1 if gid.size else 0
    discount = 1.0 / np.log2(np.arange(k) + 2.0)

    def dcg(order: np.ndarray) -> np.ndarray:
        g_sorted, gain = gid[order], p[order]
        starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
        sizes = np.diff(np.r_[starts, g_sorted.size])
        rank = np.arange(g_sorted.size) - np.repeat(starts, sizes)
        weight = np.where(rank < k, discount[np.minimum(rank, k - 1)], 0.0)
        return np.bincount(g_sorted, weights=gain * weight, minlength=n_groups)

    got = dcg(np.lexsort((p, -s, gid)))
    ideal = dcg(np.lexsort((-p, gid)))
    keep = ideal > 0
    return float(np.mean(got[keep] / ideal[keep])) if keep.any() else math.nan


def lift_share(auc: float, auc_oracle: float) -> float:
    """``(auc - 0.5) / (auc_oracle - 0.5)``; NaN when the oracle has no lift."""
    lift = auc_oracle - 0.5
    return (auc - 0.5) / lift if lift > 0 else math.nan


def calibration_gap(p: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(observed positive rate - mean ``p``, its standard error if labels ~ Bernoulli(p))."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    se = math.sqrt(float(np.sum(p * (1.0 - p)))) / max(p.size, 1)
    return float(y.mean() - p.mean()), se
