"""The ranking service's behaviour, without BentoML: ``serving/service.py`` only translates.

One request to :meth:`RankingService.rank`:

1. the champion (re-read when the pointer ``state/champion.json`` changes, at most once per
   ``model_check_s``; the swap is one reference assignment, so a request in flight keeps
   the model it started with);
2. candidates: the request's, or a default set (most viewed items of the last 7 days plus
   the newest catalog items, refreshed every ``candidates_refresh_s``);
3. features from Feast's online store through the model's feature service
   (:class:`OnlineFeatureReader`, the same values ``feature_store.online_features`` returns,
   read through the online store's own ``online_read``: 50 candidates cost ~2-3 ms here,
   against ~40 ms for ``get_online_features``, which deserialises registry protos and
   type-checks them on every call);
4. ``ranking.model_inputs`` (the one feature -> input transform) and ``train.predict``;
5. an epsilon-greedy slate (:func:`epsilon_greedy`) with each slot's propensity;
6. one log record per served item written (one ``write()``) before the answer returns.

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
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import numpy as np
import pyarrow as pa
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from flywheel.ids import MAX_ID_CHARS, IdError, normalize_id
from flywheel.predlog import LogWriter, log_dir
from flywheel.ranking import RAW_FEATURES
from flywheel.schemas import USER_ACTIVITY_SCHEMA, WINDOWS

if TYPE_CHECKING:
    import pandas as pd
    import xgboost as xgb
    from feast import FeatureStore, FeatureView

    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: API limits, part of the contract (and of the OpenAPI schema).
MAX_CANDIDATES: Final = 500
MAX_K: Final = 100
DEFAULT_K: Final = 10
#: 32 hex + separator + base64url of the longest id (128 characters of up to 4 UTF-8 bytes).
MAX_REQUEST_ID_CHARS: Final = 720
#: Request bodies above this are refused with 413 before they are read into memory.
MAX_BODY_BYTES: Final = 64 * 1024
#: Environment variable holding :class:`ServingOptions` as JSON.
OPTIONS_ENV: Final = "RANKER_OPTIONS"
#: Environment variable pinning the served model tag (set on the cluster's serving pods).
PINNED_TAG_ENV: Final = "FLYWHEEL_MODEL_TAG"
#: The BentoML service ``serving/service.py`` defines (``bentoml serve`` target).
SERVICE_NAME: Final = "Ranker"
SERVICE_TARGET: Final = "serving.service:Ranker"
#: ``auto`` clock: replay when the lake's features end more than this before the wall clock.
REPLAY_LAG: Final = timedelta(days=1)
ACTIVITY_VIEW: Final = "user_activity"
CATALOG_VIEW: Final = "item_catalog"
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}(?:-([A-Za-z0-9._:-]+)|\.([A-Za-z0-9_-]+))$")
#: Characters of an id that a request id carries verbatim (the request id's own alphabet).
_VERBATIM_ID = re.compile(r"^[A-Za-z0-9._:-]+$")


class ServingError(RuntimeError):
    """The service cannot answer right now (no champion, online store down, ...): a 503."""


class NoChampionError(ServingError):
    """No model has been promoted yet, so there is nothing to rank with."""


class NoCandidatesError(ServingError):
    """The request named no candidates and no default set could be built."""


# ---- options and the API's data shapes ------------------------------------------------


class ServingOptions(BaseModel):
    """How the service explores, refreshes and keeps time (``$RANKER_OPTIONS`` JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Per-slot probability of serving a random remaining candidate instead of the best.
    epsilon: float = Field(default=0.1, ge=0.0, le=1.0)
    #: Seed of the exploration draws (None: fresh entropy per process).
    seed: int | None = None
    #: Default candidates: the most viewed items (7d) plus the newest catalog items.
    popular_candidates: int = Field(default=40, ge=0, le=MAX_CANDIDATES)
    new_candidates: int = Field(default=10, ge=0, le=MAX_CANDIDATES)
    candidates_refresh_s: float = Field(default=300.0, gt=0)
    #: How often the champion pointer's file status is checked, at most.
    model_check_s: float = Field(default=1.0, ge=0)
    #: ``wall``, ``lake`` (replay from the lake's feature time) or ``auto`` (see module doc).
    clock: Literal["auto", "wall", "lake"] = "auto"


def options_from_env(environ: Mapping[str, str] | None = None) -> ServingOptions:
    """Parse ``$RANKER_OPTIONS`` (JSON); absent or empty means the defaults.

    Raises:
        ValueError: naming the option, the value and what was expected.
    """
    raw = (environ if environ is not None else os.environ).get(OPTIONS_ENV, "").strip()
    if not raw:
        return ServingOptions()
    try:
        return ServingOptions.model_validate_json(raw)
    except ValidationError as exc:
        from flywheel.config import describe_errors

        raise ValueError(f"${OPTIONS_ENV} is invalid: {describe_errors(exc, 'options')}") from exc


def _api_id(value: object) -> str:
    try:
        return normalize_id(value)
    except IdError as exc:
        raise ValueError(f"id {exc}") from None


#: What the OpenAPI spec documents for an id: what ``_api_id`` accepts (a string with a
#: non-blank character, no control characters, at most MAX_ID_CHARS; or an integer).
#: ``oneOf``, not ``anyOf``: BentoML's spec keeps only the first branch of an ``anyOf``.
_ID_SCHEMA: Final = {
    "oneOf": [
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ID_CHARS,
            "pattern": r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
        },
        # decimal text of at most MAX_ID_CHARS characters, the sign included
        {
            "type": "integer",
            "minimum": 1 - 10 ** (MAX_ID_CHARS - 1),
            "maximum": 10**MAX_ID_CHARS - 1,
        },
    ],
    "description": f"an id: a string (trimmed, at most {MAX_ID_CHARS} characters, no control "
    "characters) or an integer, read as its decimal text",
}
#: A user or item id in a request: a string, or a JSON integer read as its decimal text.
EntityId = Annotated[str, BeforeValidator(_api_id), WithJsonSchema(_ID_SCHEMA)]
FeedbackType = Literal["click", "cart", "purchase"]


