"""What every way of sending a message shares: the checks, the bucket, the write, the
answer. The WebSocket `send` (`chat.ws.commands.send`) and the REST send
(`chat.api.messages`) both use it, so a message has one set of rules and one way in."""

from __future__ import annotations

from chat.config import Settings
from chat.protocol import ErrorCode, FrameError, ReplyRef, UserRef
from chat.storage.attachments import AttachmentRefused
from chat.storage.records import NewMessage, ReadOnlyRoom, RoomView
from chat.storage.rules import check_body
from chat.storage.store import Store
from chat.storage.writer import Done, MessageWriter, WriterFull

# The refusal of a write (send, edit, react) to an archived room.
ARCHIVED = "the room is archived: read only"
WRITER_FULL_RETRY = 1.0  # seconds a sender waits after `overloaded` from a full write queue
UNSTORED_RETRY = 1.0  # seconds before resending a message a failed batch did not store


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


def send_bucket(settings: Settings, user: UserRef) -> tuple[float, int]:
    """The `(rate, burst)` of the user's `send` bucket: one bucket whatever the transport."""
    if user.role == "bot":
        return settings.bot_send_rate, settings.bot_send_burst
    return settings.send_rate, settings.send_burst


async def reply_of(store: Store, room: RoomView, reply_to: int | None, ref: str) -> ReplyRef | None:
    """The message a send answers (one read, for replies only); `not_found` if absent."""
    if reply_to is None:
        return None
    reply = await store.reply_ref(room.id, reply_to)
    if reply is None:
        raise FrameError(ErrorCode.NOT_FOUND, f"no message {reply_to} in this room", ref)
    return reply


def submit(writer: MessageWriter, message: NewMessage, done: Done) -> None:
    """Hand a checked message to the writer; `overloaded` when its queue is full."""
    try:
        writer.submit(message, done)
    except WriterFull:
        raise FrameError(
            ErrorCode.OVERLOADED,
            "the server is busy: nothing was stored",
            message.ref,
            WRITER_FULL_RETRY,
        ) from None


def refusal(result: Exception, ref: str) -> FrameError:
    """The error a sender is told for a message the writer did not store."""
    if isinstance(result, ReadOnlyRoom):
        return FrameError(ErrorCode.FORBIDDEN, ARCHIVED, ref)
    if isinstance(result, AttachmentRefused):
        return FrameError(ErrorCode.BAD_ATTACHMENT, f"nothing was stored: {result}", ref)
    return FrameError(
        ErrorCode.UNAVAILABLE,
        "the message could not be stored: send it again with the same ref",
        ref,
        UNSTORED_RETRY,
    )
