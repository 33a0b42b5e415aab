"""Serving the champion for real during a loop cycle, and drawing the users who ask."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flywheel.config import Settings
    from flywheel.simulate import World

from flywheel.loop.results import SLATE_K

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_traffic(
    settings: Settings, world: World, n_requests: int, at: datetime, seed: int
) -> float:
    """Start ``bentoml serve`` on the champion (replay clock from the lake's feature time),
    play ``n_requests`` simulated users against it with feedback, stop it; return the
    served (sampled) CTR. The service writes the prediction and feedback logs."""
    from flywheel.serving import ServingOptions, start_server, wait_ready
    from flywheel.simulate import http_feedback, http_ranker, run_traffic

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    options = ServingOptions(clock="lake", seed=seed)
    process = start_server(settings, port=port, options=options)
    try:
        wait_ready(url, timeout_s=120.0, process=process)
        traffic = run_traffic(
            world, http_ranker(url, ids=world.ids), n_requests, seed=seed, at=at, k=SLATE_K,
            feedback=http_feedback(url, ids=world.ids),
        )  # fmt: skip
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.info("loop: served %d requests, CTR %.4f", traffic.requests, traffic.ctr)
    return traffic.ctr


def _served_ingested(settings: Settings, run_id: str) -> int:
    """Prediction-log rows the ingest stage of ``run_id`` accepted (0 if not recorded)."""
    path = settings.workspace / "runs" / run_id / "ingest.json"
    if not path.exists():
        return 0
    served = json.loads(path.read_text())["summary"].get("served", {})
    return int(served.get("predictions_accepted", 0))


def sample_users(world: World, n: int, seed: int) -> np.ndarray:
    """``n`` distinct users drawn in proportion to activity (who actually shows up)."""
    rng = np.random.default_rng([seed, 0x100F])
    size = min(n, world.n_users)
    return rng.choice(world.n_users, size, replace=False, p=world.activity / world.activity.sum())
