"""Baseline: a straightforward single-process pandas build of ranking_v1's four tables.

Loads every event (the four columns the features need) into one DataFrame, joins the
catalog, aggregates per (entity, hour) and computes the windows with
``groupby(...).rolling(<offset>)``; user-category rows come from the grid of each user's
snapshots x the categories the user ever viewed, with ``merge_asof`` on cumulative counts.
It shares no code with ``flywheel.features``, so it doubles as a cross-check. The ranking_v2
tables (``user_item`` etc.) are not in this baseline: the tests check them against the
brute-force reference, and ``feature_tables.py`` measures what they cost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.schemas import FEATURE_TABLES

#: The tables this baseline builds.
TABLES = ("user_activity", "user_category", "item_activity", "item_catalog")
HOUR = pd.Timedelta(hours=1)
TYPES = {"views": "view", "carts": "cart", "purchases": "purchase", "clicks": "click"}


def _rate(num: pd.Series, den: pd.Series) -> pd.Series:
    return (num / den.where(den > 0)).fillna(0.0)


def _rolling(hourly: pd.DataFrame, key: str, cols: list[str], window: str) -> pd.DataFrame:
    """Sum ``cols`` over the hours in (hour - window, hour] per ``key``, i.e. [T - W, T)."""
    rolled = hourly.groupby(key, sort=False).rolling(window, on="hour")[cols].sum()
    return rolled.reset_index(drop=True).astype("int64")


def _user_activity(ev: pd.DataFrame) -> pd.DataFrame:
    ev = ev.assign(
        price_sum=ev["price"].where(ev["views"] == 1, 0.0).fillna(0.0),
        price_n=((ev["views"] == 1) & ev["price"].notna()).astype("int64"),
    )
    aggs = {c: "sum" for c in [*TYPES, "price_sum", "price_n"]}
    hourly = ev.groupby(["user_id", "hour"]).agg({**aggs, "ts": "max"}).reset_index()
    w7 = _rolling(hourly, "user_id", [*TYPES, "price_n"], "7D")
    w24 = _rolling(hourly, "user_id", ["views", "carts"], "24h")
    w1 = _rolling(hourly, "user_id", ["views"], "1h")
    price7 = hourly.groupby("user_id").rolling("7D", on="hour")["price_sum"].sum()
    return pd.DataFrame(
        {
            "user_id": hourly["user_id"],
            "event_timestamp": hourly["hour"] + HOUR,
            "views_1h": w1["views"],
            "views_24h": w24["views"],
            "views_7d": w7["views"],
            "carts_24h": w24["carts"],
            "carts_7d": w7["carts"],
            "purchases_7d": w7["purchases"],
            "clicks_7d": w7["clicks"],
            "cart_rate_7d": _rate(w7["carts"], w7["views"]),
            "conversion_rate_7d": _rate(w7["purchases"], w7["views"]),
            "avg_price_7d": _rate(pd.Series(price7.to_numpy()), w7["price_n"]),
            "last_event_unix": hourly["ts"].astype("int64") / 1e6,
        }
    )


def _user_category(ev: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    viewed = ev[(ev["views"] == 1) & ev["category"].notna()]
    uc = viewed.groupby(["user_id", "category", "hour"]).size().rename("n").reset_index()
    uc["cum"] = uc.groupby(["user_id", "category"])["n"].cumsum()
    snaps = users[["user_id", "event_timestamp", "views_7d"]]
    grid = snaps.merge(uc[["user_id", "category"]].drop_duplicates(), on="user_id")
    unit = uc["hour"].dtype
    grid["hi"] = (grid["event_timestamp"] - HOUR).astype(unit)  # last hour inside [T-7d, T)
    grid["lo"] = (grid["event_timestamp"] - pd.Timedelta(days=7) - HOUR).astype(unit)
    right = uc.sort_values("hour")[["user_id", "category", "hour", "cum"]]
    for end in ("hi", "lo"):
        grid = pd.merge_asof(
            grid.sort_values(end),
            right.rename(columns={"hour": end, "cum": f"cum_{end}"}),
            on=end,
            by=["user_id", "category"],
            direction="backward",
        )
    grid["cat_views_7d"] = (grid["cum_hi"].fillna(0) - grid["cum_lo"].fillna(0)).astype("int64")
    # keep the categories in the window, and a zero row where one has just left it
    grid = grid.sort_values(["user_id", "category", "event_timestamp"], ignore_index=True)
    before = grid.groupby(["user_id", "category"], sort=False)["cat_views_7d"].shift(1)
    grid = grid[(grid["cat_views_7d"] > 0) | (before.fillna(0) > 0)]
    grid = grid.sort_values(["user_id", "event_timestamp", "category"], ignore_index=True)
    grid["cat_affinity_7d"] = _rate(grid["cat_views_7d"], grid["views_7d"])
    return grid[["user_id", "category", "event_timestamp", "cat_views_7d", "cat_affinity_7d"]]


def _item_activity(ev: pd.DataFrame) -> pd.DataFrame:
    hourly = ev.groupby(["item_id", "hour"])[list(TYPES)].sum().reset_index()
    w7 = _rolling(hourly, "item_id", list(TYPES), "7D")
    w24 = _rolling(hourly, "item_id", ["views"], "24h")
    return pd.DataFrame(
        {
            "item_id": hourly["item_id"],
            "event_timestamp": hourly["hour"] + HOUR,
            "item_views_24h": w24["views"],
            "item_views_7d": w7["views"],
            "item_carts_7d": w7["carts"],
            "item_purchases_7d": w7["purchases"],
            "item_clicks_7d": w7["clicks"],
            "item_conversion_rate_7d": _rate(w7["purchases"], w7["views"]),
        }
    )


def pandas_features(workspace: Path) -> dict[str, pd.DataFrame]:
    """The four :data:`TABLES` (created_timestamp = now) from ``workspace/lake``, in memory."""
    lake = workspace / "lake"
    cols = ["user_id", "item_id", "event_type", "ts"]
    ev = pq.read_table(lake / "events", columns=cols, partitioning=None).to_pandas()
    items = pd.read_parquet(lake / "items.parquet")
    ev = ev.merge(items[["item_id", "category", "price"]], on="item_id", how="left")
    ev["hour"] = ev["ts"].dt.floor("h")
    for col, name in TYPES.items():
        ev[col] = (ev["event_type"] == name).astype("int64")
    users = _user_activity(ev)
    tables = {
        "user_activity": users,
        "user_category": _user_category(ev, users),
        "item_activity": _item_activity(ev),
        "item_catalog": items.sort_values("item_id").rename(
            columns={"created_ts": "event_timestamp"}
        )[["item_id", "event_timestamp", "category", "price"]],
    }
    created = pd.Timestamp(datetime.now(UTC))
    for table in tables.values():
        table.insert(2 if "category" in table.columns[:2] else 1, "created_timestamp", created)
    return tables


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> dict[str, int]:
    """Write each table as one Parquet file with its contract schema; returns row counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in TABLES:
        schema = FEATURE_TABLES[name]
        frame = tables[name].reset_index(drop=True)[schema.names]
        table = pa.Table.from_pandas(frame, preserve_index=False).cast(schema)
        pq.write_table(table, out_dir / f"{name}.parquet")
        rows[name] = table.num_rows
    return rows
