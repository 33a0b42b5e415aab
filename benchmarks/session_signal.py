"""Benchmark: how many training rows the session signal gives a user signal (issue #11 item 5).

    python benchmarks/session_signal.py --world both --out bench-out/session_signal.json

Per world (``quality_worlds``: the simulator and the shop world), a fresh workspace goes
through the real CLI (``ingest`` the days before the last, ``features``), then in-process the
dataset stage's own :func:`flywheel.dataset.build_dataset` (``ranking_v2``, window = all
ingested days) writes a training set, and :func:`flywheel.session_features.lake_session_features`
computes each row's session features from the lake. Reported:

* ``no_user_activity``: share of rows whose ``user_activity`` values are all missing (the
  hourly snapshot has nothing: issue #11's 15.4%), ``no_user_keyed``: share with every
  user-keyed view missing (v2's 30-day tables included), and the same shares among rows
  that also have an empty session (``..._nor_session``);
* ``replay``: every training row of the last ingested day recomputed online: the day's lake
  events fed in time order to a :class:`flywheel.serving.sessions.SessionBuffer` (the
  serving path), each row queried at its own time; ``mismatches`` must be 0;
* ``auc``: a quick XGBoost (binary:logistic, 1 thread, early stopping on a time split
  80/10/10 as preprocess does) on ``ranking_v2``'s model inputs, with and without the seven
  session columns appended, test AUC: whether the signal is worth a feature service version;
* ``online_us``: the cost of :func:`~flywheel.session_features.session_values` for 50
  candidates at the replay's mean session size, µs per request.

Checks (FAILED, exit 1): 0 replay mismatches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_worlds import prepare_shop, prepare_simulator
from shop_quality import flywheel

USER_ACTIVITY = ("views_1h", "views_24h", "views_7d", "carts_24h", "carts_7d", "purchases_7d",
                 "clicks_7d", "last_event_unix")  # fmt: skip
USER_KEYED = (*USER_ACTIVITY, "cat_views_7d", "views_30d", "cat_views_30d", "ui_views_30d")


def measure(world: str, root: Path, users: int, items: int, days: int, seed: int) -> dict:
    import pyarrow.parquet as pq

    from flywheel.config import Settings
    from flywheel.dataset import build_dataset
    from flywheel.session_features import SESSION_FEATURES, lake_session_features

    root.mkdir(parents=True, exist_ok=True)
    if world == "shop":
        data = prepare_shop(root, users, items, days, seed, "events")
    else:
        data = prepare_simulator(root, users, items, days, seed)
    ws, log = root / "workspace", root / "flywheel.log"
    seconds = {"ingest": flywheel(ws, log, "ingest", *data.train_args)}
    seconds["features"] = flywheel(ws, log, "features")
    settings = Settings(workspace=ws)
    started = time.perf_counter()
    summary = build_dataset(settings, root / "training.parquet", window_days=float(days - 1))
    seconds["dataset"] = time.perf_counter() - started
    frame = pd.read_parquet(root / "training.parquet")
    catalog = pq.read_table(settings.items_path, columns=["item_id", "category"])
    started = time.perf_counter()
    session = lake_session_features(settings, frame, catalog)
    seconds["session_features"] = time.perf_counter() - started
    empty = session["session_events"] == 0
    no_act = frame[list(USER_ACTIVITY)].isna().all(axis=1).to_numpy()
    no_user = frame[[c for c in USER_KEYED if c in frame]].isna().all(axis=1).to_numpy()
    shares = {
        "rows": len(frame),
        "no_user_activity": float(no_act.mean()),
        "no_user_activity_nor_session": float((no_act & empty).mean()),
        "no_user_keyed": float(no_user.mean()),
        "no_user_keyed_nor_session": float((no_user & empty).mean()),
        "with_session": float((~empty).mean()),
        "item_viewed_earlier_in_session": float((session["session_item_views"] > 0).mean()),
    }
    return {
        "world": world, "users": users, "items": items, "days": days, "seed": seed,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "dataset": {"impressions": summary.impressions, "positive_rate": summary.positive_rate},
        "shares": shares,
        "replay": replay(settings, frame, catalog, session),
        "auc": auc_with_and_without(frame, session),
        "online_us": online_cost(frame, session),
        "mean_by_label": {
            name: [float(session[name][frame["label"].to_numpy() == y].mean()) for y in (0, 1)]
            for name in SESSION_FEATURES
        },
    }  # fmt: skip


def replay(settings: Any, frame: pd.DataFrame, catalog: Any, offline: dict) -> dict[str, Any]:
    """The last day's rows recomputed through the online buffer, fed the lake in time order."""
    from flywheel.lake import read_lake_events
    from flywheel.serving.sessions import SessionBuffer
    from flywheel.session_features import SESSION_FEATURES, SESSION_SPAN

    at = pd.to_datetime(frame["event_timestamp"], utc=True)
    day_start = at.max().floor("D")
    rows = np.flatnonzero((at >= day_start).to_numpy())
    rows = rows[np.argsort(at.to_numpy()[rows], kind="stable")]
    events = read_lake_events(
        settings, ["user_id", "item_id", "event_type", "ts"],
        day_start.to_pydatetime() - SESSION_SPAN, at.max().to_pydatetime() + timedelta(seconds=1),
    ).to_pandas()  # fmt: skip
    events = events.sort_values("ts", kind="stable").reset_index(drop=True)
    cat = dict(zip(catalog.column("item_id").to_pylist(), catalog.column("category").to_pylist(),
                   strict=True))  # fmt: skip
    buffer, fed, mismatches = SessionBuffer(), 0, 0
    ts = list(pd.to_datetime(events["ts"], utc=True).dt.to_pydatetime())
    users, items, types = (events[c].tolist() for c in ("user_id", "item_id", "event_type"))
    row_at = list(at.dt.to_pydatetime())
    row_users, row_items = (
        frame["user_id"].astype(str).tolist(),
        frame["item_id"].astype(str).tolist(),
    )
    started = time.perf_counter()
    for k in rows:
        t = row_at[k]
        while fed < len(ts) and ts[fed] < t:
            buffer.add(users[fed], items[fed], types[fed], ts[fed], cat.get(items[fed]))
            fed += 1
        item = row_items[k]
        online = buffer.features(row_users[k], [item], [cat.get(item)], t)
        mismatches += any(online[n][0] != offline[n][k] for n in SESSION_FEATURES)
    return {"rows": len(rows), "events_fed": fed, "mismatches": int(mismatches),
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def auc_with_and_without(frame: pd.DataFrame, session: dict) -> dict[str, float]:
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    from flywheel.ranking import model_inputs
    from flywheel.session_features import SESSION_FEATURES

    frame = frame.assign(**session).sort_values("event_timestamp", kind="stable")
    at = pd.to_datetime(frame["event_timestamp"], utc=True).astype("int64") / 1e9
    base = model_inputs(frame, at.to_numpy(), "ranking_v2")
    extra = np.column_stack([frame[n].to_numpy(np.float32) for n in SESSION_FEATURES])
    y = frame["label"].to_numpy()
    n = len(y)
    cut = [int(n * 0.8), int(n * 0.9)]
    out = {}
    for name, x in (("ranking_v2", base), ("ranking_v2+session", np.hstack([base, extra]))):
        tr, va, te = np.split(x, cut), np.split(y, cut), None
        te = (tr[2], va[2])
        booster = xgb.train(
            {"objective": "binary:logistic", "eval_metric": "logloss", "nthread": 1,
             "max_depth": 6, "eta": 0.1, "seed": 0},
            xgb.DMatrix(tr[0], va[0]), 300, evals=[(xgb.DMatrix(tr[1], va[1]), "valid")],
            early_stopping_rounds=20, verbose_eval=False,
        )  # fmt: skip
        pred = booster.predict(xgb.DMatrix(te[0]), iteration_range=(0, booster.best_iteration + 1))
        out[name] = round(float(roc_auc_score(te[1], pred)), 4)
    return out


def online_cost(frame: pd.DataFrame, session: dict, candidates: int = 50) -> dict[str, float]:
    from flywheel.session_features import session_values

    size = max(1, round(float(session["session_events"][session["session_events"] > 0].mean())))
    ts = [1_000_000 * j for j in range(size)]
    types = ["view"] * size
    items = [f"i{j % 7}" for j in range(size)]
    cats = [f"c{j % 3}" for j in range(size)]
    cand = [f"i{j}" for j in range(candidates)]
    cand_cats = [f"c{j % 5}" for j in range(candidates)]
    at = ts[-1] + 1
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        session_values(ts, types, items, cats, at, cand, cand_cats)
    return {
        "session_events": size,
        "us_per_request": round(1e6 * (time.perf_counter() - started) / n, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=["shop", "simulator", "both"], default="both")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=Path("bench-out/session_signal"))
    parser.add_argument("--out", type=Path, default=Path("bench-out/session_signal.json"))
    args = parser.parse_args(argv)
    worlds = ["simulator", "shop"] if args.world == "both" else [args.world]
    results = []
    for world in worlds:
        r = measure(world, args.root / world, args.users, args.items, args.days, args.seed)
        print(json.dumps(r, indent=1), flush=True)
        results.append(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    failed = [r["world"] for r in results if r["replay"]["mismatches"]]
    print("FAILED: replay mismatches in " + ", ".join(failed) if failed else "checks: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
