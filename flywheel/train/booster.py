"""The trained booster: loading ``model.ubj`` and scoring a model on its own columns."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from flywheel.ranking import MODEL_FEATURES

if TYPE_CHECKING:
    import xgboost as xgb

MODEL_FILENAME: Final = "model.ubj"


def load_booster(path: str | Path) -> xgb.Booster:
    """Load an XGBoost booster saved by :func:`train_model` (``model.ubj``)."""
    import xgboost as xgb

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster


def booster_features(booster: xgb.Booster) -> list[str]:
    """The input columns a booster was trained on (ranking_v1's if it kept no names)."""
    return list(booster.feature_names or MODEL_FEATURES)


def predict(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """The booster's scores (float64, shape ``[n]``) for a ``[n, n_features]`` matrix whose
    columns are the booster's own (:func:`booster_features`): click probabilities for a
    binary:logistic model, unnormalised ranking scores for a rank:* one
    (:func:`flywheel.objective.score_kind`)."""
    import xgboost as xgb

    names = booster_features(booster)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(
            f"X has shape {x.shape}; expected (n, {len(names)}): the model's columns "
            f"{names[0]!r}..{names[-1]!r} (was it scored with its own feature service?)"
        )
    matrix = xgb.DMatrix(np.asarray(x, dtype=np.float32), feature_names=names)
    return np.asarray(booster.predict(matrix), dtype=np.float64)
