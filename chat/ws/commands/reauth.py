"""`auth` on an open socket: a fresh token for the same user extends the session."""

from __future__ import annotations

from chat.auth.tokens import TokenError
from chat.protocol import AuthIn, ErrorCode, FrameError, ReauthedFrame, encode
from chat.ws.commands.context import CommandContext


async def reauth(session: CommandContext, frame: AuthIn) -> None:
    try:
        principal = await session.deps.accounts.authenticate(frame.token)
    except TokenError:
        raise FrameError(
            ErrorCode.FORBIDDEN, "invalid, expired or revoked token", frame.ref
        ) from None
    if principal.user.id != session.user.id:
        raise FrameError(ErrorCode.FORBIDDEN, "that token is for another user", frame.ref)
    session.principal = principal
    session.watch_expiry()
    session.conn.push(encode(ReauthedFrame(expires_at=session.expires_iso(), ref=frame.ref)))
