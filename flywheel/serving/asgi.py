"""ASGI guards in front of the service: body size and form bodies."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from flywheel.serving.api import MAX_BODY_BYTES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, unread.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is
    buffered up to the limit and refused as soon as it passes it.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            size = int(declared) if declared.isdigit() else -1
            if size < 0 or size > self.max_bytes:
                await self._refuse(send, declared.decode(errors="replace"))
                return
            await self.app(scope, receive, send)
            return
        messages, total = [], 0
        while True:
            message = await receive()
            messages.append(message)
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await self._refuse(send, f"more than {total}")
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replayed() -> Message:
            # Then the real channel: a streaming response waits on it for the disconnect.
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send: Send, size: str) -> None:
        message = f"request body: {size} bytes; at most {self.max_bytes} bytes accepted"
        await _send_error(send, 413, message)


class RefuseFormBodies:
    """ASGI middleware: answer 415 to form bodies (``multipart/*``, url-encoded forms).

    The API takes JSON only. BentoML 1.4 would parse a form body with ``request.form()``,
    and a malformed one raises inside its endpoint wrapper as a 500; refusing up front
    keeps bad input a 4xx.
    """

    FORM_TYPES = (b"multipart/", b"application/x-www-form-urlencoded")

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            ctype = dict(scope.get("headers") or []).get(b"content-type", b"").lower().strip()
            if ctype.startswith(self.FORM_TYPES):
                message = (
                    f"content-type {ctype.decode(errors='replace')!r} is not accepted; "
                    "send application/json"
                )
                await _send_error(send, 415, message)
                return
        await self.app(scope, receive, send)


async def _send_error(send: Send, status: int, message: str) -> None:
    """Answer ``status`` with the API's JSON error body ``{"error": message}``."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
