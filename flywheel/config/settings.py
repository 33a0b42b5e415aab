"""The Settings object, the profiles' defaults and ``load_settings``'s layering."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flywheel.config.runtime import KubernetesSettings, ServingSettings
from flywheel.config.stages import (
    FeastSettings,
    FeatureSettings,
    IngestSettings,
    LockSettings,
    RaySettings,
    TrainSettings,
)
from flywheel.config.watching import (
    MonitorSettings,
    OpeSettings,
    RetentionSettings,
    RetrainPolicy,
)

Profile = Literal["local", "kind", "prod"]
PROFILES: tuple[Profile, ...] = ("local", "kind", "prod")


class ConfigError(ValueError):
    """Raised when the configuration is invalid; the message names the field and value."""


class Settings(BaseModel):
    """Everything a stage needs to know about where it runs and what it touches."""

    model_config = ConfigDict(extra="forbid")

    profile: Profile = "local"
    workspace: Path = Path(".flywheel")
    #: Container image the pipeline components run in (cluster profiles).
    image: str = "flywheel-platform:0.1.0"
    ray: RaySettings = Field(default_factory=RaySettings)
    feast: FeastSettings = Field(default_factory=FeastSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    lock: LockSettings = Field(default_factory=LockSettings)
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)
    k8s: KubernetesSettings = Field(default_factory=KubernetesSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    ope: OpeSettings = Field(default_factory=OpeSettings)
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
        "ray": {"num_workers": 4, "cpus_per_worker": 2.0, "data_stages": "cluster"},
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
