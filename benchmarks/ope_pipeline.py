"""The ``pipeline`` arm of ``ope_coverage.py``: the same logged requests written and read
back through the real code path, not the benchmark's own arrays.

Per request: :func:`flywheel.serving.records._prediction_records` and
:func:`~flywheel.serving.records._candidate_record` (what ``RankingService.rank`` writes),
appended with the real :class:`flywheel.predlog.LogWriter` to a scratch workspace, each
click as a feedback record; then the gate's reader:
:func:`flywheel.evaluate_ope.closed_slates` (labels by the attribution window, as the
gate does), :func:`~flywheel.evaluate_ope.remaining_candidates`,
:func:`flywheel.ope_candidates.candidate_records` and
:func:`~flywheel.ope_candidates.full_targets`. The one substitution is the challenger
model: each challenger's score of a candidate is logged as a raw feature column of its
own name, and the scorer reads that column (the benchmark's challengers are score
matrices, not xgboost models; ``booster_scorer`` is exercised by the unit tests).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flywheel.config import OpeSettings, Settings
from flywheel.evaluate_ope import closed_slates, remaining_candidates
from flywheel.ope_candidates import Scorer, candidate_records, full_targets
from flywheel.predlog import LogWriter, log_dir
from flywheel.serving.exploration import Slate
from flywheel.serving.records import _candidate_record, _prediction_records

T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
LOGGER = "bench:logger"


def write_logs(
    settings: Settings,
    world: Any,
    users: np.ndarray,
    cands: np.ndarray,
    chosen: np.ndarray,
    prop: np.ndarray,
    clicks: np.ndarray,
    challengers: tuple[str, ...],
    eps: float,
) -> tuple[int, int]:
    """Write every request's prediction, candidate and feedback records; return the bytes
    of the prediction log and of the candidate log."""
    predictions = LogWriter(log_dir(settings, "predictions"), "predictions")
    candidates = LogWriter(log_dir(settings, "candidates"), "candidates")
    feedback = LogWriter(log_dir(settings, "feedback"), "feedback")
    logger = world.scores["logger"]
    sizes = [0, 0]
    for n in range(len(users)):
        u, items = int(users[n]), cands[n]
        ts, rid = T0 + timedelta(seconds=n), f"r{n:07d}"
        cols: dict[str, Any] = {"item_id": [f"i{i}" for i in items.tolist()],
                                "category": ["c"] * len(items)}  # fmt: skip
        cols.update((name, world.scores[name][u, items]) for name in challengers)
        scores = logger[u, items]
        slate = Slate(chosen[n], prop[n], np.zeros(len(chosen[n]), dtype=bool))
        sizes[0] += predictions.append(
            _prediction_records(rid, ts, f"u{u}", LOGGER, cols, scores, slate, raw=challengers)
        )
        record = _candidate_record(rid, ts, f"u{u}", LOGGER, cols, scores, slate, eps,
                                   raw=challengers)  # fmt: skip
        sizes[1] += candidates.append([record])
        at = ts + timedelta(minutes=1)
        feedback.append([{"request_id": rid, "item_id": f"i{int(items[chosen[n][k]])}",
                          "event_type": "click", "ts": at}
                         for k in np.flatnonzero(clicks[n]).tolist()])  # fmt: skip
    for writer in (predictions, candidates, feedback):
        writer.close()
    return sizes[0], sizes[1]


def pipeline_targets(
    world: Any,
    users: np.ndarray,
    cands: np.ndarray,
    chosen: np.ndarray,
    prop: np.ndarray,
    clicks: np.ndarray,
    challengers: tuple[str, ...],
    eps: float,
) -> dict[str, Any]:
    """The gate's slots (slate codes, positions, propensities, rewards in the frame's
    order, which is the requests' order), each challenger's ``q`` from the candidate log,
    the full share and the logs' bytes."""
    with tempfile.TemporaryDirectory(prefix="ope-pipeline-") as tmp:
        settings = Settings(workspace=Path(tmp) / "ws", ope=OpeSettings(epsilon=eps))
        sizes = write_logs(settings, world, users, cands, chosen, prop, clicks, challengers, eps)
        until = T0 + timedelta(seconds=len(users), hours=2)
        frame, since = closed_slates(settings, LOGGER, until)
        remaining = remaining_candidates(frame["propensity"].to_numpy(), eps)
        records = candidate_records(settings, LOGGER, since, until)
        out: dict[str, Any] = {
            "request": frame["request_id"].str[1:].astype(int).to_numpy(),
            "position": frame["position"].to_numpy(dtype=np.int64),
            "propensity": frame["propensity"].to_numpy(dtype=np.float64),
            "reward": frame["reward"].to_numpy(dtype=np.float64),
            "bytes": {"predictions": sizes[0], "candidates": sizes[1]},
            "q": {},
        }
        for name in challengers:
            got = full_targets(frame, records, remaining, eps, _column_scorer(name))
            out["q"][name] = got.target
            out["full_share"] = got.slates / frame["request_id"].nunique()
    return out


def _column_scorer(name: str) -> Scorer:
    """The challenger ``name``'s scores: the raw column the benchmark logged them in."""

    def score(raw: pd.DataFrame, at_unix: np.ndarray) -> np.ndarray:
        return raw[name].to_numpy(dtype=np.float64)

    return score
