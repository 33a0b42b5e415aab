"""The serving benchmark's world: feature tables, Feast ``apply`` + ``materialize``, a model.

All ``N_USERS`` users and ``N_ITEMS`` items are active an hour before the run starts, so
every online read finds values; the booster is the size of a real ranking model.

The world is built by whichever ``flywheel`` is on the path, so another git worktree's
code can build its own (``serving_bench.py --baseline-tree``): run this file as a script with
``PYTHONPATH=<tree>``. Ids follow that tree's contract: integers where its feature tables
hold int64 ids (the code before string ids), else strings.

    PYTHONPATH=/work/pre11 python benchmarks/serving_world.py '{"workspace": "/tmp/ws"}'
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.config import Settings

N_USERS, N_ITEMS = 400, 600
#: Items in each user's user x item history (ranking_v2).
PAIRS_PER_USER = 20
#: Id styles: ``int`` = integers' decimal text (what JSON integers become), ``shop`` = strings.
ID_STYLES = ("int", "shop")


def entity_id(number: int, kind: str, ids: str) -> str:
    """The id of user/item ``number`` in style ``ids``: ``"42"`` or ``"u42"`` / ``"sku-42"``."""
    if ids == "int":
        return str(number)
    return f"{'u' if kind == 'user' else 'sku-'}{number}"


def _contract_ids(ids: list[str], table: str, column: str) -> list[Any]:
    """``ids`` as the feature table's contract types them: ints for an int64 id column
    (integer-style ids only), else unchanged."""
    from flywheel.schemas import FEATURE_TABLES

    if not pa.types.is_integer(FEATURE_TABLES[table].field(column).type):
        return ids
    if not all(i.isdigit() for i in ids):
        raise ValueError(f"{table}.{column} holds int64 ids; ids={ids[:3]}... are not integers")
    return [int(i) for i in ids]


def _table(frame: pd.DataFrame, name: str, rng: np.random.Generator) -> pa.Table:
    """``frame`` with random values for the contract columns it lacks, in contract order."""
    from flywheel.schemas import FEATURE_TABLES

    schema = FEATURE_TABLES[name]
    for f in schema:
        if f.name not in frame.columns:
            n = len(frame)
            ints = pa.types.is_integer(f.type)
            frame[f.name] = rng.integers(0, 60, n) if ints else rng.random(n) * 90 + 5
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def write_feature_tables(
    settings: Settings, now: datetime, seed: int = 0, ids: str = "int"
) -> None:
    """All users and items active an hour before ``now``; five categories."""
    rng = np.random.default_rng(seed)
    t = now - timedelta(hours=1)
    users = _contract_ids([entity_id(u, "user", ids) for u in range(N_USERS)], "user_activity",
                          "user_id")  # fmt: skip
    items = _contract_ids([entity_id(i, "item", ids) for i in range(N_ITEMS)], "item_catalog",
                          "item_id")  # fmt: skip
    stamp = {"event_timestamp": t, "created_timestamp": t}
    frames = {
        "user_activity": pd.DataFrame(
            {"user_id": users, **stamp, "last_event_unix": t.timestamp() - rng.random(N_USERS)}
        ),
        "user_category": pd.DataFrame(
            [
                {"user_id": name, "category": f"c{(u + d) % 5}", **stamp}
                for u, name in enumerate(users)
                for d in (0, 1)
            ]
        ),
        "item_activity": pd.DataFrame({"item_id": items, **stamp}),
        "item_catalog": pd.DataFrame(
            {"item_id": items, **stamp, "category": [f"c{i % 5}" for i in range(N_ITEMS)]}
        ),
        # ranking_v2's views (a tree without them skips them): each user has a history
        # with PAIRS_PER_USER items, so a v2 request expands a packed row of that many
        "user_item": pd.DataFrame(
            {
                "user_id": np.repeat(users, PAIRS_PER_USER),
                "item_id": [
                    items[i]
                    for _ in range(N_USERS)
                    for i in rng.choice(N_ITEMS, PAIRS_PER_USER, replace=False)
                ],
                **stamp,
            }
        ),
        "user_category_history": pd.DataFrame(
            {"user_id": users, "category": [f"c{u % 5}" for u in range(N_USERS)], **stamp}
        ),
        "user_activity_30d": pd.DataFrame({"user_id": users, **stamp}),
        "item_activity_30d": pd.DataFrame({"item_id": items, **stamp}),
        "category_price": pd.DataFrame({"category": [f"c{c}" for c in range(5)], **stamp}),
    }
    settings.feature_data_dir.mkdir(parents=True, exist_ok=True)
    from flywheel.schemas import FEATURE_TABLES

    for name, frame in frames.items():
        if name not in FEATURE_TABLES:  # an older tree's contract
            continue
        table = _table(frame, name, rng)
        pq.write_table(table, settings.feature_data_dir / f"{name}.parquet")
        if name == "user_item" and "user_item_latest" in FEATURE_TABLES:
            from flywheel.features.packed import packed_from_user_item

            latest = packed_from_user_item(table)  # its online form, as the build writes it
            pq.write_table(latest, settings.feature_data_dir / "user_item_latest.parquet")


def champion_service(settings: Settings) -> tuple[str, tuple[str, ...]]:
    """The feature service new models of this tree train on, and its model columns
    (``ranking_v1`` and its columns in a tree without feature-set versions)."""
    from flywheel import ranking

    if not hasattr(ranking, "model_features"):
        return "ranking_v1", tuple(ranking.MODEL_FEATURES)
    from flywheel.feature_store import feature_service_name

    service = feature_service_name(settings)
    return service, tuple(ranking.model_features(service))


def train_booster(path: Path, columns: tuple[str, ...], seed: int = 0) -> Path:
    """A 100-tree depth-6 booster on random data: the size of a real ranking model."""
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.random((5000, len(columns))).astype(np.float32) * 60
    y = (x[:, :3] @ rng.random(3) + rng.normal(0, 10, len(x)) > 45).astype(int)
    matrix = xgb.DMatrix(x, y, feature_names=list(columns))
    params = {"objective": "binary:logistic", "max_depth": 6, "seed": seed, "nthread": 1}
    xgb.train(params, matrix, num_boost_round=100).save_model(str(path))
    return path


def build_world(settings: Settings, ids: str = "int") -> None:
    """Feature tables, Feast ``apply`` + ``materialize`` and a registered champion."""
    from flywheel import feature_store as fs
    from flywheel.registry import register_model

    now = datetime.now(UTC).replace(microsecond=0)
    write_feature_tables(settings, now, ids=ids)
    fs.apply(settings)
    fs.materialize(settings, end=now + timedelta(seconds=1))
    service, columns = champion_service(settings)
    model = train_booster(settings.workspace / "bench-model.ubj", columns)
    lineage = {"run_id": "bench", "data_window": "bench", "feature_service": service}
    register_model(settings, model, {"auc": 0.5}, lineage)


def main(argv: list[str] | None = None) -> int:
    """``serving_world.py SETTINGS_JSON [IDS]``: build the world of those Settings."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        raise SystemExit("usage: serving_world.py SETTINGS_JSON [int|shop]")
    build_world(
        Settings.model_validate(json.loads(args[0])), ids=args[1] if len(args) > 1 else "int"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
