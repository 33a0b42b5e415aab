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
    if settings.ray.address:
        log.info("connecting to Ray at %s", settings.ray.address)
        ray.init(address=settings.ray.address, log_to_driver=False)
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


def shutdown_ray() -> None:
    """Stop the Ray runtime this process started, if any."""
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
