"""What every way of changing a message shares (`edit`, `delete`, `react`): the checks
that need no connection, the stored change, and its event to the room.

The WebSocket frames (`chat.ws.commands.changes`) and the REST routes
(`chat.api.message_changes`) both use it, so a change has one set of rules. Each is
stored before its event goes out; a change that changes nothing (already so) publishes
nothing, and the caller still gets the whole current state back.
"""

from __future__ import annotations

from collections.abc import Awaitable

from chat.hub import Hub
from chat.protocol import ErrorCode, FrameError, UserRef, encode
from chat.sending import require_valid_body
from chat.storage.changes import ChangeRefused, ChangeResult
from chat.storage.records import RoomView
from chat.storage.rules import check_emoji
from chat.ws.deps import WsDeps


def require_valid_emoji(emoji: str, ref: str | None) -> None:
    problem = check_emoji(emoji)
    if problem:
        raise FrameError(ErrorCode.BAD_FRAME, problem, ref)


def require_valid_edit(deps: WsDeps, body: str, ref: str | None) -> None:
    require_valid_body(body, deps.settings.max_body_chars, ref)


async def edit(
    deps: WsDeps,
    room: RoomView,
    user: UserRef,
    seq: int,
    body: str,
    ref: str | None,
    *,
    exclude_conn: str | None = None,
) -> ChangeResult:
    """Store the author's new text and tell the room (but `exclude_conn`)."""
    result = await _stored(deps.store.edit_message(room, seq, user, body), ref)
    await _announce(deps.hub, result, exclude_conn)
    return result


async def delete(
    deps: WsDeps,
    room: RoomView,
    user: UserRef,
    seq: int,
    ref: str | None,
    *,
    exclude_conn: str | None = None,
) -> ChangeResult:
    """Delete for the author, the room's owner or an admin; tell the room; free the
    bytes of its files that nothing else uses."""
    result = await _stored(deps.store.delete_message(room, seq, user), ref)
    await _announce(deps.hub, result, exclude_conn)
    await deps.files.release(result.released)
    return result


async def react(
    deps: WsDeps,
    room: RoomView,
    user: UserRef,
    seq: int,
    emoji: str,
    on: bool,
    ref: str | None,
    *,
    exclude_conn: str | None = None,
) -> ChangeResult:
    """Set or clear the user's reaction and tell the room the whole list for `emoji`."""
    result = await _stored(deps.store.react(room, seq, user, emoji, on), ref)
    await _announce(deps.hub, result, exclude_conn)
    return result


async def _stored(change: Awaitable[ChangeResult], ref: str | None) -> ChangeResult:
    try:
        return await change
    except ChangeRefused as exc:
        raise FrameError(exc.code, exc.detail, ref) from None


async def _announce(hub: Hub, result: ChangeResult, exclude_conn: str | None) -> None:
    if result.changed:
        frame = result.frame
        await hub.publish_room(
            frame.room,
            encode(frame),
            exclude_conn=exclude_conn,
            about=frame.seq,
            version=frame.version,
        )
