"""The errors `ChatClient` raises: one base class, one subclass per way a call can fail.

Terminal errors (`AuthenticationError`, `ConnectionFailedError`) end the client and are
raised by every later call and by iteration; the others concern one call.
"""

from __future__ import annotations

from chat_client.protocol import ErrorFrame

__all__ = [
    "ApiError",
    "AuthenticationError",
    "ChatClientError",
    "ClientClosedError",
    "ConnectionFailedError",
    "DisconnectedError",
    "FrameTooLargeError",
    "RequestError",
    "RevokedError",
]


class ChatClientError(Exception):
    """Base class of every error `ChatClient` raises."""


class AuthenticationError(ChatClientError):
    """The server refused the token (bad, expired or revoked). Retrying will not help.

    `status` is the HTTP status of a refused handshake, `close_code` the WebSocket
    close code of a connection ended for authentication (1008).
    """

    def __init__(
        self, message: str, *, status: int | None = None, close_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.close_code = close_code


class RevokedError(AuthenticationError):
    """The token was revoked or the account banned while connected (close code 4003)."""


class ConnectionFailedError(ChatClientError):
    """The server could not be reached within the allowed number of attempts."""


class DisconnectedError(ChatClientError):
    """The connection dropped before the reply to a request (`ping`, `leave`...) arrived."""


class ClientClosedError(ChatClientError):
    """The client was closed, or is not open yet."""


class FrameTooLargeError(ChatClientError, ValueError):
    """A frame is larger than the server accepts (`hello.limits["max_frame_bytes"]`)."""


class RequestError(ChatClientError):
    """The server refused a frame of ours with an `error` frame (e.g. `forbidden`)."""

    def __init__(self, frame: ErrorFrame) -> None:
        super().__init__(f"{frame.code}: {frame.detail}")
        self.frame = frame
        self.code = frame.code
        self.detail = frame.detail


class ApiError(RequestError):
    """The server refused an HTTP request of ours (a 4xx or 5xx answer with a `detail`).

    `status` is the HTTP status; `code` names it like an `error` frame's code where one
    fits (403 `forbidden`, 404 `not_found`, 413 `too_large`, 429 `rate_limited`), so one
    `except RequestError` handles refusals over both transports.
    """

    def __init__(self, status: int, detail: str, code: str | None = None) -> None:
        # The server's own `code`, when it sends one (files: `quota_exceeded`, ...).
        code = code or _HTTP_CODES.get(status, f"http_{status}")
        super().__init__(ErrorFrame(code=code, detail=detail))
        self.status = status


_HTTP_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    422: "bad_request",
    429: "rate_limited",
    503: "unavailable",
}


def short(exc: BaseException) -> str:
    """`TypeName: first line of the message`, to name an error in one log line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
