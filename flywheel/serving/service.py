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
    OnlineStoreDownError,
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
from flywheel.serving.records import _candidate_record, _prediction_records, raw_matrix
from flywheel.serving.sessions import SessionBuffer
from flywheel.serving.store_health import (
    LostRowsWatch,
    StoreHealth,
    describe_store,
    ping_store,
    serving_online_store,
    store_errors,
)

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
    #: Answered without the online store (degraded mode) / refused with 503 for want of it.
    degraded_requests: int = 0
    store_unavailable_requests: int = 0


@dataclass(frozen=True)
class RankOutcome:
    """The answer plus what the metrics need to know about it."""

    response: RankResponse
    explored: int
    cold_start: bool
    default_candidates: bool
    #: Ranked without the online store (``response.degraded``).
    degraded: bool = False


class RankingService:
    """Ranks, logs and takes feedback; one instance per serving process (worker).

    Built from Settings and options alone; opens the Feast store once.
    """

    def __init__(self, settings: Settings, options: ServingOptions | None = None) -> None:
        from flywheel.feature_store import get_store

        self.settings = settings
        self.options = options or ServingOptions()
        self.store = get_store(settings)
        config, policy = self.store.config, settings.serving
        #: The one online store instance every serving read goes through (fails fast).
        self.online = serving_online_store(config, policy.store_timeout_s)
        self.health = StoreHealth(
            lambda: ping_store(self.online, config),
            store_errors(config),
            policy.store_retry_s,
            policy.store_check_s,
            describe_store(config),
        )
        self.lost_rows = LostRowsWatch(
            policy.lost_rows_window, policy.lost_rows_share, policy.normal_cold_share
        )
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
        #: Every candidate of a request, for the off-policy check (``serving.log_candidates``),
        #: sampled at ``serving.candidate_sample_rate`` with draws of its own (the slates'
        #: exploration draws stay those of ``rng``).
        self.candidates_log = (
            LogWriter(log_dir(settings, "candidates"), "candidates")
            if policy.log_candidates
            else None
        )
        seed = self.options.seed
        self._candidate_rng = np.random.default_rng(None if seed is None else [seed, 1])
        self.stats = ServingStats()
        #: The users' recent events as this worker saw them (per-worker state: see
        #: :mod:`flywheel.serving.sessions`), for the session features.
        self.sessions = SessionBuffer()
        self._readers: dict[str, OnlineFeatureReader] = {}
        self._activity: ViewReader | None = None
        self._model_tag: str | None = None
        # Load the champion and its feature reader now, not on the first request.
        model = self.models.current()
        if model is not None:
            self.reader(model.feature_service)

    def ready(self) -> bool:
        """Ready once a champion is loaded, while the online store answers (a ping when
        one is due: :meth:`StoreHealth.check`)."""
        return self.models.current() is not None and self.health.check()

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
            self._readers[service] = OnlineFeatureReader(
                self.store, service, self.item_views, self.online
            )
        return self._readers[service]

    def rank(self, request: RankRequest) -> RankOutcome:
        """Score, pick and log a slate for ``request``.

        With the online store unreachable (a failed read, or the breaker open) the request
        is ranked degraded when ``serving.degraded_mode`` is on, else refused.

        Raises:
            NoChampionError, NoCandidatesError: nothing to rank with (a 503).
            OnlineStoreDownError: the online store is unreachable, degraded mode off (503).
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
        reader = self.reader(model.feature_service)
        # The fast path pays two attribute reads for the breaker; a try costs nothing.
        health = self.health
        features: dict[str, Any] | None = None
        if health.up or health.try_now():
            try:
                if health.up:  # while it is down, keep what memory holds: it cannot refill
                    self.item_views.maybe_refresh()
                features = reader.read_columns(request.user_id, candidates, at)
            except health.errors as exc:
                health.failed(exc)
        degraded = features is None
        if features is None:
            features = self._degraded_features(reader, request.user_id, candidates, at)
        elif not health.up:
            health.succeeded()
        x = model_inputs(features, at.timestamp(), model.feature_service)
        scores = _score(model.booster, x)
        slate = epsilon_greedy(scores, request.k, self.options.epsilon, self.rng)
        request_id = new_request_id(request.user_id)
        raw = feature_set(model.feature_service).raw
        candidates_logged = self._candidates_drawn()
        # One matrix of the raw values for both logs when the candidates are logged.
        matrix = raw_matrix(features, raw) if candidates_logged else None
        self.predictions.append(
            _prediction_records(
                request_id, at, request.user_id, model.tag, features, scores, slate, raw=raw,
                degraded=degraded, matrix=matrix,
            )
        )  # fmt: skip
        if candidates_logged and self.candidates_log is not None:
            record = _candidate_record(
                request_id, at, request.user_id, model.tag, features, scores, slate,
                self.options.epsilon, raw=raw, degraded=degraded, matrix=matrix,
            )  # fmt: skip
            self.candidates_log.append([record])
        cold = bool(np.isnan(feature_column(features, "last_event_unix")).all())
        if not degraded:  # a degraded read is cold by construction
            self.lost_rows.observe(cold)
        self._count(len(slate.indices), int(slate.explored.sum()), cold, not request.candidates)
        self.stats.degraded_requests += degraded
        items = [
            RankedItem(item_id=str(candidates[i]), score=float(scores[i])) for i in slate.indices
        ]
        response = RankResponse(
            request_id=request_id, model_version=model.tag, items=items, degraded=degraded
        )
        explored = int(slate.explored.sum())
        return RankOutcome(response, explored, cold, not request.candidates, degraded)

    def _candidates_drawn(self) -> bool:
        """Whether this request's candidates are logged (``serving.log_candidates``, drawn
        at ``serving.candidate_sample_rate``)."""
        if self.candidates_log is None:
            return False
        rate = self.settings.serving.candidate_sample_rate
        return rate >= 1.0 or bool(self._candidate_rng.random() < rate)

    def _degraded_features(
        self, reader: OnlineFeatureReader, user_id: str, candidates: list[str], at: datetime
    ) -> dict[str, Any]:
        """The features a ranking without the online store gets, or the 503 without one."""
        if not self.settings.serving.degraded_mode:
            self.stats.store_unavailable_requests += 1
            raise OnlineStoreDownError(
                f"{self.health.what} is unreachable ({self.health.last_error}); retrying every "
                f"{self.health.retry_s:g} s (serving.degraded_mode would rank without it)"
            )
        return reader.read_columns(user_id, candidates, at, degraded=True)

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
        # The same event the lake gets from the feedback log (user, item, type, time).
        self.sessions.add(user, request.item_id, request.event_type, at, self._category(
            request.item_id))  # fmt: skip
        if not self.health.try_now():
            note = f"feedback logged; user features not updated: {self.health.what} is down"
            return FeedbackResponse(note=note)
        try:
            self.push_activity(user, request.event_type, at)
        except self.health.errors as exc:
            self.health.failed(exc)
            log.warning("could not push user %r's activity: %s", user, exc)
            return FeedbackResponse(note=f"feedback logged; user features not updated: {exc}")
        except ValueError as exc:
            # The feedback is logged, which is what the next cycle learns from; the online
            # row catches up at the next materialization.
            log.warning("could not push user %r's activity: %s", user, exc)
            return FeedbackResponse(note=f"feedback logged; user features not updated: {exc}")
        self.health.succeeded()
        return FeedbackResponse()

    def record_event(self, user_id: str, item_id: str, event_type: str, at: datetime) -> None:
        """Take one of the shop's own events (view, cart, purchase, click at ``at``, the
        time the lake will hold) into the session buffer; feedback is taken by
        :meth:`feedback` itself."""
        self.sessions.add(user_id, item_id, event_type, at, self._category(item_id))

    def session_features(
        self, user_id: str, candidates: list[str], at: datetime
    ) -> dict[str, np.ndarray]:
        """The session features of ``user_id`` against ``candidates`` at ``at``
        (:mod:`flywheel.session_features`), from this worker's buffer."""
        return self.sessions.features(user_id, candidates, [self._category(i) for i in
                                                            candidates], at)  # fmt: skip

    def _category(self, item_id: str) -> str | None:
        """The item's catalog category as serving reads it (memory when the item views
        are cached), ``None`` when unknown or unreadable (the store is down)."""
        if not self._readers:
            model = self.models.current()
            if model is None:
                return None
            self.reader(model.feature_service)
        catalog = next(iter(self._readers.values())).catalog
        try:
            row = catalog.rows([(str(item_id),)], degraded=not self.health.up)[0]
        except self.health.errors:
            return None
        category = None if row is None else row.values.get("category")
        return None if category is None else str(category)

    def push_activity(self, user_id: str, event_type: str, at: datetime) -> dict[str, Any]:
        """Read the user's online activity row, count the event, push it; return the row."""
        import pandas as pd

        from flywheel.feature_store import push_user_activity

        if self._activity is None:
            names = [n for n in USER_ACTIVITY_SCHEMA.names if n not in _ACTIVITY_KEYS]
            view = self.store.get_feature_view(ACTIVITY_VIEW)
            self._activity = ViewReader(self.store, view, names, self.online)
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
