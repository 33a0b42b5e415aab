"""Served quality: what each model version earned, per version and per hour or day.

Built on :func:`flywheel.report.served_impressions` (deduplicated impressions with the
``engaged`` and ``explored`` flags that ``flywheel report`` uses), plus:

- ``cart`` / ``purchase``: a feedback event of that type names the impression;
- rates (CTR = engaged / impressions, cart rate, purchase rate) with 95% Wilson intervals
  (:func:`flywheel.monitor.stats.proportion`);
- **delayed labels**: an impression is *closed* once ``ts + attribution <= as_of``; closed
  impressions are labelled as the dataset stage labels them
  (:func:`flywheel.dataset.label_served_impressions`: engaged within the attribution
  window). ECE (10 equal-width bins) and the AUC of the served scores use closed
  impressions only; ECE only for versions whose scores all lie in [0, 1] (probabilities).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from flywheel.monitor.stats import Proportion, proportion

if TYPE_CHECKING:
    import pandas as pd

Period = Literal["hour", "day"]
#: Pandas offsets of the periods.
PERIOD_FREQ: Final[dict[str, str]] = {"hour": "h", "day": "D"}
KEY: Final = ["request_id", "item_id"]


@dataclass(frozen=True)
class QualityRow:
    """Served quality of one model version over one span (a period or the whole window)."""

    model_version: str
    start: datetime
    end: datetime
    requests: int
    impressions: int
    ctr: Proportion
    cart_rate: Proportion
    purchase_rate: Proportion
    explored_share: float
    mean_score: float
    closed: int
    ece: float
    auc: float


def labelled_impressions(
    predictions: pd.DataFrame, feedback: pd.DataFrame, attribution: timedelta, as_of: datetime
) -> pd.DataFrame:
    """Impressions with ``engaged``, ``explored``, ``cart``, ``purchase``, ``closed``, ``label``.

    ``label`` is the delayed label (0/1) of closed impressions and -1 for open ones.
    """
    from flywheel.dataset import label_served_impressions
    from flywheel.report import served_impressions

    served = served_impressions(predictions, feedback)
    for kind in ("cart", "purchase"):
        keys = feedback.loc[feedback["event_type"] == kind, KEY].drop_duplicates()
        hit = served[KEY].merge(keys.assign(_hit=True), on=KEY, how="left")["_hit"]
        served[kind] = hit.astype("boolean").fillna(False).astype(bool).to_numpy()
    labels = label_served_impressions(predictions, feedback, attribution, closed_before=as_of)
    labels = labels.rename(columns={"group_id": "request_id"})[["request_id", "item_id", "label"]]
    served = served.merge(labels, on=KEY, how="left")
    served["closed"] = served["label"].notna()
    served["label"] = served["label"].fillna(-1).astype(np.int8)
    return served


def quality_row(version: str, rows: pd.DataFrame, start: datetime, end: datetime) -> QualityRow:
    """Summarise the impressions ``rows`` (from :func:`labelled_impressions`) of one span."""
    from flywheel.evaluate import auc, expected_calibration_error

    n = len(rows)
    scores = rows["score"].to_numpy(dtype=np.float64)
    closed = rows.loc[rows["closed"]]
    y = closed["label"].to_numpy(dtype=np.float64)
    p = closed["score"].to_numpy(dtype=np.float64)
    probabilities = bool(n) and bool(np.all((scores >= 0.0) & (scores <= 1.0)))
    return QualityRow(
        model_version=version,
        start=start,
        end=end,
        requests=int(rows["request_id"].nunique()),
        impressions=n,
        ctr=proportion(int(rows["engaged"].sum()), n),
        cart_rate=proportion(int(rows["cart"].sum()), n),
        purchase_rate=proportion(int(rows["purchase"].sum()), n),
        explored_share=float(rows["explored"].mean()) if n else math.nan,
        mean_score=float(scores.mean()) if n else math.nan,
        closed=len(closed),
        ece=expected_calibration_error(y, p) if probabilities and len(closed) else math.nan,
        auc=auc(y, p) if len(closed) else math.nan,
    )


def choose_period(start: datetime, end: datetime) -> Period:
    """Hours for a window of up to two days, days beyond."""
    return "hour" if end - start <= timedelta(days=2) else "day"


def served_quality(
    impressions: pd.DataFrame, period: Period
) -> tuple[list[QualityRow], list[QualityRow]]:
    """Quality per model version (first served first) and per (period, version).

    Args:
        impressions: from :func:`labelled_impressions`.
        period: ``hour`` or ``day`` (UTC), the span of each period row.

    Returns:
        ``(per_version, per_period)``; period rows sorted by start, then version order.
    """
    import pandas as pd

    if period not in PERIOD_FREQ:
        raise ValueError(f"period={period!r}; expected one of {list(PERIOD_FREQ)}")
    if impressions.empty:
        return [], []
    order = impressions.groupby("model_version")["ts"].min().sort_values().index
    versions = []
    for v in order:
        rows = impressions.loc[impressions["model_version"] == v]
        versions.append(quality_row(str(v), rows, _dt(rows["ts"].min()), _dt(rows["ts"].max())))
    floor = impressions["ts"].dt.floor(PERIOD_FREQ[period])
    step = pd.Timedelta(hours=1) if period == "hour" else pd.Timedelta(days=1)
    periods = []
    for start in sorted(floor.unique()):
        in_period = impressions.loc[floor == start]
        for v in order:
            rows = in_period.loc[in_period["model_version"] == v]
            if len(rows):
                periods.append(quality_row(str(v), rows, _dt(start), _dt(start + step)))
    return versions, periods


def _dt(ts: Any) -> datetime:
    import pandas as pd

    return pd.Timestamp(ts).to_pydatetime()