class RankRequest(BaseModel):
    """``POST /rank``: rank ``candidates`` (or the default set) for ``user_id``."""

    model_config = ConfigDict(extra="forbid")

    user_id: EntityId
    candidates: list[EntityId] | None = Field(default=None, min_length=1, max_length=MAX_CANDIDATES)
    k: int = Field(default=DEFAULT_K, strict=True, ge=1, le=MAX_K)

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            dupes = sorted(v for v, n in Counter(value).items() if n > 1)
            raise ValueError(f"candidates must be distinct item ids; repeated: {dupes[:10]}")
        return value


class RankedItem(BaseModel):
    item_id: str
    score: float


class RankResponse(BaseModel):
    """The served list, best first; ``request_id`` identifies it in feedback."""

    request_id: str
    model_version: str
    items: list[RankedItem]


class FeedbackRequest(BaseModel):
    """``POST /feedback``: what the user did with an item of a served list."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1, max_length=MAX_REQUEST_ID_CHARS, pattern=r"^[A-Za-z0-9._:-]+$"
    )
    item_id: EntityId
    event_type: FeedbackType


class FeedbackResponse(BaseModel):
    status: Literal["recorded"] = "recorded"
    #: Set when the feedback was logged but did not update the user's features.
    note: str | None = None


def new_request_id(user_id: str) -> str:
    """A fresh request id that carries the user: ``<uuid4 hex>-<user_id>`` when the id
    fits a request id's alphabet, else ``<uuid4 hex>.<base64url(user_id)>``."""
    if _VERBATIM_ID.match(user_id):
        return f"{uuid.uuid4().hex}-{user_id}"
    encoded = base64.urlsafe_b64encode(user_id.encode()).decode().rstrip("=")
    return f"{uuid.uuid4().hex}.{encoded}"


def user_of_request(request_id: str) -> str | None:
    """The user id inside a request id this service issued, else ``None``."""
    match = _REQUEST_ID.match(request_id)
    if match is None:
        return None
    if match.group(1) is not None:
        return match.group(1)
    encoded = match.group(2)
    try:
        text = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        return normalize_id(text)
    except (ValueError, IdError):
        return None


# ---- exploration ------------------------------------------------------------------------


@dataclass(frozen=True)
class Slate:
    """A served list: candidate indices in served order, with how each was chosen."""

    indices: np.ndarray
    propensities: np.ndarray
    explored: np.ndarray


