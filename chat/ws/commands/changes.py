"""`edit`, `delete` and `react`: stored first, then the whole new state to every member.

The event goes to the room's members on every process (the sender's other
connections included); the sending connection gets its own copy, with the
frame's `ref`, straight away. A change that changes nothing (already so) is
answered on the sending connection only.
"""

from __future__ import annotations

import unicodedata

from chat.protocol import DeleteIn, EditIn, ErrorCode, FrameError, ReactIn, encode
from chat.storage.changes import ChangeRefused, ChangeResult
from chat.storage.records import RoomView
from chat.ws.commands.context import CommandContext
from chat.ws.commands.send import require_valid_body

# Invisible characters that do belong inside emoji: the zero-width joiner of
# sequences (family, professions) and the tag characters of subdivision flags.
EMOJI_FORMAT_CHARS = frozenset(["\u200d", *map(chr, range(0xE0020, 0xE0080))])


def check_emoji(emoji: str) -> str | None:
    """Why a reaction is refused, or None: printable, no spaces, no control characters."""
    for c in emoji:
        category = unicodedata.category(c)
        if c in EMOJI_FORMAT_CHARS:
            continue
        if category[0] in ("C", "Z"):  # control, format, unassigned, separators, spaces
            return "emoji must be printable and contain no spaces"
    return None


async def _admit(session: CommandContext, room: str, ref: str | None) -> RoomView:
    """The checks every change shares: joined and not archived (as for `send`), and the
    send bucket. The database refuses a change to a room archived meanwhile as well."""
    session.writable_room(room, ref)
    settings = session.settings
    bot = session.user.role == "bot"
    await session.rate_limit(
        "send",
        settings.bot_send_rate if bot else settings.send_rate,
        settings.bot_send_burst if bot else settings.send_burst,
        ref,
    )
    return session.joined[room]


async def _announce(session: CommandContext, result: ChangeResult, ref: str | None) -> None:
    """The event to everyone else (when something changed), the ref'd copy to the sender."""
    frame = result.frame
    conn, hub = session.conn, session.deps.hub
    if result.changed:
        await hub.publish_room(
            frame.room,
            encode(frame),
            exclude_conn=hub.conn_key(conn),
            about=frame.seq,
            version=frame.version,
        )
    conn.push(encode(frame.model_copy(update={"ref": ref})))


def _refused(exc: ChangeRefused, ref: str | None) -> FrameError:
    return FrameError(exc.code, exc.detail, ref)


async def edit(session: CommandContext, frame: EditIn) -> None:
    require_valid_body(frame.body, session.settings.max_body_chars, frame.ref)
    room = await _admit(session, frame.room, frame.ref)
    try:
        result = await session.deps.store.edit_message(room, frame.seq, session.user, frame.body)
    except ChangeRefused as exc:
        raise _refused(exc, frame.ref) from None
    await _announce(session, result, frame.ref)


async def delete(session: CommandContext, frame: DeleteIn) -> None:
    room = await _admit(session, frame.room, frame.ref)
    try:
        result = await session.deps.store.delete_message(room, frame.seq, session.user)
    except ChangeRefused as exc:
        raise _refused(exc, frame.ref) from None
    await _announce(session, result, frame.ref)
    await session.deps.files.release(result.released)  # its files' bytes, if unused now


async def react(session: CommandContext, frame: ReactIn) -> None:
    problem = check_emoji(frame.emoji)
    if problem:
        raise FrameError(ErrorCode.BAD_FRAME, problem, frame.ref)
    room = await _admit(session, frame.room, frame.ref)
    try:
        result = await session.deps.store.react(
            room, frame.seq, session.user, frame.emoji, frame.on
        )
    except ChangeRefused as exc:
        raise _refused(exc, frame.ref) from None
    await _announce(session, result, frame.ref)
