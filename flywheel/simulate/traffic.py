"""Live traffic: simulated users asking a ranker for items and reacting to what it serves.

A *ranker* is any callable ``ranker(user_id, candidates, k) -> (request_id, item_ids)`` over
world indices; ``candidates`` is ``None`` when the ranker chooses from the whole catalog.
The serving API is reached with :func:`http_ranker` / :func:`http_feedback` (standard
library only), which send and read the world's string ids (:attr:`World.ids`):

* ``POST {url}/rank`` ``{"user_id": str, "k": int}`` (plus ``"candidates"`` when given)
  answers ``{"request_id", "model_version", "items": [{"item_id", "score"}, ...]}``.
* ``POST {url}/feedback`` ``{"request_id", "item_id", "event_type"}``.

User behaviour (position-based model): the item at 0-based position ``p`` is examined with
probability ``1 / log2(p + 2)``; an examined item is clicked with ``World.click_prob``; a
click is a product-page view, so it is carted with ``World.cart_given_view`` and a cart
bought with ``World.purchase_given_cart``. The served click-through rate is
``clicks / impressions`` (every served item is one impression).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from flywheel.simulate.naming import IdNaming
from flywheel.simulate.world import World

log = logging.getLogger(__name__)

Ranker = Callable[[int, "list[int] | None", int], tuple[str, list[int]]]
Feedback = Callable[[str, int, str], None]


class TrafficError(RuntimeError):
    """The serving API could not be reached or answered something unexpected."""


@dataclass(frozen=True)
class SessionResponse:
    """What one user did with one served list (item ids, in served order)."""

    examined: tuple[int, ...]
    clicked: tuple[int, ...]
    carted: tuple[int, ...]
    purchased: tuple[int, ...]

    def feedback_events(self) -> list[tuple[int, str]]:
        """``(item_id, event_type)`` pairs to report, click before cart before purchase."""
        kinds = (("click", self.clicked), ("cart", self.carted), ("purchase", self.purchased))
        return [(item, kind) for kind, items in kinds for item in items]


@dataclass(frozen=True)
class TrafficSummary:
    """Outcome of :func:`run_traffic`."""

    requests: int
    impressions: int
    clicks: int
    carts: int
    purchases: int
    seconds: float
    model_versions: dict[str, int] = field(default_factory=dict)

    @property
    def ctr(self) -> float:
        """Served click-through rate: clicks per impression."""
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def purchase_rate(self) -> float:
        return self.purchases / self.impressions if self.impressions else 0.0


def examination_prob(n: int) -> np.ndarray:
    """Probability that a user looks at each of ``n`` positions: ``1 / log2(position + 2)``."""
    return 1.0 / np.log2(np.arange(n) + 2.0)


def simulate_session_response(
    world: World,
    user_id: int,
    served_item_ids: Sequence[int],
    at: datetime,
    rng: np.random.Generator,
) -> SessionResponse:
    """Draw the user's reaction to a served list from the ground truth at time ``at``.

    Always consumes ``4 x len(served_item_ids)`` uniforms, so outcomes for one seed do not
    shift when a different ranker serves different items.
    """
    items = np.asarray(served_item_ids, dtype=np.int64)
    u = rng.random((4, items.size))
    examined = u[0] < examination_prob(items.size)
    clicked = examined & (u[1] < world.click_prob(user_id, items, at))
    carted = clicked & (u[2] < world.cart_given_view(user_id, items, at))
    bought = carted & (u[3] < world.purchase_given_cart(user_id, items, at))
    return SessionResponse(*(tuple(items[m].tolist()) for m in (examined, clicked, carted, bought)))


def run_traffic(
    world: World,
    ranker: Ranker,
    n_requests: int,
    seed: int = 0,
    at: datetime | None = None,
    k: int = 10,
    feedback: Feedback | None = None,
    interval_s: float = 0.0,
) -> TrafficSummary:
    """Send ``n_requests`` requests from users drawn by activity and simulate their reactions.

    Args:
        ranker: see the module docstring; called with ``candidates=None``.
        at: simulated time of the first request (default ``world.start``); request ``i`` is
            at ``at + i * interval_s`` seconds, which matters only across the drift moment.
        feedback: called as ``feedback(request_id, item_id, event_type)`` for every click,
            cart and purchase (e.g. :func:`http_feedback`).

    Returns:
        A :class:`TrafficSummary`; ``ctr`` is the served click-through rate.
    """
    if n_requests < 0 or k < 1:
        raise ValueError(f"n_requests={n_requests}, k={k}; expected n_requests >= 0, k >= 1")
    rng = np.random.default_rng([seed, 0x7AFF1C])
    users = rng.choice(world.n_users, n_requests, p=world.activity / world.activity.sum())
    first = at or world.start
    totals: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    t0 = time.perf_counter()
    for i, user in enumerate(users.tolist()):
        request_id, served = ranker(user, None, k)
        when = first + timedelta(seconds=i * interval_s)
        response = simulate_session_response(world, user, served, when, rng)
        totals.update(impressions=len(served), clicks=len(response.clicked),
                      carts=len(response.carted), purchases=len(response.purchased))  # fmt: skip
        versions[getattr(ranker, "last_model_version", "") or "unknown"] += 1
        if feedback is not None:
            for item, kind in response.feedback_events():
                feedback(request_id, item, kind)
        if (i + 1) % 1000 == 0:
            log.info("traffic: %d/%d requests, CTR so far %.4f", i + 1, n_requests,
                     totals["clicks"] / max(totals["impressions"], 1))  # fmt: skip
    return TrafficSummary(
        n_requests, totals["impressions"], totals["clicks"], totals["carts"],
        totals["purchases"], time.perf_counter() - t0, dict(versions),
    )  # fmt: skip


def oracle_ranker(world: World, at: datetime | None = None) -> Ranker:
    """A ranker serving the ``k`` items of highest true click probability at time ``at``
    (default ``world.start``): the upper bound any learned model is compared with."""
    when = at or world.start
    counter = itertools.count()
    catalog = np.arange(world.n_items, dtype=np.int64)

    def rank(user_id: int, candidates: list[int] | None, k: int) -> tuple[str, list[int]]:
        pool = catalog if candidates is None else np.asarray(candidates, dtype=np.int64)
        p = world.click_prob(user_id, pool, when)
        top = np.argsort(-p, kind="stable")[:k]
        return f"oracle-{next(counter)}", pool[top].tolist()

    return rank


def random_ranker(world: World, seed: int = 0) -> Ranker:
    """A ranker serving ``k`` distinct items uniformly at random (the floor)."""
    rng = np.random.default_rng([seed, 0x2A4D])
    counter = itertools.count()

    def rank(user_id: int, candidates: list[int] | None, k: int) -> tuple[str, list[int]]:
        pool = np.arange(world.n_items) if candidates is None else np.asarray(candidates)
        chosen = rng.choice(pool, min(k, pool.size), replace=False)
        return f"random-{next(counter)}", [int(x) for x in chosen]

    return rank


class HttpRanker:
    """Ranker backed by ``POST {url}/rank``; remembers the model version of the last answer.

    The simulator ranks by index; the service speaks the shop's ids. ``ids`` (the world's
    :attr:`World.ids`) translates both ways; without it ids are the indices' decimal text.
    """

    def __init__(self, url: str, timeout_s: float = 10.0, ids: IdNaming | None = None) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.ids = ids
        self.last_model_version = ""

    def __call__(self, user_id: int, candidates: list[int] | None, k: int) -> tuple[str, list[int]]:
        ids = self.ids
        user = ids.user_id(user_id) if ids else str(int(user_id))
        body: dict[str, Any] = {"user_id": user, "k": int(k)}
        if candidates is not None:
            body["candidates"] = [ids.item_id(c) if ids else str(int(c)) for c in candidates]
        reply = post_json(f"{self.url}/rank", body, self.timeout_s)
        try:
            served = [str(entry["item_id"]) for entry in reply["items"]]
            items = ids.item_indices(served) if ids else [int(i) for i in served]
            self.last_model_version = str(reply.get("model_version", ""))
            return str(reply["request_id"]), items
        except (KeyError, TypeError, ValueError) as exc:
            raise TrafficError(
                f"{self.url}/rank answered {str(reply)[:200]!r}; expected "
                '{"request_id", "model_version", "items": [{"item_id", "score"}]}'
            ) from exc


def http_ranker(url: str, timeout_s: float = 10.0, ids: IdNaming | None = None) -> HttpRanker:
    """A ranker that asks the serving API at ``url`` (e.g. ``http://127.0.0.1:3000``)."""
    return HttpRanker(url, timeout_s, ids)


def http_feedback(url: str, timeout_s: float = 10.0, ids: IdNaming | None = None) -> Feedback:
    """A feedback poster: ``POST {url}/feedback`` with request id, item id and event type
    (the item's id under ``ids``, the world's naming; decimal text without it)."""
    base = url.rstrip("/")

    def post(request_id: str, item_id: int, event_type: str) -> None:
        item = ids.item_id(item_id) if ids else str(int(item_id))
        body = {"request_id": request_id, "item_id": item, "event_type": event_type}
        post_json(f"{base}/feedback", body, timeout_s)

    return post


def post_json(url: str, body: dict[str, Any], timeout_s: float) -> Any:
    """POST ``body`` as JSON and decode the JSON answer (``None`` for an empty one).

    Raises:
        TrafficError: naming the URL and the HTTP status or connection problem.
    """
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:200].decode(errors="replace")
        raise TrafficError(f"POST {url} failed with HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise TrafficError(f"POST {url} could not reach the service: {exc}") from exc
    try:
        return json.loads(raw) if raw.strip() else None
    except json.JSONDecodeError as exc:
        raise TrafficError(f"POST {url} answered non-JSON: {raw[:200]!r}") from exc
