"""One validated Settings object for every stage, chosen by profile.

Precedence, lowest first: built-in defaults, the profile's defaults, a YAML config file
(``--config`` or ``FLYWHEEL_CONFIG``), environment variables (``FLYWHEEL_*``, nested with
``__``, e.g. ``FLYWHEEL_FEAST__ONLINE_STORE=redis``), then explicit overrides from the CLI.

Nothing here touches the file system on import or on construction: paths are derived, and
the stage that writes to one creates it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

Profile = Literal["local", "kind", "prod"]
PROFILES: tuple[Profile, ...] = ("local", "kind", "prod")


class ConfigError(ValueError):
    """Raised when the configuration is invalid; the message names the field and value."""


class RaySettings(BaseModel):
    """How stages reach Ray."""

    model_config = ConfigDict(extra="forbid")

    #: ``None`` starts an in-process local Ray; ``ray://host:10001`` or ``auto`` joins a cluster.
    address: str | None = None
    #: CPUs a local Ray may use (``None``: all of the machine's).
    num_cpus: int | None = Field(default=None, ge=1)
    #: Ray Train data-parallel workers.
    num_workers: int = Field(default=2, ge=1)
    #: CPUs reserved per training worker. Fractional so 2 workers fit on a 2-core machine.
    cpus_per_worker: float = Field(default=0.5, gt=0)
    #: Rows per Ray Data batch in feature and ingest transforms.
    batch_size: int = Field(default=250_000, ge=1_000)


class FeastSettings(BaseModel):
    """The Feast feature store: project, offline store and online store."""

    model_config = ConfigDict(extra="forbid")

    project: str = "flywheel"
    #: ``duckdb-asof``: Flywheel's ASOF-join DuckDB store (``flywheel.feast_asof``); ``duckdb``
    #: and ``dask``: Feast's stock stores.
    offline_store: Literal["duckdb-asof", "duckdb", "dask"] = "duckdb-asof"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "localhost:6379"
    #: Registry location; ``None`` puts a file registry in the workspace.
    registry: str | None = None
    #: Version suffix of the feature service new models are trained on (training sets,
    #: shards, lineage). A champion keeps being served through the service its lineage
    #: names, so a ``ranking_v1`` model serves on until a v2 model replaces it.
    feature_service_version: int = Field(default=2, ge=1)
    #: DuckDB ``memory_limit`` of a ``duckdb-asof`` point-in-time retrieval (e.g. ``"1GB"``,
    #: ``None``: DuckDB's default of 80% of RAM). Over it the join spills to the workspace's
    #: ``tmp/duckdb``: a 1M-row training set at 10M events peaks at ~1.7 GB instead of ~2.5.
    offline_memory_limit: str | None = "1GB"
    #: Proto memory (MiB) one online write batch of a materialization may take; each view's
    #: batch rows are sized from it (``flywheel.feature_store.write_batches``), 10k-200k rows.
    online_write_batch_mib: int = Field(default=384, ge=16)


class IngestSettings(BaseModel):
    """Event-lake ingest rules."""

    model_config = ConfigDict(extra="forbid")

    #: Events stamped more than this many seconds after the ingest time are quarantined.
    max_future_skew_s: int = Field(default=3600, ge=0)


class LockSettings(BaseModel):
    """What a run does when another run holds the workspace (:mod:`flywheel.workspace_lock`)."""

    model_config = ConfigDict(extra="forbid")

    #: ``fail``: exit at once naming the holder; ``wait``: queue behind it.
    on_busy: Literal["fail", "wait"] = "fail"
    #: With ``wait``: give up (and fail) after this many seconds.
    wait_timeout_s: float = Field(default=6 * 3600, gt=0)


class TrainSettings(BaseModel):
    """What the train stage optimises (:mod:`flywheel.objective` says what scores mean)."""

    model_config = ConfigDict(extra="forbid")

    #: ``binary:logistic``: scores are click probabilities; ``rank:ndcg`` /
    #: ``rank:pairwise``: LambdaMART on the shards' query groups, scores are unnormalised
    #: ranking scores. binary:logistic stays the default: no rank variant beat its NDCG@10
    #: beyond seed noise on both worlds, all lost AUC (benchmarks/objectives.py, RESULTS.md).
    objective: Literal["binary:logistic", "rank:ndcg", "rank:pairwise"] = "binary:logistic"
    #: rank:* only. ``topk``: pairs with the top documents of the model's current ranking;
    #: ``mean``: random pairs per document.
    lambdarank_pair_method: Literal["topk", "mean"] = "topk"
    #: rank:* only. ``topk``: how many top documents (10, the NDCG cut-off, by default);
    #: ``mean``: pairs sampled per document.
    lambdarank_num_pair_per_sample: int = Field(default=10, ge=1, le=1000)

    @model_validator(mode="after")
    def _rank_options_need_rank(self) -> TrainSettings:
        if self.objective.startswith("rank:"):
            return self
        # A non-default value, not any value set: a dumped-and-reloaded Settings sets all.
        for name in ("lambdarank_pair_method", "lambdarank_num_pair_per_sample"):
            value, default = getattr(self, name), type(self).model_fields[name].default
            if value != default:
                raise ValueError(
                    f"train.{name}={value!r} applies to the rank:* objectives only; "
                    f"train.objective is {self.objective!r}"
                )
        return self


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


class ServingSettings(BaseModel):
    """How the ranking service behaves when its online store fails (``serving/README.md``,
    "When the online store fails"; :mod:`flywheel.serving.store_health`)."""

    model_config = ConfigDict(extra="forbid")

    #: Store unreachable: ``True`` answers ``/rank`` from what the worker still holds
    #: (item-side rows in memory, the default candidates' popularity order), marked
    #: ``"degraded": true`` in the answer and the prediction log; ``False`` answers 503.
    #: On in the prod profile.
    degraded_mode: bool = False
    #: Seconds a serving read (and the readiness ping) waits to connect to, or hear from,
    #: Redis before the store counts as unreachable.
    store_timeout_s: float = Field(default=0.5, gt=0, le=30)
    #: While the store is down, how often (at most) a request or the readiness probe tries
    #: it again; every other request skips it.
    store_retry_s: float = Field(default=1.0, gt=0)
    #: While it is up, how often (at most) the readiness probe pings it.
    store_check_s: float = Field(default=5.0, gt=0)
    #: Rows lost: the share of cold users (no fresh ``user_activity`` row) over the last
    #: ``lost_rows_window`` requests that read the store reaches ``lost_rows_share``, after
    #: a full window has been at or below ``normal_cold_share``; it clears back at or below
    #: ``normal_cold_share``.
    lost_rows_window: int = Field(default=200, ge=10)
    lost_rows_share: float = Field(default=0.98, gt=0, le=1)
    normal_cold_share: float = Field(default=0.9, ge=0, lt=1)

    @model_validator(mode="after")
    def _normal_below_lost(self) -> ServingSettings:
        if self.normal_cold_share >= self.lost_rows_share:
            raise ValueError(
                f"serving.normal_cold_share={self.normal_cold_share} must be below "
                f"serving.lost_rows_share={self.lost_rows_share}"
            )
        return self


class KubernetesSettings(BaseModel):
    """Where Flywheel's objects live in a cluster (kind/prod); unused by the local profile.

    Names follow the Kubernetes contract shared with ``k8s/``: change them together.
    """

    model_config = ConfigDict(extra="forbid")

    #: Namespace of serving, Redis and the KubeRay cluster.
    namespace: str = "flywheel"
    #: Namespace where KFP runs pipeline pods (KFP standalone's default).
    pipeline_namespace: str = "kubeflow"
    serving_deployment: str = "flywheel-serving"
    #: Container of the serving Deployment whose ``FLYWHEEL_MODEL_TAG`` pins the model.
    serving_container: str = "serving"
    #: Base URL the deploy step's smoke test calls (``POST {serving_url}/rank``).
    serving_url: str = "http://flywheel-serving.flywheel.svc.cluster.local:3000"
    #: Seconds a Deployment rollout may take before the deploy step reverts it.
    rollout_timeout_s: float = Field(default=300.0, gt=0)
    #: Ray Jobs API (the KubeRay head's dashboard port) that training is submitted to.
    ray_jobs_address: str = "http://flywheel-ray-head-svc.flywheel.svc.cluster.local:8265"
    #: Seconds a training Ray job may run before it is stopped and the stage fails.
    ray_job_timeout_s: float = Field(default=3600.0, gt=0)
    #: ReadWriteMany PVC holding the workspace, mounted in both namespaces.
    #: Mounted at ``Settings.workspace`` on every pipeline pod.
    workspace_pvc: str = "flywheel-workspace"
    #: S3 endpoint of the ``s3://`` URIs the pipeline reads (``AWS_ENDPOINT_URL`` of those
    #: pods); None: AWS S3 itself. kind: the MinIO that KFP standalone runs.
    s3_endpoint_url: str | None = None
    #: ``AWS_REGION`` of those pods.
    s3_region: str = "us-east-1"
    #: Secret in ``pipeline_namespace`` with the S3 keys, mounted as ``AWS_ACCESS_KEY_ID`` /
    #: ``AWS_SECRET_ACCESS_KEY`` only by the pods that read the bucket (ingest); None: no
    #: keys (the pod's own identity, e.g. IRSA on EKS).
    s3_secret: str | None = None
    #: That Secret's data keys holding the key id and the secret.
    s3_key_id_field: str = "AWS_ACCESS_KEY_ID"
    s3_secret_field: str = "AWS_SECRET_ACCESS_KEY"


class Settings(BaseModel):
    """Everything a stage needs to know about where it runs and what it touches."""

    model_config = ConfigDict(extra="forbid")

    profile: Profile = "local"
    workspace: Path = Path(".flywheel")
    #: Container image the pipeline components run in (cluster profiles).
    image: str = "flywheel-platform:0.1.0"
    ray: RaySettings = Field(default_factory=RaySettings)
    feast: FeastSettings = Field(default_factory=FeastSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    lock: LockSettings = Field(default_factory=LockSettings)
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)
    k8s: KubernetesSettings = Field(default_factory=KubernetesSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)

    @field_validator("workspace")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(os.path.expanduser(str(v)))

    # ---- derived locations (never created here) -------------------------------------
    @property
    def lake_dir(self) -> Path:
        return self.workspace / "lake"

    @property
    def events_dir(self) -> Path:
        """Validated events, Parquet partitioned by ``date=YYYY-MM-DD``."""
        return self.lake_dir / "events"

    @property
    def items_path(self) -> Path:
        """The item catalog, one row per item (latest version wins)."""
        return self.lake_dir / "items.parquet"

    @property
    def quarantine_dir(self) -> Path:
        return self.workspace / "quarantine"

    @property
    def state_dir(self) -> Path:
        """Watermarks and other small bookkeeping files."""
        return self.workspace / "state"

    @property
    def feature_data_dir(self) -> Path:
        """Feature tables (Feast offline store files); also the Feast repo_path."""
        return self.workspace / "features"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and SQLite online store."""
        return self.workspace / "feast"


