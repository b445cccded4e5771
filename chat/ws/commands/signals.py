"""`typing` and `ping`: nothing stored."""

from __future__ import annotations

from chat.protocol import PingIn, PongFrame, TypingFrame, TypingIn, encode, now_iso
from chat.ws.commands.context import CommandContext


async def typing(session: CommandContext, frame: TypingIn) -> None:
    settings = session.settings
    session.require_joined(frame.room, frame.ref)
    await session.rate_limit("typing", settings.typing_rate, settings.typing_burst, frame.ref)
    payload = encode(TypingFrame(room=frame.room, user=session.user))
    await session.deps.hub.publish_room(frame.room, payload, exclude_user=session.user.id)


async def ping(session: CommandContext, frame: PingIn) -> None:
    session.conn.push(encode(PongFrame(ts=now_iso(), ref=frame.ref)))
