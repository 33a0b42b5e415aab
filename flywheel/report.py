"""Watch the live model: what each served model version did, from serving's own logs.

Reads the raw prediction and feedback logs (:mod:`flywheel.predlog`), so it works before
any cycle has ingested them, and summarises per ``model_version``:

- ``impressions``: served items, deduplicated on ``(request_id, item_id)`` (first record
  wins, as in the lake); ``requests``: distinct request ids.
- **Engagement.** An impression is *engaged* when at least one feedback event of any
  accepted type (click, cart or purchase) names its ``(request_id, item_id)``; several
  events on one impression count once. ``ctr = engaged / impressions``. No attribution
  window applies: feedback names the request it answers, so it cannot be misattributed.
  Feedback naming no logged impression is counted as ``unmatched_feedback``.
- **Exploration.** The log holds each slot's propensity, not the policy's choice. Under
  :func:`flywheel.serving.epsilon_greedy` a greedy slot has propensity
  ``1 - eps + eps / m > 1 - eps`` and an explored one ``eps / m <= eps / 2`` (an explored
  pick needs ``m >= 2`` remaining candidates), so ``propensity < 0.5`` marks exactly the
  explored slots whenever ``eps <= 0.5`` (the default is 0.1). ``explored_share`` is the
  share of impressions below that threshold.
- **Calibration** of served scores against engagement: 10 equal-width bins
  (:func:`flywheel.evaluate.calibration_bins`) and the expected calibration error. Only a
  version whose scores all lie in ``[0, 1]`` has one: a rank:* model's scores are
  unnormalised ranking scores (:mod:`flywheel.objective`), so its ``ece`` is NaN and its
  table empty. The report reads logs only, so it judges by the scores' range, not the
  model file (a ranking model whose scores all happened to fall in [0, 1] would get a
  calibration that means nothing).
- ``first_ts`` / ``last_ts``: the earliest and latest serving time of the version.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from flywheel.evaluate import N_CALIBRATION_BINS, calibration_bins, expected_calibration_error
from flywheel.predlog import log_dir, read_feedback_logs, read_prediction_logs
from flywheel.schemas import FEEDBACK_TYPES

if TYPE_CHECKING:
    import pandas as pd

    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: A served slot with a propensity below this was explored (exact for epsilon <= 0.5).
EXPLORE_THRESHOLD: Final = 0.5
IMPRESSION_KEY: Final = ["request_id", "item_id"]


class NoServingLogsError(ValueError):
    """There is nothing to report on: no prediction has been logged yet."""


@dataclass(frozen=True)
class CalibrationBin:
    """One equal-width score bin: how many impressions, their mean score, engaged rate."""

    lower: float
    upper: float
    count: int
    mean_score: float
    engaged_rate: float


@dataclass(frozen=True)
class VersionReport:
    """How one model version did while it served."""

    model_version: str
    requests: int
    impressions: int
    engaged: int
    ctr: float
    explored_share: float
    mean_score: float
    ece: float
    calibration: tuple[CalibrationBin, ...]
    first_ts: datetime
    last_ts: datetime


@dataclass(frozen=True)
class ModelReport:
    """Per-version rows (first served first) and totals over the logs read."""

    versions: list[VersionReport]
    requests: int
    impressions: int
    feedback_events: int
    unmatched_feedback: int
    duplicate_predictions: int
    png: Path | None
    seconds: float


def served_impressions(predictions: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Deduplicated impressions with an ``engaged`` flag and an ``explored`` flag.

    Args:
        predictions: prediction log rows (``PREDICTION_LOG_SCHEMA`` columns).
        feedback: feedback log rows (``FEEDBACK_SCHEMA`` columns).

    Returns:
        One row per ``(request_id, item_id)`` (first occurrence kept) with the prediction
        columns plus boolean ``engaged`` and ``explored``.
    """
    served = predictions.drop_duplicates(IMPRESSION_KEY, keep="first").copy()
    accepted = feedback[feedback["event_type"].isin(FEEDBACK_TYPES)]
    engaged_keys = accepted[IMPRESSION_KEY].drop_duplicates().assign(engaged=True)
    served = served.merge(engaged_keys, on=IMPRESSION_KEY, how="left")
    served["engaged"] = served["engaged"].astype("boolean").fillna(False).astype(bool)
    served["explored"] = served["propensity"] < EXPLORE_THRESHOLD
    return served


def calibration_table(
    engaged: np.ndarray, scores: np.ndarray, n_bins: int = N_CALIBRATION_BINS
) -> tuple[CalibrationBin, ...]:
    """The reliability table of ``scores`` against 0/1 ``engaged``: one entry per bin."""
    count, mean_p, rate = calibration_bins(engaged, scores, n_bins)
    return tuple(
        CalibrationBin(
            b / n_bins, (b + 1) / n_bins, int(count[b]), float(mean_p[b]), float(rate[b])
        )
        for b in range(n_bins)
    )


