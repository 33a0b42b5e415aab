"""A brute-force reference for the feature tables, written plainly and independently.

For every row it filters the raw events in the window and counts them: slow, obvious,
and shares no code with ``flywheel.features``. The unit and integration tests compare the
real build against it; the tests here pin the reference itself to hand-counted values.

Which rows exist is the tables' contract (``flywheel/schemas.py``): snapshot tables have a
row at the end of each hour with activity; change-point tables a row at each hour end
where an event enters or leaves one of the table's windows, up to the end of the lake's
last event hour (the horizon). :func:`window_counts` answers a window at any time directly,
for the tests that look rows up the way Feast does.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from datetime import UTC, datetime

import pandas as pd

HOUR_US = 3_600 * 1_000_000
WINDOW_US = {"1h": HOUR_US, "24h": 24 * HOUR_US, "7d": 7 * 24 * HOUR_US, "30d": 30 * 24 * HOUR_US}
Event = tuple[str, str, str, int]  # user, item, type, ts (µs)


def _us(ts: object) -> int:
    return int(pd.Timestamp(ts).value // 1_000)  # type: ignore[arg-type]


def brute_force(events: pd.DataFrame, items: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Feature tables (without created_timestamp; timestamps as epoch µs) from raw events.

    Ids are compared and sorted as strings (integers in the inputs as their decimal text),
    as the lake holds them.
    """
    evs = [
        (str(r.user_id), str(r.item_id), str(r.event_type), _us(r.ts))
        for r in events.itertuples(index=False)
    ]
    price = {str(r.item_id): float(r.price) for r in items.itertuples(index=False)}
    cat = {str(r.item_id): str(r.category) for r in items.itertuples(index=False)}

    def inside(ts: int, end: int, window: str) -> bool:
        return end - WINDOW_US[window] <= ts < end

    def count(evts: list[tuple[str, str, str, int]], kind: str, end: int, window: str) -> int:
        return sum(1 for e in evts if e[2] == kind and inside(e[3], end, window))

    def ratio(num: float, den: float) -> float:
        return num / den if den else 0.0

    users, user_cats, item_rows = [], [], []
    snaps = sorted({(e[0], (e[3] // HOUR_US + 1) * HOUR_US) for e in evs})
    for user, end in snaps:
        mine = [e for e in evs if e[0] == user]
        views7 = count(mine, "view", end, "7d")
        viewed = [e[1] for e in mine if e[2] == "view" and inside(e[3], end, "7d")]
        prices = [price[i] for i in viewed if i in price]
        users.append(
            {
                "user_id": user,
                "event_timestamp": end,
                "views_1h": count(mine, "view", end, "1h"),
                "views_24h": count(mine, "view", end, "24h"),
                "views_7d": views7,
                "carts_24h": count(mine, "cart", end, "24h"),
                "carts_7d": count(mine, "cart", end, "7d"),
                "purchases_7d": count(mine, "purchase", end, "7d"),
                "clicks_7d": count(mine, "click", end, "7d"),
                "cart_rate_7d": ratio(count(mine, "cart", end, "7d"), views7),
                "conversion_rate_7d": ratio(count(mine, "purchase", end, "7d"), views7),
                "avg_price_7d": ratio(sum(prices), len(prices)),
                "last_event_unix": max(e[3] for e in mine if e[3] < end) / 1e6,
            }
        )
        per_cat = Counter(cat[i] for i in viewed if i in cat)
        # a category viewed in the window of the user's previous snapshot and not in this
        # one gets a zero row: its count is that of this snapshot, like every other column
        before = [s for u, s in snaps if u == user and s < end]
        if before:
            was = {
                cat[e[1]]
                for e in mine
                if e[2] == "view" and e[1] in cat and inside(e[3], before[-1], "7d")
            }
            per_cat.update(dict.fromkeys(was - set(per_cat), 0))
        for name in sorted(per_cat):
            user_cats.append(
                {
                    "user_id": user,
                    "category": name,
                    "event_timestamp": end,
                    "cat_views_7d": per_cat[name],
                    "cat_affinity_7d": ratio(per_cat[name], views7),
                }
            )
    for item, end in sorted({(e[1], (e[3] // HOUR_US + 1) * HOUR_US) for e in evs}):
        mine = [e for e in evs if e[1] == item]
        views7 = count(mine, "view", end, "7d")
        item_rows.append(
            {
                "item_id": item,
                "event_timestamp": end,
                "item_views_24h": count(mine, "view", end, "24h"),
                "item_views_7d": views7,
                "item_carts_7d": count(mine, "cart", end, "7d"),
                "item_purchases_7d": count(mine, "purchase", end, "7d"),
                "item_clicks_7d": count(mine, "click", end, "7d"),
                "item_conversion_rate_7d": ratio(count(mine, "purchase", end, "7d"), views7),
            }
        )
    catalog = [
        {
            "item_id": str(r.item_id),
            "event_timestamp": _us(r.created_ts),
            "category": str(r.category),
            "price": float(r.price),
        }
        for r in items.assign(item_id=items["item_id"].astype(str))
        .sort_values("item_id")
        .itertuples(index=False)
    ]
    return {
        "user_activity": pd.DataFrame(users),
        "user_category": pd.DataFrame(user_cats),
        "item_activity": pd.DataFrame(item_rows),
        "item_catalog": pd.DataFrame(catalog),
        **brute_force_v2(evs, items, cat),
    }


# ---- the change-point tables of ranking_v2 -------------------------------------------------


def window_counts(evts: list[Event], kind: str, at: int, window: str) -> int:
    """Events of ``kind`` in the window ending at ``at``'s hour start (what a row holds)."""
    end = at // HOUR_US * HOUR_US
    return sum(1 for e in evts if e[2] == kind and end - WINDOW_US[window] <= e[3] < end)


def change_times(evts: list[Event], windows: list[str], horizon: int) -> list[int]:
    """Hour ends where an event enters (``h + 1h``) or leaves a window, up to ``horizon``."""
    times = set()
    for e in evts:
        entry = (e[3] // HOUR_US + 1) * HOUR_US
        times |= {entry, *(entry + WINDOW_US[w] for w in windows)}
    return sorted(t for t in times if t <= horizon)


def _last(evts: list[Event], kind: str, end: int) -> float | None:
    stamps = [e[3] for e in evts if e[2] == kind and e[3] < end]
    return max(stamps) / 1e6 if stamps else None


def brute_force_v2(
    evs: list[Event], items: pd.DataFrame, cat: dict[str, str]
) -> dict[str, pd.DataFrame]:
    """The change-point tables and ``category_price`` from the same raw events."""
    horizon = (max(e[3] for e in evs) // HOUR_US + 1) * HOUR_US
    shopping = ("view", "cart", "purchase")
    rows: dict[str, list[dict]] = {"user_item": [], "user_category_history": []}
    rows |= {"user_activity_30d": [], "item_activity_30d": []}
    for user, item in sorted({(e[0], e[1]) for e in evs if e[2] in shopping}):
        mine = [e for e in evs if e[0] == user and e[1] == item and e[2] in shopping]
        for end in change_times(mine, ["24h", "7d", "30d"], horizon):
            row = {"user_id": user, "item_id": item, "event_timestamp": end}
            for kind in shopping:
                row |= {f"ui_{kind}s_{w}": window_counts(mine, kind, end, w)
                        for w in ("24h", "7d", "30d")}  # fmt: skip
            row |= {f"ui_last_{k}_unix": _last(mine, k, end) for k in shopping}
            rows["user_item"].append(row)
    known = [e for e in evs if e[1] in cat and e[2] in shopping]
    for user, category in sorted({(e[0], cat[e[1]]) for e in known}):
        mine = [e for e in known if e[0] == user and cat[e[1]] == category]
        for end in change_times(mine, ["7d", "30d"], horizon):
            row = {"user_id": user, "category": category, "event_timestamp": end}
            row |= {f"cat_{k}s_7d": window_counts(mine, k, end, "7d") for k in ("cart", "purchase")}
            row |= {f"cat_{k}s_30d": window_counts(mine, k, end, "30d") for k in shopping}
            rows["user_category_history"].append(row)
    for user in sorted({e[0] for e in evs}):
        mine = [e for e in evs if e[0] == user]
        for end in change_times(mine, ["30d"], horizon):
            row = {"user_id": user, "event_timestamp": end}
            row |= {f"{k}s_30d": window_counts(mine, k, end, "30d")
                    for k in ("view", "cart", "purchase", "click")}  # fmt: skip
            rows["user_activity_30d"].append(row)
    for item in sorted({e[1] for e in evs if e[2] in shopping}):
        mine = [e for e in evs if e[1] == item and e[2] in shopping]
        for end in change_times(mine, ["24h", "7d", "30d"], horizon):
            views7 = window_counts(mine, "view", end, "7d")
            row = {"item_id": item, "event_timestamp": end}
            row |= {f"item_{k}s_30d": window_counts(mine, k, end, "30d") for k in shopping}
            views24 = window_counts(mine, "view", end, "24h")
            row["item_trend_24h_7d"] = 7 * views24 / views7 if views7 else 0.0
            rows["item_activity_30d"].append(row)
    out = {name: pd.DataFrame(r) for name, r in rows.items()}
    out["category_price"] = category_prices(items)
    return out


def category_prices(items: pd.DataFrame) -> pd.DataFrame:
    """Per category and distinct creation time, the median price of the items created then
    or before."""
    frame = items.assign(ts=[_us(t) for t in items["created_ts"]], category=items["category"])
    rows = []
    for category in sorted(frame["category"].astype(str).unique()):
        mine = frame[frame["category"].astype(str) == category]
        for ts in sorted(set(mine["ts"])):
            prices = [float(p) for p, t in zip(mine["price"], mine["ts"], strict=True) if t <= ts]
            rows.append(
                {
                    "category": category,
                    "event_timestamp": ts,
                    "cat_median_price": statistics.median(prices),
                }
            )
    return pd.DataFrame(rows)


def as_comparable(table: pd.DataFrame) -> pd.DataFrame:
    """A built table in the reference's shape: no created_timestamp, timestamps as µs."""
    out = table.drop(columns=["created_timestamp"]).reset_index(drop=True)
    out["event_timestamp"] = [_us(t) for t in out["event_timestamp"]]
    return out


def assert_tables_match(built: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same rows in the same order: ints exactly, floats to pytest.approx."""
    import pytest

    got = as_comparable(built)
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    for col in expected.columns:
        left, right = got[col].tolist(), expected[col].tolist()
        if col.endswith("_unix") and expected[col].isna().any():  # latest-event times: None
            assert [pd.isna(v) for v in left] == [pd.isna(v) for v in right], col
            pairs = [(a, b) for a, b in zip(left, right, strict=True) if not pd.isna(b)]
            left, right = [a for a, _ in pairs], [b for _, b in pairs]
        if expected[col].dtype.kind == "f" or col.endswith("_unix"):
            assert left == pytest.approx(right, rel=1e-9, abs=1e-9), col
        else:
            assert left == right, col


def test_reference_counts_a_hand_made_case() -> None:
    t = datetime(2025, 3, 1, 10, tzinfo=UTC)
    events = pd.DataFrame(
        {
            "user_id": [1, 1, 1],
            "item_id": [5, 6, 5],
            "event_type": ["view", "view", "purchase"],
            "ts": [t, t.replace(minute=30), t.replace(hour=11)],  # last one at T: excluded
        }
    )
    items = pd.DataFrame({"item_id": [5], "category": ["a"], "price": [10.0], "created_ts": [t]})
    ref = brute_force(events, items)
    first = ref["user_activity"].iloc[0]
    assert (first["views_7d"], first["purchases_7d"], first["avg_price_7d"]) == (2, 0, 10.0)
    assert first["last_event_unix"] == t.replace(minute=30).timestamp()
    assert ref["user_category"]["cat_affinity_7d"].tolist() == [0.5, 0.5]  # item 6 unknown
    assert ref["item_activity"]["item_id"].tolist() == ["5", "5", "6"]


def latest_pairs(user_item: pd.DataFrame, horizon: int) -> dict[tuple[str, str], list[float]]:
    """Reference for user_item_latest: each pair's latest brute-force user_item row, if it
    is within the 30-day ttl at the horizon: (row time, the 12 features)."""
    from flywheel.packed_history import HISTORY_FEATURES, HISTORY_TTL_S

    oldest = horizon * 3600 - HISTORY_TTL_S
    out = {}
    for (user, item), rows in user_item.groupby(["user_id", "item_id"]):
        row = rows.sort_values("event_timestamp").iloc[-1]
        ts = int(row["event_timestamp"]) / 1e6  # the reference's epoch µs
        if ts >= oldest:
            values = [float(row[f]) if pd.notna(row[f]) else None for f in HISTORY_FEATURES]
            out[(str(user), str(item))] = [ts, *values]
    return out


def unpacked(packed: pd.DataFrame) -> dict[tuple[str, str], list[float]]:
    from flywheel.packed_history import WIDTH

    out = {}
    for row in packed.itertuples():
        flat = [float(x) for x in row.ui_values]
        values = [flat[i : i + WIDTH] for i in range(0, len(flat), WIDTH)]
        assert row.event_timestamp.timestamp() == max(v[0] for v in values)
        for item, v in zip(row.ui_items, values, strict=True):
            out[(row.user_id, item)] = [None if math.isnan(x) else x for x in v]
    return out
