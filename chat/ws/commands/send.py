"""`send`: checked here, stored by the writer in a batch, acked in order."""

from __future__ import annotations

from functools import partial

from chat.protocol import ErrorCode, FrameError, SendIn, encode
from chat.storage.attachments import AttachmentRefused
from chat.storage.records import NewMessage, ReadOnlyRoom, Stored
from chat.storage.rules import check_body
from chat.storage.writer import WriterFull
from chat.ws.commands.context import ARCHIVED, CommandContext

INFLIGHT_WAIT = 2.0  # seconds a send over the in-flight bound waits for acks, then refused


def require_valid_body(
    body: str, max_chars: int, ref: str | None, *, with_files: bool = False
) -> None:
    """Refuse a message body (of a `send` or an `edit`) that is too long or breaks the rules.
    A message with files may have an empty body (nothing else: no NUL, no lone spaces)."""
    if len(body) > max_chars:
        raise FrameError(ErrorCode.TOO_LARGE, f"body is longer than {max_chars} characters", ref)
    if with_files and not body:
        return
    problem = check_body(body)
    if problem:
        raise FrameError(ErrorCode.BAD_FRAME, problem, ref)


async def send(session: CommandContext, frame: SendIn) -> None:
    settings = session.settings
    room = session.writable_room(frame.room, frame.ref)
    require_valid_body(
        frame.body, settings.max_body_chars, frame.ref, with_files=bool(frame.attachments)
    )
    bot = session.user.role == "bot"
    await session.rate_limit(
        "send",
        settings.bot_send_rate if bot else settings.send_rate,
        settings.bot_send_burst if bot else settings.send_burst,
        frame.ref,
    )
    reply = None
    if frame.reply_to is not None:  # one read, for replies only
        reply = await session.deps.store.reply_ref(room.id, frame.reply_to)
        if reply is None:
            raise FrameError(
                ErrorCode.NOT_FOUND, f"no message {frame.reply_to} in this room", frame.ref
            )
    # Backpressure: past the bound, stop reading until acks come back; refuse if they do not.
    if not await session.sends.wait_for_room(session.sink.lost, INFLIGHT_WAIT):
        raise FrameError(
            ErrorCode.OVERLOADED,
            f"{settings.max_inflight_sends} sends are waiting to be stored",
            frame.ref,
            INFLIGHT_WAIT,
        )
    if session.sink.lost.is_set():
        return  # the client is gone and gets no ack: it resends with the same ref
    files = tuple(frame.attachments) if frame.attachments else ()
    message = NewMessage(room, session.user, frame.ref, frame.body, reply, files)
    try:
        session.deps.writer.submit(message, partial(_stored, session, frame.ref))
    except WriterFull:
        raise FrameError(
            ErrorCode.OVERLOADED, "the server is busy: nothing was stored", frame.ref, 1.0
        ) from None
    session.sends.add()


def _stored(session: CommandContext, ref: str, result: Stored | Exception) -> None:
    """The writer's answer to one of the session's sends, in the order they came."""
    session.sends.done()
    if isinstance(result, Stored):
        session.conn.push(encode(result.ack))
    elif isinstance(result, ReadOnlyRoom):
        session.error(ErrorCode.FORBIDDEN, ARCHIVED, ref)
    elif isinstance(result, AttachmentRefused):
        session.error(ErrorCode.BAD_ATTACHMENT, f"nothing was stored: {result}", ref)
    else:
        session.error(
            ErrorCode.UNAVAILABLE,
            "the message could not be stored: send it again with the same ref",
            ref,
            1.0,
        )
