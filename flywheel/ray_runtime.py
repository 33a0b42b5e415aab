"""Starting (or joining) Ray the way every stage needs it.

Ray is imported lazily: importing this module costs nothing, so stages and the CLI that do
not use Ray never pay for it.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: Object store cap for a local Ray: keeps the 10M-event feature build bounded on a
#: 24 GiB machine while leaving room for the driver.
LOCAL_OBJECT_STORE_BYTES = 2 * 1024**3

#: Set by a parent (``flywheel cycle``) that started a local Ray for its child processes:
#: the pipeline's stages join it instead of each starting and stopping their own.
SHARED_RAY_ENV = "FLYWHEEL_RAY_ADDRESS"


def ensure_ray(settings: Settings) -> None:
    """Start a local Ray (local profile) or connect to the configured cluster, once.

    The local runtime is sized from ``settings.ray.num_cpus`` (default: every core), has no
    dashboard and keeps worker logs out of the driver's output so CLI progress stays legible.
    """
    import ray

    if ray.is_initialized():
        return
    # Ray Data's own progress bars fight with rich; we report progress ourselves.
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    # RAY_ADDRESS: set by Ray for a Ray job's driver (cluster-profile training).
    shared = os.environ.get(SHARED_RAY_ENV) or os.environ.get("RAY_ADDRESS")
    if settings.ray.address or shared:
        address = settings.ray.address or shared
        log.info("connecting to Ray at %s", address)
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        log.info("starting local Ray (%s CPUs)", settings.ray.num_cpus or os.cpu_count())
        ray.init(
            num_cpus=settings.ray.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            configure_logging=False,
        )
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False


def start_shared_ray(settings: Settings) -> str | None:
    """Start this process's local Ray and let child processes join it; return its address.

    Only for the local profile (a cluster profile already names its Ray). Saves every
    stage of a kfp.local cycle the ~5-10 s of starting and stopping a Ray of its own.
    """
    if settings.ray.address:
        return None
    ensure_ray(settings)
    import ray

    address = str(ray.get_runtime_context().gcs_address)
    os.environ[SHARED_RAY_ENV] = address
    return address


def shutdown_ray() -> None:
    """Stop the Ray runtime this process started, if any."""
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    os.environ.pop(SHARED_RAY_ENV, None)