#: The Redis Service of ``k8s/base`` by its full name: pipeline pods run in KFP's namespace.
_CLUSTER_REDIS = "redis.flywheel.svc.cluster.local:6379"
# Cluster profiles leave ``ray.address`` unset on purpose: the Ray Data stages (ingest,
# features, preprocess) run an in-pod Ray over their pod's own artifact paths, and training
# goes to the KubeRay cluster as a Ray job (``settings.k8s.ray_jobs_address``), whose
# driver finds its cluster through ``RAY_ADDRESS``.
_PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "local": {},
    "kind": {
        "workspace": "/mnt/flywheel",
        "ray": {"num_workers": 2, "cpus_per_worker": 1.0},
        "feast": {"online_store": "redis", "redis_connection_string": _CLUSTER_REDIS},
        # KFP standalone's MinIO and the Secret KFP itself reads its keys from.
        "k8s": {
            "s3_endpoint_url": "http://minio-service.kubeflow:9000",
            "s3_secret": "mlpipeline-minio-artifact",
            "s3_key_id_field": "accesskey",
            "s3_secret_field": "secretkey",
        },
    },
    "prod": {
        "workspace": "/mnt/flywheel",
        "ray": {"num_workers": 4, "cpus_per_worker": 2.0},
        "feast": {"online_store": "redis", "redis_connection_string": _CLUSTER_REDIS},
        "serving": {"degraded_mode": True},
        "k8s": {"s3_secret": "flywheel-s3"},
    },
}


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_layer() -> dict[str, Any]:
    """The FLYWHEEL_* environment variables as a nested dict (strings; pydantic coerces)."""
    layer: dict[str, Any] = {}
    for name, value in os.environ.items():
        if not name.startswith("FLYWHEEL_") or name == "FLYWHEEL_CONFIG":
            continue
        keys = name[len("FLYWHEEL_") :].lower().split("__")
        # Other FLYWHEEL_* variables (a run id, a shared Ray address, test switches) are not
        # settings; like pydantic-settings, only names of Settings fields are read. Inside a
        # section (FLYWHEEL_FEAST__...) an unknown key is still an error.
        if keys[0] not in Settings.model_fields:
            continue
        node = layer
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return layer


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(data)}")
    return data