def epsilon_greedy(scores: np.ndarray, k: int, epsilon: float, rng: np.random.Generator) -> Slate:
    """Fill ``min(k, n)`` slots: each slot takes the best remaining candidate with
    probability ``1 - epsilon``, else one of the ``m`` remaining uniformly at random.

    The propensity logged for slot ``s`` is the probability that the policy puts that item
    in that slot given the items in slots before it: ``1 - epsilon + epsilon / m`` for the
    best remaining item, ``epsilon / m`` for any other. It lies in ``(0, 1]`` for
    ``epsilon < 1``, and is 1 for every slot when ``epsilon = 0``. ``explored`` marks slots
    whose item is not the greedy choice. Ties keep candidate order.

    Args:
        scores: one score per candidate (higher is better).
        k: slots to fill.
        epsilon: exploration probability per slot, in ``[0, 1]``.
        rng: the source of the draws (seed it for reproducible slates).
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon={epsilon}; expected a probability in [0, 1]")
    remaining = [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")]
    n = min(int(k), len(remaining))
    chosen = np.empty(n, dtype=np.int64)
    propensity = np.empty(n, dtype=np.float64)
    explored = np.zeros(n, dtype=bool)
    for slot in range(n):
        m = len(remaining)
        pick = 0
        if epsilon > 0 and rng.random() < epsilon:
            pick = int(rng.integers(m))
        chosen[slot] = remaining.pop(pick)
        propensity[slot] = epsilon / m + (1.0 - epsilon if pick == 0 else 0.0)
        explored[slot] = pick != 0
    return Slate(chosen, propensity, explored)


# ---- time -------------------------------------------------------------------------------


class ServingClock:
    """Wall-clock time shifted by a fixed offset (zero for the wall clock)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance_to(self, moment: datetime) -> None:
        """Jump forward to ``moment`` if it lies ahead; a clock never runs backwards."""
        ahead = moment - self.now()
        if ahead > timedelta(0):
            self.offset += ahead


def make_clock(
    settings: Settings, mode: str = "auto", wall_now: datetime | None = None
) -> ServingClock:
    """The clock for ``mode`` (``wall``, ``lake`` or ``auto``; see the module docstring).

    Raises:
        ValueError: ``mode`` is ``lake`` and the lake is empty, or ``mode`` is unknown.
    """
    from flywheel.lake import feature_time, watermark

    if mode not in ("auto", "wall", "lake"):
        raise ValueError(f"clock={mode!r}; expected 'auto', 'wall' or 'lake'")
    wall = wall_now or datetime.now(UTC)
    if mode == "wall" or (mode == "auto" and watermark(settings) is None):
        return ServingClock()
    lake_now = feature_time(settings) - timedelta(seconds=1)
    if mode == "auto" and wall - lake_now <= REPLAY_LAG:
        return ServingClock()
    log.info("serving on a replay clock starting at %s (the lake's feature time)", lake_now)
    return ServingClock(lake_now - wall)


# ---- online features ----------------------------------------------------------------------


_PROTO_FIELD = {"INT64": "int64_val", "INT32": "int32_val", "STRING": "string_val"}


def _proto_value(proto: Any) -> Any:
    kind = proto.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(proto, kind)


