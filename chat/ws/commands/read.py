"""`read`: move the caller's read cursor forward and tell their other connections."""

from __future__ import annotations

from chat.protocol import ReadFrame, ReadIn, encode
from chat.ws.commands.context import CommandContext


async def read(session: CommandContext, frame: ReadIn) -> None:
    """The cursor only moves forward and never past the room's newest seq; the
    caller's other connections (every process) get `read` with the new cursor,
    this one only when it asked with a `ref` (the echo confirms the cursor)."""
    settings = session.settings
    session.require_joined(frame.room, frame.ref)
    await session.rate_limit("read", settings.read_rate, settings.read_burst, frame.ref)
    room = session.joined[frame.room]
    hub, conn = session.deps.hub, session.conn
    cursor, moved = await session.deps.store.mark_read(room.id, session.user.id, frame.seq)
    if moved:
        payload = encode(ReadFrame(room=room.name, seq=cursor))
        await hub.publish_user(session.user.id, payload, exclude_conn=hub.conn_key(conn))
    if frame.ref is not None:
        conn.push(encode(ReadFrame(room=room.name, seq=cursor, ref=frame.ref)))
