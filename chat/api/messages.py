"""REST send: `POST /api/rooms/{room}/messages`, the WebSocket `send` over HTTP.

Same rules, bucket, write path and answers (`chat.sending`); the same `ref` is one
message whichever transport carried it (the writer dedupes on `(user, ref)`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chat.api.deps import Caller, MessagingDep
from chat.api.errors import coded, frame_error
from chat.api.fields import WholeNumber
from chat.api.responses import errors
from chat.api.rooms import MAX_SEQ
from chat.monitoring import metrics
from chat.protocol import MAX_ATTACHMENTS, ErrorCode, FileId, FrameError, Ref, UserRef
from chat.sending import ARCHIVED, refusal, reply_of, require_valid_body, send_bucket, submit
from chat.storage.records import NewMessage, RoomView, Stored
from chat.storage.rules import BODY_PATTERN
from chat.ws.deps import WsDeps

router = APIRouter(prefix="/api/rooms", tags=["messages"])
NOT_FOUND = "no such room, or you may not read it"
ERRORS = errors(
    (403, "`forbidden`: the room is archived"),
    (404, "`not_found`: no such room (or not readable), or no `reply_to`"),
    (413, "`too_large`: body longer than `max_body_chars`"),
    (422, "`bad_frame` (fields, body rules) or `bad_attachment`"),
    (429, "`rate_limited`: the user's send bucket (Retry-After)"),
    (503, "`overloaded` or `unavailable`: nothing stored, resend (Retry-After)"),
)


class SendBody(BaseModel):
    """The `send` frame's fields, less `type` and `room` (the path names the room)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    body: str = Field(
        description="the text: not only spaces (empty with attachments); longer than "
        "`max_body_chars` is a 413",
        json_schema_extra={"pattern": BODY_PATTERN},
    )
    ref: Ref
    reply_to: Annotated[int, Field(ge=1, le=MAX_SEQ), WholeNumber] | None = None
    attachments: Annotated[list[FileId], Field(max_length=MAX_ATTACHMENTS)] | None = None


# The body is read by hand (strict, with the WebSocket's error codes): described here.
SEND_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SendBody.model_json_schema()}},
    }
}


@router.post(
    "/{room:path}/messages",
    status_code=201,
    responses={200: {"description": "that `ref` was stored before: its first ack"}, **ERRORS},
    openapi_extra=SEND_BODY,
)
async def send_message(room: str, request: Request, caller: Caller, deps: MessagingDep) -> Response:
    """Send a message: 201 with its `ack`; 200 with the first `ack` for a `ref` stored
    before (by this transport or the WebSocket); nothing is stored twice."""
    frame = await parse_body(request, SendBody)
    if isinstance(frame, Response):
        return frame
    try:
        stored = await _send(room, frame, caller.user, deps)
    except FrameError as exc:
        return frame_error(exc)
    return Response(
        stored.ack.model_dump_json(),
        status_code=200 if stored.duplicate else 201,
        media_type="application/json",
    )


async def _send(name: str, frame: SendBody, user: UserRef, deps: WsDeps) -> Stored:
    """Check, store and answer one message as the WebSocket `send` does, but with
    the room read here: a socket reads it once at its `join`."""
    view = await readable_room(name, user, deps, frame.ref)
    require_valid_body(
        frame.body, deps.settings.max_body_chars, frame.ref, with_files=bool(frame.attachments)
    )
    view = await writable_room(view, user, deps, frame.ref)
    reply = await reply_of(deps.store, view, frame.reply_to, frame.ref)
    files = tuple(frame.attachments) if frame.attachments else ()
    answer: asyncio.Future[Stored | Exception] = asyncio.get_running_loop().create_future()

    def done(result: Stored | Exception) -> None:
        if not answer.done():  # the caller may have gone: the message is stored anyway
            answer.set_result(result)

    submit(deps.writer, NewMessage(view, user, frame.ref, frame.body, reply, files), done)
    result = await answer
    if isinstance(result, Stored):
        return result
    raise refusal(result, frame.ref)


T = TypeVar("T", bound=BaseModel)


async def parse_body(request: Request, model: type[T]) -> T | Response:
    """The request's JSON as `model`, or a 422 `bad_frame` naming each problem (never
    FastAPI's own 422: the REST twins of frames answer with the frames' error codes)."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        problem = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return coded(422, ErrorCode.BAD_FRAME, problem)


async def readable_room(name: str, user: UserRef, deps: WsDeps, ref: str | None) -> RoomView:
    """The room, or `not_found` (absent and forbidden look the same)."""
    view = await deps.store.room_for(name, user)
    if view is None:
        raise FrameError(ErrorCode.NOT_FOUND, NOT_FOUND, ref)
    return view


async def writable_room(view: RoomView, user: UserRef, deps: WsDeps, ref: str | None) -> RoomView:
    """What a socket checks at its `join` and per write, for one request: not archived,
    the user's send bucket (whatever the transport: one bucket), and membership."""
    if view.archived:
        raise FrameError(ErrorCode.FORBIDDEN, ARCHIVED, ref)
    await spend(deps, "send", user, *send_bucket(deps.settings, user), ref)
    if not view.member and not view.private:
        # As a `join` would: writing to a public room makes one a member.
        await deps.memberships.record(view.id, user.id)
    return view


async def spend(
    deps: WsDeps, action: str, user: UserRef, rate: float, burst: int, ref: str | None
) -> None:
    """Take a token from the user's `action` bucket (shared with the socket's frames),
    or `rate_limited` with the wait."""
    wait, _ = await deps.limits.hit(action, user.id, rate, burst)
    if wait is not None:
        metrics.RATE_LIMITED.labels(action).inc()
        raise FrameError(ErrorCode.RATE_LIMITED, f"too many {action} frames", ref, wait)
