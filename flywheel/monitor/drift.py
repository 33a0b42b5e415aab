"""Feature, prediction and label drift: the champion's training set against serving.

**Feature drift.** For every model input of the champion's feature service, the training
split of its shards (the distribution the model learned) against the same input computed
from the raw feature values serving logged (:func:`served_model_inputs`: the logged raw
values through :func:`flywheel.ranking.model_inputs` at each request's time, the
transformation serving itself applies). PSI and Jensen-Shannon distance on the training
set's quantile bins; KS for continuous inputs (more than ``monitor.ks_min_distinct``
distinct training values).

**Prediction drift**: the champion's scores on its training split against the scores it
served. **Label drift**: the training set's positive rate against the served delayed-label
rate (closed impressions), PSI over the two outcomes.

A verdict per row: ``alert`` (PSI >= ``psi_alert``, JS >= ``js_alert`` or, continuous
only, KS >= ``ks_alert`` with a p-value under ``ks_max_pvalue``), ``warn`` (PSI >=
``psi_warn``), ``ok``, or ``insufficient``
(fewer than ``monitor.min_samples`` served values: figures given, no verdict).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from flywheel.monitor.stats import bin_edges, bin_shares, js_distance, ks, psi

if TYPE_CHECKING:
    import pandas as pd

    from flywheel.config import MonitorSettings

Status = Literal["ok", "warn", "alert", "insufficient"]


@dataclass(frozen=True)
class DriftRow:
    """One input's (or the scores', or the label's) drift figures and verdict."""

    name: str
    continuous: bool
    n_reference: int
    n_served: int
    psi: float
    js: float
    ks_statistic: float
    ks_pvalue: float
    status: Status


def _verdict(row: DriftRow, t: MonitorSettings) -> Status:
    if row.n_served < t.min_samples:
        return "insufficient"
    ks_alert = (
        row.continuous
        and not math.isnan(row.ks_statistic)
        and row.ks_statistic >= t.ks_alert
        and row.ks_pvalue < t.ks_max_pvalue
    )
    if row.psi >= t.psi_alert or row.js >= t.js_alert or ks_alert:
        return "alert"
    return "warn" if row.psi >= t.psi_warn else "ok"


def compare(
    name: str, reference: np.ndarray, served: np.ndarray, thresholds: MonitorSettings
) -> DriftRow:
    """PSI, JS (and KS when continuous) of ``served`` against ``reference``, with a verdict."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(served, dtype=np.float64)
    edges = bin_edges(ref, thresholds.drift_bins)
    e, a = bin_shares(ref, edges), bin_shares(cur, edges)
    continuous = len(np.unique(ref[np.isfinite(ref)])) > thresholds.ks_min_distinct
    result = ks(ref, cur) if continuous else None
    row = DriftRow(
        name=name,
        continuous=continuous,
        n_reference=int(ref.size),
        n_served=int(cur.size),
        psi=psi(e, a) if cur.size and ref.size else math.nan,
        js=js_distance(e, a) if cur.size and ref.size else math.nan,
        ks_statistic=result.statistic if result else math.nan,
        ks_pvalue=result.pvalue if result else math.nan,
        status="ok",
    )
    return _with_status(row, thresholds)


def _with_status(row: DriftRow, thresholds: MonitorSettings) -> DriftRow:
    from dataclasses import replace

    return replace(row, status=_verdict(row, thresholds))


def logged_features(served: pd.DataFrame) -> pd.DataFrame:
    """The prediction log's ``features`` JSON as columns (one row per served row, same index).

    A missing or null ``features`` field gives an all-missing row.
    """
    import pandas as pd

    parsed = [json.loads(v) if isinstance(v, str) and v else {} for v in served["features"]]
    return pd.DataFrame.from_records(parsed, index=served.index)


def served_model_inputs(served: pd.DataFrame, service: str) -> dict[str, np.ndarray]:
    """The model inputs of ``service`` computed from the logged raw values, by column.

    Pass the rows of models of ``service`` only. Returns empty columns when the logs lack
    one of the service's raw features altogether (they were served by another service).
    """
    from flywheel.ranking import feature_set, model_inputs

    spec = feature_set(service)
    raw = logged_features(served)
    if any(name not in raw.columns for name in spec.raw) or raw.empty:
        return {c: np.zeros(0) for c in spec.model}
    x = model_inputs(raw, unix_seconds(served["ts"]), service)
    return {c: x[:, j] for j, c in enumerate(spec.model)}


def unix_seconds(ts: pd.Series) -> np.ndarray:
    """tz-aware timestamps as float epoch seconds (whatever the pandas time unit)."""
    import pandas as pd

    micros = pd.to_datetime(ts, utc=True).astype("datetime64[us, UTC]").astype("int64")
    return micros.to_numpy(dtype=np.float64) / 1e6


def feature_drift(
    reference: Mapping[str, np.ndarray],
    served: Mapping[str, np.ndarray],
    thresholds: MonitorSettings,
) -> list[DriftRow]:
    """One :class:`DriftRow` per input present in both, in the reference's order."""
    return [compare(n, reference[n], served[n], thresholds) for n in reference if n in served]


def label_drift(
    reference_labels: np.ndarray, served_labels: np.ndarray, thresholds: MonitorSettings
) -> DriftRow:
    """Outcome-rate drift: PSI and JS over the shares of 0 and 1 (never continuous)."""
    ref = np.asarray(reference_labels, dtype=np.float64)
    cur = np.asarray(served_labels, dtype=np.float64)

    def shares(y: np.ndarray) -> np.ndarray:
        return np.array([1 - y.mean(), y.mean()]) if y.size else np.zeros(2)

    e, a = shares(ref), shares(cur)
    row = DriftRow(
        name="label",
        continuous=False,
        n_reference=int(ref.size),
        n_served=int(cur.size),
        psi=psi(e, a) if cur.size and ref.size else math.nan,
        js=js_distance(e, a) if cur.size and ref.size else math.nan,
        ks_statistic=math.nan,
        ks_pvalue=math.nan,
        status="ok",
    )
    return _with_status(row, thresholds)
