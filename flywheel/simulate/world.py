"""The simulated world: users with latent tastes, an item catalog and the ground truth.

Everything the simulator emits (web-log events, reactions to served rankings) is drawn from
the probabilities defined here, so later stages can score any ranking against the truth.

Ground truth (``aff = log(n_categories * taste[user, category(item)] + 0.1)``,
``z = standardised log price`` of the item, ``s`` the user's price sensitivity, ``q`` the
item's quality, ``sigmoid`` the logistic function):

* ``click_prob        = sigmoid(-3.0 + 1.0 aff + 0.6 q - 0.8 s z)``: the user clicks an
  item shown to them (and examined).
* ``cart_given_view   = sigmoid(-3.3 + 0.5 aff + 0.4 q - 0.6 s z)``: a viewed item is
  added to the cart.
* ``purchase_given_cart = sigmoid(-1.1 + 0.3 q - 0.5 s z)``: a carted item is bought.
* ``purchase_prob = click_prob * cart_given_view * purchase_given_cart``: an item shown to
  the user ends up bought.

Drift: at ``start + drift_day`` days two things change.

* Tastes (covariate drift): a share ``drift_share`` of the users (chosen by the world seed,
  listed in ``World.drifted``) get a freshly drawn preference vector (``new_taste``); from
  that moment on every probability above uses it. The other users, and every user before
  the drift moment, keep ``taste``. Fresh features see this shift, so a model trained
  before it can follow it without retraining.
* Weights (concept drift), only when ``drift_weights`` is given: from the drift moment the
  affinity, quality and price x sensitivity weights of all three logits are multiplied by
  ``drift_weights.affinity``, ``.quality`` and ``.price`` for every user (the biases stay).
  The mapping from features to outcomes changes, so only a model retrained on post-drift
  data can follow it. Two named drifts:

  - :data:`PREMIUM_TREND` (price x -1, the demo's): the click logit becomes
    ``-3.0 + 1.0 aff + 0.6 q + 0.8 s z``: price turns from a deterrent into an attraction
    (premium products become the fashion), most strongly for the users who were the most
    price-sensitive.
  - :data:`PRICE_SHOCK` (quality x0.5, price x3): ``-3.0 + 1.0 aff + 0.3 q - 2.4 s z``:
    shoppers care three times as much about price and half as much about quality.

Prices, quality and sensitivity themselves never change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Final

import numpy as np

from flywheel.simulate.naming import PLAIN, IdNaming
from flywheel.simulate.sampling import SegmentSampler

#: Default simulation start: a Monday, so day indices line up with weekdays.
DEFAULT_START: Final = datetime(2025, 1, 6, tzinfo=UTC)
DAY_US: Final = 86_400_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_CATEGORY_NAMES: Final = (
    "electronics", "books", "fashion", "home", "sports", "beauty", "toys", "grocery",
    "garden", "automotive", "music", "pets", "health", "office", "jewelry", "games",
)  # fmt: skip

# Concentration of the Dirichlet tastes: < 1 gives each user a few favourite categories.
TASTE_CONCENTRATION: Final = 0.3
_AFFINITY_FLOOR: Final = 0.1
# (bias, affinity, quality, price x sensitivity) weights of the three logits.
_CLICK_W: Final = (-3.0, 1.0, 0.6, 0.8)
_CART_W: Final = (-3.3, 0.5, 0.4, 0.6)
_BUY_W: Final = (-1.1, 0.0, 0.3, 0.5)
#: Mean sessions a user starts per day (activity levels average to this).
MEAN_SESSIONS_PER_DAY: Final = 0.6
_ARRAYS: Final = (
    "taste", "new_taste", "drifted", "price_sensitivity", "activity",
    "item_category", "item_price", "item_quality", "item_popularity", "item_created_us",
)  # fmt: skip


class WorldError(ValueError):
    """A world parameter, file or time argument is invalid; the message names it."""


@dataclass(frozen=True)
class DriftWeights:
    """Multipliers on the logit weights in force from the drift moment on (concept drift).

    Each multiplies its term in the click, cart and purchase logits for every user; the
    biases never change. ``DriftWeights()`` (all 1.0) changes nothing.
    """

    affinity: float = 1.0
    quality: float = 1.0
    price: float = 1.0

    def apply(self, w: tuple[float, ...]) -> tuple[float, ...]:
        """The ``(bias, affinity, quality, price)`` weights ``w`` after the drift."""
        return (w[0], w[1] * self.affinity, w[2] * self.quality, w[3] * self.price)


#: Concept drift where price attracts instead of deterring (price weight x -1): the demo's.
PREMIUM_TREND: Final = DriftWeights(affinity=1.0, quality=1.0, price=-1.0)
#: Concept drift where price matters three times as much and quality half as much.
PRICE_SHOCK: Final = DriftWeights(affinity=1.0, quality=0.5, price=3.0)


def to_unix_us(at: datetime | Sequence[datetime] | np.ndarray) -> np.ndarray:
    """Convert a UTC datetime, a sequence of them or a datetime64 array to int64 epoch µs.

    Raises:
        WorldError: for a naive datetime (the simulator only speaks UTC).
    """
    if isinstance(at, datetime):
        return np.asarray(_one_us(at), dtype=np.int64)
    arr = np.asarray(at)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[us]").astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    return np.array([_one_us(t) for t in arr.ravel()], dtype=np.int64).reshape(arr.shape)


def _one_us(at: datetime) -> int:
    if at.tzinfo is None:
        raise WorldError(f"at={at!r} is a naive datetime; expected a timezone-aware UTC one")
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True, eq=False)
class World:
    """Parameters and latent state of one simulated shop (arrays are read-only).

    Users are ``0..n_users-1`` and items ``0..n_items-1`` (int64). ``taste`` and
    ``new_taste`` are ``(n_users, n_categories)`` preference vectors summing to 1;
    ``new_taste`` equals ``taste`` for users not in ``drifted``.
    """

    n_users: int
    n_items: int
    n_categories: int
    seed: int
    start: datetime
    drift_day: float | None
    drift_share: float
    taste: np.ndarray = field(repr=False)
    new_taste: np.ndarray = field(repr=False)
    drifted: np.ndarray = field(repr=False)
    price_sensitivity: np.ndarray = field(repr=False)
    activity: np.ndarray = field(repr=False)
    item_category: np.ndarray = field(repr=False)
    item_price: np.ndarray = field(repr=False)
    item_quality: np.ndarray = field(repr=False)
    item_popularity: np.ndarray = field(repr=False)
    item_created_us: np.ndarray = field(repr=False)
    #: Concept drift from the drift moment (``None``: the weights never change).
    drift_weights: DriftWeights | None = None
    #: How the shop's logs name users and items (indices here, strings in its logs).
    naming: IdNaming = PLAIN

    @property
    def ids(self) -> IdNaming:
        """The naming, sized to this world: index <-> the ids its logs and traffic use."""
        return self._sized_ids

    @cached_property
    def _sized_ids(self) -> IdNaming:
        return self.naming.sized(self.n_users, self.n_items)

    # ---- time ---------------------------------------------------------------------
    @property
    def start_us(self) -> int:
        return int(to_unix_us(self.start))

    @property
    def drift_us(self) -> int | None:
        """Epoch µs of the drift moment, ``None`` for a world without drift."""
        if self.drift_day is None:
            return None
        return self.start_us + round(self.drift_day * DAY_US)

    @property
    def drift_at(self) -> datetime | None:
        return None if self.drift_day is None else self.start + timedelta(days=self.drift_day)

    @property
    def category_names(self) -> list[str]:
        """Category labels as they appear in the catalog, indexed by category number."""
        return [
            _CATEGORY_NAMES[c] if c < len(_CATEGORY_NAMES) else f"category_{c:02d}"
            for c in range(self.n_categories)
        ]

    # ---- ground truth ---------------------------------------------------------------
    def taste_at(self, user_ids: Any, at: Any) -> np.ndarray:
        """The ``(n, n_categories)`` preference vectors in force for users at times ``at``."""
        users = np.asarray(user_ids, dtype=np.int64)
        after = self._after_drift(users.shape, to_unix_us(at))
        rows = self.taste[users]
        moved = after & self.drifted[users]
        rows[moved] = self.new_taste[users[moved]]
        return rows

    def click_prob(self, user_ids: Any, item_ids: Any, at: Any) -> np.ndarray:
        """P(click) for each (user, item) pair shown at ``at`` (arrays broadcast together)."""
        return self._prob(_CLICK_W, user_ids, item_ids, at)

    def cart_given_view(self, user_ids: Any, item_ids: Any, at: Any) -> np.ndarray:
        """P(add to cart | the user views the item page)."""
        return self._prob(_CART_W, user_ids, item_ids, at)

    def purchase_given_cart(self, user_ids: Any, item_ids: Any, at: Any) -> np.ndarray:
        """P(purchase | the item is in the user's cart)."""
        return self._prob(_BUY_W, user_ids, item_ids, at)

    def purchase_prob(self, user_ids: Any, item_ids: Any, at: Any) -> np.ndarray:
        """P(the user buys an item shown to them) = click x cart|view x purchase|cart."""
        return (
            self.click_prob(user_ids, item_ids, at)
            * self.cart_given_view(user_ids, item_ids, at)
            * self.purchase_given_cart(user_ids, item_ids, at)
        )

    def _prob(self, w: tuple[float, ...], user_ids: Any, item_ids: Any, at: Any) -> np.ndarray:
        users, items = np.broadcast_arrays(
            np.asarray(user_ids, dtype=np.int64), np.asarray(item_ids, dtype=np.int64)
        )
        self._check_ids(users, items)
        after = self._after_drift(users.shape, to_unix_us(at))
        cats = self.item_category[items]
        t = np.where(after, self.new_taste[users, cats], self.taste[users, cats])
        terms = (
            np.log(self.n_categories * t + _AFFINITY_FLOOR),
            self.item_quality[items],
            -self.price_sensitivity[users] * self.price_z[items],
        )

        def logit_of(weights: tuple[float, ...]) -> Any:
            return weights[0] + sum(wi * x for wi, x in zip(weights[1:], terms, strict=True))

        logit = logit_of(w)
        if self.drift_weights is not None:
            logit = np.where(after, logit_of(self.drift_weights.apply(w)), logit)
        return np.asarray(_sigmoid(logit), dtype=np.float64)

    def _after_drift(self, shape: tuple[int, ...], ts_us: np.ndarray) -> np.ndarray:
        drift_us = self.drift_us
        if drift_us is None:
            return np.zeros(shape, dtype=bool)
        return np.broadcast_to(ts_us >= drift_us, shape)

    def _check_ids(self, users: np.ndarray, items: np.ndarray) -> None:
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise WorldError(f"user_ids outside 0..{self.n_users - 1}: {users.min()}..")
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise WorldError(f"item_ids outside 0..{self.n_items - 1}: {items.min()}..")

    # ---- derived catalog helpers (cached; the world itself never changes) ----------
    @cached_property
    def price_z(self) -> np.ndarray:
        """Standardised log price of each item (0 mean, unit variance over the catalog)."""
        lp = np.log(self.item_price)
        return (lp - lp.mean()) / max(float(lp.std()), 1e-9)

    @cached_property
    def category_sampler(self) -> SegmentSampler:
        """Draws an item of a given category with probability proportional to popularity."""
        items = np.arange(self.n_items, dtype=np.int64)
        return SegmentSampler.build(
            items, self.item_category, self.item_popularity, self.n_categories
        )

    @cached_property
    def popularity_sampler(self) -> SegmentSampler:
        """Draws any item with probability proportional to popularity (segment 0)."""
        items = np.arange(self.n_items, dtype=np.int64)
        return SegmentSampler.build(
            items, np.zeros(self.n_items, dtype=np.int64), self.item_popularity, 1
        )

    # ---- persistence ----------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The scalar parameters that, with the seed, rebuild this world."""
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_categories": self.n_categories,
            "seed": self.seed,
            "start": self.start.isoformat(),
            "drift_day": self.drift_day,
            "drift_share": self.drift_share,
            "drift_weights": None if self.drift_weights is None else asdict(self.drift_weights),
            "ids": self.naming.params(),
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``world.json`` (parameters) and one ``.npy`` per latent array to a folder."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "world.json").write_text(json.dumps(self.params(), indent=2) + "\n")
        for name in _ARRAYS:
            np.save(out / f"{name}.npy", getattr(self, name), allow_pickle=False)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> World:
        """Read a world written by :meth:`save`; rebuilt from the seed if arrays are missing.

        Raises:
            WorldError: when ``world.json`` is missing or an array has the wrong shape.
        """
        src = Path(directory)
        meta_path = src / "world.json"
        if not meta_path.is_file():
            raise WorldError(f"{str(meta_path)!r} does not exist; expected a saved world")
        p = json.loads(meta_path.read_text())
        start = datetime.fromisoformat(p["start"])
        # Worlds saved before concept drift existed have no "drift_weights".
        weights = p.get("drift_weights")
        p["drift_weights"] = None if weights is None else DriftWeights(**weights)
        # Worlds saved before ids were named wrote plain decimal ids.
        p["naming"] = IdNaming(**p.pop("ids", PLAIN.params()))
        built = make_world(
            p["n_users"], p["n_items"], p["n_categories"], p["seed"], start,
            p["drift_day"], p["drift_share"], p["drift_weights"], p["naming"],
        )  # fmt: skip
        if not all((src / f"{n}.npy").is_file() for n in _ARRAYS):
            return built
        arrays = {n: np.load(src / f"{n}.npy", allow_pickle=False) for n in _ARRAYS}
        for name, arr in arrays.items():
            if arr.shape != getattr(built, name).shape:
                raise WorldError(f"{name}.npy in {str(src)!r} has shape {arr.shape}, expected "
                                 f"{getattr(built, name).shape}")  # fmt: skip
            arr.flags.writeable = False
        return cls(**{**p, "start": start, **arrays})


def make_world(
    n_users: int,
    n_items: int,
    n_categories: int = 12,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    drift_day: float | None = None,
    drift_share: float = 0.5,
    drift_weights: DriftWeights | None = None,
    naming: IdNaming = PLAIN,
) -> World:
    """Draw a world from ``seed``: tastes, sensitivities, activity and the catalog.

    Args:
        n_users, n_items, n_categories: sizes; every category gets at least one item.
        seed: the only source of randomness (same arguments, same world).
        start: UTC moment day 0 of the simulation begins.
        drift_day: days after ``start`` when tastes shift (``None``: never).
        drift_share: share of users whose preference vector is redrawn at the drift.
        drift_weights: concept drift, the logit weight multipliers in force from the drift
            on (e.g. :data:`PRICE_SHOCK`); ``None``, or any value when ``drift_day`` is
            ``None``, keeps the weights fixed (a world without drift has none).
        naming: the ids of users and items in the world's logs (:mod:`.naming`).

    Raises:
        WorldError: naming the parameter that is out of range.
    """
    _validate(n_users, n_items, n_categories, start, drift_day, drift_share)
    _validate_weights(drift_weights)
    # Separate streams: the catalog depends only on (seed, n_items, n_categories) and the
    # drift draw does not disturb anyone's original tastes.
    user_rng, item_rng, drift_rng = (np.random.default_rng([seed, s]) for s in (1, 2, 3))
    conc = np.full(n_categories, TASTE_CONCENTRATION)
    taste = user_rng.dirichlet(conc, n_users)
    sensitivity = user_rng.lognormal(0.0, 0.5, n_users)
    activity = user_rng.lognormal(0.0, 0.8, n_users)
    activity *= MEAN_SESSIONS_PER_DAY / activity.mean()
    drifted = np.zeros(n_users, dtype=bool)
    if drift_day is not None:
        drifted[drift_rng.permutation(n_users)[: round(drift_share * n_users)]] = True
    redrawn = drift_rng.dirichlet(conc, n_users)
    new_taste = np.where(drifted[:, None], redrawn, taste)
    catalog = _draw_catalog(item_rng, n_items, n_categories, to_unix_us(start))
    arrays = {
        "taste": taste, "new_taste": new_taste, "drifted": drifted,
        "price_sensitivity": sensitivity, "activity": activity, **catalog,
    }  # fmt: skip
    for arr in arrays.values():
        arr.flags.writeable = False
    weights = None if drift_day is None else drift_weights
    return World(
        n_users, n_items, n_categories, seed, start, drift_day, drift_share, **arrays,
        drift_weights=weights, naming=naming,
    )  # fmt: skip


def _draw_catalog(
    rng: np.random.Generator, n_items: int, n_categories: int, start_us: np.ndarray
) -> dict[str, np.ndarray]:
    """Items: category (uneven sizes, none empty), log-normal price by category, quality,
    popularity (driven by quality plus noise) and a creation time within the prior year."""
    sizes = rng.dirichlet(np.full(n_categories, 2.0))
    category = np.concatenate(
        [np.arange(n_categories), rng.choice(n_categories, n_items - n_categories, p=sizes)]
    )
    category = rng.permutation(category).astype(np.int64)
    median_price = np.exp(rng.normal(3.5, 0.8, n_categories))
    price = np.round(median_price[category] * rng.lognormal(0.0, 0.5, n_items), 2)
    price = np.maximum(price, 0.5)
    quality = rng.normal(0.0, 1.0, n_items)
    popularity = np.exp(0.8 * quality + rng.normal(0.0, 1.0, n_items))
    age_us = rng.integers(0, 365 * DAY_US, n_items)
    return {
        "item_category": category,
        "item_price": price,
        "item_quality": quality,
        "item_popularity": popularity,
        "item_created_us": (int(start_us) - age_us).astype(np.int64),
    }


def _validate(
    n_users: int,
    n_items: int,
    n_categories: int,
    start: datetime,
    drift_day: float | None,
    drift_share: float,
) -> None:
    if n_users < 1:
        raise WorldError(f"n_users={n_users}; expected at least 1")
    if n_categories < 1:
        raise WorldError(f"n_categories={n_categories}; expected at least 1")
    if n_items < n_categories:
        raise WorldError(f"n_items={n_items}; expected at least n_categories={n_categories}")
    if start.tzinfo is None or start.utcoffset() != timedelta(0):
        raise WorldError(f"start={start!r}; expected a timezone-aware UTC datetime")
    if drift_day is not None and drift_day < 0:
        raise WorldError(f"drift_day={drift_day}; expected a non-negative number of days")
    if not 0.0 <= drift_share <= 1.0:
        raise WorldError(f"drift_share={drift_share}; expected a share in [0, 1]")


def _validate_weights(weights: DriftWeights | None) -> None:
    if weights is None:
        return
    for name, value in asdict(weights).items():
        if not np.isfinite(value):
            raise WorldError(f"drift_weights.{name}={value}; expected a finite multiplier")
