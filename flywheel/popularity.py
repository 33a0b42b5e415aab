"""The item-popularity baseline: rank every candidate by how much its item sold lately.

A learned ranker is only worth deploying if it beats "show the most bought items first";
:func:`flywheel.evaluate.decide` refuses a first model that does not (see ``BlessingRule.
min_lift_over_popularity``). The baseline scores the same test-shard rows as the models,
from two of their own input columns, so nothing outside the shard is read:

- ``item_purchases_7d``: purchases of the row's item in the 7 days before the impression,
- ``item_views_7d``: views of it over the same window, which only break ties in purchases.

Both come from the ``item_activity`` feature view, joined point in time: an impression at
time ``t`` gets the latest hourly snapshot ``T <= t``, whose windows are ``[T - 7d, T)``
(:mod:`flywheel.features.aggregate`), so the counts hold events strictly before the
impression and never its own cart or purchase (the label). Items without a snapshot have
0 for both, as :func:`flywheel.ranking.model_inputs` fills them for the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

from flywheel.ranking import MODEL_FEATURES

#: Shard columns the baseline ranks by, most significant first.
POPULARITY_FEATURES: Final[tuple[str, ...]] = ("item_purchases_7d", "item_views_7d")


def popularity_scores(x: np.ndarray, columns: Sequence[str] = MODEL_FEATURES) -> np.ndarray:
    """The baseline's score of every row of a model-input matrix.

    Args:
        x: ``[n, len(columns)]`` model inputs (a test shard, :func:`read_split`).
        columns: ``x``'s column names (a feature service's model columns; any service's
            hold :data:`POPULARITY_FEATURES`).

    Returns:
        float64 ``[n]``: the dense rank of the row's ``(item_purchases_7d, item_views_7d)``
        pair in lexicographic order, scaled to ``[0, 1]``. Equal pairs get equal scores,
        so ties stay ties for AUC and NDCG. The scores rank; they are not probabilities.

    Raises:
        ValueError: ``x`` does not have one column per name of ``columns``, or
            ``columns`` lacks a popularity feature.
    """
    names = list(columns)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"X has shape {x.shape}; expected (n, {len(names)})")
    absent = [name for name in POPULARITY_FEATURES if name not in names]
    if absent:
        raise ValueError(f"the model columns lack the popularity feature(s) {absent}")
    picked = [names.index(name) for name in POPULARITY_FEATURES]
    # np.unique over rows sorts them lexicographically, first column first.
    _, rank = np.unique(x[:, picked], axis=0, return_inverse=True)
    top = int(rank.max()) if len(rank) else 0
    return rank / max(top, 1)  # true division: float64
