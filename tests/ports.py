"""Loopback ports for test servers, without the bind-close-reuse race.

A port found by binding port 0 and closing the socket can be taken by another process
(another engineer's test run, a Ray worker) before the server under test binds it; the
server then fails to start, or worse, the test talks to the wrong server. Two remedies:

- :func:`refused_port`: a port held bound but never listening for the length of a
  ``with`` block: connecting to it is refused, and nothing else can take it meanwhile.
- :func:`on_free_ports`: start a server on fresh ports and, when the start reports a port
  taken (:class:`PortTaken`), start it again on others.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: How servers (Python, Redis, Ray, Go) report a port someone else holds.
IN_USE = re.compile(r"address already in use|EADDRINUSE|errno 98|port .*(in use|allocated)", re.I)


class PortTaken(RuntimeError):
    """The server could not bind its port: another process holds it."""


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port bound by this process and not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _ephemeral_ports(n: int) -> list[int]:
    """``n`` distinct ports the kernel just handed out (held together, so distinct)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def on_free_ports(start: Callable[..., T], n: int = 1, attempts: int = 5) -> T:
    """``start(*ports)`` on ``n`` fresh ports; again on new ones while it raises PortTaken."""
    problems = []
    for _ in range(attempts):
        try:
            return start(*_ephemeral_ports(n))
        except PortTaken as exc:
            problems.append(str(exc))
    raise RuntimeError(f"ports were taken on all {attempts} attempts: {problems}")


def raise_if_port_taken(log: Path, what: str) -> None:
    """Raise :class:`PortTaken` when a server's ``log`` says its port was in use."""
    text = log.read_text(errors="replace") if log.exists() else ""
    found = IN_USE.search(text)
    if found:
        raise PortTaken(f"{what}: {found.group(0)!r} in {log}")
