"""The event stream over HTTP: `GET /api/stream` (Server-Sent Events) and its tickets.

Everything that can refuse a stream is checked before it starts, so a refusal is
a plain JSON answer (`code`, `detail`) and not an event: the caller, the rooms
(each readable by the caller, as a `join` asks), the cursor, the limits.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from chat.api.deps import Caller, oauth2
from chat.api.errors import coded
from chat.api.responses import errors
from chat.auth.accounts import Principal
from chat.auth.tokens import Claims, TokenError
from chat.backends.tickets import Tickets
from chat.monitoring import metrics
from chat.protocol import ErrorCode
from chat.stream.cursor import MAX_CURSOR_CHARS, Cursor, CursorCodec, CursorError
from chat.stream.response import EventStreamResponse, StreamRequest
from chat.ws.deps import WsDeps

router = APIRouter(prefix="/api/stream", tags=["stream"])
NOT_FOUND = "no such room, or you may not read it"
TICKET_BYTES = 24
# One event of the stream: `event` the frame type, `data` the frame's JSON, `id` a cursor.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


@dataclass(frozen=True, slots=True)
class StreamDeps:
    """What the stream uses: the WebSocket layer's parts, tickets and the cursor codec."""

    ws: WsDeps
    tickets: Tickets
    codec: CursorCodec


def _stream_deps(request: Request) -> StreamDeps:
    deps: StreamDeps = request.app.state.stream
    return deps


StreamDepsDep = Annotated[StreamDeps, Depends(_stream_deps)]


@router.post("/ticket", responses=errors())
async def ticket(caller: Caller, deps: StreamDepsDep) -> dict[str, Any]:
    """A single-use ticket for `GET /api/stream?ticket=` (for `EventSource`, which cannot
    send an `Authorization` header), valid `expires_in` seconds. It stands for the
    token that asked for it: revoking that token refuses the ticket too."""
    value = secrets.token_urlsafe(TICKET_BYTES)
    ttl = deps.ws.settings.stream_ticket_ttl
    await deps.tickets.put(value, json.dumps(asdict(caller.claims)), ttl)
    return {"ticket": value, "expires_in": ttl}


RESPONSES = {
    200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}},
    **errors(
        (
            400,
            "`bad_cursor` (Last-Event-ID); in plain text, a request the HTTP server "
            "could not read (a URL too long for it)",
        ),
        (401, "`unauthorized`: no valid token or ticket"),
        (403, "`forbidden`: more rooms than `max_stream_rooms`, or `watch` by a non-admin"),
        (404, "`not_found`: a room that does not exist or is not readable"),
        422,
        (429, "`rate_limited` (join bucket) or `too_many_connections`"),
        (503, "`unavailable`: the server is shutting down (Retry-After)"),
    ),
}
RESPONSES[400]["content"] = {"text/plain": {"schema": {"type": "string"}}}


@router.get(
    "",
    response_class=EventStreamResponse,
    # Given: FastAPI reads the default status from the response class's `__init__`,
    # which ours does not take, and the OpenAPI document failed without it.
    status_code=200,
    responses=RESPONSES,
)
async def stream(
    deps: StreamDepsDep,
    token: Annotated[str | None, Depends(oauth2)],
    rooms: Annotated[
        str,
        Query(
            max_length=20_000,
            description="room names, comma-separated; none: only the caller's own frames",
        ),
    ] = "",
    ticket: Annotated[str | None, Query(max_length=200)] = None,
    last_event_id: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
    last_event_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    watch: Annotated[Literal["presence"] | None, Query()] = None,
) -> Response:
    """Server-Sent Events of `rooms` (comma-separated; none: only the caller's own frames,
    such as an admin console's tasks and alerts) and the caller's notifications:
    `event:` the frame type, `data:` the frame, `id:` a cursor to resume from with
    `Last-Event-ID` (header, or `?last_event_id=`). See docs/protocol.md."""
    ws, settings = deps.ws, deps.ws.settings
    principal = await _caller(deps, token, ticket)
    if principal is None:
        return coded(401, "unauthorized", "send Authorization: Bearer <token> or ?ticket=")
    names = list(dict.fromkeys(n.strip() for n in rooms.split(",") if n.strip()))
    if watch and principal.user.role != "admin":
        return coded(403, ErrorCode.FORBIDDEN, "only admins watch presence")
    if len(names) > settings.max_stream_rooms:
        return coded(
            403, ErrorCode.FORBIDDEN, f"at most {settings.max_stream_rooms} rooms per stream"
        )
    given = last_event_header or last_event_id
    try:
        cursor = deps.codec.decode(given) if given else Cursor()
    except CursorError as exc:
        return coded(400, "bad_cursor", f"Last-Event-ID: {exc}: reconnect without it")
    if ws.draining():
        return coded(503, ErrorCode.UNAVAILABLE, "the server is shutting down", 1.0)
    # One `join` token per stream: opening one replays as a join does.
    wait, _ = await ws.limits.hit(
        "join", principal.user.id, settings.join_rate, settings.join_burst
    )
    if wait is not None:
        metrics.RATE_LIMITED.labels("join").inc()
        return coded(429, ErrorCode.RATE_LIMITED, "too many streams or joins opened", wait)
    views = []
    for name in names:
        view = await ws.store.room_for(name, principal.user)
        if view is None:
            return coded(404, ErrorCode.NOT_FOUND, f"{NOT_FOUND}: {name[:200]}")
        if not view.member and not view.private:
            await ws.memberships.record(view.id, principal.user.id)  # as a `join` does
        views.append(view)
    cursor.rooms = {n: p for n, p in cursor.rooms.items() if n in names}
    response = EventStreamResponse(
        ws,
        deps.codec,
        StreamRequest(principal, views, cursor, bool(given), watch_presence=bool(watch)),
    )
    cap = settings.max_connections_per_user
    if not await ws.connections.acquire(principal.user.id, response.conn_id, cap):
        return coded(429, "too_many_connections", f"at most {cap} connections per user")
    return response


async def _caller(deps: StreamDeps, token: str | None, ticket: str | None) -> Principal | None:
    """The caller, by header token or by ticket (used up here); None for neither."""
    try:
        if token:
            return await deps.ws.accounts.authenticate(token)
        if ticket:
            held = await deps.tickets.take(ticket)
            if held is None:
                return None
            return await deps.ws.accounts.confirm(Claims(**json.loads(held)))
    except TokenError:
        metrics.AUTH_FAILURES.labels("stream").inc()
    return None
