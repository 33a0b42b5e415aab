"""The naive baseline for ``serving_bench.py``: a BentoML ranking service written the obvious way.

Per request it asks Feast's ``FeatureStore.get_online_features`` for the feature service's
values of the user and every candidate (through ``flywheel.feature_store.online_features``,
which also decodes the packed user x item views of ``ranking_v2``; calling Feast directly
on that service, as this file did before v2, failed every request), as a DataFrame,
turns them into model inputs with ``flywheel.ranking.model_inputs`` and scores them with the
champion booster's ``predict`` (XGBoost's default threading), then returns the top ``k``.
No exploration, no logging, no metrics of its own.

The ranking feature service joins ``user_category`` on the item's category, so the
candidates' categories are read first (``item_catalog:category``), as
``flywheel.feature_store.online_features`` does: two ``get_online_features`` calls.

Run by ``serving_bench.py`` as ``bentoml serve naive_service:NaiveRanker`` from this folder,
with the same ``FLYWHEEL_*`` settings and ``BENTOML_HOME`` as the real service.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import bentoml

with bentoml.importing():
    import numpy as np

    from flywheel import feature_store as fs
    from flywheel.ranking import model_inputs
    from flywheel.train import predict

SERVICE_NAME = "NaiveRanker"


@bentoml.service(name=SERVICE_NAME, workers=1, traffic={"timeout": 30})
class NaiveRanker:
    """Ranks candidates for a user with Feast's ``get_online_features`` on every request."""

    def __init__(self) -> None:
        from flywheel.config import load_settings
        from flywheel.registry import load_champion_booster

        settings = load_settings()
        self.store = fs.get_store(settings)
        self.service_name = fs.feature_service_name(settings)
        champion = load_champion_booster(settings)
        if champion is None:
            raise RuntimeError(f"no champion in {settings.workspace}; register a model first")
        self.model_version, self.booster = champion

    def __is_ready__(self) -> bool:
        return True

    @bentoml.api(route="/rank")
    def rank(self, user_id: int | str, candidates: list[int | str], k: int = 10) -> dict[str, Any]:
        """The ``k`` best of ``candidates`` for ``user_id``: ``{"model_version", "items"}``."""
        at = time.time()
        user_id, candidates = str(user_id), [str(c) for c in candidates]  # Feast keys: strings
        # Two get_online_features calls per request (categories, then the service) and the
        # packed views decoded, as flywheel.feature_store.online_features does for training
        # and tests: no caching, no batching across requests.
        frame = fs.online_features(
            self.store,
            user_id,
            candidates,
            self.service_name,
            as_of=datetime.fromtimestamp(at, UTC),
        )
        scores = predict(self.booster, model_inputs(frame, at))
        best = np.argsort(-scores, kind="stable")[:k]
        return {
            "model_version": self.model_version,
            "items": [{"item_id": candidates[j], "score": float(scores[j])} for j in best],
        }
