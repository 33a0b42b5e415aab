"""An independent shop world to hold the ranker to (issue #11): not ``flywheel.simulate``.

It writes the kind of export a real shop hands over, in its own layout, and keeps the truth
behind it. What differs from the project's simulator, on purpose:

* **Browsing is not driven by taste.** A ``detail`` view's product is drawn from the day's
  trending popularity (``1 - EXPLORE_SHARE``) or uniformly from the launched catalogue
  (``EXPLORE_SHARE``), never from the visitor's preferences; popularity is even slightly
  anti-correlated with how well a product converts. Taste shows only in what a visitor puts
  in the basket and orders. (The simulator picks views by taste and click probability.)
* **Taste** is a primary and a secondary category per visitor (logit +2.0 / +1.1 on adding
  to the basket), a reference price with a sensitivity that only penalises prices *above*
  it (``-s * max(0, log price - log ref)``), the product's appeal, and a per-visit intent.
* **Baskets persist.** A product added but not ordered stays in the visitor's basket for
  ``BASKET_DAYS`` days (then a ``remove_from_basket`` event); in each later visit every
  basket product is viewed again with probability ``REVIEW_PROB`` and ordered then with its
  own probability. So the strongest signal is "this visitor has this product in the basket".
* **Rhythm.** Visitors live at UTC-5: a lunch peak and a late-evening peak local time,
  Saturdays quiet and Sundays busy; 15% of visitors and 15% of products appear mid-way.
* **Drift** at ``drift_day`` (UTC midnight): 40% of visitors get a new primary category and
  ``SEASON_CATEGORY`` becomes seasonal (+0.9 on the basket logit for everyone).
* **Layout.** Epoch-millisecond ``timestamp_ms``, ``visitor`` ids ``usr-<10 hex>``,
  ``product`` ids ``SKU-<n>-<suffix>``, ``action`` in ``detail | add_to_basket | order |
  remove_from_basket``, category path and price as text on every row, no session or device
  column: one CSV per UTC day. ``benchmarks/shop_world.yaml`` maps it into the lake.

The oracle (``truth/views.parquet``): for every ``detail`` view, the generator's probability
that *this view* leads to an ``add_to_basket`` or ``order`` of that product by that visitor
(within minutes, so inside the project's 1-hour attribution window): the quantity the
project's organic labels (``flywheel.dataset.label_organic_impressions``) sample.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

#: Category paths and the suffix their SKUs carry.
CATEGORIES: Final = (
    ("home/kitchen", "KT"), ("home/decor", "DC"), ("outdoor/garden", "GD"),
    ("outdoor/camping", "CP"), ("fashion/women", "FW"), ("fashion/men", "FM"),
    ("kids/toys", "TY"), ("tech/audio", "AU"), ("tech/phones", "PH"),
    ("beauty/skin", "SK"), ("sports/fitness", "FT"), ("books/fiction", "BK"),
)  # fmt: skip
SEASON_CATEGORY: Final = 2  # outdoor/garden
ACTIONS: Final = ("detail", "add_to_basket", "order", "remove_from_basket")
DETAIL, BASKET, ORDER, REMOVE = range(4)
#: A Monday, so day indices are weekdays; well in the past (ingest rejects future events).
DEFAULT_START: Final = datetime(2025, 3, 3, tzinfo=UTC)
UTC_OFFSET_H: Final = -5
#: Relative visit-start intensity per *local* hour (0-23): lunch and late-evening peaks.
LOCAL_RHYTHM: Final = np.array(
    [0.30, 0.15, 0.08, 0.05, 0.05, 0.08, 0.20, 0.45, 0.55, 0.50, 0.55, 0.80,
     1.10, 1.00, 0.60, 0.50, 0.55, 0.65, 0.80, 1.00, 1.40, 1.60, 1.30, 0.70]
)  # fmt: skip
#: Visit-rate factor by weekday (Monday=0): quiet Saturday, busy Sunday; mean 1.
WEEKDAY_FACTOR: Final = np.array([0.95, 0.90, 0.90, 0.95, 1.00, 0.75, 1.55])
MEAN_VISITS_PER_DAY: Final = 0.5
MEAN_VIEWS_PER_VISIT: Final = 5.0
EXPLORE_SHARE: Final = 0.3
REVIEW_PROB: Final = 0.35
MAX_REVIEWS_PER_VISIT: Final = 3
BASKET_DAYS: Final = 7
AFFINITY: Final = (0.0, 1.1, 2.0)  # other, secondary, primary category
BASKET_BIAS: Final = -3.3
REVIEW_BIAS: Final = -0.9
ORDER_NOW_BIAS: Final = -0.4
SEASON_BOOST: Final = 0.9
INTENT_SD: Final = 0.4
DRIFT_SHARE: Final = 0.4
DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000


@dataclass(frozen=True, eq=False)
class Shop:
    """The latent state of one shop; visitors and products are indices into the arrays."""

    users: int
    items: int
    days: int
    seed: int
    start: datetime
    drift_day: int | None
    user_ids: list[str] = field(repr=False)
    item_ids: list[str] = field(repr=False)
    primary: np.ndarray = field(repr=False)
    secondary: np.ndarray = field(repr=False)
    new_primary: np.ndarray = field(repr=False)  # equals primary for visitors not drifted
    ref_logprice: np.ndarray = field(repr=False)
    sensitivity: np.ndarray = field(repr=False)
    visit_rate: np.ndarray = field(repr=False)
    join_day: np.ndarray = field(repr=False)
    item_category: np.ndarray = field(repr=False)
    item_price: np.ndarray = field(repr=False)
    item_appeal: np.ndarray = field(repr=False)
    item_popularity: np.ndarray = field(repr=False)
    item_trend: np.ndarray = field(repr=False)
    launch_day: np.ndarray = field(repr=False)  # < 0: launched before the data starts

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def drift_ms(self) -> int | None:
        return None if self.drift_day is None else self.start_ms + self.drift_day * DAY_MS

    def primary_at(self, users: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
        """Each visitor's primary category in force at ``ts_ms``."""
        users = np.asarray(users, dtype=np.int64)
        if self.drift_ms is None:
            return self.primary[users]
        after = np.asarray(ts_ms) >= self.drift_ms
        return np.where(after, self.new_primary[users], self.primary[users])

    def affinity(self, users: np.ndarray, items: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
        """The taste term of the basket logit for (visitor, product) pairs at ``ts_ms``."""
        cats = self.item_category[np.asarray(items, dtype=np.int64)]
        level = np.where(cats == self.secondary[np.asarray(users, dtype=np.int64)], 1, 0)
        level = np.where(cats == self.primary_at(users, ts_ms), 2, level)
        return np.asarray(AFFINITY)[level]

    def params(self) -> dict[str, Any]:
        return {
            "users": self.users, "items": self.items, "days": self.days, "seed": self.seed,
            "start": self.start.isoformat(), "drift_day": self.drift_day,
        }  # fmt: skip


def _user_id(seed: int, u: int) -> str:
    return "usr-" + hashlib.blake2b(f"{seed}:{u}".encode(), digest_size=5).hexdigest()


def make_shop(users: int, items: int, days: int, seed: int = 0, drift_day: int | None = -1) -> Shop:
    """Draw a shop from ``seed``. ``drift_day=-1``: three days before the end (``None``: none).

    Raises:
        ValueError: naming the argument out of range.
    """
    if users < 1 or items < len(CATEGORIES) or days < 2:
        raise ValueError(
            f"users={users}, items={items}, days={days}; expected users >= 1, "
            f"items >= {len(CATEGORIES)}, days >= 2"
        )
    if drift_day == -1:
        drift_day = days - 3 if days >= 4 else None
    if drift_day is not None and not 0 < drift_day < days:
        raise ValueError(f"drift_day={drift_day}; expected None or 1..{days - 1}")
    rng = np.random.default_rng([seed, 0x5409])
    n_cat = len(CATEGORIES)
    # Category popularity as a taste prior: some categories have many fans.
    prior = rng.dirichlet(np.full(n_cat, 2.0))
    primary = rng.choice(n_cat, users, p=prior)
    secondary = (primary + rng.integers(1, n_cat, users)) % n_cat
    moved = rng.random(users) < DRIFT_SHARE
    shift = rng.integers(1, n_cat - 1, users)  # never back to primary; may equal secondary
    new_primary = np.where(moved, (primary + shift) % n_cat, primary)
    new_primary = np.where(new_primary == secondary, (new_primary + 1) % n_cat, new_primary)
    new_primary = np.where(moved, new_primary, primary)
    late = rng.random(users) < 0.15
    join_day = np.where(late, rng.integers(1, days, users), 0)
    cat_logprice = rng.uniform(2.0, 5.0, n_cat)
    item_category = np.concatenate([np.arange(n_cat), rng.choice(n_cat, items - n_cat, p=prior)])
    item_category = rng.permutation(item_category)
    appeal = rng.normal(0.0, 0.6, items)
    popularity = np.exp(rng.normal(0.0, 1.0, items) - 0.5 * appeal)
    new = rng.random(items) < 0.15
    launch_day = np.where(new, rng.integers(1, days, items), -rng.integers(1, 60, items))
    price = np.exp(cat_logprice[item_category] + rng.normal(0.0, 0.5, items)).round(2)
    item_ids = [f"SKU-{1000 + n}-{CATEGORIES[c][1]}{(7 * n) % 10}" for n, c in
                enumerate(item_category)]  # fmt: skip
    user_ids = [_user_id(seed, u) for u in range(users)]
    if len(set(user_ids)) != users:
        raise ValueError(f"seed={seed}: visitor ids collide; pick another seed")
    return Shop(
        users=users, items=items, days=days, seed=seed, start=DEFAULT_START,
        drift_day=drift_day, user_ids=user_ids, item_ids=item_ids, primary=primary,
        secondary=secondary, new_primary=new_primary,
        ref_logprice=rng.normal(3.4, 0.7, users), sensitivity=rng.gamma(2.0, 0.6, users),
        visit_rate=rng.gamma(0.8, MEAN_VISITS_PER_DAY / 0.8, users), join_day=join_day,
        item_category=item_category, item_price=np.maximum(price, 0.99), item_appeal=appeal,
        item_popularity=popularity, item_trend=rng.normal(0.0, 0.15, items),
        launch_day=launch_day,
    )  # fmt: skip


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass
class _Log:
    """Rows as parallel lists, appended during the per-visitor simulation."""

    user: list[int] = field(default_factory=list)
    item: list[int] = field(default_factory=list)
    action: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    p: list[float] = field(default_factory=list)  # per row; NaN except on detail views
    in_basket: list[bool] = field(default_factory=list)

    def add(self, u: int, i: int, a: int, ts: int, p: float = math.nan, kept: bool = False) -> None:
        self.user.append(u)
        self.item.append(i)
        self.action.append(a)
        self.ts.append(ts)
        self.p.append(p)
        self.in_basket.append(kept)


class _Browsing:
    """Per-day product draws that ignore the visitor: trending popularity or exploration."""

    def __init__(self, shop: Shop) -> None:
        days = np.arange(shop.days + 1)[:, None]
        age = days - shop.launch_day[None, :]
        hype = np.where(age <= 1, 3.0, 1.0)
        weight = shop.item_popularity * np.exp(shop.item_trend * (days - shop.days / 2)) * hype
        self.launched = age >= 0
        weight = np.where(self.launched, weight, 0.0)
        self.cdf = np.cumsum(weight, axis=1)
        self.cdf /= self.cdf[:, -1:]
        self.available = [np.flatnonzero(row) for row in self.launched]

    def draw(self, rng: np.random.Generator, day: int) -> int:
        day = min(day, self.cdf.shape[0] - 1)
        if rng.random() < EXPLORE_SHARE:
            pool = self.available[day]
            return int(pool[int(rng.integers(0, pool.size))])
        return int(np.searchsorted(self.cdf[day], rng.random(), side="right"))


def _visit_starts(shop: Shop, rng: np.random.Generator, u: int) -> list[int]:
    """Epoch-ms starts of visitor ``u``'s visits, local day by local day, in order."""
    starts: list[int] = []
    rhythm = LOCAL_RHYTHM / LOCAL_RHYTHM.sum()
    # From the local day before the first UTC day, so that day starts full (UTC-5).
    first = int(shop.join_day[u]) if shop.join_day[u] > 0 else -1
    for day in range(first, shop.days):
        weekday = (shop.start.weekday() + day) % 7
        for _ in range(rng.poisson(shop.visit_rate[u] * WEEKDAY_FACTOR[weekday])):
            local_ms = int(rng.choice(24, p=rhythm)) * HOUR_MS + int(rng.integers(0, HOUR_MS))
            starts.append(shop.start_ms + day * DAY_MS + local_ms - UTC_OFFSET_H * HOUR_MS)
    return sorted(starts)


def _n_views(rng: np.random.Generator) -> int:
    return int(rng.geometric(1 / MEAN_VIEWS_PER_VISIT))


def _simulate_visitor(shop: Shop, browsing: _Browsing, u: int, log: _Log) -> None:
    """Every visit of visitor ``u``: views, basket adds, orders, with the basket carried on."""
    rng = np.random.default_rng([shop.seed, 0xB0, u])
    basket: dict[int, int] = {}  # product -> when it was added (ms)
    free_at = 0
    over_ref = np.maximum(0.0, np.log(shop.item_price) - shop.ref_logprice[u]).tolist()
    sens = float(shop.sensitivity[u])
    before, after, second = int(shop.primary[u]), int(shop.new_primary[u]), int(shop.secondary[u])
    drift = shop.drift_ms if shop.drift_ms is not None else 1 << 62
    category, appeals = shop.item_category.tolist(), shop.item_appeal.tolist()
    for start in _visit_starts(shop, rng, u):
        t = max(start, free_at)
        for i, added in list(basket.items()):
            if added + BASKET_DAYS * DAY_MS <= t:
                log.add(u, i, REMOVE, added + BASKET_DAYS * DAY_MS)
                del basket[i]
        day = (t - shop.start_ms) // DAY_MS
        # A visit shows a product page once: distinct draws, so no view's outcome is
        # decided by another view of the same product (the oracle stays exact).
        slots = list(dict.fromkeys(browsing.draw(rng, day) for _ in range(_n_views(rng))))
        for i in list(basket)[:MAX_REVIEWS_PER_VISIT]:
            if i not in slots and rng.random() < REVIEW_PROB:
                slots.insert(int(rng.integers(0, len(slots) + 1)), i)
        intent = float(rng.normal(0.0, INTENT_SD))
        for i in slots:
            cat, prim = category[i], after if t >= drift else before
            aff = AFFINITY[2] if cat == prim else AFFINITY[1] if cat == second else AFFINITY[0]
            appeal, over = appeals[i], over_ref[i]
            if i in basket:
                p = _sigmoid(REVIEW_BIAS + 0.6 * aff + 0.5 * appeal - 0.5 * sens * over + intent)
                log.add(u, i, DETAIL, t, p, kept=True)
                if rng.random() < p:
                    log.add(u, i, ORDER, t + int(rng.integers(20_000, 120_000)))
                    del basket[i]
            else:
                season = SEASON_BOOST if t >= drift and cat == SEASON_CATEGORY else 0.0
                p = _sigmoid(BASKET_BIAS + aff + appeal - sens * over + season + intent)
                log.add(u, i, DETAIL, t, p)
                if rng.random() < p:
                    added = t + int(rng.integers(5_000, 40_000))
                    log.add(u, i, BASKET, added)
                    now = _sigmoid(ORDER_NOW_BIAS + 0.5 * appeal - 0.8 * sens * over + intent)
                    if rng.random() < now:
                        log.add(u, i, ORDER, added + int(rng.integers(60_000, 240_000)))
                    else:
                        basket[i] = added
            t += max(1_000, int(rng.lognormal(math.log(40_000), 0.8)))
        free_at = t + 31 * 60_000  # the next visit starts after the session gap


@dataclass(frozen=True)
class ShopSummary:
    """What :func:`generate` wrote."""

    events: int
    by_action: dict[str, int]
    active_users: int
    files: list[str]
    seconds: float
    out_dir: str


def generate(shop: Shop, out_dir: str | Path) -> ShopSummary:
    """Simulate every visitor and write the shop's export and its truth under ``out_dir``.

    Writes ``events/day-YYYY-MM-DD.csv`` (one per UTC day of ``[start, start + days)``,
    rows in time order), ``catalog.parquet`` (the flywheel item contract, ``created_ts`` =
    launch), ``truth/views.parquet`` (``visitor, product, timestamp_ms, p_positive,
    in_basket`` per detail view) and ``shop.json``. Same shop, same bytes.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    (out / "events").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    for old in (out / "events").glob("day-*.csv"):
        old.unlink()
    browsing, log = _Browsing(shop), _Log()
    for u in range(shop.users):
        _simulate_visitor(shop, browsing, u, log)
    ts = np.asarray(log.ts, dtype=np.int64)
    end_ms = shop.start_ms + shop.days * DAY_MS
    keep = np.flatnonzero((ts >= shop.start_ms) & (ts < end_ms))
    keep = keep[np.argsort(ts[keep], kind="stable")]
    users, items = np.asarray(log.user)[keep], np.asarray(log.item)[keep]
    actions, ts = np.asarray(log.action)[keep], ts[keep]
    table = pa.table({
        "timestamp_ms": pa.array(ts, pa.int64()),
        "visitor": pa.array(np.asarray(shop.user_ids, dtype=object)[users], pa.string()),
        "action": pa.array(np.asarray(ACTIONS, dtype=object)[actions], pa.string()),
        "product": pa.array(np.asarray(shop.item_ids, dtype=object)[items], pa.string()),
        "category_path": pa.array(
            np.asarray([c for c, _ in CATEGORIES], dtype=object)[shop.item_category[items]],
            pa.string()),
        "unit_price": pa.array(np.char.mod("%.2f", shop.item_price[items]), pa.string()),
    })  # fmt: skip
    files = []
    day_of = (ts - shop.start_ms) // DAY_MS
    for day in range(shop.days):
        path = out / "events" / f"day-{(shop.start + timedelta(days=day)).date()}.csv"
        pacsv.write_csv(table.filter(pa.array(day_of == day)), path)
        files.append(str(path))
    views = actions == DETAIL
    truth = pa.table({
        "visitor": table["visitor"].filter(pa.array(views)),
        "product": table["product"].filter(pa.array(views)),
        "timestamp_ms": pa.array(ts[views], pa.int64()),
        "p_positive": pa.array(np.asarray(log.p)[keep][views], pa.float64()),
        "in_basket": pa.array(np.asarray(log.in_basket)[keep][views], pa.bool_()),
    })  # fmt: skip
    pq.write_table(truth, out / "truth" / "views.parquet")
    write_catalog(shop, out / "catalog.parquet")
    (out / "shop.json").write_text(json.dumps(shop.params(), indent=2) + "\n")
    counts = np.bincount(actions, minlength=len(ACTIONS))
    return ShopSummary(
        events=int(ts.size), by_action={a: int(c) for a, c in zip(ACTIONS, counts, strict=True)},
        active_users=int(np.unique(users).size), files=files,
        seconds=round(time.perf_counter() - started, 2), out_dir=str(out),
    )  # fmt: skip


def write_catalog(shop: Shop, path: Path) -> Path:
    """The catalogue in the flywheel's item contract, stamped with each product's launch."""
    from flywheel.schemas import ITEM_SCHEMA

    launched = shop.start_ms + shop.launch_day.astype(np.int64) * DAY_MS
    table = pa.table({
        "item_id": pa.array(shop.item_ids, pa.string()),
        "category": pa.array([CATEGORIES[c][0] for c in shop.item_category], pa.string()),
        "price": pa.array(shop.item_price, pa.float64()),
        "created_ts": pa.array(launched * 1000, pa.timestamp("us", tz="UTC")),
    }, schema=ITEM_SCHEMA)  # fmt: skip
    pq.write_table(table, path)
    return path


def summary_json(summary: ShopSummary) -> str:
    return json.dumps(asdict(summary), indent=2)
