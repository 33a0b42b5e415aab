"""Settings of watching the live model: the retraining policy, monitor thresholds, retention,
and the off-policy check of the blessing gate."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RetrainPolicy(BaseModel):
    """When the live model is retrained (:mod:`flywheel.policy`; ``flywheel watch``).

    A rule fires on its own; a run then still needs ``min_interval_h`` since the last one and
    fewer than ``max_runs_per_day`` runs in the past 24 h. ``None`` switches a rule off.
    """

    model_config = ConfigDict(extra="forbid")

    #: Schedule: retrain when the champion is older than this (hours).
    max_champion_age_h: float | None = Field(default=7 * 24.0, gt=0)
    #: Drift: retrain when at least this many model inputs are in drift ``alert`` ... Off by
    #: default: on the simulator (benchmarks/trigger_delay.py) 8-11 inputs were in alert on
    #: every served day of a world that never drifted (mostly item-side inputs, whose served
    #: distribution follows the day's candidate set), while the score and performance rules
    #: stayed quiet there and caught the drift within a day.
    drift_min_inputs: int | None = Field(default=None, ge=1)
    #: ... or when the served score distribution's PSI is over this.
    score_psi: float | None = Field(default=0.25, gt=0)
    #: Performance: retrain when served CTR falls below the champion's own baseline CTR
    #: (its first ``baseline_hours`` of traffic) by this share (0.2 = 20% lower) ...
    ctr_drop: float | None = Field(default=0.2, gt=0, lt=1)
    #: ... or its delayed-label AUC below its baseline AUC by this much.
    auc_drop: float | None = Field(default=0.03, gt=0, lt=0.5)
    #: Impressions both the window and the baseline need before a performance rule counts.
    min_impressions: int = Field(default=1000, ge=1)
    #: Hours of a champion's first traffic that make its baseline.
    baseline_hours: float = Field(default=24.0, gt=0)
    min_interval_h: float = Field(default=6.0, ge=0)
    max_runs_per_day: int = Field(default=4, ge=1)


class MonitorSettings(BaseModel):
    """Thresholds of ``flywheel monitor`` (README, "Watching the live model")."""

    model_config = ConfigDict(extra="forbid")

    #: Minutes after an impression in which feedback counts (as the dataset stage labels);
    #: ECE and delayed-label AUC use only impressions whose window has closed.
    attribution_minutes: int = Field(default=60, ge=1)
    #: Quantile bins of the training distribution that PSI and Jensen-Shannon compare.
    drift_bins: int = Field(default=10, ge=2, le=100)
    #: PSI at or above this is a warning, at or above ``psi_alert`` an alert (the usual
    #: 0.1 / 0.25 rule of thumb).
    psi_warn: float = Field(default=0.1, gt=0)
    psi_alert: float = Field(default=0.25, gt=0)
    #: Jensen-Shannon distance (base 2, in [0, 1]) at or above this is an alert. For small
    #: shifts the distance is about sqrt(PSI / (8 ln 2)): 0.2 matches ``psi_alert`` 0.25
    #: (0.1 matched PSI 0.06, which two samples of 400 from one distribution reach).
    js_alert: float = Field(default=0.2, gt=0, le=1)
    #: KS statistic (largest gap between the two CDFs) at or above this is an alert
    #: (continuous inputs only), when its p-value is also below ``ks_max_pvalue``. The
    #: statistic decides for large samples (with a million training rows every negligible
    #: difference has a tiny p-value); the p-value keeps small ones from alarming on noise
    #: (two samples of 400 from one distribution differ by up to ~0.1).
    ks_alert: float = Field(default=0.1, gt=0, le=1)
    ks_max_pvalue: float = Field(default=0.001, gt=0, le=1)
    #: A model input is continuous (KS applies) when the training set holds more than
    #: this many distinct values of it.
    ks_min_distinct: int = Field(default=20, ge=2)
    #: Fewer served values than this: no drift verdict (the figures are still given).
    min_samples: int = Field(default=100, ge=1)
    #: Served rows whose logged features are compared with the offline store (a seeded
    #: sample when there are more).
    skew_max_rows: int = Field(default=2_000, ge=1)
    #: A logged value equals the offline one when ``|a - b| <= atol + rtol * |b|``.
    skew_rtol: float = Field(default=1e-4, ge=0)
    skew_atol: float = Field(default=1e-6, ge=0)
    #: A feature whose equal share falls below this is flagged as skewed.
    skew_min_equal_share: float = Field(default=0.99, ge=0, le=1)

    @model_validator(mode="after")
    def _warn_below_alert(self) -> MonitorSettings:
        if self.psi_warn > self.psi_alert:
            raise ValueError(
                f"monitor.psi_warn={self.psi_warn} exceeds monitor.psi_alert={self.psi_alert}; "
                "the warning level must not be above the alert level"
            )
        return self


class RetentionSettings(BaseModel):
    """What ``flywheel gc`` deletes and ``flywheel compact`` merges (README, "Housekeeping").

    Day counts of data (lake partitions, serving logs) run back from the lake's latest
    event (or today, if earlier); the others from the file's modification time. ``None``
    keeps everything of that kind. Data in the protected window (``training_window_days``
    plus the longest feature window before it) is never deleted, whatever is set here.
    """

    model_config = ConfigDict(extra="forbid")

    #: Days of training data the cycle reads (``flywheel cycle --window-days``); gc keeps
    #: them and the feature lookback before them (``flywheel gc --keep-days`` overrides).
    training_window_days: float = Field(default=14.0, ge=0)
    #: Days of lake partitions (events, served predictions and feedback) to keep. The lake
    #: is the source of truth: ``None`` (the default) keeps all of it.
    lake_days: int | None = Field(default=None, ge=1)
    #: Days of raw serving logs (``serving/*/date=*/*.jsonl``) to keep once ingested.
    serving_log_days: int | None = Field(default=30, ge=1)
    #: Days of quarantine files to keep.
    quarantine_days: int | None = Field(default=30, ge=1)
    #: KFP run folders (``kfp/outputs``) and run records (``runs``): the newest this many
    #: are kept, and any younger than ``kfp_run_days`` (``None``: age keeps none).
    kfp_runs_keep: int = Field(default=10, ge=0)
    kfp_run_days: int | None = Field(default=14, ge=1)
    #: Registered models that are neither the champion nor in its rollback history: the
    #: newest this many are kept.
    models_keep: int = Field(default=5, ge=0)
    #: Days of command logs (``logs/*.log``) to keep.
    log_days: int | None = Field(default=30, ge=1)
    #: Compaction: a lake partition with at least this many part files is merged.
    compact_min_files: int = Field(default=2, ge=2)
    #: Compaction: rows per row group of a merged part (feature build tasks split on them).
    compact_row_group_rows: int = Field(default=250_000, ge=1_000)
    #: A serving log file counts as closed once unmodified for this many hours (and not in
    #: its log's newest partition): only closed files are merged or deleted.
    closed_log_hours: float = Field(default=24.0, gt=0)


class OpeSettings(BaseModel):
    """The off-policy check of the blessing gate (:mod:`flywheel.evaluate_ope`; README,
    "The pipeline"): what the challenger would have earned on the champion's served slates.

    With ``require_ope`` a challenger is blessed only if, besides the offline rule, its
    SNIPS lower 95% bound is above the champion's logged value, on at least ``min_slates``
    slates with an effective sample size of at least ``min_ess``; fewer refuse it. Off,
    the estimate is reported and decides nothing.
    """

    model_config = ConfigDict(extra="forbid")

    require_ope: bool = False
    #: Closed slates (requests whose attribution window has ended) the check needs.
    min_slates: int = Field(default=2_000, ge=1)
    #: Effective sample size ``(sum w)^2 / sum w^2`` over slots the check needs.
    min_ess: float = Field(default=2_000.0, gt=0)
    #: Hours of served traffic before the evaluation that the estimate reads.
    window_hours: float = Field(default=24.0, gt=0, le=24 * 90)
    #: Bootstrap resamples (whole slates) of the 95% intervals.
    bootstrap: int = Field(default=500, ge=20, le=100_000)
    #: Seed of the bootstrap draws (the same log gives the same interval).
    seed: int = 0
    #: The outcome of a slot: ``engaged`` (a click, cart or purchase within the attribution
    #: window, as the dataset stage labels it) or ``purchase``.
    reward: Literal["engaged", "purchase"] = "engaged"
    #: Serving's exploration rate (its ``epsilon`` option) when the logs were served: the
    #: challenger is judged as it would serve, with the same exploration, and the number
    #: of candidates each slot chose from is read back from the logged propensity with it
    #: (below 0.5, a greedy slot's propensity, at least 1 - epsilon, never meets an explored
    #: one's, at most epsilon / 2).
    epsilon: float = Field(default=0.1, ge=0, lt=0.5)
