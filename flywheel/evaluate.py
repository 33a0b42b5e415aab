"""Evaluate a challenger against the champion on the same test split and decide blessing.

Metrics (all in plain numpy except AUC, which uses scikit-learn):

- ``auc``: area under the ROC curve.
- ``logloss``: mean binary cross-entropy, probabilities clipped to ``[1e-15, 1 - 1e-15]``.
- ``ece``: expected calibration error over 10 equal-width probability bins
  ``[0, .1), [.1, .2), ..., [.9, 1]``: ``sum_b n_b / N * |mean(p_b) - mean(y_b)|``; empty
  bins contribute nothing.
- ``ndcg_at_10``: NDCG@10 per ``group_id`` with binary gains, averaged over the groups with
  at least one positive (groups without one have no ideal ranking to compare against).
  Ties in score are broken pessimistically (negatives first), so a constant scorer cannot
  look good by the accident of row order.

A model trained with a rank:* objective (:func:`flywheel.objective.score_kind`) gives
unnormalised ranking scores, not probabilities: its ``auc`` and ``ndcg_at_10`` are computed
as for any scorer (both use only the order of the scores), its ``logloss`` and ``ece`` are
NaN (not defined), it is left out of the calibration plot, and the blessing rule's log-loss
check and a ``logloss``/``ece`` blessing metric apply only when both models give
probabilities (:func:`decide`).

The item-popularity baseline (:mod:`flywheel.popularity`: the item's purchases in the 7
days before the impression, ties broken by its views) is scored on the same rows for
``auc`` and ``ndcg_at_10`` only (it ranks; it gives no probabilities). A first model must
beat its AUC by ``BlessingRule.min_lift_over_popularity``.

Artefacts written to ``out_dir``: ``metrics.json``, ``roc.png``, ``calibration.png`` and a
self-contained ``report.html`` (plots embedded as base64) for the KFP UI; the drawing is in
:mod:`flywheel.evaluation_report`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flywheel.objective import ScoreKind, score_kind
from flywheel.popularity import POPULARITY_FEATURES, popularity_scores
from flywheel.train import (
    booster_features,
    check_labels,
    inspect_shards,
    load_booster,
    predict,
    read_split,
)

if TYPE_CHECKING:
    from flywheel.evaluate_ope import OpeContext

log = logging.getLogger(__name__)

N_CALIBRATION_BINS: Final = 10
NDCG_K: Final = 10
_EPS: Final = 1e-15
#: Metrics where a larger value is better; the others are losses.
HIGHER_IS_BETTER: Final = frozenset({"auc", "ndcg_at_10"})


# ---- metric maths --------------------------------------------------------------------


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of scores ``p`` for binary labels ``y``; NaN when ``y`` has one class."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return math.nan
    return float(roc_auc_score(y, p))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``p`` against labels ``y`` (natural log)."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def calibration_bins(
    y: np.ndarray, p: np.ndarray, n_bins: int = N_CALIBRATION_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin on [0, 1]: ``(count, mean predicted, observed positive rate)``.

    Bin ``b`` holds ``b/n <= p < (b+1)/n``; ``p == 1`` falls in the last bin. Empty bins
    have count 0 and NaN means.
    """
    p = np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=np.asarray(y, dtype=np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, sum_p / count, sum_y / count


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, n_bins: int = N_CALIBRATION_BINS
) -> float:
    """ECE: the count-weighted mean gap between predicted and observed rate per bin."""
    count, mean_p, rate = calibration_bins(y, p, n_bins)
    filled = count > 0
    return float(np.sum(count[filled] * np.abs(mean_p[filled] - rate[filled])) / count.sum())


