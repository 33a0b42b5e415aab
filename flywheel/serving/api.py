"""The API's contract: limits, errors, options and the request/response shapes.

Everything a client or an operator sees: the request and response models (validated by
pydantic; bad input names the field), the limits they enforce, ``$RANKER_OPTIONS`` and the
request ids that carry the user for feedback.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Final, Literal

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
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}(?:-([A-Za-z0-9._:-]+)|\.([A-Za-z0-9_-]+))$")
#: Characters of an id that a request id carries verbatim (the request id's own alphabet).
_VERBATIM_ID = re.compile(r"^[A-Za-z0-9._:-]+$")


class ServingError(RuntimeError):
    """The service cannot answer right now (no champion, online store down, ...): a 503."""


class NoChampionError(ServingError):
    """No model has been promoted yet, so there is nothing to rank with."""


class NoCandidatesError(ServingError):
    """The request named no candidates and no default set could be built."""


class OnlineStoreDownError(ServingError):
    """The online store cannot be reached and degraded mode is off (the message names the
    store; ``serving.degraded_mode`` would rank without it)."""


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
    #: Item-side feature views held in memory (``flywheel.serving.item_cache``): the
    #: registry is checked for a materialization at most every ``item_cache_check_s``;
    #: every cached row is re-read at least every ``item_cache_max_age_s`` (0: no cache);
    #: a view holds at most ``item_cache_max_rows`` keys.
    item_cache_check_s: float = Field(default=5.0, ge=0)
    item_cache_max_age_s: float = Field(default=60.0, ge=0)
    item_cache_max_rows: int = Field(default=500_000, ge=1)


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
    """The served list, best first; ``request_id`` identifies it in feedback.

    ``degraded``: ranked without the online store (it was unreachable), from what the
    service still held: the user's features missing, item features where held in memory.
    """

    request_id: str
    model_version: str
    items: list[RankedItem]
    degraded: bool = False


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
