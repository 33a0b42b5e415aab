"""Feature build: the event lake turned into the feature tables Feast serves.

``build_features(settings)`` runs the Ray Data pipeline (``build.py``) over the pure math in
``aggregate.py``; see those modules for the shape of the build.
"""

from flywheel.features.aggregate import FeatureBuildError
from flywheel.features.build import FeatureBuildSummary, build_features

__all__ = ["FeatureBuildError", "FeatureBuildSummary", "build_features"]
