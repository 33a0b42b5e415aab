"""KFP components of the continuous-training pipeline (see ``stages.py``)."""

from __future__ import annotations

from types import SimpleNamespace


def build(image: str) -> SimpleNamespace:
    """Decorate every stage function as a ``@dsl.component`` running in ``image``.

    The platform image already holds ``kfp`` and ``flywheel`` at pinned versions, so the
    components install nothing at start-up (``install_kfp_package=False``): no registry is
    needed at run time, and kfp.local runs them with the current interpreter.
    """
    from kfp import dsl

    from components import stages

    return SimpleNamespace(
        **{
            fn.__name__: dsl.component(fn, base_image=image, install_kfp_package=False)
            for fn in stages.ALL
        }
    )
