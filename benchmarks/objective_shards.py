"""The shards ``objectives.py`` compares objectives on: one real cycle's, per world.

For each world (``quality_worlds``: the shop world and the simulator world, the worlds of
``shop_quality.py``) a fresh workspace goes through the real CLI: ``ingest`` the days before
the last, ``features``, ``cycle --window-days <days - 1>`` (kfp.local: dataset, preprocess,
train with the pipeline's default objective, evaluate). The cycle's preprocess output (the
``shards`` artifact under ``<workspace>/kfp/outputs``) is copied to ``<root>/<world>/shards``
with the cycle's own train and evaluate records next to it (``cycle.json``), so later runs
reuse the same rows and the binary:logistic row can be checked against what the pipeline
trained and evaluated on them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_worlds import prepare_shop, prepare_simulator
from shop_quality import _stage, flywheel

CYCLE_RECORD = "cycle.json"


def find_shards(ws: Path) -> Path:
    """The preprocess stage's shards directory inside a workspace's kfp.local outputs."""
    found = [
        m.parent
        for m in (ws / "kfp" / "outputs").glob("**/metadata.json")
        if all((m.parent / split).is_dir() for split in ("train", "valid", "test"))
    ]
    if len(found) != 1:
        raise RuntimeError(f"expected one shards directory under {ws / 'kfp'}; found {found}")
    return found[0]


def produce(world: str, root: Path, users: int, items: int, days: int, seed: int) -> Path:
    """Run one cycle of ``world`` in ``root/workspace``; return ``root/shards`` (a copy)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"{world}: {users} users, {items} items, {days} days: one cycle", flush=True)
    if world == "shop":
        data = prepare_shop(root, users, items, days, seed, "events")
    else:
        data = prepare_simulator(root, users, items, days, seed)
    ws, log = root / "workspace", root / "flywheel.log"
    seconds = {"ingest": flywheel(ws, log, "ingest", *data.train_args)}
    seconds["features"] = flywheel(ws, log, "features")
    seconds["cycle"] = flywheel(
        ws, log, "cycle", "--window-days", str(float(days - 1)), "--seed", str(seed)
    )
    runs = sorted(p.parent for p in (ws / "runs").glob("*/dataset.json"))
    run = runs[-1] if runs else None
    shards = root / "shards"
    shutil.copytree(find_shards(ws), shards)
    record: dict[str, Any] = {
        "world": world,
        "users": users,
        "items": items,
        "days": days,
        "seed": seed,
        "seconds": seconds,
        "dataset": _stage(run, "dataset"),
        "train": _stage(run, "train"),
        "evaluate": _stage(run, "evaluate"),
    }
    (root / CYCLE_RECORD).write_text(json.dumps(record, indent=2, default=str))
    return shards


def shards_of(
    world: str, root: Path, users: int, items: int, days: int, seed: int, reuse: bool
) -> tuple[Path, dict[str, Any]]:
    """``root/shards`` and the cycle record, produced unless ``reuse`` and present."""
    if not (reuse and (root / "shards" / "metadata.json").is_file()):
        produce(world, root, users, items, days, seed)
    return root / "shards", json.loads((root / CYCLE_RECORD).read_text())
