"""Benchmark: model quality on a held-out day of a world the project did not write (issue #11).

    python benchmarks/shop_quality.py --world both --out bench-out/shop_quality.json

For each world it runs the whole loop as a new user would, through the real CLI
(subprocesses of ``flywheel``, kfp.local for the cycle) in a fresh workspace:
``ingest`` the days before the last (shop: with ``benchmarks/shop_world.yaml``), ``features``,
``cycle --window-days <days - 1>`` (trains, evaluates, registers and deploys the champion),
then ``ingest`` the held-out last day and ``features --no-materialize``.

Worlds: ``shop`` is :mod:`shop_world` (browsing not driven by taste, baskets that return,
its own rhythm, drift and ids); ``simulator`` is the project's own ``flywheel.simulate``
(shop-style ids, a taste drift at the same day), the lab world the model was built beside.

Test set: the organic views of the held-out day whose 1-hour attribution window closes
within the day, labelled by ``flywheel.dataset.label_organic_impressions`` (the training
label), keeping the *isolated* ones (no other view of the same user and item within an hour
either side; see :func:`test_impressions`), so that the label is the view's own outcome and
the oracle is exactly its probability; a query is a user's views of that day. Scorers:

* **model**: the champion, on point-in-time features from the **offline store** as of each
  view (``feature_store.historical_features`` with the champion's feature service, then
  ``ranking.model_inputs`` and ``train.predict``: the training/evaluation path; serving
  reads the same feature values from the online store);
* **popularity**: the item's purchases in the lake strictly before the view;
* **oracle**: the world's true probability that the view turns positive (shop:
  ``truth/views.parquet``; simulator: ``World.cart_given_view``).

Figures per scorer: AUC and NDCG@10 on the sampled labels (``flywheel.evaluate``), expected
AUC and graded NDCG@10 with the oracle's probabilities (``quality_metrics``), lift share
``(AUC - 0.5) / (AUC_oracle - 0.5)`` on expected AUC. Targets (expected AUC): shop world
model >= popularity + 0.03 and lift share >= 0.75; simulator lift share >= 0.85. Checks
(any failure: FAILED, exit 1): nothing quarantined, the training lake and the cycle's
training window end before the held-out day, a champion was deployed, every test view has
its features row and an oracle probability, and the oracle is calibrated to the labels.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Check, Target, finish
from quality_metrics import calibration_gap, expected_auc, graded_ndcg_at_k, lift_share
from quality_worlds import Prepared, prepare_shop, prepare_simulator, ts_us

ROOT = Path(__file__).resolve().parent.parent
ATTRIBUTION = timedelta(hours=1)
SCORERS = ("model", "popularity", "oracle")
POPULARITY_MARGIN, SHOP_SHARE, SIMULATOR_SHARE = 0.03, 0.75, 0.85
#: Calibration check: |positive rate - mean oracle p| within this many standard errors.
CALIBRATION_SE = 4.0


def flywheel(ws: Path, log: Path, *args: str) -> float:
    """Run ``flywheel --workspace ws ARGS`` (this tree's package), output to ``log``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
    cmd = [sys.executable, "-c", "from flywheel.cli import app; app(prog_name='flywheel')",
           "--workspace", str(ws), *args]  # fmt: skip
    started = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"\n$ flywheel {' '.join(args)}\n")
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - started
    print(f"  flywheel {args[0]:<8} {seconds:6.0f} s", flush=True)
    if rc:
        raise RuntimeError(f"`flywheel {' '.join(args)}` exited {rc}; see {log}")
    return seconds


