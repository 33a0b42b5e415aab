"""The champion model: loading it from the registry and swapping it when it changes."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import xgboost as xgb

    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: Environment variable pinning the served model tag (set on the cluster's serving pods).
PINNED_TAG_ENV: Final = "FLYWHEEL_MODEL_TAG"


@dataclass(frozen=True)
class LoadedModel:
    """A champion ready to score: its tag, booster and the feature service it was trained on."""

    tag: str
    booster: xgb.Booster
    feature_service: str


def load_model(settings: Settings, tag: str) -> LoadedModel:
    """Load ``tag`` from the workspace's BentoML model store.

    Raises:
        RegistryError: the tag is not in the store.
    """
    from bentoml.exceptions import NotFound

    from flywheel.registry import BENTO_MODEL_FILENAME, RegistryError, model_store
    from flywheel.train import load_booster

    with model_store(settings) as store:
        try:
            model = store.get(tag)
        except NotFound as exc:
            raise RegistryError(f"model {tag!r} is not in the workspace model store") from exc
        booster = load_booster(model.path_of(BENTO_MODEL_FILENAME))
        service = model.info.labels.get("feature_service") or _service_of(booster, settings)
    return LoadedModel(str(model.tag), booster, service)


def _service_of(booster: xgb.Booster, settings: Settings) -> str:
    """A model registered without a ``feature_service`` label: the service whose model
    columns are the booster's own, else the configured one."""
    from flywheel.feature_store import feature_service_name
    from flywheel.ranking import service_with_columns
    from flywheel.train import booster_features

    try:
        return service_with_columns(booster_features(booster))
    except KeyError:
        return feature_service_name(settings)


def load_serving_model(settings: Settings, tag: str) -> LoadedModel:
    """:func:`load_model` made ready to serve: its booster predicts on one thread (for a
    few dozen rows XGBoost's OpenMP pool costs more than it saves, and on a busy small
    machine its spinning threads made p50 ~40 ms) and its inputs are checked once here.

    Raises:
        RegistryError: the tag is not in the store. ValueError: the booster was trained
            on other model inputs than its feature service's (``ranking.model_features``),
            or names a service serving cannot build inputs for.
    """
    from flywheel.ranking import model_features

    model = load_model(settings, tag)
    try:
        expected = list(model_features(model.feature_service))
    except KeyError as exc:
        raise ValueError(f"model {tag}: {exc.args[0]}") from None
    names = model.booster.feature_names
    if names is not None and list(names) != expected:
        raise ValueError(
            f"model {tag}: inputs {names}; expected {model.feature_service}'s {expected}"
        )
    if model.booster.num_features() != len(expected):
        raise ValueError(
            f"model {tag}: {model.booster.num_features()} inputs; expected {len(expected)} "
            f"({model.feature_service})"
        )
    model.booster.set_param({"nthread": 1})
    return model


class ChampionWatcher:
    """The current champion, swapped when the champion pointer changes.

    ``current()`` stats the pointer file at most every ``check_s`` seconds; a changed file
    (new inode, size or mtime: ``promote`` replaces it atomically) is re-read, and a new
    tag is loaded and swapped in with one assignment. Only one thread loads at a time;
    the others keep serving the old model meanwhile. A model that fails to load is
    logged and skipped until the pointer changes again.

    A *pinned* tag (``pinned``, default ``$FLYWHEEL_MODEL_TAG``: the cluster profiles'
    Deployment sets it, so a rollout, not the pointer, decides what a pod serves) is
    served instead: loaded once, the pointer ignored; until it loads (retried every
    ``check_s``) there is no model, so the service is not ready.
    """

    def __init__(
        self,
        settings: Settings,
        check_s: float = 1.0,
        loader: Callable[[Settings, str], LoadedModel] = load_model,
        pinned: str | None = None,
    ) -> None:
        from flywheel.registry import POINTER_FILENAME

        self.settings, self.check_s, self.loader = settings, check_s, loader
        self.pinned = pinned or os.environ.get(PINNED_TAG_ENV) or None
        self.pointer = settings.state_dir / POINTER_FILENAME
        self.model: LoadedModel | None = None
        self.swaps = 0
        self._seen: tuple[int, int, int] | None = None
        self._checked_at = -math.inf
        self._lock = threading.Lock()

    def current(self) -> LoadedModel | None:
        if time.monotonic() - self._checked_at < self.check_s and self.model is not None:
            return self.model
        # Before the first model every caller waits for the load; after it, a caller that
        # finds another thread loading serves the old model instead of waiting.
        if self._lock.acquire(blocking=self.model is None):
            try:
                if self.model is None or time.monotonic() - self._checked_at >= self.check_s:
                    self._checked_at = time.monotonic()
                    self._refresh()
            finally:
                self._lock.release()
        return self.model

    def _refresh(self) -> None:
        from flywheel.registry import current_champion

        if self.pinned:
            self._load_pinned(self.pinned)
            return
        try:
            st = self.pointer.stat()
        except FileNotFoundError:
            return
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == self._seen:
            return
        self._seen = signature
        try:
            tag = current_champion(self.settings)
            if tag is None or (self.model is not None and self.model.tag == tag):
                return
            model = self.loader(self.settings, tag)
        except Exception:
            log.exception("could not load the champion named by %s; keeping the old", self.pointer)
            return
        previous, self.model = self.model, model
        self.swaps += previous is not None
        log.info("serving model %s (was %s)", model.tag, previous.tag if previous else None)

    def _load_pinned(self, tag: str) -> None:
        if self.model is not None:
            return
        try:
            self.model = self.loader(self.settings, tag)
        except Exception:
            log.exception("could not load the pinned model %s ($%s)", tag, PINNED_TAG_ENV)
            return
        log.info("serving pinned model %s", tag)
