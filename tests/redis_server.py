"""A real ``redis-server`` for tests: started on a free port, stopped and started again.

No persistence (``--save ""``, no AOF): a restart comes back empty, as a Redis without a
volume does in a cluster. A missing binary skips the test, or fails it under
``FLYWHEEL_REQUIRE_REDIS=1`` (``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.ports import on_free_ports, raise_if_port_taken


def redis_binary() -> str:
    """The redis-server on PATH; skips (or fails, when required) without one."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not on PATH (apt-get install -y redis-server)"
        if os.environ.get("FLYWHEEL_REQUIRE_REDIS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


def start_redis(binary: str, log: Path, port: int) -> subprocess.Popen[bytes]:
    """redis-server on ``port``, listening; PortTaken when another process holds the port."""
    cmd = [binary, "--port", str(port), "--save", "", "--appendonly", "no"]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while proc.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"redis-server did not listen on port {port} within 30 s")
        time.sleep(0.05)
    raise_if_port_taken(log, f"redis-server on port {port}")
    pytest.fail(f"redis-server exited with {proc.returncode}: {log.read_text()[-2000:]}")


class RedisServer:
    """One redis-server process at a time on one port: :meth:`stop`, then :meth:`start`."""

    def __init__(self, log: Path) -> None:
        self.binary, self.log = redis_binary(), log
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

        def first(port: int) -> subprocess.Popen[bytes]:
            self.port = port
            return start_redis(self.binary, self.log, port)

        self.proc = on_free_ports(first)

    @property
    def url(self) -> str:
        """The Feast connection string."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop it (SIGTERM, as ``kubectl delete pod`` would); connections are refused."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def start(self) -> None:
        """Start it again on the same port, empty."""
        if self.proc is None:
            self.proc = start_redis(self.binary, self.log, self.port)
