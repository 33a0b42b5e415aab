"""Entry point of the cluster profile's training Ray job: ``python -m flywheel.train``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Final

from flywheel.train.trainer import TrainSummary, train_model

#: Written next to the model by :func:`main`: the :class:`TrainSummary` as JSON.
SUMMARY_FILENAME: Final = "train_summary.json"


def summary_to_json(summary: TrainSummary) -> str:
    """A :class:`TrainSummary` as JSON (paths as strings); :func:`summary_from_json` inverts it."""
    from dataclasses import asdict

    return json.dumps(asdict(summary), default=str, indent=2)


def summary_from_json(text: str) -> TrainSummary:
    """Read back what :func:`summary_to_json` wrote."""
    data = json.loads(text)
    data["model_path"], data["metrics_path"] = Path(data["model_path"]), Path(data["metrics_path"])
    return TrainSummary(**data)


def main(argv: list[str] | None = None) -> int:
    """``python -m flywheel.train --shards D --out O --settings-json S [--seed N]``.

    What the cluster profile's Ray job runs (``flywheel.ray_jobs``): the same
    :func:`train_model` as the local profile, on the shared workspace, joining the Ray
    cluster the job runs in (``$RAY_ADDRESS``, which Ray sets for a job's driver, or
    ``settings.ray.address``). Writes the model, its metrics and
    ``train_summary.json`` to ``--out``; returns the exit code.
    """
    import argparse

    from flywheel.config import Settings

    parser = argparse.ArgumentParser(prog="python -m flywheel.train", description=main.__doc__)
    parser.add_argument("--shards", required=True, help="preprocessed shards directory")
    parser.add_argument("--out", required=True, help="directory for the model and metrics")
    parser.add_argument("--settings-json", required=True, help="the run's Settings as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.model_validate_json(args.settings_json)
    summary = train_model(settings, args.shards, args.out, seed=args.seed)
    (Path(args.out) / SUMMARY_FILENAME).write_text(summary_to_json(summary))
    return 0