def run_loop(data: Prepared, ws: Path, log: Path, days: int, seed: int) -> dict[str, Any]:
    """Ingest -> features -> cycle on the days before the last; then ingest the last day."""
    from flywheel.config import Settings
    from flywheel.dataset import lake_time_range
    from flywheel.registry import current_champion

    settings = Settings(workspace=ws)
    seconds = {"ingest": flywheel(ws, log, "ingest", *data.train_args)}
    seconds["features"] = flywheel(ws, log, "features")
    trained_until = lake_time_range(settings)[1]
    seconds["cycle"] = flywheel(ws, log, "cycle", "--window-days", str(float(days - 1)),
                                "--seed", str(seed))  # fmt: skip
    runs = sorted(p.parent for p in (ws / "runs").glob("*/dataset.json"))
    run = runs[-1] if runs else None
    dataset = _stage(run, "dataset")
    evaluation = _stage(run, "evaluate")
    champion = current_champion(settings)
    seconds["ingest test"] = flywheel(ws, log, "ingest", *data.test_args)
    seconds["features test"] = flywheel(ws, log, "features", "--no-materialize")
    return {
        "trained_until": trained_until.isoformat(),
        "window_end": dataset.get("window_end"),
        "train_impressions": dataset.get("impressions"),
        "cycle_test_auc": (evaluation.get("challenger") or {}).get("auc"),
        "blessed": evaluation.get("blessed"),
        "champion": champion,
        "quarantine_files": sorted(p.name for p in (ws / "quarantine").glob("*.parquet")),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def _stage(run: Path | None, stage: str) -> dict[str, Any]:
    if run is None or not (run / f"{stage}.json").exists():
        return {}
    return dict(json.loads((run / f"{stage}.json").read_text())["summary"])


def test_impressions(ws: Path, start: datetime, end: datetime) -> tuple[pd.DataFrame, int]:
    """The held-out day's isolated organic views, labelled as training labels them, and the
    number of views of the day before isolation.

    Isolated: no other view of the same user and item within the attribution window before
    or after. Another view's basket add inside the window would label this view too (the
    simulator shows a product again within a session about 1 view in 5), and no oracle can
    know at view time whether that other view will happen; on isolated views the label is
    this view's own outcome, so the world's per-view probability is exactly its chance.
    """
    from flywheel.config import Settings
    from flywheel.dataset import label_organic_impressions
    from flywheel.lake import read_lake_events

    cols = ["user_id", "item_id", "event_type", "ts", "session_id"]
    events = read_lake_events(Settings(workspace=ws), cols, start - ATTRIBUTION, end).to_pandas()
    views = events.loc[events["event_type"] == "view"].sort_values(["user_id", "item_id", "ts"])
    pair = views[["user_id", "item_id"]]
    same_prev = (pair == pair.shift(1)).all(axis=1)
    same_next = (pair == pair.shift(-1)).all(axis=1)
    gap_prev = views["ts"] - views["ts"].shift(1)
    gap_next = views["ts"].shift(-1) - views["ts"]
    crowded = (same_prev & (gap_prev <= ATTRIBUTION)) | (same_next & (gap_next <= ATTRIBUTION))
    crowded_keys = views.loc[crowded, ["user_id", "item_id", "ts"]]
    imp = label_organic_impressions(events, ATTRIBUTION, closed_before=end)
    imp = imp.loc[imp["event_timestamp"] >= start].reset_index(drop=True)
    marked = imp.merge(
        crowded_keys.rename(columns={"ts": "event_timestamp"}).assign(crowded=True),
        on=["user_id", "item_id", "event_timestamp"], how="left",
    )  # fmt: skip
    keep = marked["crowded"].isna().to_numpy()
    return imp.loc[keep].reset_index(drop=True), len(imp)


def model_scores(ws: Path, imp: pd.DataFrame, tag: str) -> tuple[np.ndarray, int]:
    """The champion's scores on point-in-time offline features, and how many impressions got
    exactly one feature row (minus the row count when some got several)."""
    import pyarrow.parquet as pq

    from flywheel.config import Settings
    from flywheel.feature_store import historical_features
    from flywheel.ranking import model_inputs
    from flywheel.serving import load_model
    from flywheel.train import predict

    settings = Settings(workspace=ws)
    model = load_model(settings, tag)
    items = pq.read_table(settings.items_path, columns=["item_id", "category"]).to_pandas()
    entity = imp[["user_id", "item_id", "event_timestamp"]].assign(row=np.arange(len(imp)))
    entity = entity.merge(items, on="item_id", how="left")
    entity["category"] = entity["category"].fillna("unknown")
    frame = historical_features(settings, entity, model.feature_service).sort_values("row")
    at = ts_us(frame["event_timestamp"]) / 1e6  # serving passes the request time in s
    scores = np.full(len(imp), np.nan)
    scores[frame["row"].to_numpy()] = predict(model.booster, model_inputs(frame, at))
    rows = frame["row"].nunique() if len(frame) == frame["row"].nunique() else -len(frame)
    return scores, int(rows)


def popularity_scores(ws: Path, imp: pd.DataFrame, end: datetime) -> np.ndarray:
    """Purchases of each impression's item in the lake strictly before the impression."""
    from flywheel.config import Settings
    from flywheel.lake import read_lake_events

    bought = read_lake_events(Settings(workspace=ws), ["item_id", "event_type", "ts"], end=end)
    bought = bought.to_pandas()
    bought = bought.loc[bought["event_type"] == "purchase"]
    times = {k: np.sort(ts_us(g["ts"])) for k, g in bought.groupby("item_id")}
    at = ts_us(imp["event_timestamp"])
    out = np.zeros(len(imp))
    for item, rows in imp.groupby("item_id").indices.items():
        if item in times:
            out[rows] = np.searchsorted(times[item], at[rows], side="left")
    return out


def figures(scores: dict[str, np.ndarray], y: np.ndarray, p: np.ndarray, groups: np.ndarray
            ) -> dict[str, dict[str, float]]:  # fmt: skip
    """AUC / NDCG@10 on labels, expected AUC / graded NDCG@10 on ``p``, lift share."""
    from flywheel.evaluate import auc, ndcg_at_k

    out = {}
    for name, s in scores.items():
        out[name] = {"auc": auc(y, s), "expected_auc": expected_auc(s, p),
                     "ndcg_at_10": ndcg_at_k(y, s, groups),
                     "graded_ndcg_at_10": graded_ndcg_at_k(s, p, groups)}  # fmt: skip
    oracle = out["oracle"]["expected_auc"]
    for row in out.values():
        row["lift_share"] = lift_share(row["expected_auc"], oracle)
    return out


def evaluate_world(data: Prepared, root: Path, days: int, seed: int) -> dict[str, Any]:
    """The whole loop on one prepared world, then the three scorers on its held-out day."""
    ws = root / "workspace"
    shutil.rmtree(ws, ignore_errors=True)
    log = root / "flywheel.log"
    log.unlink(missing_ok=True)
    loop = run_loop(data, ws, log, days, seed)
    imp, all_views = test_impressions(ws, data.test_start, data.test_end)
    y = imp["label"].to_numpy(dtype=np.float64)
    p = data.oracle(imp)
    found = 0
    model = np.full(len(imp), np.nan)
    if loop["champion"]:
        model, found = model_scores(ws, imp, loop["champion"])
    scores = {"model": model, "popularity": popularity_scores(ws, imp, data.test_end),
              "oracle": np.nan_to_num(p)}  # fmt: skip
    groups = imp["user_id"].to_numpy()
    usable = np.isfinite(model) & np.isfinite(p)
    result = {
        "world": data.name, "info": data.info, "loop": loop, "log": str(log),
        "test": {"impressions": len(imp), "views_before_isolation": all_views,
                 "positives": int(y.sum()), "queries":
                 int(pd.unique(groups).size), "features_rows": found,
                 "oracle_missing": int(np.isnan(p).sum()),
                 "oracle_in_range": bool(np.all((p[~np.isnan(p)] >= 0) & (p[~np.isnan(p)] <= 1))),
                 "calibration": calibration_gap(p[~np.isnan(p)], y[~np.isnan(p)])},
    }  # fmt: skip
    if usable.all() and len(imp):
        result["figures"] = figures(scores, y, p, groups)
    return result


def checks_of(r: dict[str, Any]) -> list[Check]:
    w, loop, test = r["world"], r["loop"], r["test"]
    start = datetime.fromisoformat(r["test_start"])
    trained = datetime.fromisoformat(loop["trained_until"])
    window = datetime.fromisoformat(loop["window_end"]) if loop["window_end"] else None
    gap, se = test["calibration"]
    return [
        Check(f"{w}: ingest quarantined nothing", not loop["quarantine_files"],
              ", ".join(loop["quarantine_files"])),
        Check(f"{w}: the training lake ends before the held-out day",
              trained < start, f"last event {trained}, held-out day from {start}"),
        Check(f"{w}: the cycle's training window ends before the held-out day",
              window is not None and window <= start,
              f"window_end {loop['window_end']}"),
        Check(f"{w}: the cycle deployed a champion", bool(loop["champion"]),
              f"{loop['champion']}, blessed={loop['blessed']}"),
        Check(f"{w}: every held-out view has its point-in-time features row",
              test["impressions"] > 0 and test["features_rows"] == test["impressions"],
              f"{test['features_rows']} of {test['impressions']}"),
        Check(f"{w}: every held-out view has an oracle probability in [0, 1]",
              test["oracle_missing"] == 0 and test["oracle_in_range"],
              f"{test['oracle_missing']} missing"),
        Check(f"{w}: oracle calibrated to the labels (within {CALIBRATION_SE:g} SE)",
              abs(gap) <= CALIBRATION_SE * se, f"rate - mean p = {gap:+.4f}, SE {se:.4f}"),
    ]  # fmt: skip


def targets_of(r: dict[str, Any]) -> list[Target]:
    f = r.get("figures")
    nan = float("nan")
    model = f["model"] if f else {"expected_auc": nan, "lift_share": nan}
    pop = f["popularity"]["expected_auc"] if f else nan
    if r["world"] == "shop":
        return [
            Target("shop: model - popularity expected AUC", model["expected_auc"] - pop,
                   POPULARITY_MARGIN, at_most=False),
            Target("shop: model lift share of the oracle's", model["lift_share"], SHOP_SHARE,
                   at_most=False),
        ]  # fmt: skip
    return [Target("simulator: model lift share of the oracle's", model["lift_share"],
                   SIMULATOR_SHARE, at_most=False)]  # fmt: skip


def table(results: list[dict[str, Any]]) -> None:
    cols = ("auc", "expected_auc", "ndcg_at_10", "graded_ndcg_at_10", "lift_share")
    print(f"\n{'world':<10} {'scorer':<11} " + " ".join(f"{c:>17}" for c in cols))
    for r in results:
        for name in SCORERS:
            row = r.get("figures", {}).get(name, {})
            vals = " ".join(f"{row.get(c, float('nan')):>17.4f}" for c in cols)
            print(f"{r['world']:<10} {name:<11} {vals}")
        t = r["test"]
        print(f"{'':<10} held-out day: {t['impressions']:,} views, {t['positives']:,} positives, "
              f"{t['queries']:,} users; cycle's own test AUC {r['loop']['cycle_test_auc']}; "
              f"loop seconds {r['loop']['seconds']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=["shop", "simulator", "both"], default="both")
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--days", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--catalog",
        choices=["events", "file"],
        default="events",
        help="shop: item attributes on the events (mapping) or a catalog file",
    )
    parser.add_argument("--root", type=Path, default=Path("bench-out/shop_quality"))
    parser.add_argument("--out", type=Path, default=Path("bench-out/shop_quality.json"))
    args = parser.parse_args(argv)
    worlds = ["shop", "simulator"] if args.world == "both" else [args.world]
    results, started = [], time.perf_counter()
    for world in worlds:
        root = (args.root / world).resolve()
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        print(f"{world}: {args.users} users, {args.items} items, {args.days} days", flush=True)
        data = (
            prepare_shop(root, args.users, args.items, args.days, args.seed, args.catalog)
            if world == "shop"
            else prepare_simulator(root, args.users, args.items, args.days, args.seed)
        )
        result = evaluate_world(data, root, args.days, args.seed)
        result["test_start"] = data.test_start.isoformat()
        results.append(result)
    table(results)
    checks = [c for r in results for c in checks_of(r)]
    goals = [t for r in results for t in targets_of(r)]
    return finish(args.out, args, started, goals, checks, results=results)


if __name__ == "__main__":
    raise SystemExit(main())