class ViewReader:
    """Reads some features of one feature view from the online store by entity key."""

    def __init__(self, store: FeatureStore, view: FeatureView, features: Sequence[str]) -> None:
        from feast.infra.online_stores.helpers import get_online_store_from_config

        self.view, self.features = view, tuple(features)
        self.config = store.config
        self.online = get_online_store_from_config(store.config.online_store)
        self.join_keys = tuple(c.name for c in view.entity_columns)
        self.key_fields = tuple(
            _PROTO_FIELD[c.dtype.to_value_type().name] for c in view.entity_columns
        )
        ttl = view.ttl.total_seconds() if view.ttl else 0.0
        self.ttl_s = ttl if ttl > 0 else None

    def read(
        self, keys: Sequence[tuple[Any, ...]], as_of: datetime
    ) -> list[tuple[datetime, dict[str, Any]] | None]:
        """Per key (values in ``join_keys`` order): ``(event time, {feature: value})``, or
        ``None`` when the store has no row or the row is older than the view's ttl."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        protos = [
            EntityKey(
                join_keys=list(self.join_keys),
                entity_values=[Value(**{f: v}) for f, v in zip(self.key_fields, key, strict=True)],
            )
            for key in keys
        ]
        rows = self.online.online_read(self.config, self.view, protos, list(self.features))
        oldest = as_of.timestamp() - self.ttl_s if self.ttl_s else -math.inf
        out: list[tuple[datetime, dict[str, Any]] | None] = []
        for ts, values in rows:
            if ts is None or values is None or ts.timestamp() < oldest:
                out.append(None)
            else:
                out.append((ts, {f: _proto_value(values[f]) for f in self.features if f in values}))
        return out


class OnlineFeatureReader:
    """One user's features against many items through a feature service, fast.

    Answers what ``feature_store.online_features`` answers (same columns, same nulls for
    missing or expired values) with the service resolved once and one ``online_read`` per
    view over the distinct entity keys of the request.
    """

    def __init__(self, store: FeatureStore, service_name: str) -> None:
        service = store.get_feature_service(service_name)
        self.service_name = service_name
        wanted = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}
        # The catalog is read anyway for the category join key: one read serves both.
        catalog = ["category", *(f for f in wanted.get(CATALOG_VIEW, []) if f != "category")]
        self.catalog = ViewReader(store, store.get_feature_view(CATALOG_VIEW), catalog)
        self.views = [
            (
                self.catalog
                if name == CATALOG_VIEW
                else ViewReader(store, store.get_feature_view(name), features),
                tuple(features),
            )
            for name, features in wanted.items()
        ]
        self.columns = [f for _, features in self.views for f in features]

    def read(self, user_id: str, item_ids: Sequence[str], as_of: datetime) -> pd.DataFrame:
        """``user_id``, ``item_id``, ``category`` then one float column per feature (NaN
        where missing or expired), one row per item in the given order."""
        import pandas as pd

        items = [str(i) for i in item_ids]
        found = self.catalog.read([(i,) for i in items], as_of)
        categories = [row[1].get("category") if row else None for row in found]
        entity = {
            "user_id": [str(user_id)] * len(items),
            "item_id": items,
            "category": [c if c is not None else "" for c in categories],
        }
        columns: dict[str, Any] = {"user_id": entity["user_id"], "item_id": items}
        columns["category"] = categories
        for view, features in self.views:
            if view is self.catalog:
                rows = found
            else:
                keys = list(zip(*(entity[k] for k in view.join_keys), strict=True))
                distinct = list(dict.fromkeys(keys))
                answers = dict(zip(distinct, view.read(distinct, as_of), strict=True))
                rows = [answers[key] for key in keys]
            for name in features:
                columns[name] = np.array([_as_float(row, name) for row in rows], dtype=np.float64)
        return pd.DataFrame(columns)


def _as_float(answer: tuple[datetime, dict[str, Any]] | None, name: str) -> float:
    value = answer[1].get(name) if answer is not None else None
    return math.nan if value is None else float(value)


# ---- default candidates -------------------------------------------------------------------


def default_candidates(
    settings: Settings, at: datetime, n_popular: int = 40, n_new: int = 10
) -> list[str]:
    """The candidate set for requests that name none.

    The ``n_popular`` items with the most views in the 7 days before ``at`` (their latest
    ``item_activity`` snapshot at or before ``at``; ties: more carts, then lower id), then
    the newest catalog items created at or before ``at``, enough to make
    ``n_popular + n_new`` in all when the catalog allows. Reads the feature tables
    (``settings.feature_data_dir``); missing tables give fewer (or no) candidates.
    """
    import pyarrow.parquet as pq

    folder = settings.feature_data_dir
    chosen: list[str] = []
    activity = folder / "item_activity.parquet"
    if n_popular > 0 and activity.exists():
        frame = pq.read_table(
            activity,
            columns=["item_id", "event_timestamp", "item_views_7d", "item_carts_7d"],
            filters=[
                ("event_timestamp", "<=", at),
                ("event_timestamp", ">", at - timedelta(seconds=WINDOWS["7d"])),
            ],
        ).to_pandas()
        latest = frame.sort_values("event_timestamp").drop_duplicates("item_id", keep="last")
        ranked = latest.sort_values(
            ["item_views_7d", "item_carts_7d", "item_id"], ascending=[False, False, True]
        )
        chosen = [str(i) for i in ranked["item_id"].head(n_popular)]
    catalog = folder / "item_catalog.parquet"
    wanted = n_popular + n_new - len(chosen)
    if wanted > 0 and catalog.exists():
        items = pq.read_table(
            catalog, columns=["item_id", "event_timestamp"], filters=[("event_timestamp", "<=", at)]
        ).to_pandas()
        newest = items.sort_values(["event_timestamp", "item_id"], ascending=[False, True])
        taken = set(chosen)
        fresh = [str(i) for i in newest["item_id"].drop_duplicates() if str(i) not in taken]
        chosen += fresh[:wanted]
    return chosen


class CandidatePool:
    """The default candidate set, rebuilt when older than ``refresh_s``."""

    def __init__(self, settings: Settings, options: ServingOptions) -> None:
        self.settings, self.options = settings, options
        self._items: list[str] = []
        self._built_at = -math.inf

    def get(self, at: datetime) -> list[str]:
        if time.monotonic() - self._built_at >= self.options.candidates_refresh_s:
            self._items = default_candidates(
                self.settings, at, self.options.popular_candidates, self.options.new_candidates
            )
            self._built_at = time.monotonic()
            log.info("default candidates rebuilt: %d items", len(self._items))
        return self._items


# ---- the champion -------------------------------------------------------------------------


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

    from flywheel.feature_store import feature_service_name
    from flywheel.registry import BENTO_MODEL_FILENAME, RegistryError, model_store
    from flywheel.train import load_booster

    with model_store(settings) as store:
        try:
            model = store.get(tag)
        except NotFound as exc:
            raise RegistryError(f"model {tag!r} is not in the workspace model store") from exc
        service = model.info.labels.get("feature_service") or feature_service_name(settings)
        booster = load_booster(model.path_of(BENTO_MODEL_FILENAME))
    return LoadedModel(str(model.tag), booster, service)


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


# ---- feedback -> user activity --------------------------------------------------------------


#: ``user_activity`` columns that are not feature values.
_ACTIVITY_KEYS: Final = ("user_id", "event_timestamp", "created_timestamp")
#: The windowed counts one feedback event adds to (views are not feedback events).
_COUNTS_BY_EVENT: Final[dict[str, tuple[str, ...]]] = {
    "click": ("clicks_7d",),
    "cart": ("carts_24h", "carts_7d"),
    "purchase": ("purchases_7d",),
}


def activity_after_feedback(
    user_id: str,
    current: Mapping[str, Any] | None,
    current_ts: datetime | None,
    event_type: str,
    at: datetime,
) -> dict[str, Any]:
    """The ``user_activity`` row to push after one feedback event.

    Counts the event in the windows it belongs to (a click in ``clicks_7d``, a cart in
    ``carts_24h`` and ``carts_7d``, a purchase in ``purchases_7d``), recomputes the rates
    from ``views_7d`` as the feature build does, sets ``last_event_unix`` to ``at`` and
    keeps every other value. A user with no fresh row starts from zeros.

    Args:
        current: the user's online ``user_activity`` values, or ``None``.
        current_ts: their event time; the new row is stamped after it (Redis keeps only
            strictly newer rows).
        at: when the feedback happened (the serving clock).

    Returns:
        One row in the ``USER_ACTIVITY_SCHEMA`` shape (tz-aware timestamps).
    """
    if event_type not in _COUNTS_BY_EVENT:
        raise ValueError(f"event_type={event_type!r}; expected one of {list(_COUNTS_BY_EVENT)}")
    row: dict[str, Any] = {"user_id": str(user_id)}
    for f in USER_ACTIVITY_SCHEMA:
        if f.name in _ACTIVITY_KEYS:
            continue
        value = (current or {}).get(f.name)
        row[f.name] = 0.0 if value is None else value
        if pa.types.is_integer(f.type):
            row[f.name] = int(row[f.name])
    for name in _COUNTS_BY_EVENT[event_type]:
        row[name] += 1
    views = row["views_7d"]
    row["cart_rate_7d"] = row["carts_7d"] / views if views else 0.0
    row["conversion_rate_7d"] = row["purchases_7d"] / views if views else 0.0
    row["last_event_unix"] = at.timestamp()
    stamp = at if current_ts is None else max(at, current_ts + timedelta(microseconds=1))
    row["event_timestamp"] = stamp
    row["created_timestamp"] = stamp
    return row


# ---- the service ----------------------------------------------------------------------------


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
        self.models = ChampionWatcher(settings, self.options.model_check_s)
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
            self._readers[service] = OnlineFeatureReader(self.store, service)
        return self._readers[service]

    def rank(self, request: RankRequest) -> RankOutcome:
        """Score, pick and log a slate for ``request``.

        Raises:
            NoChampionError, NoCandidatesError: nothing to rank with (a 503).
        """
        from flywheel.ranking import model_inputs

        model = self._model()
        at = self.clock.now()
        candidates = request.candidates or self.pool.get(at)
        if not candidates:
            raise NoCandidatesError(
                "the request names no candidates and no default set exists (feature tables "
                f"missing under {self.settings.feature_data_dir}); pass 'candidates'"
            )
        features = self.reader(model.feature_service).read(request.user_id, candidates, at)
        scores = _score(model.booster, model_inputs(features, at.timestamp()))
        slate = epsilon_greedy(scores, request.k, self.options.epsilon, self.rng)
        request_id = new_request_id(request.user_id)
        self.predictions.append(
            _prediction_records(request_id, at, request.user_id, model.tag, features, scores, slate)
        )
        cold = bool(np.isnan(features["last_event_unix"].to_numpy()).all())
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
        return row


def _score(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """``train.predict`` on one thread: for a few dozen rows, XGBoost's OpenMP pool costs
    more than it saves, and on a busy small machine its spinning threads made p50 ~40 ms.
    XGBoost's global config is thread-local, so this leaves other threads alone."""
    import xgboost as xgb

    from flywheel.train import predict

    with xgb.config_context(nthread=1):
        return predict(booster, x)


