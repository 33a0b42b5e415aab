"""Running the server: the ``bentoml serve`` command line, start, readiness, foreground."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from flywheel.serving.api import OPTIONS_ENV, ServingOptions, options_from_env
from flywheel.serving.champion import PINNED_TAG_ENV

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: The BentoML service ``serving/service.py`` defines (``bentoml serve`` target).
SERVICE_NAME: Final = "Ranker"
SERVICE_TARGET: Final = "serving.service:Ranker"


def _service_dir() -> Path:
    """The directory holding the ``serving`` package (``bentoml serve --working-dir``)."""
    import importlib.util

    spec = importlib.util.find_spec("serving")
    if spec is not None and spec.origin:
        return Path(spec.origin).resolve().parent.parent
    return Path(__file__).resolve().parents[2]


def _settings_env(settings: Settings) -> dict[str, str]:
    """Settings as ``FLYWHEEL_*`` variables: ``load_settings()`` in the child rebuilds them."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}__{key.upper()}" if prefix else key.upper(), inner)
        elif value is not None:
            out[f"FLYWHEEL_{prefix}"] = str(value)

    data = settings.model_dump(mode="json")
    data["workspace"] = str(settings.workspace.absolute())
    walk("", data)
    return out


def serve_command(
    settings: Settings,
    port: int = 3000,
    workers: int = 1,
    host: str = "127.0.0.1",
    options: ServingOptions | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``bentoml serve`` command line and environment for ``settings``.

    The environment is ``environ`` (default: this process's) without any ``FLYWHEEL_*``
    variable or config file (the pinned tag ``$FLYWHEEL_MODEL_TAG`` excepted), plus Settings
    as ``FLYWHEEL_*`` variables, ``BENTOML_HOME`` (the workspace's model store), the worker
    count and ``$RANKER_OPTIONS`` (``options``, else the environment's, else the defaults).
    """
    from flywheel.registry import bentoml_home

    if workers < 1 or not 0 < port < 65536:
        raise ValueError(f"workers={workers}, port={port}; expected workers >= 1, port 1-65535")
    env = {
        k: v
        for k, v in (environ or os.environ).items()
        if not k.startswith("FLYWHEEL_") or k == PINNED_TAG_ENV  # the pin is not a setting
    }
    env.update(_settings_env(settings))
    env.update(
        BENTOML_HOME=str(bentoml_home(settings).absolute()),
        BENTOML_DO_NOT_TRACK="true",
        BENTOML_CONFIG_OVERRIDES=json.dumps({"services": {SERVICE_NAME: {"workers": workers}}}),
    )
    # Explicit options win; otherwise $RANKER_OPTIONS of the environment (a container's or
    # pod's) is validated and passed on, so serving options can be set without a flag.
    env[OPTIONS_ENV] = (options or options_from_env(env)).model_dump_json()
    # BentoML 1.4 trips a pydantic deprecation warning on every request; printing it each
    # time costs latency and buries the access log.
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    argv = [sys.executable, "-m", "bentoml", "serve", SERVICE_TARGET]
    argv += ["--host", host, "--port", str(port), "--working-dir", str(_service_dir())]
    return argv, env


def start_server(
    settings: Settings,
    port: int = 3000,
    workers: int = 1,
    host: str = "127.0.0.1",
    options: ServingOptions | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start ``bentoml serve`` in the background (see :func:`serve_command`)."""
    argv, env = serve_command(settings, port, workers, host, options)
    log.info("starting %s on http://%s:%d with %d worker(s)", SERVICE_TARGET, host, port, workers)
    return subprocess.Popen(argv, env=env, **popen)


def wait_ready(
    url: str, timeout_s: float = 60.0, process: subprocess.Popen[Any] | None = None
) -> float:
    """Poll ``{url}/readyz`` until it answers 200; return the seconds waited.

    Raises:
        TimeoutError: not ready in time. RuntimeError: ``process`` exited first.
    """
    import urllib.error
    import urllib.request

    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before ready")
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/readyz", timeout=2) as reply:
                if reply.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}/readyz did not answer 200 within {timeout_s} s")


def serve(
    settings: Settings,
    port: int = 3000,
    workers: int = 1,
    host: str = "127.0.0.1",
    options: ServingOptions | None = None,
) -> int:
    """Run the ranking service in the foreground until it exits; return its exit code
    (``flywheel serve``). Ctrl-C stops the server and waits for it."""
    process = start_server(settings, port, workers, host, options)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()
