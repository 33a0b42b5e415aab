"""Distribution distances and proportion intervals: PSI, Jensen-Shannon, KS, Wilson.

PSI and Jensen-Shannon compare two *binned* distributions. The bins come from the reference
(the champion's training set): interior edges at its quantiles (``n_bins`` of them, equal
edges merged, so a discrete input gets one bin per value it mostly takes), plus a bin of
its own for missing values (NaN). A value ``x`` falls in bin ``i`` when
``edges[i-1] < x <= edges[i]`` (``numpy.searchsorted(..., side="left")``).

- **PSI** (population stability index): ``sum_i (a_i - e_i) * ln(a_i / e_i)`` over the
  bins' shares ``e`` (reference) and ``a`` (served), each share floored at
  :data:`PSI_FLOOR` so an empty bin gives a large, finite value. 0.1 / 0.25 are the usual
  warning / alert levels (``Settings.monitor``).
- **Jensen-Shannon distance**: :func:`scipy.spatial.distance.jensenshannon` of the same
  shares, base 2, so it lies in [0, 1] (the square root of the JS divergence).
- **KS**: :func:`scipy.stats.ks_2samp` on the raw (finite) values, for continuous inputs.
- **Wilson interval** of a proportion: :meth:`scipy.stats.binomtest(...).proportion_ci`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

#: Shares below this count as this in PSI (an empty bin would make it infinite).
PSI_FLOOR: Final = 1e-4


def bin_edges(reference: np.ndarray, n_bins: int) -> np.ndarray:
    """Interior bin edges at the reference's quantiles (finite values; duplicates merged).

    Returns an empty array when the reference has no finite value or a single one.
    """
    if n_bins < 2:
        raise ValueError(f"n_bins={n_bins}; expected at least 2")
    values = np.asarray(reference, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros(0)
    quantiles = np.quantile(values, np.arange(1, n_bins) / n_bins)
    return np.unique(quantiles)


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` per bin of ``edges`` (``len(edges) + 1`` bins), then NaN's share.

    Returns ``len(edges) + 2`` shares summing to 1 (all zero when ``values`` is empty).
    """
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    idx = np.searchsorted(edges, values[~missing], side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
    counts = np.append(counts, float(missing.sum()))
    total = counts.sum()
    return counts / total if total else counts


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index of shares ``actual`` against ``expected`` (same bins)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    if e.shape != a.shape:
        raise ValueError(f"expected has {e.shape} bins, actual {a.shape}; bin them alike")
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(expected: np.ndarray, actual: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two share vectors."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(expected, actual, base=2.0))


@dataclass(frozen=True)
class KSResult:
    """Two-sample Kolmogorov-Smirnov: the largest CDF gap and its p-value."""

    statistic: float
    pvalue: float


def ks(reference: np.ndarray, served: np.ndarray) -> KSResult:
    """:func:`scipy.stats.ks_2samp` on the finite values of each sample (NaN if one is empty)."""
    from scipy.stats import ks_2samp

    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(served, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        return KSResult(math.nan, math.nan)
    result = ks_2samp(ref, cur)
    return KSResult(float(result.statistic), float(result.pvalue))


@dataclass(frozen=True)
class Proportion:
    """``successes / trials`` with its 95% Wilson score interval (NaN when no trials)."""

    successes: int
    trials: int
    rate: float
    low: float
    high: float


def proportion(successes: int, trials: int, level: float = 0.95) -> Proportion:
    """The rate ``successes / trials`` and its Wilson score interval at ``level``."""
    from scipy.stats import binomtest

    k, n = int(successes), int(trials)
    if n == 0:
        return Proportion(k, n, math.nan, math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"successes={k} outside [0, trials={n}]")
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return Proportion(k, n, k / n, float(ci.low), float(ci.high))
