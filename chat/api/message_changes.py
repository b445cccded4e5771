"""The REST twins of `edit`, `delete`, `react`, `read` and `typing`: for clients without
a WebSocket (the browser's fallback, scripts, bots on webhooks).

Same rules, bucket and events as the frames (`chat.changing`); the answer is the
event itself, the whole new state, which also goes to every member of the room
(the caller's own stream included: applying it twice is harmless).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import Field

from chat import changing
from chat.api.deps import Caller, MessagingDep
from chat.api.errors import frame_error
from chat.api.fields import RequestBody, WholeNumber
from chat.api.messages import parse_body, readable_room, spend, writable_room
from chat.api.responses import errors
from chat.api.rooms import MAX_SEQ
from chat.protocol import (
    DeletedFrame,
    EditedFrame,
    FrameError,
    ReactionFrame,
    ReadFrame,
    TypingFrame,
    UserRef,
    encode,
)
from chat.storage.changes import ChangeResult
from chat.storage.records import RoomView
from chat.storage.rules import BODY_PATTERN, EMOJI_MAX, EMOJI_PATTERN
from chat.ws.deps import WsDeps

router = APIRouter(prefix="/api/rooms", tags=["messages"])
SeqPath = Annotated[int, Path(ge=1, le=MAX_SEQ)]
EmojiPath = Annotated[
    str, Path(min_length=1, max_length=EMOJI_MAX, json_schema_extra={"pattern": EMOJI_PATTERN})
]
NOT_FOUND = (404, "`not_found`: no such room (or not readable), or no such message")
BAD = (422, "`bad_frame`: the fields or the rules")
LIMITED = (429, "`rate_limited`: the user's bucket (Retry-After)")
CHANGE_ERRORS = errors(
    (403, "`forbidden`: not yours to change, or the room is archived"), NOT_FOUND, BAD, LIMITED
)


class EditBody(RequestBody):
    body: str = Field(
        description="the new text: not only spaces; longer than `max_body_chars` is a 413",
        json_schema_extra={"pattern": BODY_PATTERN},
    )


class ReadBody(RequestBody):
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ), WholeNumber]  # 0: nothing read yet


def _answer(result: ChangeResult) -> Response:
    return Response(encode(result.frame), media_type="application/json")


@router.patch(
    "/{room:path}/messages/{seq}",
    response_model=EditedFrame,
    responses={**CHANGE_ERRORS, **errors((413, "`too_large`: longer than `max_body_chars`"))},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EditBody.model_json_schema()}},
        }
    },
)
async def edit_message(
    room: str, seq: SeqPath, request: Request, caller: Caller, deps: MessagingDep
) -> Response:
    """The author changes their message: `edited` to every member, and as the answer."""
    frame = await parse_body(request, EditBody)
    if isinstance(frame, Response):
        return frame
    try:
        changing.require_valid_edit(deps, frame.body, None)
        view = await _writable(room, caller.user, deps)
        return _answer(await changing.edit(deps, view, caller.user, seq, frame.body, None))
    except FrameError as exc:
        return frame_error(exc)


@router.delete("/{room:path}/messages/{seq}", response_model=DeletedFrame, responses=CHANGE_ERRORS)
async def delete_message(room: str, seq: SeqPath, caller: Caller, deps: MessagingDep) -> Response:
    """The author, the room's owner or an admin removes a message: `deleted` to every
    member, and as the answer (also when it was deleted already)."""
    try:
        view = await _writable(room, caller.user, deps)
        return _answer(await changing.delete(deps, view, caller.user, seq, None))
    except FrameError as exc:
        return frame_error(exc)


async def reaction(
    room: str, seq: SeqPath, emoji: EmojiPath, request: Request, caller: Caller, deps: MessagingDep
) -> Response:
    """`PUT` sets the caller's reaction (`emoji` URL-encoded), `DELETE` clears it:
    `reaction` with everyone's now."""
    user, on = caller.user, request.method == "PUT"
    try:
        changing.require_valid_emoji(emoji, None)
        view = await _writable(room, user, deps)
        return _answer(await changing.react(deps, view, user, seq, emoji, on, None))
    except FrameError as exc:
        return frame_error(exc)


# One function, two routes (their own names keep OpenAPI's operation ids apart).
for method, name in (("PUT", "add_reaction"), ("DELETE", "remove_reaction")):
    router.add_api_route(
        "/{room:path}/messages/{seq}/reactions/{emoji}",
        reaction,
        methods=[method],
        name=name,
        response_model=ReactionFrame,
        responses=CHANGE_ERRORS,
    )


@router.post(
    "/{room:path}/read",
    response_model=ReadFrame,
    responses=errors(NOT_FOUND, BAD, LIMITED),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ReadBody.model_json_schema()}},
        }
    },
)
async def mark_read(room: str, request: Request, caller: Caller, deps: MessagingDep) -> Response:
    """Move the caller's read cursor forward (never back, never past the newest seq):
    `read` with the cursor now, as the answer and to the caller's connections."""
    body = await parse_body(request, ReadBody)
    if isinstance(body, Response):
        return body
    user, settings = caller.user, deps.settings
    try:
        view = await readable_room(room, user, deps, None)
        await spend(deps, "read", user, settings.read_rate, settings.read_burst, None)
    except FrameError as exc:
        return frame_error(exc)
    cursor, moved = await deps.store.mark_read(view.id, user.id, body.seq)
    payload = encode(ReadFrame(room=view.name, seq=cursor))
    if moved:
        await deps.hub.publish_user(user.id, payload)
    return Response(payload, media_type="application/json")


@router.post(
    "/{room:path}/typing",
    status_code=204,
    responses=errors(NOT_FOUND, LIMITED),
)
async def typing(room: str, caller: Caller, deps: MessagingDep) -> Response:
    """Tell the room's other members the caller is typing (nothing is stored)."""
    user, settings = caller.user, deps.settings
    try:
        view = await readable_room(room, user, deps, None)
        await spend(deps, "typing", user, settings.typing_rate, settings.typing_burst, None)
    except FrameError as exc:
        return frame_error(exc)
    payload = encode(TypingFrame(room=view.name, user=user))
    await deps.hub.publish_room(view.name, payload, exclude_user=user.id)
    return Response(status_code=204)


async def _writable(room: str, user: UserRef, deps: WsDeps) -> RoomView:
    view = await readable_room(room, user, deps, None)
    return await writable_room(view, user, deps, None)
