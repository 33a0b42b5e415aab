"""Constant-time weighted sampling within segments (Walker's alias method).

The event simulator draws millions of items per second "from category c, in proportion to
popularity"; a binary search per draw (``searchsorted`` on a CDF) was its largest cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class SegmentSampler:
    """Draws one value of a given segment with probability proportional to its weight.

    Slots are the values sorted by segment; segment ``s`` owns slots
    ``starts[s] .. starts[s] + sizes[s] - 1``. A draw picks a slot uniformly within the
    segment and keeps it with probability ``accept[slot]``, else takes ``alias[slot]``.
    """

    values: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    accept: np.ndarray
    alias: np.ndarray

    @classmethod
    def build(
        cls, values: np.ndarray, segments: np.ndarray, weights: np.ndarray, n_segments: int
    ) -> SegmentSampler:
        """Alias tables for ``values`` grouped by ``segments`` (``0..n_segments-1``), with
        positive ``weights``. Every segment drawn from later must hold at least one value."""
        order = np.argsort(segments, kind="stable")
        sizes = np.bincount(segments, minlength=n_segments).astype(np.int64)
        starts = np.cumsum(sizes) - sizes
        w = np.asarray(weights, dtype=np.float64)[order]
        accept = np.ones(w.size)
        alias = np.arange(w.size, dtype=np.int64)
        for lo, size in zip(starts.tolist(), sizes.tolist(), strict=True):
            _fill_alias(w[lo : lo + size], accept[lo : lo + size], alias[lo : lo + size], lo)
        return cls(np.asarray(values)[order], starts, sizes, accept, alias)

    def draw(self, segments: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One value per entry of ``segments``, using uniforms ``u`` in [0, 1) (same shape)."""
        x = u * self.sizes[segments]
        whole = np.floor(x)
        slot = self.starts[segments] + np.minimum(whole.astype(np.int64), self.sizes[segments] - 1)
        slot = np.where(x - whole < self.accept[slot], slot, self.alias[slot])
        return self.values[slot]


def _fill_alias(w: np.ndarray, accept: np.ndarray, alias: np.ndarray, offset: int) -> None:
    """Vose's construction for one segment, written into the ``accept``/``alias`` views."""
    if w.size == 0:
        return
    scaled = (w * (w.size / w.sum())).tolist()
    small = [i for i, p in enumerate(scaled) if p < 1.0]
    large = [i for i, p in enumerate(scaled) if p >= 1.0]
    while small and large:
        s, big = small.pop(), large.pop()
        accept[s], alias[s] = scaled[s], offset + big
        scaled[big] -= 1.0 - scaled[s]
        (small if scaled[big] < 1.0 else large).append(big)
    # Whatever is left holds (up to rounding) exactly its share: always keep it.
    for i in small + large:
        accept[i] = 1.0
