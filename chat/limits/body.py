"""A bound on HTTP request bodies, enforced before any route parses them.

FastAPI reads and parses a whole body before validating it, so without a bound
a 1 MB username costs a 1 MB read, parse and (formerly) echo. `BodyLimit` is a
pure ASGI middleware: a declared `Content-Length` over the bound is answered
413 at once, without reading the body; a chunked (or lying) body is counted as
it streams in and cut off with 413 at the first chunk past the bound.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes its bound (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    """At most `default` bytes of request body; `larger` gives (method, path) their own bound."""

    def __init__(
        self, app: ASGIApp, default: int, larger: Mapping[tuple[str, str], int] | None = None
    ) -> None:
        self.app = app
        self.default = default
        self.larger = dict(larger or {})

    def limit_for(self, scope: Scope) -> int:
        return self.larger.get((scope.get("method", ""), scope.get("path", "")), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await _refuse(send, limit)
                    return
                break
        received = 0
        exceeded = started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = not started  # ours to answer unless the app already did
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # Whatever the app made of the cut-off body (a 400 from a parser, a
                # 413, an error wrapped by other middleware), the answer is our 413.
                if not started and message["type"] == "http.response.start":
                    started = True
                    await _refuse(send, limit)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except Exception:
            if not exceeded:
                raise
            if not started:  # the app raised instead of answering
                started = True
                await _refuse(send, limit)


async def _refuse(send: Send, limit: int) -> None:
    detail = f"the request body is larger than {limit} bytes"
    body = json.dumps({"detail": detail, "code": "too_large"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
