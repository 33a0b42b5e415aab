"""The worlds of ``shop_quality.py``: raw inputs split at the held-out day, and their oracles.

``prepare_shop`` generates :mod:`shop_world` (its own export layout, ingested through
``shop_world.yaml``); ``prepare_simulator`` runs the project's ``flywheel.simulate`` (the lab
world). Each returns the CLI arguments that ingest the training days and the held-out day,
and a function giving the world's true probability for each held-out impression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

MAPPING = Path(__file__).resolve().parent / "shop_world.yaml"


@dataclass
class Prepared:
    """A world's raw inputs split at the held-out day, and its oracle."""

    name: str
    train_args: list[str]
    test_args: list[str]
    test_start: datetime
    test_end: datetime
    oracle: Callable[[pd.DataFrame], np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


def prepare_shop(
    root: Path, users: int, items: int, days: int, seed: int, catalog: str
) -> Prepared:
    """Generate the shop; ``catalog``: ``events`` (attributes on rows, via the mapping) or
    ``file`` (``--items catalog.parquet`` with launch times, mapping without ``items:``)."""
    from shop_world import generate, make_shop

    shop = make_shop(users, items, days, seed)
    summary = generate(shop, root / "raw")
    mapping = MAPPING
    extra: list[str] = []
    if catalog == "file":
        spec = yaml.safe_load(MAPPING.read_text())
        spec.pop("items")
        mapping = root / "shop_world_no_items.yaml"
        mapping.write_text(yaml.safe_dump(spec))
        extra = ["--items", str(root / "raw" / "catalog.parquet")]
    files = summary.files

    def events(paths: list[str]) -> list[str]:
        return [a for p in paths for a in ("--events", p)] + ["--mapping", str(mapping)]

    truth = pd.read_parquet(root / "raw" / "truth" / "views.parquet")
    truth["ts_us"] = truth.pop("timestamp_ms") * 1000

    def oracle(imp: pd.DataFrame) -> np.ndarray:
        key = imp[["user_id", "item_id"]].assign(ts_us=ts_us(imp["event_timestamp"]))
        joined = key.merge(truth.rename(columns={"visitor": "user_id", "product": "item_id"}),
                           on=["user_id", "item_id", "ts_us"], how="left")  # fmt: skip
        return joined["p_positive"].to_numpy(dtype=np.float64)

    start = shop.start + timedelta(days=days - 1)
    return Prepared(
        "shop", events(files[:-1]) + extra, events(files[-1:]), start, start + timedelta(days=1),
        oracle, {"generated": summary.by_action, "catalog": catalog, "drift_day": shop.drift_day},
    )  # fmt: skip


def prepare_simulator(root: Path, users: int, items: int, days: int, seed: int) -> Prepared:
    """The project's simulator: days before the last, and the last, in two output folders."""
    from flywheel.simulate import SHOP, make_world, simulate_events

    drift = days - 3 if days >= 4 else None
    world = make_world(users, items, seed=seed, drift_day=drift, naming=SHOP)
    train = simulate_events(world, days - 1, root / "train", seed=seed)
    test = simulate_events(world, 1, root / "test", seed=seed, start_day=days - 1)

    def oracle(imp: pd.DataFrame) -> np.ndarray:
        u = np.array([world.ids.user_index(x) for x in imp["user_id"]], dtype=np.int64)
        i = np.asarray(world.ids.item_indices(imp["item_id"]), dtype=np.int64)
        return world.cart_given_view(u, i, ts_us(imp["event_timestamp"]))

    start = world.start + timedelta(days=days - 1)
    info = {"train_events": train.events, "test_events": test.events, "drift_day": drift}
    return Prepared("simulator", ["--events", str(root / "train")],
                    ["--events", str(root / "test")], start, start + timedelta(days=1),
                    oracle, info)  # fmt: skip


def ts_us(ts: pd.Series) -> np.ndarray:
    """Epoch µs of a timestamp column, whatever its resolution (ns from pandas, µs from Arrow)."""
    return np.asarray(pd.to_datetime(ts, utc=True).dt.as_unit("us").astype("int64"))
