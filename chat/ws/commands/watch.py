"""`watch`: an admin follows every room's presence without joining any (the console)."""

from __future__ import annotations

from chat.protocol import (
    ErrorCode,
    FrameError,
    PresenceSnapshotFrame,
    RoomPresence,
    WatchIn,
    encode,
)
from chat.ws.commands.context import CommandContext


async def watch(session: CommandContext, frame: WatchIn) -> None:
    """`on`: answer `presence_snapshot`, then every room's `presence_changes`; off: stop."""
    if session.user.role != "admin":
        raise FrameError(ErrorCode.FORBIDDEN, "only admins watch presence", frame.ref)
    hub = session.deps.hub
    if not frame.on:
        await hub.unwatch_presence(session.conn)
        return
    snapshot = await hub.watch_presence(session.conn)
    rooms = [RoomPresence(room=room, users=users) for room, users in sorted(snapshot.items())]
    hub.finish_watch(session.conn, encode(PresenceSnapshotFrame(rooms=rooms, ref=frame.ref)))