def describe_errors(exc: ValidationError, root: str = "") -> str:
    """``field.path='value': message; ...`` for every error of a pydantic validation."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or root}={err.get('input')!r}: {err['msg']}"
        for err in exc.errors()
    )


def load_settings(
    profile: str | None = None,
    config_file: str | Path | None = None,
    **overrides: Any,
) -> Settings:
    """Build the Settings for a run.

    Args:
        profile: ``local``, ``kind`` or ``prod``; default from ``FLYWHEEL_PROFILE`` or the
            config file, else ``local``.
        config_file: a YAML file of settings; default ``FLYWHEEL_CONFIG`` if set.
        **overrides: top-level fields set explicitly (``None`` values are ignored).

    Raises:
        ConfigError: naming the offending field and value.
    """
    file_layer: dict[str, Any] = {}
    config_file = config_file or os.environ.get("FLYWHEEL_CONFIG")
    if config_file:
        file_layer = _read_config_file(Path(config_file))
    env_layer = _env_layer()
    chosen = profile or env_layer.get("profile") or file_layer.get("profile") or "local"
    if chosen not in PROFILES:
        raise ConfigError(f"profile {chosen!r} is unknown; expected one of {', '.join(PROFILES)}")
    merged = _deep_merge(_PROFILE_DEFAULTS[chosen], file_layer)
    merged = _deep_merge(merged, env_layer)
    merged = _deep_merge(merged, {k: v for k, v in overrides.items() if v is not None})
    merged["profile"] = chosen
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {describe_errors(exc)}") from exc
