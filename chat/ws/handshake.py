"""The `/ws` handshake: checks before the upgrade, then authentication, then a session."""

from __future__ import annotations

import asyncio
import logging
import math

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from chat.auth.accounts import Principal
from chat.auth.tokens import TokenError
from chat.monitoring import metrics
from chat.monitoring.abuse import AbuseEvent
from chat.protocol import AuthIn, CloseCode, FrameError, parse_client_frame
from chat.ws.deps import WsDeps
from chat.ws.session import Session, client_address, close_quietly

log = logging.getLogger(__name__)


def origin_allowed(websocket: WebSocket, allowed: list[str]) -> bool:
    """No Origin (a bot) is fine; a browser's must be ours or on the allowlist, exactly."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    origin = origin.rstrip("/")
    scheme = "https" if websocket.url.scheme == "wss" else "http"
    host = websocket.headers.get("host", "")
    return origin in allowed or (bool(host) and origin == f"{scheme}://{host}")


def bearer(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def refuse(websocket: WebSocket, status: int, detail: str, retry_after: float) -> None:
    """Answer the handshake with an HTTP error and `Retry-After` instead of upgrading."""
    response = PlainTextResponse(
        detail, status_code=status, headers={"Retry-After": str(max(1, math.ceil(retry_after)))}
    )
    await websocket.send_denial_response(response)


async def websocket_endpoint(websocket: WebSocket) -> None:
    """`/ws`: reached straight from the ASGI entry (`chat.app.WebSocketFastPath`)."""
    deps: WsDeps = websocket.app.state.ws
    settings = deps.settings
    address = client_address(websocket)
    if deps.draining():
        await refuse(websocket, 503, "the server is shutting down", 1)
        return
    # Per address, across every process when CHAT_REDIS_URL is set.
    wait, _ = await deps.limits.hit(
        "handshake",
        address or "unknown",
        settings.handshakes_per_ip_per_second,
        settings.handshakes_per_ip_burst,
    )
    if wait is not None:
        metrics.THROTTLED.labels("handshake").inc()
        deps.abuse.report(AbuseEvent("handshake_throttled", address))
        await refuse(websocket, 429, "too many connection attempts", wait)
        return
    if not origin_allowed(websocket, settings.allowed_origins):
        metrics.AUTH_FAILURES.labels("origin").inc()
        log.info("refused a handshake from origin %r", websocket.headers.get("origin"))
        await websocket.close(CloseCode.POLICY)  # before accept: HTTP 403
        return
    principal: Principal | None = None
    header_token = bearer(websocket)
    if header_token is not None:
        try:
            principal = await deps.accounts.authenticate(header_token)
        except TokenError:
            metrics.AUTH_FAILURES.labels("ws_header").inc()
            deps.abuse.report(AbuseEvent("auth_failure", address, detail="ws handshake"))
            await websocket.close(CloseCode.POLICY)
            return
    await websocket.accept()
    if principal is None:
        principal = await _first_frame_auth(websocket, deps)
        if principal is None:
            return
    session = Session(websocket, deps, principal)
    await session.run()


async def _first_frame_auth(websocket: WebSocket, deps: WsDeps) -> Principal | None:
    """Wait for `{"type": "auth"}` within the deadline; close 1008 on anything else."""
    try:
        raw = await asyncio.wait_for(_receive_text(websocket), deps.settings.auth_timeout)
        frame = parse_client_frame(raw) if raw is not None else None
        if not isinstance(frame, AuthIn):
            reason = "authenticate first: send an auth frame"
        else:
            return await deps.accounts.authenticate(frame.token)
    except TimeoutError:
        reason = "no auth frame within the deadline"
    except FrameError:
        reason = "authenticate first: send an auth frame"
    except TokenError:
        reason = "invalid, expired or revoked token"
    except WebSocketDisconnect:
        return None
    metrics.AUTH_FAILURES.labels("ws_frame").inc()
    deps.abuse.report(AbuseEvent("auth_failure", client_address(websocket), detail=f"ws: {reason}"))
    await close_quietly(websocket, CloseCode.POLICY, reason)
    return None


async def _receive_text(websocket: WebSocket) -> str | None:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text: str | None = message.get("text")
    return text