def version_report(version: str, rows: pd.DataFrame) -> VersionReport:
    """Summarise the impressions ``rows`` (from :func:`served_impressions`) of one version."""
    engaged = rows["engaged"].to_numpy(dtype=np.float64)
    scores = rows["score"].to_numpy(dtype=np.float64)
    n = len(rows)
    probabilities = bool(n) and bool(np.all((scores >= 0.0) & (scores <= 1.0)))
    return VersionReport(
        model_version=version,
        requests=int(rows["request_id"].nunique()),
        impressions=n,
        engaged=int(engaged.sum()),
        ctr=float(engaged.mean()) if n else math.nan,
        explored_share=float(rows["explored"].mean()) if n else math.nan,
        mean_score=float(scores.mean()) if n else math.nan,
        ece=expected_calibration_error(engaged, scores) if probabilities else math.nan,
        calibration=calibration_table(engaged, scores) if probabilities else (),
        first_ts=rows["ts"].min().to_pydatetime(),
        last_ts=rows["ts"].max().to_pydatetime(),
    )


def model_report(
    settings: Settings, out_png: Path | None = None, since: datetime | None = None
) -> ModelReport:
    """Per model version: requests, impressions, CTR, explored share, calibration, time span.

    Args:
        settings: whose workspace holds serving's logs (``serving/predictions``,
            ``serving/feedback``).
        out_png: where to save the two-panel figure (CTR per version; calibration curves),
            or ``None`` for no figure. Its folder is created.
        since: tz-aware; only records served (and feedback given) at or after it.
            Feedback always follows its impression, so every impression in the window
            keeps its feedback; feedback on earlier impressions counts as unmatched.

    Returns:
        A :class:`ModelReport`, versions ordered by when they first served.

    Raises:
        NoServingLogsError: no prediction has been logged (in the window) yet.
        PredictionLogError: a log line breaks its contract (names the file).
    """
    started = time.perf_counter()
    predictions = read_prediction_logs(settings, since).to_pandas()
    if predictions.empty:
        where = log_dir(settings, "predictions")
        window = f" since {since.isoformat()}" if since is not None else ""
        raise NoServingLogsError(
            f"no prediction logs{window} under {where}: serve first "
            "(`flywheel serve`, then send traffic, e.g. `flywheel traffic`)"
        )
    feedback = read_feedback_logs(settings, since).to_pandas()
    served = served_impressions(predictions, feedback)
    log.info("report: %d impressions, %d feedback events", len(served), len(feedback))
    known = feedback.merge(served[IMPRESSION_KEY], on=IMPRESSION_KEY, how="left", indicator=True)
    order = served.groupby("model_version")["ts"].min().sort_values().index
    versions = [version_report(str(v), served[served["model_version"] == v]) for v in order]
    if out_png is not None:
        plot_report(versions, out_png)
        log.info("report figure written to %s", out_png)
    return ModelReport(
        versions=versions,
        requests=int(served["request_id"].nunique()),
        impressions=len(served),
        feedback_events=len(feedback),
        unmatched_feedback=int((known["_merge"] == "left_only").sum()),
        duplicate_predictions=len(predictions) - len(served),
        png=out_png,
        seconds=time.perf_counter() - started,
    )


def plot_report(versions: list[VersionReport], path: Path) -> Path:
    """Save two panels to ``path``: CTR per version (bars) and calibration curves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # The Agg canvas directly, as in flywheel.evaluation_report: no pyplot, no global backend.
    fig = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    bars, curves = fig.subplots(1, 2)
    labels = [_short(v.model_version) for v in versions]
    bars.bar(labels, [v.ctr for v in versions], color="tab:blue")
    for x, v in enumerate(versions):
        bars.annotate(f"{v.ctr:.3f}\nn={v.impressions:,}", (x, v.ctr), ha="center", va="bottom")
    bars.set(title="Served CTR per model version", ylabel="engaged impressions / impressions")
    bars.set_ylim(0, max([v.ctr for v in versions if not math.isnan(v.ctr)] + [0.01]) * 1.3)
    bars.tick_params(axis="x", labelrotation=20)
    for label, v in zip(labels, versions, strict=True):
        filled = [b for b in v.calibration if b.count > 0]
        curves.plot(
            [b.mean_score for b in filled],
            [b.engaged_rate for b in filled],
            marker="o",
            label=f"{label} (ECE {v.ece:.3f})",
        )
    curves.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    curves.set(title="Calibration of served scores", xlim=(0, 1), ylim=(0, 1))
    curves.set(xlabel="mean served score", ylabel="observed engaged rate")
    curves.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _short(version: str) -> str:
    """``flywheel-ranker:<version>`` shortened for an axis label."""
    tag = version.rsplit(":", 1)[-1]
    return tag if len(tag) <= 16 else tag[:16] + "…"


def version_rows(report: ModelReport) -> list[dict[str, Any]]:
    """The per-version rows as display-ready dicts (for a CLI table)."""
    return [
        {
            "model version": v.model_version,
            "requests": f"{v.requests:,}",
            "impressions": f"{v.impressions:,}",
            "CTR": f"{v.ctr:.4f}",
            "explored": f"{v.explored_share:.1%}",
            "mean score": f"{v.mean_score:.4f}",
            "ECE": f"{v.ece:.4f}",
            "first served": v.first_ts.isoformat(timespec="seconds"),
            "last served": v.last_ts.isoformat(timespec="seconds"),
        }
        for v in report.versions
    ]
