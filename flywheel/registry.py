"""Register blessed models in the BentoML model store and keep the champion pointer.

Two things live in the workspace:

- the BentoML model store, ``settings.workspace / "bentoml" / "models"``; every registered
  model is ``flywheel-ranker:<version>`` with lineage labels and metadata;
- the champion pointer, ``settings.state_dir / "champion.json"``:
  ``{"champion": tag, "history": [older tags, most recent last], "updated_at": iso}``.

Which store BentoML uses: BentoML 1.4 reads ``BENTOML_HOME`` once, the first time anything
asks its DI container for ``bentoml_home``, and memoises the resulting ``ModelStore`` for
the life of the process. Setting the variable per call therefore does not work once a store
has been resolved, and setting it globally leaks into every later test. Instead
:func:`model_store` overrides the container's ``model_store`` provider for the duration
of a ``with`` block (``BentoMLContainer.model_store.patch``), which every BentoML model
API (``save_model``, ``bentoml.models.get``, ``load_model``) resolves at call time. A
separate process that must see the same store (``bentoml serve``) gets
``BENTOML_HOME=<settings.workspace>/bentoml`` in its environment.

Ordering keeps the pointer honest: a model is saved completely (BentoML writes it to a
temporary directory and copies it into the store only on success) before the pointer is
rewritten, and the pointer is replaced atomically (temp file + ``os.replace``). A failure
at any step leaves the old pointer, which names a model that exists.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from flywheel.ranking import FEATURE_SETS
from flywheel.train import booster_features, load_booster

if TYPE_CHECKING:
    import xgboost as xgb
    from bentoml._internal.models.model import ModelStore

    from flywheel.config import Settings

log = logging.getLogger(__name__)

MODEL_NAME: Final = "flywheel-ranker"
POINTER_FILENAME: Final = "champion.json"
#: Filename of the booster inside the BentoML model directory.
BENTO_MODEL_FILENAME: Final = "model.ubj"
#: Lineage keys a registration must carry.
LINEAGE_KEYS: Final = ("run_id", "data_window", "feature_service")
#: Metrics copied into labels (as strings) when present; all metrics go to metadata.
LABEL_METRICS: Final = ("auc", "logloss", "ece", "ndcg_at_10")


class RegistryError(ValueError):
    """A registry operation was refused; the message says which tag or file and why."""


@dataclass(frozen=True)
class ChampionState:
    """The champion pointer: the serving model's tag and the champions before it."""

    champion: str | None
    history: tuple[str, ...] = field(default_factory=tuple)
    updated_at: str | None = None


def bentoml_home(settings: Settings) -> Path:
    """The BentoML home for this workspace (``BENTOML_HOME`` for a ``bentoml serve``)."""
    return settings.workspace / "bentoml"


@contextmanager
def model_store(settings: Settings) -> Iterator[ModelStore]:
    """Make BentoML's model APIs use the workspace store inside the ``with`` block.

    Also sets ``BENTOML_DO_NOT_TRACK=true`` for the block unless the caller set it: saving
    a model would otherwise post a usage event over the network.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    models_dir = bentoml_home(settings) / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    store = ModelStore(str(models_dir))
    previous = os.environ.get("BENTOML_DO_NOT_TRACK")
    os.environ["BENTOML_DO_NOT_TRACK"] = previous or "true"
    try:
        with BentoMLContainer.model_store.patch(store):
            yield store
    finally:
        if previous is None:
            os.environ.pop("BENTOML_DO_NOT_TRACK", None)


# ---- the champion pointer ------------------------------------------------------------


def _pointer_path(settings: Settings) -> Path:
    return settings.state_dir / POINTER_FILENAME


def champion_state(settings: Settings) -> ChampionState:
    """Read the champion pointer; an absent file means no champion yet."""
    path = _pointer_path(settings)
    if not path.is_file():
        return ChampionState(champion=None)
    try:
        raw = json.loads(path.read_text())
        return ChampionState(
            champion=raw["champion"],
            history=tuple(raw.get("history", [])),
            updated_at=raw.get("updated_at"),
        )
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RegistryError(f"champion pointer {path} is unreadable: {exc}") from exc


def current_champion(settings: Settings) -> str | None:
    """The tag of the current champion (``flywheel-ranker:<version>``), or ``None``."""
    return champion_state(settings).champion


def _write_state(settings: Settings, champion: str, history: list[str]) -> ChampionState:
    """Replace the pointer atomically: readers see the old file or the new, never half."""
    path = _pointer_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = ChampionState(champion, tuple(history), datetime.now(UTC).isoformat())
    payload = {"champion": champion, "history": history, "updated_at": state.updated_at}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".champion-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return state


def _exists(settings: Settings, tag: str) -> bool:
    from bentoml.exceptions import NotFound

    with model_store(settings) as store:
        try:
            store.get(tag)
        except NotFound:
            return False
    return True


def promote(settings: Settings, tag: str) -> ChampionState:
    """Make ``tag`` the champion; the current one moves to the end of the history.

    Raises:
        RegistryError: ``tag`` is not in the workspace model store.
    """
    if not _exists(settings, tag):
        raise RegistryError(f"cannot promote {tag!r}: no such model in {bentoml_home(settings)}")
    state = champion_state(settings)
    if state.champion == tag:
        return state
    history = [*state.history, state.champion] if state.champion else list(state.history)
    log.info("champion is now %s (was %s)", tag, state.champion)
    return _write_state(settings, tag, history)


def rollback(settings: Settings) -> str:
    """Restore the most recent previous champion that still exists; return its tag.

    The demoted champion leaves the pointer but stays in the model store.

    Raises:
        RegistryError: there is no previous champion left in the store.
    """
    state = champion_state(settings)
    history = list(state.history)
    while history:
        candidate = history.pop()
        if _exists(settings, candidate):
            _write_state(settings, candidate, history)
            log.info("rolled back champion %s -> %s", state.champion, candidate)
            return candidate
        log.warning("previous champion %s is gone from the store; skipping it", candidate)
    raise RegistryError(
        f"cannot roll back from {state.champion!r}: no previous champion in "
        f"{_pointer_path(settings)} exists in the model store"
    )


# ---- registering and loading ---------------------------------------------------------


def _labels(metrics: Mapping[str, float], lineage: Mapping[str, Any]) -> dict[str, str]:
    missing = [k for k in LINEAGE_KEYS if k not in lineage]
    if missing:
        raise RegistryError(f"lineage lacks {missing}; expected keys {list(LINEAGE_KEYS)}")
    window = lineage["data_window"]
    labels = {
        "pipeline_run_id": str(lineage["run_id"]),
        "feature_service": str(lineage["feature_service"]),
    }
    if isinstance(window, Mapping):
        labels["data_window_start"] = str(window.get("start"))
        labels["data_window_end"] = str(window.get("end"))
    else:
        labels["data_window"] = str(window)
    labels.update({m: f"{float(metrics[m]):.6g}" for m in LABEL_METRICS if m in metrics})
    return labels


def _check_columns(columns: list[str], service: str, model_path: str | Path) -> None:
    """A model's lineage names the feature service it is scored through: they must agree."""
    if service not in FEATURE_SETS:
        raise RegistryError(
            f"lineage feature_service {service!r} is unknown; expected one of "
            f"{', '.join(FEATURE_SETS)}"
        )
    want = list(FEATURE_SETS[service].model)
    if columns != want:
        raise RegistryError(
            f"model {model_path} has {len(columns)} input columns, not the {len(want)} of its "
            f"lineage's feature service {service}"
        )


