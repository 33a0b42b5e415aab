"""Container image references: is the pipeline's image one a production cluster can pull?

The prod profile runs every pipeline pod in ``settings.image``. Its default,
``flywheel-platform:0.1.0``, names no registry, so a node resolves it to Docker Hub (where
no such image is), and a tag can move. :func:`check_pipeline_image` refuses, for prod, an
image without a registry host and a ``sha256`` digest, and the placeholders the prod
overlay ships with (``registry.example.com``, the all-zero digests); ``flywheel compile``
and ``flywheel submit`` call it before compiling. The kind profile keeps the tag:
``kind load`` puts the image on the node and nothing is pulled.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from flywheel.config import ConfigError

if TYPE_CHECKING:
    from flywheel.config import Settings

_DIGEST: Final = re.compile(r"@sha256:([0-9a-f]{64})$")
#: The form of the placeholder digests in k8s/overlays/prod/kustomization.yaml.
_PLACEHOLDER_DIGEST: Final = re.compile(r"^0{63}[0-9a-f]$")
#: RFC 2606 names, reserved for examples: never a real registry.
_EXAMPLE_HOST: Final = re.compile(r"(^|\.)example(\.(com|net|org))?(:\d+)?$")
#: Profiles whose pods pull the image from a registry.
PULLED_PROFILES: Final = ("prod",)
EXPECTED: Final = "<registry host>/<path>/flywheel-platform@sha256:<64 hex digits>"


def registry_of(image: str) -> str | None:
    """The registry host an image reference names, ``None`` for Docker Hub's default.

    Docker's rule: the first ``/``-separated part is a registry when it holds a ``.`` or a
    ``:`` or is ``localhost``; ``flywheel-platform:0.1.0`` and ``org/name`` have none.
    """
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def image_problem(image: str) -> str | None:
    """Why a pulling cluster cannot rely on ``image``, or ``None`` when it is pinned."""
    registry = registry_of(image)
    digest = _DIGEST.search(image)
    if registry is None:
        return "names no registry (a node would pull it from Docker Hub)"
    if _EXAMPLE_HOST.search(registry):
        return f"names the placeholder registry {registry!r}"
    if digest is None:
        return "is not pinned by a sha256 digest (a tag can move)"
    if _PLACEHOLDER_DIGEST.match(digest.group(1)):
        return "carries a placeholder digest"
    return None


def check_pipeline_image(settings: Settings) -> None:
    """Refuse to compile or submit for a pulling profile (prod) with an unpinned image.

    Raises:
        ConfigError: naming ``image``, its value, why, and the expected form.
    """
    if settings.profile not in PULLED_PROFILES:
        return
    problem = image_problem(settings.image)
    if problem:
        raise ConfigError(
            f"image={settings.image!r} (profile {settings.profile}) {problem}; expected "
            f"{EXPECTED}, the flywheel-platform image of k8s/overlays/prod/kustomization.yaml "
            "once pushed: set `image:` in the config file or FLYWHEEL_IMAGE"
        )