def ndcg_at_k(y: np.ndarray, p: np.ndarray, groups: np.ndarray, k: int = NDCG_K) -> float:
    """Mean NDCG@k over groups with at least one positive (binary gains, log2 discount).

    Args:
        y: binary relevance per row; p: scores; groups: the group key per row.

    Returns:
        The mean over qualifying groups, or NaN if no group has a positive.
    """
    _, gid = np.unique(groups, return_inverse=True)
    y = np.asarray(y, dtype=np.float64)
    # Sort by group, then score descending, then label ascending (pessimistic ties).
    order = np.lexsort((y, -np.asarray(p, dtype=np.float64), gid))
    g_sorted, y_sorted = gid[order], y[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    sizes = np.diff(np.r_[starts, len(g_sorted)])
    rank = np.arange(len(g_sorted)) - np.repeat(starts, sizes)
    discount = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    n_groups = int(gid.max()) + 1 if len(gid) else 0
    dcg = np.bincount(g_sorted, weights=y_sorted * discount, minlength=n_groups)
    positives = np.bincount(gid, weights=y, minlength=n_groups).astype(np.int64)
    ideal_prefix = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))]
    idcg = ideal_prefix[np.minimum(positives, k)]
    keep = positives > 0
    return float(np.mean(dcg[keep] / idcg[keep])) if keep.any() else math.nan


@dataclass(frozen=True)
class ModelMetrics:
    """How one model scores on the test split."""

    auc: float
    logloss: float
    ece: float
    ndcg_at_10: float
    rows: int
    groups_with_positive: int
    positive_rate: float
    mean_prediction: float


@dataclass(frozen=True)
class BaselineMetrics:
    """How a ranking-only baseline scores on the test split (no probabilities, no loss)."""

    auc: float
    ndcg_at_10: float


def score_metrics(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray, kind: ScoreKind = "probability"
) -> ModelMetrics:
    """All test metrics of scores ``p`` for labels ``y`` and ``groups``; ``kind``
    ``ranking`` (scores that are no probabilities) makes ``logloss`` and ``ece`` NaN."""
    _, gid = np.unique(groups, return_inverse=True)
    probabilities = kind == "probability"
    return ModelMetrics(
        auc=auc(y, p),
        logloss=log_loss(y, p) if probabilities else math.nan,
        ece=expected_calibration_error(y, p) if probabilities else math.nan,
        ndcg_at_10=ndcg_at_k(y, p, groups),
        rows=len(y),
        groups_with_positive=int(np.count_nonzero(np.bincount(gid, weights=y) > 0)),
        positive_rate=float(np.mean(y)),
        mean_prediction=float(np.mean(p)),
    )


# ---- the blessing rule ---------------------------------------------------------------


