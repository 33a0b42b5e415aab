"""The alias sampler draws within a segment in proportion to the weights."""

from __future__ import annotations

import numpy as np

from flywheel.simulate.sampling import SegmentSampler


def test_draws_stay_in_their_segment_with_weighted_frequencies() -> None:
    values = np.array([10, 11, 12, 13, 14, 15, 16])
    segments = np.array([1, 0, 1, 2, 1, 1, 0])
    weights = np.array([1.0, 3.0, 2.0, 5.0, 0.5, 6.5, 1.0])
    sampler = SegmentSampler.build(values, segments, weights, n_segments=3)
    rng = np.random.default_rng(0)
    n = 200_000
    for seg in range(3):
        drawn = sampler.draw(np.full(n, seg), rng.random(n))
        members = values[segments == seg]
        assert set(np.unique(drawn)) <= set(members)
        expected = weights[segments == seg] / weights[segments == seg].sum()
        observed = np.array([(drawn == v).mean() for v in members])
        np.testing.assert_allclose(observed, expected, atol=0.005)


def test_mixed_segments_in_one_call_and_extreme_uniforms() -> None:
    sampler = SegmentSampler.build(np.arange(4), np.array([0, 0, 1, 1]), np.ones(4), 2)
    segs = np.array([0, 1, 0, 1])
    out = sampler.draw(segs, np.array([0.0, 0.0, np.nextafter(1.0, 0.0), 0.999999]))
    assert out.tolist() == [0, 2, 1, 3]
