"""The ranking_v2 tables read the way Feast reads them: exact windows at any time, no future.

``test_features.py`` checks every row against the brute-force reference; these tests look
rows up as a point-in-time join does (the latest row at or before a time, within the
view's ttl) and compare with window counts computed straight from the events at that time,
so they hold whatever the rule for which rows exist.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_features import (
    T0,
    _build,
    _items,
    _random_events,
    _sparse_events,
)
from test_features_reference import HOUR_US, WINDOW_US, _us, category_prices, window_counts

from flywheel.features import aggregate as F
from flywheel.features.windows import NO_EVENT, change_points, latest_before
from flywheel.schemas import ITEM_SCHEMA

SHOPPING = ("view", "cart", "purchase")
TTL_30D = WINDOW_US["30d"]
CATEGORY = dict(zip(_items()["item_id"], _items()["category"], strict=True))


def _events(frame: pd.DataFrame) -> list[tuple[str, str, str, int]]:
    return [
        (str(r.user_id), str(r.item_id), str(r.event_type), _us(r.ts))
        for r in frame.itertuples(index=False)
    ]


class PointInTime:
    """A table looked up as a point-in-time join does: per key, the latest row at or
    before a time and within the ttl (None if there is none)."""

    def __init__(self, table: pd.DataFrame, keys: list[str], ttl: int) -> None:
        self.ttl, self.rows = ttl, {}
        stamps = np.array([_us(t) for t in table["event_timestamp"]])
        for key, idx in table.groupby(keys, sort=False).indices.items():
            key = key if isinstance(key, tuple) else (key,)
            order = idx[np.argsort(stamps[idx], kind="stable")]
            self.rows[key] = (stamps[order], table.iloc[order].to_dict("records"))

    def keys(self) -> list[tuple]:
        return sorted(self.rows)

    def at(self, key: tuple, at: int) -> dict | None:
        if key not in self.rows:
            return None
        stamps, records = self.rows[key]
        i = int(np.searchsorted(stamps, at, side="right")) - 1
        return records[i] if i >= 0 and stamps[i] >= at - self.ttl else None


def _query_times(events: list[tuple[str, str, str, int]], n: int, seed: int) -> list[int]:
    """Times up to the horizon: exact hour ends, one µs before them, and random instants."""
    rng = np.random.default_rng(seed)
    lo, horizon = min(e[3] for e in events), (max(e[3] for e in events) // HOUR_US + 1) * HOUR_US
    hours = rng.integers(lo // HOUR_US, horizon // HOUR_US + 1, n) * HOUR_US
    return sorted({*hours.tolist(), *(hours[: n // 3] - 1).tolist(),
                   *rng.integers(lo, horizon, n).tolist()})  # fmt: skip


#: table -> (key columns, a function of the key's events at a time -> expected columns)
def _expected(name: str, mine: list, at: int) -> dict[str, float]:
    if name == "user_item":
        out = {f"ui_{k}s_{w}": window_counts(mine, k, at, w)
               for k in SHOPPING for w in ("24h", "7d", "30d")}  # fmt: skip
        end = at // HOUR_US * HOUR_US
        for k in SHOPPING:
            stamps = [e[3] for e in mine if e[2] == k and e[3] < end]
            out[f"ui_last_{k}_unix"] = max(stamps) / 1e6 if stamps else np.nan
        return out
    if name == "user_category_history":
        out = {f"cat_{k}s_7d": window_counts(mine, k, at, "7d") for k in ("cart", "purchase")}
        return out | {f"cat_{k}s_30d": window_counts(mine, k, at, "30d") for k in SHOPPING}
    if name == "user_activity_30d":
        return {f"{k}s_30d": window_counts(mine, k, at, "30d") for k in (*SHOPPING, "click")}
    views7 = window_counts(mine, "view", at, "7d")
    trend = 7 * window_counts(mine, "view", at, "24h") / views7 if views7 else 0.0
    return {f"item_{k}s_30d": window_counts(mine, k, at, "30d") for k in SHOPPING} | {
        "item_trend_24h_7d": trend
    }


def _keyed_events(name: str, events: list, key: tuple[str, ...]) -> list:
    if name == "user_item":
        return [e for e in events if (e[0], e[1]) == key and e[2] in SHOPPING]
    if name == "user_category_history":
        return [
            e for e in events
            if e[0] == key[0] and CATEGORY.get(e[1]) == key[1] and e[2] in SHOPPING
        ]  # fmt: skip
    if name == "user_activity_30d":
        return [e for e in events if e[0] == key[0]]
    return [e for e in events if e[1] == key[0] and e[2] in SHOPPING]


KEYS = {
    "user_item": ["user_id", "item_id"],
    "user_category_history": ["user_id", "category"],
    "user_activity_30d": ["user_id"],
    "item_activity_30d": ["item_id"],
}


@pytest.mark.parametrize("seed", [2, 5])
def test_change_point_tables_are_exact_at_any_time(seed: int) -> None:
    frame = _sparse_events(250, seed)
    built, events = _build(frame), _events(frame)
    times = _query_times(events, 60, seed)
    for name, key_cols in KEYS.items():
        table = PointInTime(built[name], key_cols, TTL_30D)
        assert table.keys(), name
        for key in table.keys():  # noqa: SIM118 (not a dict)
            mine = _keyed_events(name, events, key)
            for at in times:
                row, want = table.at(key, at), _expected(name, mine, at)
                if row is None:  # nothing fresh: every window must be empty
                    assert not any(v for c, v in want.items() if "_unix" not in c), (name, key)
                    continue
                got = {c: (np.nan if pd.isna(row[c]) else float(row[c])) for c in want}
                assert got == pytest.approx(want, nan_ok=True), (name, key, at)


def test_user_category_follows_the_users_snapshot() -> None:
    """Issue #11 item 5: at any time, cat_views_7d is the count at the user's latest
    snapshot (what user_activity holds), never a count left over from an older one."""
    frame = _sparse_events(300, 3)
    built, events = _build(frame), _events(frame)
    ttl = WINDOW_US["7d"]
    ua = PointInTime(built["user_activity"], ["user_id"], ttl)
    uc = PointInTime(built["user_category"], ["user_id", "category"], ttl)
    checked = 0
    for at in _query_times(events, 80, 3):
        for user in sorted({e[0] for e in events}):
            snap = ua.at((user,), at)
            for category in sorted(set(CATEGORY.values())):
                row = uc.at((user, category), at)
                got = 0 if row is None else int(row["cat_views_7d"])
                if snap is None:
                    assert got == 0
                    continue
                end = _us(snap["event_timestamp"])
                want = sum(
                    1
                    for e in events
                    if e[0] == user and e[2] == "view" and CATEGORY.get(e[1]) == category
                    and end - ttl <= e[3] < end
                )  # fmt: skip
                assert got == want, (user, category, at)
                assert got <= snap["views_7d"]
                checked += want > 0
    assert checked > 50


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(minutes=17)], ids=["on-hour", "mid"])
def test_a_planted_future_event_moves_no_earlier_row(offset: timedelta) -> None:
    frame = _random_events(300, 4)
    planted_at = T0 + timedelta(days=5, hours=3) + offset
    # the same user and item as an existing pair, each event type once
    planted = pd.DataFrame(
        {
            "user_id": [frame.user_id[0]] * 4,
            "item_id": [frame.item_id[0]] * 4,
            "event_type": ["view", "cart", "purchase", "click"],
            "ts": [planted_at] * 4,
        }
    )
    before = _build(frame)
    after = _build(pd.concat([frame, planted], ignore_index=True))
    cut = pd.Timestamp(planted_at)
    moved = 0
    for name, table in before.items():
        if name in F.DRIVER_TABLES:
            continue
        old = table[table.event_timestamp <= cut].drop(columns="created_timestamp")
        new = after[name][after[name].event_timestamp <= cut].drop(columns="created_timestamp")
        pd.testing.assert_frame_equal(old.reset_index(drop=True), new.reset_index(drop=True))
        moved += len(after[name]) != len(table) or not after[name].equals(table)
    assert moved >= 6  # the planted events did change the later rows of every table


def test_category_price_is_the_running_median_of_listed_items() -> None:
    rng = np.random.default_rng(11)
    n = 60
    items = pd.DataFrame(
        {
            "item_id": [f"sku-{i}" for i in range(n)],
            "category": rng.choice(["a", "b", "c d"], n),
            "price": np.round(rng.random(n) * 100, 2),
            "created_ts": [T0 + timedelta(hours=int(h)) for h in rng.integers(0, 20, n)],  # ties
        }
    )
    table = F.category_price_table(pa.Table.from_pandas(items, schema=ITEM_SCHEMA), 0)
    got = table.to_pandas()
    want = category_prices(items)
    assert len(got) == len(want)
    assert got["category"].tolist() == want["category"].tolist()
    assert [_us(t) for t in got["event_timestamp"]] == want["event_timestamp"].tolist()
    assert got["cat_median_price"].tolist() == pytest.approx(want["cat_median_price"].tolist())
    # an item listed later moves no earlier row
    later = pd.DataFrame(
        {"item_id": ["new"], "category": ["a"], "price": [1e6], "created_ts": [T0 + 5 * H]}
    )
    more = pd.concat([items, later], ignore_index=True)
    again = F.category_price_table(pa.Table.from_pandas(more, schema=ITEM_SCHEMA), 0)
    early = again.filter(pa.compute.less(again["event_timestamp"], pa.scalar(T0 + 5 * H)))
    assert early.equals(table.filter(pa.compute.less(table["event_timestamp"], T0 + 5 * H)))


H, MINUTE = timedelta(hours=1), timedelta(minutes=1)


def test_user_item_by_hand() -> None:
    """A re-view and an abandoned cart, counted by hand at the hours that matter."""
    t = T0.replace(hour=10)
    frame = pd.DataFrame(
        {
            "user_id": ["1", "1", "1", "1"],
            "item_id": ["10", "10", "10", "11"],
            "event_type": ["view", "cart", "view", "view"],
            "ts": [t + 15 * MINUTE, t + 40 * MINUTE, t + 23 * H, t + 40 * 24 * H],
        }
    )
    ui = _build(frame)["user_item"]
    pair = ui[ui.item_id == "10"].set_index("event_timestamp")
    at = pd.Timestamp
    first = pair.loc[at(t + H)]  # 11:00: the view and the cart of 10:xx
    assert (first.ui_views_24h, first.ui_carts_24h, first.ui_views_30d) == (1, 1, 1)
    assert first.ui_last_cart_unix == (t + 40 * MINUTE).timestamp()
    assert np.isnan(first.ui_last_purchase_unix)
    again = pair.loc[at(t + 24 * H)]  # the re-view at 09:00 next day enters
    assert (again.ui_views_24h, again.ui_carts_24h) == (2, 1)
    left = pair.loc[at(t + 25 * H)]  # 10:xx leaves the 24h window
    assert (left.ui_views_24h, left.ui_carts_24h, left.ui_views_7d) == (1, 0, 2)
    assert left.ui_last_view_unix == (t + 23 * H).timestamp()
    closed = pair.iloc[-1]  # the 30-day window of 09:00 closes: a zero row
    assert pair.index[-1] == at(t + 24 * H + 30 * 24 * H)
    assert closed[[c for c in pair.columns if c.startswith("ui_") and "_unix" not in c]].sum() == 0
    # item 11's only view is in the lake's last hour: one entry row at the horizon
    assert ui[ui.item_id == "11"]["event_timestamp"].tolist() == [at(t + 40 * 24 * H + H)]


def test_change_points_and_latest_before_match_loops() -> None:
    rng = np.random.default_rng(9)
    group = np.sort(rng.integers(0, 6, 200))
    hour = np.concatenate([np.sort(rng.choice(500, (group == g).sum(), replace=False))
                           for g in range(6)])  # fmt: skip
    q_group, q_end = change_points(group, hour, [24, 168], horizon=520)
    want = sorted({(int(g), int(h) + s) for g, h in zip(group, hour, strict=True)
                   for s in (1, 25, 169) if int(h) + s <= 520})  # fmt: skip
    assert list(zip(q_group.tolist(), q_end.tolist(), strict=True)) == want
    stamps = np.where(rng.random(200) < 0.4, hour * 10 + 3, NO_EVENT)
    got = latest_before(group, hour, stamps, q_group, q_end)
    for g, end, value in zip(q_group, q_end, got, strict=True):
        mine = [s for gg, h, s in zip(group, hour, stamps, strict=True)
                if gg == g and h < end and s != NO_EVENT]  # fmt: skip
        assert value == (max(mine) if mine else NO_EVENT)
