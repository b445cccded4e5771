"""Opening one authenticated connection, and when to open the next one.

`open_connection` makes the handshake (the token in the `Authorization` header) and
waits for the server's `hello`, turning every refusal that retrying cannot fix into an
`AuthenticationError`. `Backoff` is the reconnect policy: how long to wait after a
failed attempt or a closed connection, and which closes end the client instead.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat_client._version import __version__
from chat_client.errors import AuthenticationError, RevokedError
from chat_client.protocol import CloseCode, HelloFrame, parse_server_frame

__all__ = [
    "USER_AGENT",
    "Backoff",
    "Connection",
    "describe_close",
    "http_base_url",
    "open_connection",
    "ws_url",
]

USER_AGENT: Final = f"chat-client/{__version__}"
_AUTH_STATUSES: Final = frozenset({401, 403})
# Closes after which reconnecting at once (with a little jitter) is right:
# going away, uvicorn's "service restart" (1012) and "too slow, resume" (4008).
_RESTARTING: Final = frozenset({CloseCode.GOING_AWAY, 1012, CloseCode.SLOW_CONSUMER})
_MAX_RETRY_AFTER: Final = 300.0


def http_base_url(ws_url: str) -> str:
    """The HTTP(S) base URL of the server whose WebSocket endpoint is `ws_url`.

    `ws://host:8000/ws` gives `http://host:8000`, `wss://host/chat/ws` gives
    `https://host/chat`.
    """
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path[: -len("/ws")]
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def ws_url(url: str) -> str:
    """The WebSocket URL for `url` (`http://host` gives `ws://host/ws`).

    Raises `ValueError` for a URL that is neither WebSocket nor HTTP.
    """
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL: {url!r} (expected ws:// or wss://)")
    path = parts.path or "/ws"
    if path == "/" and parts.scheme in ("http", "https"):
        path = "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def describe_close(code: int | None, reason: str | None) -> str:
    """`close code 4001 (token expired)`, or `connection lost` without a close frame."""
    text = f"close code {code}" if code is not None else "connection lost"
    return f"{text} ({reason})" if reason else text


@dataclass(eq=False)
class Connection:
    """One open, authenticated connection, and what the client has done on it."""

    ws: ClientConnection
    generation: int  # counts connections, so a send knows which one it went out on
    token: str
    hello: HelloFrame
    joins_sent: set[str] = field(default_factory=set)
    ready: bool = False  # rooms rejoined: new frames may go out


async def open_connection(
    url: str,
    token: str,
    *,
    open_timeout: float,
    ping_interval: float | None,
    ping_timeout: float | None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[ClientConnection, HelloFrame]:
    """Connect to `url` with `token` and return the socket and the server's `hello`.

    Raises `AuthenticationError` (`RevokedError`) when the server refuses the token,
    at the handshake or by closing before `hello`; anything else it raises
    (`OSError`, `TimeoutError`, websockets' errors) is worth another attempt.
    `ssl_context` verifies a `wss://` server (default: the system's trusted CAs).
    """
    # websockets refuses an `ssl` argument for a ws:// URL: give it only when set.
    tls: dict[str, Any] = {"ssl": ssl_context} if ssl_context is not None else {}
    try:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            user_agent_header=USER_AGENT,
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=2.0,
            max_size=None,
            **tls,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in _AUTH_STATUSES:
            raise AuthenticationError(
                f"the server refused the token (HTTP {status})", status=status
            ) from None
        raise
    try:
        async with asyncio.timeout(open_timeout):
            raw = await ws.recv()
        frame = parse_server_frame(raw)
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = exc.rcvd.reason if exc.rcvd is not None else None
        if code == CloseCode.POLICY:
            raise AuthenticationError(
                f"the server refused the token: {describe_close(code, reason)}",
                close_code=code,
            ) from None
        if code == CloseCode.REVOKED:
            raise RevokedError(
                f"the token was revoked: {describe_close(code, reason)}", close_code=code
            ) from None
        raise
    except BaseException:
        await ws.close()
        raise
    if not isinstance(frame, HelloFrame):
        await ws.close()
        raise ConnectionError(f"expected a hello frame, got {frame.type!r}")
    return ws, frame


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential waits from `initial` to `maximum` seconds between attempts."""

    initial: float
    maximum: float

    def delay(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1, 2, ...): doubling, with jitter."""
        base = min(self.maximum, self.initial * 2 ** min(attempt - 1, 30))
        return random.uniform(base / 2, base)

    def after_failure(self, failures: int, exc: BaseException) -> float:
        """The wait after `failures` failed attempts in a row, the last failing with `exc`.

        A refused handshake's `Retry-After` (429 throttled, 503 draining) is honoured.
        """
        return max(self.delay(failures), _retry_after(exc))

    def after_close(self, code: int | None, reason: str | None, unstable: int) -> float:
        """The wait before reconnecting after a connection ended with `code`.

        `unstable` counts the connections in a row that ended soon after opening, this
        one included: a close that would be retried at once backs off when it repeats.
        Raises `AuthenticationError` (`RevokedError`) for closes that end the client.
        """
        if code == CloseCode.POLICY:
            raise AuthenticationError(
                f"the server ended the session: {describe_close(code, reason)}", close_code=code
            )
        if code == CloseCode.REVOKED:
            raise RevokedError(
                f"the token was revoked: {describe_close(code, reason)}", close_code=code
            )
        if code == CloseCode.TOKEN_EXPIRED and unstable <= 1:
            return 0.0  # reconnect at once with a fresh token
        if code in _RESTARTING and unstable <= 1:
            return random.uniform(0, self.initial)  # spread a restart's herd
        return self.delay(max(unstable, 1))


def _retry_after(exc: BaseException) -> float:
    """The `Retry-After` of a refused handshake, else 0."""
    if not isinstance(exc, InvalidStatus):
        return 0.0
    try:
        return min(float(exc.response.headers.get("Retry-After", 0)), _MAX_RETRY_AFTER)
    except ValueError:
        return 0.0