def _prediction_records(
    request_id: str,
    at: datetime,
    user_id: str,
    model_version: str,
    features: pd.DataFrame,
    scores: np.ndarray,
    slate: Slate,
) -> list[dict[str, Any]]:
    """One log record per served item; ``features`` holds the raw values the model saw."""
    raw = features[list(RAW_FEATURES)].to_numpy(dtype=np.float64)
    items = features["item_id"].tolist()
    categories = features["category"].tolist()
    records = []
    for position, (i, p) in enumerate(zip(slate.indices, slate.propensities, strict=True)):
        values: dict[str, Any] = {"category": categories[i]}
        values.update(
            (n, None if math.isnan(v) else v)
            for n, v in zip(RAW_FEATURES, raw[i].tolist(), strict=True)
        )
        records.append(
            {
                "request_id": request_id,
                "ts": at,
                "user_id": str(user_id),
                "item_id": str(items[i]),
                "position": position,
                "score": float(scores[i]),
                "model_version": model_version,
                "propensity": float(p),
                "features": json.dumps(values, separators=(",", ":")),
            }
        )
    return records


# ---- ASGI guard ------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, unread.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is
    buffered up to the limit and refused as soon as it passes it.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            size = int(declared) if declared.isdigit() else -1
            if size < 0 or size > self.max_bytes:
                await self._refuse(send, declared.decode(errors="replace"))
                return
            await self.app(scope, receive, send)
            return
        messages, total = [], 0
        while True:
            message = await receive()
            messages.append(message)
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await self._refuse(send, f"more than {total}")
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replayed() -> Message:
            # Then the real channel: a streaming response waits on it for the disconnect.
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send: Send, size: str) -> None:
        body = json.dumps(
            {"error": f"request body: {size} bytes; at most {self.max_bytes} bytes accepted"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RefuseFormBodies:
    """ASGI middleware: answer 415 to form bodies (``multipart/*``, url-encoded forms).

    The API takes JSON only. BentoML 1.4 would parse a form body with ``request.form()``,
    and a malformed one raises inside its endpoint wrapper as a 500; refusing up front
    keeps bad input a 4xx.
    """

    FORM_TYPES = (b"multipart/", b"application/x-www-form-urlencoded")

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            ctype = dict(scope.get("headers") or []).get(b"content-type", b"").lower().strip()
            if ctype.startswith(self.FORM_TYPES):
                body = json.dumps(
                    {
                        "error": f"content-type {ctype.decode(errors='replace')!r} is not "
                        "accepted; send application/json"
                    }
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 415,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


# ---- running the server ----------------------------------------------------------------------


def _service_dir() -> Path:
    """The directory holding the ``serving`` package (``bentoml serve --working-dir``)."""
    import importlib.util

    spec = importlib.util.find_spec("serving")
    if spec is not None and spec.origin:
        return Path(spec.origin).resolve().parent.parent
    return Path(__file__).resolve().parent.parent


def _settings_env(settings: Settings) -> dict[str, str]:
    """Settings as ``FLYWHEEL_*`` variables: ``load_settings()`` in the child rebuilds them."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}__{key.upper()}" if prefix else key.upper(), inner)
        elif value is not None:
            out[f"FLYWHEEL_{prefix}"] = str(value)

    data = settings.model_dump(mode="json")
    data["workspace"] = str(settings.workspace.absolute())
    walk("", data)
    return out


def serve_command(
    settings: Settings,
    port: int = 3000,
    workers: int = 1,
    host: str = "127.0.0.1",
    options: ServingOptions | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``bentoml serve`` command line and environment for ``settings``.

    The environment is ``environ`` (default: this process's) without any ``FLYWHEEL_*``
    variable or config file (the pinned tag ``$FLYWHEEL_MODEL_TAG`` excepted), plus Settings
    as ``FLYWHEEL_*`` variables, ``BENTOML_HOME`` (the workspace's model store), the worker
    count and ``$RANKER_OPTIONS`` (``options``, else the environment's, else the defaults).
    """
    from flywheel.registry import bentoml_home

    if workers < 1 or not 0 < port < 65536:
        raise ValueError(f"workers={workers}, port={port}; expected workers >= 1, port 1-65535")
    env = {
        k: v
        for k, v in (environ or os.environ).items()
        if not k.startswith("FLYWHEEL_") or k == PINNED_TAG_ENV  # the pin is not a setting
    }
    env.update(_settings_env(settings))
    env.update(
        BENTOML_HOME=str(bentoml_home(settings).absolute()),
        BENTOML_DO_NOT_TRACK="true",
        BENTOML_CONFIG_OVERRIDES=json.dumps({"services": {SERVICE_NAME: {"workers": workers}}}),
    )
    # Explicit options win; otherwise $RANKER_OPTIONS of the environment (a container's or
    # pod's) is validated and passed on, so serving options can be set without a flag.
    env[OPTIONS_ENV] = (options or options_from_env(env)).model_dump_json()
    # BentoML 1.4 trips a pydantic deprecation warning on every request; printing it each
    # time costs latency and buries the access log.
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    argv = [sys.executable, "-m", "bentoml", "serve", SERVICE_TARGET]
    argv += ["--host", host, "--port", str(port), "--working-dir", str(_service_dir())]
    return argv, env


def start_server(
    settings: Settings,
    port: int = 3000,
    workers: int = 1,
    host: str = "127.0.0.1",
    options: ServingOptions | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start ``bentoml serve`` in the background (see :func:`serve_command`)."""
    argv, env = serve_command(settings, port, workers, host, options)
    log.info("starting %s on http://%s:%d with %d worker(s)", SERVICE_TARGET, host, port, workers)
    return subprocess.Popen(argv, env=env, **popen)


def wait_ready(
    url: str, timeout_s: float = 60.0, process: subprocess.Popen[Any] | None = None
) -> float:
    """Poll ``{url}/readyz`` until it answers 200; return the seconds waited.

    Raises:
        TimeoutError: not ready in time. RuntimeError: ``process`` exited first.
    """
    import urllib.error
    import urllib.request

    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before ready")
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/readyz", timeout=2) as reply:
                if reply.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}/readyz did not answer 200 within {timeout_s} s")


def serve(
    settings: Settings,
    port: int = 3000,
    workers: int = 1,
    host: str = "127.0.0.1",
    options: ServingOptions | None = None,
) -> int:
    """Run the ranking service in the foreground until it exits; return its exit code
    (``flywheel serve``). Ctrl-C stops the server and waits for it."""
    process = start_server(settings, port, workers, host, options)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()
