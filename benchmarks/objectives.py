"""Benchmark: binary:logistic against XGBoost's learning-to-rank objectives (issue #11).

    python benchmarks/objectives.py --world both --seeds 0,1,2 --out bench-out/objectives.json

Shards: one real cycle per world (:mod:`objective_shards`: the shop world and the simulator
world of ``shop_quality.py``, through the CLI and kfp.local), kept under ``--root`` and
reused by later runs (``--fresh`` makes them again). Every variant trains on the same
train/valid shards through the pipeline's own train function
(:func:`flywheel.train.train_model`: Ray Train, 2 workers, ``Settings.train`` set to the
variant) with the same other parameters, once per seed, and is scored on the same test
shard with ``flywheel.evaluate``'s ``ndcg_at_k`` (per query group) and ``auc`` (all rows).

Query groups are the shards' ``group_id``: these cycles ran before anything was served,
so every group is a browsing session of organic views. The shards carry no display
position, so ``lambdarank_unbiased`` (position debiasing) has nothing to work on and is
not a variant (see :mod:`flywheel.objective`).

Verdict, computed below: per world, the variant with the best mean NDCG@10; a rank
variant would become the default only if on **both** worlds its NDCG@10 beats
binary:logistic's by more than the noise (``NOISE_SE`` times the standard error of the
difference of the two seed means) and its AUC is not below binary's by more than the noise.
Checks (any failure: FAILED, exit 1): the binary:logistic row at the cycle's seed
reproduces the cycle's own test AUC (the pipeline's train and evaluate on the same
shards), every rank model scores as ``ranking`` and binary as ``probability``, and every
model trained past its first round.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Check, Target, finish
from objective_shards import shards_of

#: name -> Settings.train of each variant (everything else is the pipeline's default).
VARIANTS: dict[str, dict[str, Any]] = {
    "binary:logistic": {"objective": "binary:logistic"},
    "rank:ndcg topk@10": {"objective": "rank:ndcg", "lambdarank_pair_method": "topk",
                          "lambdarank_num_pair_per_sample": 10},
    "rank:ndcg mean": {"objective": "rank:ndcg", "lambdarank_pair_method": "mean",
                       "lambdarank_num_pair_per_sample": 1},
    "rank:pairwise topk@10": {"objective": "rank:pairwise", "lambdarank_pair_method": "topk",
                              "lambdarank_num_pair_per_sample": 10},
    "rank:pairwise mean": {"objective": "rank:pairwise", "lambdarank_pair_method": "mean",
                           "lambdarank_num_pair_per_sample": 1},
}  # fmt: skip
BASELINE = "binary:logistic"
#: A difference counts when it exceeds this many standard errors of the difference of means.
NOISE_SE = 2.0
#: The binary row at the cycle's seed must reproduce the cycle's own test AUC this closely.
REPRODUCE_AUC = 0.002


def train_and_score(shards: Path, out: Path, variant: str, seed: int) -> dict[str, Any]:
    """Train one variant through ``flywheel.train.train_model``; score it on the test shard."""
    from flywheel.config import RaySettings, Settings, TrainSettings
    from flywheel.evaluate import auc, ndcg_at_k
    from flywheel.objective import score_kind
    from flywheel.train import inspect_shards, load_booster, predict, read_split, train_model

    settings = Settings(workspace=out, ray=RaySettings(num_cpus=2),
                        train=TrainSettings(**VARIANTS[variant]))  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    summary = train_model(settings, shards, out, seed=seed)
    record = json.loads(summary.metrics_path.read_text())
    booster = load_booster(summary.model_path)
    x, y, groups = read_split(inspect_shards(shards, splits=("test",)), "test")
    scores = predict(booster, x)
    return {
        "variant": variant, "seed": seed, "ndcg_at_10": ndcg_at_k(y, scores, groups),
        "auc": auc(y, scores), "score_kind": score_kind(booster),
        "rounds": record["num_boosted_rounds"], "best_iteration": record["best_iteration"],
        "stopped_on": record.get("stopped_on"), "train_seconds": record["seconds"]["total"],
        "boost_seconds": record["seconds"]["fit_boost"],
        "score_range": [float(scores.min()), float(scores.max())],
    }  # fmt: skip


def groups_of(shards: Path) -> dict[str, Any]:
    """Rows, query groups and groups with a positive, per split."""
    from flywheel.train import inspect_shards, read_split

    info = inspect_shards(shards)
    out = {}
    for split in ("train", "valid", "test"):
        _, y, groups = read_split(info, split)
        _, gid = np.unique(groups, return_inverse=True)
        sizes = np.bincount(gid)
        out[split] = {"rows": len(y), "groups": len(sizes), "mean_group": float(sizes.mean()),
                      "groups_with_positive": int((np.bincount(gid, weights=y) > 0).sum()),
                      "positive_rate": float(y.mean())}  # fmt: skip
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per variant: mean, seed standard deviation and standard error of each figure."""
    out: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        row: dict[str, float] = {"seeds": len(mine)}
        for key in ("ndcg_at_10", "auc", "train_seconds", "boost_seconds", "rounds"):
            vals = np.array([r[key] for r in mine], dtype=np.float64)
            row[key] = float(vals.mean())
            row[f"{key}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            row[f"{key}_se"] = row[f"{key}_sd"] / math.sqrt(len(vals))
        out[variant] = row
    return out


def versus_baseline(s: dict[str, dict[str, float]], variant: str) -> dict[str, float]:
    """``variant`` minus binary:logistic on NDCG@10 and AUC, and the noise of each gap."""
    out = {}
    for key in ("ndcg_at_10", "auc"):
        gap = s[variant][key] - s[BASELINE][key]
        se = math.hypot(s[variant][f"{key}_se"], s[BASELINE][f"{key}_se"])
        out[f"{key}_gap"], out[f"{key}_noise"] = gap, NOISE_SE * se
    return out


def decide(worlds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Winner per world, and whether a rank variant clears the bar on every world."""
    winners = {w: max(r["summary"], key=lambda v: r["summary"][v]["ndcg_at_10"])
               for w, r in worlds.items()}  # fmt: skip
    clears: dict[str, dict[str, bool]] = {}
    for variant in VARIANTS:
        if variant == BASELINE:
            continue
        clears[variant] = {}
        for w, r in worlds.items():
            g = versus_baseline(r["summary"], variant)
            clears[variant][w] = bool(g["ndcg_at_10_gap"] > g["ndcg_at_10_noise"]
                                      and g["auc_gap"] >= -g["auc_noise"])  # fmt: skip
    qualified = [v for v, by_world in clears.items() if all(by_world.values())]
    same = len(set(winners.values())) == 1

    def worst_world(v: str) -> float:
        return min(worlds[w]["summary"][v]["ndcg_at_10"] for w in worlds)

    default = max(qualified, key=worst_world) if qualified else BASELINE
    return {"winners": winners, "same_winner": same, "clears_noise": clears, "default": default}


def checks_of(world: str, r: dict[str, Any], cycle_seed: int) -> list[Check]:
    cycle_auc = (r["cycle"].get("evaluate", {}).get("challenger") or {}).get("auc")
    ours = [x["auc"] for x in r["runs"] if x["variant"] == BASELINE and x["seed"] == cycle_seed]
    gap = abs(ours[0] - cycle_auc) if ours and cycle_auc is not None else math.nan
    kinds_ok = all((x["score_kind"] == "probability") == (x["variant"] == BASELINE)
                   for x in r["runs"])  # fmt: skip
    return [
        Check(f"{world}: binary:logistic at seed {cycle_seed} reproduces the cycle's test AUC",
              gap <= REPRODUCE_AUC, f"ours {ours[0] if ours else None}, cycle {cycle_auc}, "
              f"|gap| {gap:.5f} (<= {REPRODUCE_AUC})"),
        Check(f"{world}: rank models score as 'ranking', binary as 'probability'", kinds_ok),
        Check(f"{world}: every model boosted past its first round",
              all(x["rounds"] > 1 for x in r["runs"]),
              f"rounds {sorted({x['rounds'] for x in r['runs']})}"),
    ]  # fmt: skip


def targets_of(world: str, r: dict[str, Any]) -> list[Target]:
    """Per rank variant: its NDCG@10 gain over binary minus the noise (met when > 0)."""
    out = []
    for variant in VARIANTS:
        if variant != BASELINE:
            g = versus_baseline(r["summary"], variant)
            beyond = g["ndcg_at_10_gap"] - g["ndcg_at_10_noise"]
            name = f"{world}: {variant} NDCG@10 gain over binary beyond noise"
            out.append(Target(name, beyond, 0.0, at_most=False))
    return out


def table(worlds: dict[str, dict[str, Any]]) -> None:
    head = ("NDCG@10", "± sd", "AUC", "± sd", "train s", "boost s", "rounds")
    print(f"\n{'world':<10} {'objective':<22} " + " ".join(f"{h:>8}" for h in head))
    for w, r in worlds.items():
        for variant, s in r["summary"].items():
            vals = (s["ndcg_at_10"], s["ndcg_at_10_sd"], s["auc"], s["auc_sd"],
                    s["train_seconds"], s["boost_seconds"], s["rounds"])  # fmt: skip
            print(f"{w:<10} {variant:<22} " + " ".join(f"{v:>8.4f}" for v in vals[:4])
                  + " ".join(f"{v:>9.1f}" for v in vals[4:]))  # fmt: skip
        t = r["groups"]["test"]
        print(
            f"{'':<10} test shard: {t['rows']:,} rows, {t['groups']:,} groups (sessions, "
            f"{t['mean_group']:.1f} rows each), {t['groups_with_positive']:,} with a positive"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=["shop", "simulator", "both"], default="both")
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--days", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0, help="the worlds' and the cycle's seed")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of every variant")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--fresh", action="store_true", help="make the shards again")
    parser.add_argument("--root", type=Path, default=Path("bench-out/objectives"))
    parser.add_argument("--out", type=Path, default=Path("bench-out/objectives.json"))
    args = parser.parse_args(argv)
    from flywheel.config import RaySettings, Settings
    from flywheel.ray_runtime import ensure_ray, shutdown_ray

    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = args.variants.split(",")
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or BASELINE not in chosen:
        parser.error(f"--variants: unknown {unknown}; {BASELINE!r} must be one of them")
    for v in list(VARIANTS):
        if v not in chosen:
            VARIANTS.pop(v)
    started = time.perf_counter()
    worlds: dict[str, dict[str, Any]] = {}
    for world in ["shop", "simulator"] if args.world == "both" else [args.world]:
        root = (args.root / world).resolve()
        shards, cycle = shards_of(world, root, args.users, args.items, args.days, args.seed,
                                  reuse=not args.fresh)  # fmt: skip
        ensure_ray(Settings(workspace=root, ray=RaySettings(num_cpus=2)))
        runs = []
        for variant in VARIANTS:
            for seed in seeds:
                out = root / "models" / variant.replace(":", "_").replace(" ", "_") / f"s{seed}"
                runs.append(train_and_score(shards, out, variant, seed))
                x = runs[-1]
                print(f"  {world} {variant:<22} seed {seed}: NDCG@10 {x['ndcg_at_10']:.4f} "
                      f"AUC {x['auc']:.4f} ({x['rounds']} rounds, {x['train_seconds']:.0f} s)",
                      flush=True)  # fmt: skip
        worlds[world] = {"cycle": cycle, "groups": groups_of(shards), "runs": runs,
                         "summary": summarise(runs)}  # fmt: skip
    shutdown_ray()
    table(worlds)
    decision = decide(worlds)
    print(
        f"\nwinner per world (NDCG@10): {decision['winners']}; same on all: "
        f"{decision['same_winner']}; default: {decision['default']}"
    )
    checks = [c for w, r in worlds.items() for c in checks_of(w, r, args.seed)]
    goals = [t for w, r in worlds.items() for t in targets_of(w, r)]
    return finish(args.out, args, started, goals, checks, worlds=worlds, decision=decision)


if __name__ == "__main__":
    raise SystemExit(main())