class BlessingRule(BaseModel):
    """When a challenger may replace the champion.

    Blessed iff the challenger's AUC is at least ``min_auc`` and, when there is a champion,
    the challenger beats it on ``metric`` by strictly more than ``min_improvement`` (so an
    identical retrain is not promoted at the default 0.0) and its logloss is no more than
    ``max_logloss_regression`` above the champion's (``None`` turns that check off).

    With no champion yet, the challenger's AUC must also be at least the item-popularity
    baseline's AUC plus ``min_lift_over_popularity`` (``None`` turns that check off): a first
    model no better than "most bought" is not worth deploying. Once a champion serves, the
    champion comparison decides alone: refusing a challenger that beats the serving model
    because both trail popularity would keep the worse model serving.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["auc", "ndcg_at_10", "logloss", "ece"] = "auc"
    min_improvement: float = Field(default=0.0, ge=0.0)
    max_logloss_regression: float | None = Field(default=0.01, ge=0.0)
    min_auc: float = Field(default=0.55, ge=0.0, le=1.0)
    min_lift_over_popularity: float | None = Field(default=0.01, ge=0.0, le=1.0)


@dataclass(frozen=True)
class Decision:
    blessed: bool
    reason: str


def decide(
    rule: BlessingRule,
    challenger: ModelMetrics,
    champion: ModelMetrics | None,
    popularity_auc: float,
) -> Decision:
    """Apply ``rule``; the reason names the numbers that decided it.

    ``popularity_auc`` is the popularity baseline's AUC on the same test split; it decides
    only when there is no champion (:func:`decide_first_model`).
    """
    if not challenger.auc >= rule.min_auc:  # also catches NaN
        return Decision(
            False, f"challenger AUC {challenger.auc:.4f} is below the floor {rule.min_auc:.4f}"
        )
    if champion is None:
        return decide_first_model(rule, challenger.auc, popularity_auc)
    ours, theirs = getattr(challenger, rule.metric), getattr(champion, rule.metric)
    if rule.metric in ("logloss", "ece") and not (math.isfinite(ours) and math.isfinite(theirs)):
        return Decision(
            False,
            f"blessing metric {rule.metric} needs probabilities from both models; challenger "
            f"{ours:.4f}, champion {theirs:.4f} (a rank:* model's scores are no probabilities)",
        )
    gain = ours - theirs if rule.metric in HIGHER_IS_BETTER else theirs - ours
    if not gain > rule.min_improvement:
        return Decision(
            False,
            f"challenger {rule.metric} {ours:.4f} does not beat champion {theirs:.4f} by more "
            f"than {rule.min_improvement:.4f} (gain {gain:+.4f})",
        )
    regression = challenger.logloss - champion.logloss
    limit = rule.max_logloss_regression
    if not math.isfinite(regression):  # a rank:* model on either side: no log loss to compare
        return Decision(
            True,
            f"challenger {rule.metric} {ours:.4f} beats champion {theirs:.4f} by {gain:+.4f} "
            f"(> {rule.min_improvement:.4f}); logloss check skipped (a rank:* model's scores "
            "are no probabilities)",
        )
    if limit is not None and regression > limit:
        return Decision(
            False,
            f"challenger logloss {challenger.logloss:.4f} regresses {regression:+.4f} on the "
            f"champion's {champion.logloss:.4f}; at most {limit:.4f} allowed",
        )
    return Decision(
        True,
        f"challenger {rule.metric} {ours:.4f} beats champion {theirs:.4f} by {gain:+.4f} "
        f"(> {rule.min_improvement:.4f}); logloss change {regression:+.4f}",
    )


def decide_first_model(rule: BlessingRule, ours: float, popularity_auc: float) -> Decision:
    """The no-champion case of :func:`decide`, for a challenger AUC that passed the floor."""
    floor = f"challenger AUC {ours:.4f} passes the floor {rule.min_auc:.4f}"
    margin = rule.min_lift_over_popularity
    if margin is None:
        return Decision(True, f"no champion yet; {floor}; popularity check off")
    lift = ours - popularity_auc
    if not ours >= popularity_auc + margin:  # a NaN baseline refuses too
        return Decision(
            False,
            f"no champion yet; challenger AUC {ours:.4f} does not beat the popularity "
            f"baseline's {popularity_auc:.4f} by min_lift_over_popularity {margin:.4f} "
            f"(lift {lift:+.4f})",
        )
    return Decision(
        True,
        f"no champion yet; {floor} and beats the popularity baseline's "
        f"{popularity_auc:.4f} by {lift:+.4f} (>= {margin:.4f})",
    )


# ---- the stage -----------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSummary:
    """The blessing decision, the test metrics of both models and of the popularity
    baseline, and where the artefacts are."""

    blessed: bool
    reason: str
    challenger: ModelMetrics
    champion: ModelMetrics | None
    popularity: BaselineMetrics
    test_rows: int
    metrics_path: Path
    report_path: Path
    seconds: float
    #: The off-policy block of ``metrics.json`` (:mod:`flywheel.evaluate_ope`), if run.
    ope: dict[str, Any] | None = None


def evaluate(
    challenger_path: str | Path,
    champion_path: str | Path | None,
    shards_dir: str | Path,
    out_dir: str | Path,
    rule: BlessingRule | None = None,
    ope: OpeContext | None = None,
) -> EvalSummary:
    """Score challenger, champion and the popularity baseline on the same test split and
    decide whether to bless.

    Args:
        challenger_path: the new model (``model.ubj`` from :func:`flywheel.train.train_model`).
        champion_path: the serving model's booster file, or ``None`` if there is none yet.
        shards_dir: preprocessed shards; only ``test/`` and ``metadata.json`` are read.
        out_dir: created if needed; receives ``metrics.json``, ``roc.png``,
            ``calibration.png`` and ``report.html``.
        rule: the blessing rule (default :class:`BlessingRule()`).
        ope: the served logs' workspace and champion for the off-policy check
            (:func:`flywheel.evaluate_ope.gate`); ``None`` skips it (``ope: null``).

    Raises:
        ShardError: the test split is missing, empty, unreadable or single-class.
        FileNotFoundError: a model file does not exist.
    """
    # Imported here: the report module imports this one's metric maths.
    from flywheel.evaluation_report import (
        plot_calibration,
        plot_roc,
        render_report,
        roc_points,
    )

    started = time.perf_counter()
    rule = rule or BlessingRule()
    out = Path(out_dir)
    info = inspect_shards(shards_dir, splits=("test",))
    check_labels(info, "test")
    challenger = load_booster(challenger_path)
    x, y, groups = read_split(info, "test", booster_features(challenger))
    scores = {"challenger": predict(challenger, x)}
    kinds = {"challenger": score_kind(challenger)}
    if champion_path is not None:
        # A champion of an older feature service reads its own columns of the same rows
        # (every service's model columns start with the ones before it).
        champion = load_booster(champion_path)
        x_champion, _, _ = read_split(info, "test", booster_features(champion))
        scores["champion"] = predict(champion, x_champion)
        kinds["champion"] = score_kind(champion)
    metrics = {name: score_metrics(y, p, groups, kinds[name]) for name, p in scores.items()}
    baseline = popularity_scores(x, booster_features(challenger))
    popularity = BaselineMetrics(auc(y, baseline), ndcg_at_k(y, baseline, groups))
    decision = decide(rule, metrics["challenger"], metrics.get("champion"), popularity.auc)
    ope_record = None
    if ope is not None:
        from flywheel.evaluate_ope import gate, ope_block

        service = info.metadata.get("feature_service", "ranking_v1")
        ope_record = ope_block(ope, challenger, service)
        decision = gate(ope.settings.ope, decision, ope_record)
    log.info("%s: %s", "blessed" if decision.blessed else "not blessed", decision.reason)
    out.mkdir(parents=True, exist_ok=True)
    plots = {
        "roc": plot_roc(y, {**scores, "popularity": baseline}, out / "roc.png"),
        "calibration": plot_calibration(
            y,
            {n: p for n, p in scores.items() if kinds[n] == "probability"},
            out / "calibration.png",
        ),
    }
    record = {
        "blessed": decision.blessed,
        "reason": decision.reason,
        "rule": rule.model_dump(),
        "challenger": asdict(metrics["challenger"]),
        "champion": asdict(metrics["champion"]) if "champion" in metrics else None,
        "score_kinds": kinds,
        "popularity": {
            **asdict(popularity),
            "ranked_by": list(POPULARITY_FEATURES),
            "lift_auc": metrics["challenger"].auc - popularity.auc,
            "min_lift": rule.min_lift_over_popularity,
        },
        "challenger_path": str(challenger_path),
        "champion_path": None if champion_path is None else str(champion_path),
        "test_rows": len(y),
        "data_window": info.metadata.get("data_window"),
        "roc_curve": roc_points(y, scores["challenger"], kinds["challenger"]),
        "ope": ope_record,
    }
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(record, indent=2, allow_nan=True))
    report_path = out / "report.html"
    report_path.write_text(render_report(record, plots))
    return EvalSummary(
        blessed=decision.blessed,
        reason=decision.reason,
        challenger=metrics["challenger"],
        champion=metrics.get("champion"),
        popularity=popularity,
        test_rows=len(y),
        metrics_path=metrics_path,
        report_path=report_path,
        seconds=time.perf_counter() - started,
        ope=ope_record,
    )
