"""Names and helpers shared by the container tests (see conftest.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

PLATFORM_IMAGE = os.environ.get("FLYWHEEL_PLATFORM_IMAGE", "flywheel-platform:0.1.0")
SERVING_IMAGE = os.environ.get("FLYWHEEL_SERVING_IMAGE", "flywheel-serving:0.1.0")
#: The non-root user both images run as (the k8s manifests' runAsUser).
IMAGE_UID = 1000
#: Where the images expect the shared workspace (Settings.workspace of kind/prod).
WORKSPACE_MOUNT = "/mnt/flywheel"


def step(message: str) -> None:
    """One line of the run's story: what is being checked now."""
    print(f"\n[containers] {message}", flush=True)


class Timer:
    """``with Timer("what"):`` prints how long the block took."""

    def __init__(self, what: str) -> None:
        self.what, self.seconds = what, 0.0

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        print(f"[containers] {self.what}: {self.seconds:.2f} s", flush=True)


def share_with_image_user(path: Path) -> None:
    """Let the images' uid 1000 write under ``path``, as a PVC's fsGroup would in a pod."""
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs)]:
            _share(Path(name), 0o777)
        for name in files:
            _share(Path(root) / name, 0o666)


def _share(path: Path, mode: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, IMAGE_UID, IMAGE_UID)
    else:
        path.chmod(mode)
