"""One validated Settings object for every stage, chosen by profile.

Precedence, lowest first: built-in defaults, the profile's defaults, a YAML config file
(``--config`` or ``FLYWHEEL_CONFIG``), environment variables (``FLYWHEEL_*``, nested with
``__``, e.g. ``FLYWHEEL_FEAST__ONLINE_STORE=redis``), then explicit overrides from the CLI.

Nothing here touches the file system on import or on construction: paths are derived, and
the stage that writes to one creates it.

The sections live by concern: :mod:`~flywheel.config.stages` (Ray, Feast, ingest, lock,
training), :mod:`~flywheel.config.watching` (retraining policy, monitor, retention),
:mod:`~flywheel.config.runtime` (serving, Kubernetes) and :mod:`~flywheel.config.settings`
(the root object, profiles and loading).
"""

from flywheel.config.runtime import KubernetesSettings, ServingSettings
from flywheel.config.settings import (
    PROFILES,
    ConfigError,
    Profile,
    Settings,
    describe_errors,
    load_settings,
)
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

__all__ = [
    "PROFILES",
    "ConfigError",
    "FeastSettings",
    "FeatureSettings",
    "IngestSettings",
    "KubernetesSettings",
    "LockSettings",
    "MonitorSettings",
    "OpeSettings",
    "Profile",
    "RaySettings",
    "RetentionSettings",
    "RetrainPolicy",
    "ServingSettings",
    "Settings",
    "TrainSettings",
    "describe_errors",
    "load_settings",
]