def register_model(
    settings: Settings,
    model_path: str | Path,
    metrics: Mapping[str, float],
    lineage: Mapping[str, Any],
) -> str:
    """Save a booster as ``flywheel-ranker:<version>`` and make it the champion.

    Args:
        model_path: the booster file (``model.ubj`` from training).
        metrics: test metrics of this model (``auc``, ``logloss``, ...); key ones become
            labels, all of them go to metadata.
        lineage: ``run_id``, ``data_window`` (``{"start", "end"}`` or a string) and
            ``feature_service``; extra keys are kept in metadata.

    Returns:
        The new tag, e.g. ``flywheel-ranker:3xq...``.

    Raises:
        RegistryError: lineage is incomplete, or names a feature service whose model
            columns are not the booster's. FileNotFoundError: no model at ``model_path``.
    """
    import bentoml

    labels = _labels(metrics, lineage)
    booster = load_booster(model_path)
    _check_columns(booster_features(booster), str(lineage["feature_service"]), model_path)
    metadata = {
        "metrics": {k: float(v) for k, v in metrics.items()},
        "lineage": json.loads(json.dumps(dict(lineage), default=str)),
        "feature_columns": booster_features(booster),
        "source_model_path": str(model_path),
    }
    # A generic BentoML model (public ``bentoml.models.create``) holding the booster file:
    # ``bentoml.xgboost.save_model`` looks up a distribution named ``xgboost`` and fails
    # under the ``xgboost-cpu`` wheel we install to keep CUDA/NCCL out of the environment.
    with (
        model_store(settings),
        bentoml.models.create(MODEL_NAME, labels=labels, metadata=metadata) as model,
    ):
        booster.save_model(model.path_of(BENTO_MODEL_FILENAME))
    tag = str(model.tag)
    log.info("registered %s (%s)", tag, ", ".join(f"{k}={v}" for k, v in labels.items()))
    promote(settings, tag)
    return tag


def model_file(settings: Settings, tag: str) -> Path:
    """The booster file inside the store for ``tag`` (feed it to evaluate as the champion)."""
    from bentoml.exceptions import NotFound

    with model_store(settings) as store:
        try:
            return Path(store.get(tag).path_of(BENTO_MODEL_FILENAME))
        except NotFound as exc:
            raise RegistryError(f"model {tag!r} is not in {bentoml_home(settings)}") from exc


def load_champion_booster(settings: Settings) -> tuple[str, xgb.Booster] | None:
    """The champion's tag and booster, or ``None`` when no model has been promoted yet.

    Raises:
        RegistryError: the pointer names a model missing from the store.
    """
    tag = current_champion(settings)
    if tag is None:
        return None
    try:
        path = model_file(settings, tag)
    except RegistryError as exc:
        raise RegistryError(
            f"champion {tag!r} named by {_pointer_path(settings)} is not in the store"
        ) from exc
    return tag, load_booster(path)
