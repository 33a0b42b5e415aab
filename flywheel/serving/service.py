"""The ranking service: one request from champion to logged slate, and feedback."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.predlog import LogWriter, log_dir
from flywheel.schemas import USER_ACTIVITY_SCHEMA
from flywheel.serving.api import (
    FeedbackRequest,
    FeedbackResponse,
    NoCandidatesError,
    NoChampionError,
    RankedItem,
    RankRequest,
    RankResponse,
    ServingOptions,
    new_request_id,
    user_of_request,
)
from flywheel.serving.candidates import CandidatePool
from flywheel.serving.champion import ChampionWatcher, LoadedModel, load_serving_model
from flywheel.serving.clock import make_clock
from flywheel.serving.exploration import epsilon_greedy
from flywheel.serving.features import OnlineFeatureReader, ViewReader
from flywheel.serving.feedback import _ACTIVITY_KEYS, ACTIVITY_VIEW, activity_after_feedback
from flywheel.serving.item_cache import ItemSideViews
from flywheel.serving.records import _prediction_records

if TYPE_CHECKING:
    import xgboost as xgb

    from flywheel.config import Settings

log = logging.getLogger(__name__)


@dataclass
class ServingStats:
    """Counters since start (the BentoML layer mirrors them into Prometheus)."""

    requests: int = 0
    served_items: int = 0
    explored_items: int = 0
    cold_start_requests: int = 0
    default_candidate_requests: int = 0
    feedback: dict[str, int] = field(default_factory=dict)
    unknown_request_feedback: int = 0


@dataclass(frozen=True)
class RankOutcome:
    """The answer plus what the metrics need to know about it."""

    response: RankResponse
    explored: int
    cold_start: bool
    default_candidates: bool


class RankingService:
    """Ranks, logs and takes feedback; one instance per serving process (worker).

    Built from Settings and options alone; opens the Feast store once.
    """

    def __init__(self, settings: Settings, options: ServingOptions | None = None) -> None:
        from flywheel.feature_store import get_store

        self.settings = settings
        self.options = options or ServingOptions()
        self.store = get_store(settings)
        self.clock = make_clock(settings, self.options.clock)
        self.models = ChampionWatcher(
            settings, self.options.model_check_s, loader=load_serving_model
        )
        opts = self.options
        self.item_views = ItemSideViews(
            self.store, opts.item_cache_check_s, opts.item_cache_max_age_s,
            opts.item_cache_max_rows,
        )  # fmt: skip
        self.pool = CandidatePool(settings, self.options)
        self.rng = np.random.default_rng(self.options.seed)
        self.predictions = LogWriter(log_dir(settings, "predictions"), "predictions")
        self.feedback_log = LogWriter(log_dir(settings, "feedback"), "feedback")
        self.stats = ServingStats()
        self._readers: dict[str, OnlineFeatureReader] = {}
        self._activity: ViewReader | None = None
        self._model_tag: str | None = None
        # Load the champion and its feature reader now, not on the first request.
        model = self.models.current()
        if model is not None:
            self.reader(model.feature_service)

    def ready(self) -> bool:
        """Ready once a champion is loaded."""
        return self.models.current() is not None

    def _model(self) -> LoadedModel:
        model = self.models.current()
        if model is None:
            raise NoChampionError(
                f"no champion model: {self.models.pointer} names none yet; run `flywheel cycle`"
            )
        if model.tag != self._model_tag:
            # A new champion comes from a new cycle: catch a replay clock up with its data.
            if self._model_tag is not None and self.clock.offset:
                self.clock.advance_to(make_clock(self.settings, "lake").now())
            self._model_tag = model.tag
        return model

    def reader(self, service: str) -> OnlineFeatureReader:
        if service not in self._readers:
            self._readers[service] = OnlineFeatureReader(self.store, service, self.item_views)
        return self._readers[service]

    def rank(self, request: RankRequest) -> RankOutcome:
        """Score, pick and log a slate for ``request``.

        Raises:
            NoChampionError, NoCandidatesError: nothing to rank with (a 503).
        """
        from flywheel.ranking import feature_column, feature_set, model_inputs

        model = self._model()
        at = self.clock.now()
        candidates = request.candidates or self.pool.get(at)
        if not candidates:
            raise NoCandidatesError(
                "the request names no candidates and no default set exists (feature tables "
                f"missing under {self.settings.feature_data_dir}); pass 'candidates'"
            )
        self.item_views.maybe_refresh()
        reader = self.reader(model.feature_service)
        features = reader.read_columns(request.user_id, candidates, at)
        x = model_inputs(features, at.timestamp(), model.feature_service)
        scores = _score(model.booster, x)
        slate = epsilon_greedy(scores, request.k, self.options.epsilon, self.rng)
        request_id = new_request_id(request.user_id)
        self.predictions.append(
            _prediction_records(
                request_id,
                at,
                request.user_id,
                model.tag,
                features,
                scores,
                slate,
                raw=feature_set(model.feature_service).raw,
            )
        )
        cold = bool(np.isnan(feature_column(features, "last_event_unix")).all())
        self._count(len(slate.indices), int(slate.explored.sum()), cold, not request.candidates)
        items = [
            RankedItem(item_id=str(candidates[i]), score=float(scores[i])) for i in slate.indices
        ]
        response = RankResponse(request_id=request_id, model_version=model.tag, items=items)
        return RankOutcome(response, int(slate.explored.sum()), cold, not request.candidates)

    def _count(self, served: int, explored: int, cold: bool, default: bool) -> None:
        self.stats.requests += 1
        self.stats.served_items += served
        self.stats.explored_items += explored
        self.stats.cold_start_requests += cold
        self.stats.default_candidate_requests += default

    def feedback(self, request: FeedbackRequest) -> FeedbackResponse:
        """Log the feedback durably, then update the user's online activity features."""
        at = self.clock.now()
        self.feedback_log.append(
            [
                {
                    "request_id": request.request_id,
                    "item_id": request.item_id,
                    "event_type": request.event_type,
                    "ts": at,
                }
            ]
        )
        counts = self.stats.feedback
        counts[request.event_type] = counts.get(request.event_type, 0) + 1
        user = user_of_request(request.request_id)
        if user is None:
            self.stats.unknown_request_feedback += 1
            return FeedbackResponse(
                note=f"request_id {request.request_id!r} was not issued by this service: "
                "feedback logged, user features not updated"
            )
        try:
            self.push_activity(user, request.event_type, at)
        except (ConnectionError, ValueError) as exc:
            # The feedback is logged, which is what the next cycle learns from; the online
            # row catches up at the next materialization.
            log.warning("could not push user %r's activity: %s", user, exc)
            return FeedbackResponse(note=f"feedback logged; user features not updated: {exc}")
        return FeedbackResponse()

    def push_activity(self, user_id: str, event_type: str, at: datetime) -> dict[str, Any]:
        """Read the user's online activity row, count the event, push it; return the row."""
        import pandas as pd

        from flywheel.feature_store import push_user_activity

        if self._activity is None:
            names = [n for n in USER_ACTIVITY_SCHEMA.names if n not in _ACTIVITY_KEYS]
            view = self.store.get_feature_view(ACTIVITY_VIEW)
            self._activity = ViewReader(self.store, view, names)
        found = self._activity.read([(str(user_id),)], at)[0]
        current, current_ts = (found[1], found[0]) if found else (None, None)
        row = activity_after_feedback(user_id, current, current_ts, event_type, at)
        push_user_activity(self.store, pd.DataFrame([row]))
        self.item_views.written(ACTIVITY_VIEW, [(str(user_id),)])  # if it were item-side
        return row


def _score(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """``train.predict``'s scores (the same numbers) without building a DMatrix per request:
    ``inplace_predict`` on the float32 inputs, on the booster's own thread count (one, from
    :func:`~flywheel.serving.champion.load_serving_model`, which also checked its inputs)."""
    if x.ndim != 2 or x.shape[1] != booster.num_features():
        raise ValueError(f"X has shape {x.shape}; expected (n, {booster.num_features()})")
    predicted = booster.inplace_predict(np.asarray(x, dtype=np.float32), validate_features=False)
    return np.asarray(predicted, dtype=np.float64)
