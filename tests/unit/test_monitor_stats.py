"""The monitor's statistics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flywheel.monitor.stats import bin_edges, bin_shares, js_distance, ks, proportion, psi


def test_psi_of_two_bins_by_hand() -> None:
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5)
    want = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(want)
    assert want == pytest.approx(0.274653, abs=1e-6)
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_psi_floors_an_empty_bin() -> None:
    # The empty bin counts as 1e-4: (1e-4 - 0.5) ln(1e-4 / 0.5) + (1 - 0.5) ln(1 / 0.5)
    want = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2)
    assert psi([0.5, 0.5], [0.0, 1.0]) == pytest.approx(want)


def test_js_distance_by_hand() -> None:
    assert js_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    # M = (0.75, 0.25); KL(p||M) = 0.5 log2(2/3) + 0.5 log2(2); KL(q||M) = log2(4/3)
    kl_p = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_q = math.log2(1 / 0.75)
    assert js_distance([0.5, 0.5], [1.0, 0.0]) == pytest.approx(math.sqrt((kl_p + kl_q) / 2))
    assert js_distance([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0, abs=1e-12)


def test_ks_by_hand() -> None:
    # Disjoint samples of 3: D = 1; exactly 2 of the C(6, 3) = 20 orderings reach it.
    result = ks(np.array([1.0, 2, 3]), np.array([4.0, 5, 6]))
    assert result.statistic == 1.0
    assert result.pvalue == pytest.approx(0.1)
    # CDF gap is largest at 2 (0.5 vs 0) and at 4 (1 vs 0.5).
    assert ks(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6])).statistic == 0.5
    # NaN is dropped, an empty side gives NaN.
    assert ks(np.array([1.0, np.nan, 2]), np.array([1.0, 2])).statistic == 0.0
    assert math.isnan(ks(np.array([np.nan]), np.array([1.0])).statistic)


def test_bins_from_reference_quantiles_with_a_missing_bin() -> None:
    edges = bin_edges(np.arange(1.0, 11.0), 2)
    assert edges.tolist() == [5.5]
    shares = bin_shares(np.array([1.0, 6.0, np.nan, 5.5]), edges)
    # 1 and 5.5 (an edge belongs to the bin below it), 6, then NaN.
    assert shares.tolist() == [0.5, 0.25, 0.25]
    # A constant input collapses to one edge: two value bins and the missing bin.
    assert bin_edges(np.zeros(50), 10).tolist() == [0.0]
    with pytest.raises(ValueError, match="n_bins"):
        bin_edges(np.zeros(3), 1)


def test_wilson_interval_by_hand() -> None:
    z = 1.959963984540054
    half = z * math.sqrt(0.25 / 10 + z * z / 400) / (1 + z * z / 10)
    p = proportion(5, 10)
    assert (p.rate, p.successes, p.trials) == (0.5, 5, 10)
    assert p.low == pytest.approx(0.5 - half) and p.high == pytest.approx(0.5 + half)
    assert p.low == pytest.approx(0.236593, abs=1e-6)
    assert math.isnan(proportion(0, 0).rate)
    with pytest.raises(ValueError, match="successes"):
        proportion(3, 2)
