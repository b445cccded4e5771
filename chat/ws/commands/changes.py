"""`edit`, `delete` and `react` on a socket: the rules and the event are
`chat.changing`'s (shared with REST); here only what a socket adds.

The event goes to the room's members on every process (the sender's other
connections included); the sending connection gets its own copy, with the
frame's `ref`, straight away, also when nothing changed (already so).
"""

from __future__ import annotations

from chat import changing
from chat.protocol import DeleteIn, EditIn, ReactIn, encode
from chat.sending import send_bucket
from chat.storage.changes import ChangeResult
from chat.storage.records import RoomView
from chat.ws.commands.context import CommandContext


async def _admit(session: CommandContext, room: str, ref: str | None) -> RoomView:
    """The checks every change shares: joined and not archived (as for `send`), and the
    send bucket. The database refuses a change to a room archived meanwhile as well."""
    session.writable_room(room, ref)
    await session.rate_limit("send", *send_bucket(session.settings, session.user), ref)
    return session.joined[room]


def _confirm(session: CommandContext, result: ChangeResult, ref: str | None) -> None:
    session.conn.push(encode(result.frame.model_copy(update={"ref": ref})))


async def edit(session: CommandContext, frame: EditIn) -> None:
    changing.require_valid_edit(session.deps, frame.body, frame.ref)
    room = await _admit(session, frame.room, frame.ref)
    me = session.deps.hub.conn_key(session.conn)
    result = await changing.edit(
        session.deps, room, session.user, frame.seq, frame.body, frame.ref, exclude_conn=me
    )
    _confirm(session, result, frame.ref)


async def delete(session: CommandContext, frame: DeleteIn) -> None:
    room = await _admit(session, frame.room, frame.ref)
    me = session.deps.hub.conn_key(session.conn)
    result = await changing.delete(
        session.deps, room, session.user, frame.seq, frame.ref, exclude_conn=me
    )
    _confirm(session, result, frame.ref)


async def react(session: CommandContext, frame: ReactIn) -> None:
    changing.require_valid_emoji(frame.emoji, frame.ref)
    room = await _admit(session, frame.room, frame.ref)
    me = session.deps.hub.conn_key(session.conn)
    result = await changing.react(
        session.deps,
        room,
        session.user,
        frame.seq,
        frame.emoji,
        frame.on,
        frame.ref,
        exclude_conn=me,
    )
    _confirm(session, result, frame.ref)
