"""The ranking service's behaviour, without BentoML: ``serving/service.py`` only translates.

One request to :meth:`RankingService.rank`:

1. the champion (re-read when the pointer ``state/champion.json`` changes, at most once per
   ``model_check_s``; the swap is one reference assignment, so a request in flight keeps
   the model it started with);
2. candidates: the request's, or a default set (most viewed items of the last 7 days plus
   the newest catalog items, refreshed every ``candidates_refresh_s``);
3. features from Feast's online store through the model's feature service
   (:class:`OnlineFeatureReader`, the same values ``feature_store.online_features`` returns,
   read through the online store's own ``online_read``, one read per user-keyed view over
   the request's distinct keys; views keyed without a user are held in memory per worker,
   :mod:`~flywheel.serving.item_cache`, which states when they are re-read);
4. ``ranking.model_inputs`` (the one feature -> input transform) and the booster's
   ``inplace_predict`` on one thread (``train.predict``'s scores);
5. an epsilon-greedy slate (:func:`epsilon_greedy`) with each slot's propensity;
6. one log record per served item written (one ``write()``) before the answer returns.

When the online store cannot be reached, a circuit breaker
(:mod:`~flywheel.serving.store_health`) stops reading it and the request is refused (503
naming the store) or, with ``serving.degraded_mode``, ranked from memory and marked
``degraded``; readiness follows the store, and a store that lost its rows is flagged.

Feedback is logged the same way, then the user's ``user_activity`` row is read from the
online store, incremented (:func:`activity_after_feedback`) and pushed back, so user
features move between two feature builds. The request id carries the user id
(``<32 hex>-<user_id>``, or ``<32 hex>.<base64url of the id>`` for ids with characters a
request id may not hold), so any worker can attribute feedback without shared state.
Ids are strings (:mod:`flywheel.ids`): JSON integers are read as their decimal text, and
every answer and log record carries ids as strings.

The clock: a world replayed from the past (the simulator, a backfill) has features stamped
days ago, which an online read at wall-clock time would find expired. ``clock="auto"`` then
serves on a *replay clock* that starts at the lake's feature time and advances in real
time; with fresh data it is the wall clock. Prediction and feedback logs use the same clock.

Service options (``ServingOptions``) come from the JSON in ``$RANKER_OPTIONS``: the
``FLYWHEEL_*`` namespace belongs to Settings, which refuses unknown keys.

The package, by concern: :mod:`~flywheel.serving.api` (contract, options, request ids),
:mod:`~flywheel.serving.features` (online feature reading),
:mod:`~flywheel.serving.item_cache` (item-side views in memory),
:mod:`~flywheel.serving.candidates` (default candidates), :mod:`~flywheel.serving.champion`
(model loading and hot swap), :mod:`~flywheel.serving.clock`,
:mod:`~flywheel.serving.exploration` (epsilon-greedy slates),
:mod:`~flywheel.serving.records` (prediction-log records), :mod:`~flywheel.serving.feedback`
(activity rows), :mod:`~flywheel.serving.store_health` (online store outages and lost
rows), :mod:`~flywheel.serving.service` (:class:`RankingService`),
:mod:`~flywheel.serving.asgi` (request guards) and :mod:`~flywheel.serving.commands`
(``bentoml serve``). Every public name is importable from ``flywheel.serving``.
"""

from flywheel.serving.api import (
    DEFAULT_K,
    MAX_BODY_BYTES,
    MAX_CANDIDATES,
    MAX_K,
    MAX_REQUEST_ID_CHARS,
    OPTIONS_ENV,
    EntityId,
    FeedbackRequest,
    FeedbackResponse,
    FeedbackType,
    NoCandidatesError,
    NoChampionError,
    OnlineStoreDownError,
    RankedItem,
    RankRequest,
    RankResponse,
    ServingError,
    ServingOptions,
    new_request_id,
    options_from_env,
    user_of_request,
)
from flywheel.serving.asgi import BodySizeLimit, RefuseFormBodies
from flywheel.serving.candidates import CandidatePool, default_candidates
from flywheel.serving.champion import (
    PINNED_TAG_ENV,
    ChampionWatcher,
    LoadedModel,
    load_model,
    load_serving_model,
)
from flywheel.serving.clock import REPLAY_LAG, ServingClock, make_clock
from flywheel.serving.commands import (
    SERVICE_NAME,
    SERVICE_TARGET,
    serve,
    serve_command,
    start_server,
    wait_ready,
)
from flywheel.serving.exploration import Slate, epsilon_greedy
from flywheel.serving.features import CATALOG_VIEW, OnlineFeatureReader, ViewReader
from flywheel.serving.feedback import ACTIVITY_VIEW, activity_after_feedback
from flywheel.serving.item_cache import ItemSideViews, is_item_side
from flywheel.serving.records import _prediction_records
from flywheel.serving.service import RankingService, RankOutcome, ServingStats, _score
from flywheel.serving.store_health import LostRowsWatch, StoreHealth

__all__ = [
    "ACTIVITY_VIEW",
    "CATALOG_VIEW",
    "DEFAULT_K",
    "MAX_BODY_BYTES",
    "MAX_CANDIDATES",
    "MAX_K",
    "MAX_REQUEST_ID_CHARS",
    "OPTIONS_ENV",
    "PINNED_TAG_ENV",
    "REPLAY_LAG",
    "SERVICE_NAME",
    "SERVICE_TARGET",
    "BodySizeLimit",
    "CandidatePool",
    "ChampionWatcher",
    "EntityId",
    "FeedbackRequest",
    "FeedbackResponse",
    "FeedbackType",
    "ItemSideViews",
    "LoadedModel",
    "LostRowsWatch",
    "NoCandidatesError",
    "NoChampionError",
    "OnlineFeatureReader",
    "OnlineStoreDownError",
    "RankOutcome",
    "RankRequest",
    "RankResponse",
    "RankedItem",
    "RankingService",
    "RefuseFormBodies",
    "ServingClock",
    "ServingError",
    "ServingOptions",
    "ServingStats",
    "Slate",
    "StoreHealth",
    "ViewReader",
    "_prediction_records",
    "_score",
    "activity_after_feedback",
    "default_candidates",
    "epsilon_greedy",
    "is_item_side",
    "load_model",
    "load_serving_model",
    "make_clock",
    "new_request_id",
    "options_from_env",
    "serve",
    "serve_command",
    "start_server",
    "user_of_request",
    "wait_ready",
]
