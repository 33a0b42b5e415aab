"""user_item's online form: the packed per-user rows and their expansion per candidate."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from flywheel.features.packed import user_item_latest_table
from flywheel.packed_history import (
    HISTORY_FEATURES,
    HISTORY_TTL_S,
    VALUE_COLUMNS,
    WIDTH,
    expand,
)
from flywheel.schemas import USER_ITEM_SCHEMA

T0 = datetime(2025, 5, 1, tzinfo=UTC)
HORIZON = int(T0.timestamp()) // 3600  # the end hour of the lake's last event hour


def _row(user: str, item: str, hours_before: float, seed: int, cart: bool = True) -> dict:
    row = {"user_id": user, "item_id": item}
    row["event_timestamp"] = T0 - timedelta(hours=hours_before)
    row["created_timestamp"] = T0
    for j, name in enumerate(HISTORY_FEATURES):
        row[name] = (seed * 100 + j) if name.startswith("ui_") and "last" not in name else 0
    row["ui_last_view_unix"] = T0.timestamp() - 3600.0 * seed
    row["ui_last_cart_unix"] = T0.timestamp() - 7200.0 * seed if cart else None
    row["ui_last_purchase_unix"] = None
    return row


ROWS = [  # sorted by user, item, event_timestamp, as the build writes user_item
    _row("u1", "a", 50, 1),
    _row("u1", "a", 2, 2),  # a's latest
    _row("u1", "b", 24 * 31, 3),  # b's latest is older than the ttl at the horizon: dropped
    _row("u1", "c", 24 * 29, 4, cart=False),  # c's latest within it: kept
    _row("u2", "a", 1, 5),
    _row("u3", "z", 24 * 40, 6),  # u3 has nothing fresh: no row at all
]


def _table() -> pa.Table:
    return pa.Table.from_pylist(ROWS, schema=USER_ITEM_SCHEMA)


def _reference() -> dict[str, dict[str, list[float]]]:
    """Brute force: per user, per item, the values of the pair's latest row if fresh."""
    out: dict[str, dict[str, list[float]]] = {}
    latest: dict[tuple[str, str], dict] = {}
    for row in ROWS:
        key = (row["user_id"], row["item_id"])
        if key not in latest or row["event_timestamp"] >= latest[key]["event_timestamp"]:
            latest[key] = row
    for (user, item), row in sorted(latest.items()):
        ts = row["event_timestamp"].timestamp()
        if ts < HORIZON * 3600 - HISTORY_TTL_S:
            continue
        values = [ts] + [math.nan if row[f] is None else float(row[f]) for f in HISTORY_FEATURES]
        out.setdefault(user, {})[item] = values
    return out


def test_latest_table_packs_each_users_fresh_pairs() -> None:
    packed = user_item_latest_table(_table(), HORIZON, created_us=7)
    ref = _reference()
    assert packed.column("user_id").to_pylist() == sorted(ref) == ["u1", "u2"]
    for row in packed.to_pylist():
        want = ref[row["user_id"]]
        assert row["ui_items"] == list(want)
        got = np.array(row["ui_values"]).reshape(-1, WIDTH)
        np.testing.assert_array_equal(got, np.array(list(want.values())))
        # the row's time is its newest pair's
        assert row["event_timestamp"].timestamp() == max(v[0] for v in want.values())
        assert row["created_timestamp"] == datetime.fromtimestamp(7e-6, UTC)
    assert user_item_latest_table(_table().slice(0, 0), HORIZON, 7).num_rows == 0


def test_expand_gives_each_candidate_its_pair_or_nulls() -> None:
    packed = user_item_latest_table(_table(), HORIZON, 0).to_pylist()[0]  # u1: a, c
    at = T0.timestamp()
    got = expand(packed["ui_items"], packed["ui_values"], ["c", "zz", "a", "b"], at, HISTORY_TTL_S)
    ref = _reference()["u1"]
    for name in HISTORY_FEATURES:
        j = VALUE_COLUMNS.index(name)
        np.testing.assert_array_equal(got[name], [ref["c"][j], np.nan, ref["a"][j], np.nan])
    assert math.isnan(got["ui_last_cart_unix"][0])  # c was never carted
    # two days later c's row (29 days old at the horizon) is past the ttl: null, a is kept
    later = expand(
        packed["ui_items"], packed["ui_values"], ["c", "a"], at + 2 * 86_400, HISTORY_TTL_S
    )
    assert math.isnan(later["ui_views_7d"][0])
    assert later["ui_views_7d"][1] == ref["a"][VALUE_COLUMNS.index("ui_views_7d")]
    # no row, or only some features
    empty = expand(None, None, ["a"], at, HISTORY_TTL_S, features=["ui_views_24h"])
    assert list(empty) == ["ui_views_24h"] and math.isnan(empty["ui_views_24h"][0])


def test_expand_refuses_a_malformed_row() -> None:
    with pytest.raises(ValueError, match="user_item_latest: 12 values for 1 items"):
        expand(["a"], [0.0] * 12, ["a"], 0.0, None)


def test_the_ttl_is_the_views() -> None:
    import feature_repo.definitions as d

    assert d.user_item.ttl.total_seconds() == HISTORY_TTL_S
    assert d.user_item_latest.ttl.total_seconds() == HISTORY_TTL_S
    assert not d.user_item.online and d.user_item_latest.online
