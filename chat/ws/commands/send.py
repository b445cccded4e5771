"""`send`: checked here, stored by the writer in a batch, acked in order.

The rules, the bucket and the answers are `chat.sending`'s, shared with the REST send;
what is the socket's own is the joined-room check (no read) and the in-flight bound.
"""

from __future__ import annotations

import time
from functools import partial

from chat.monitoring import metrics
from chat.protocol import ErrorCode, FrameError, SendIn, encode
from chat.sending import refusal, reply_of, require_valid_body, send_bucket, submit
from chat.storage.records import NewMessage, Stored
from chat.ws.commands.context import CommandContext

INFLIGHT_WAIT = 2.0  # seconds a send over the in-flight bound waits for acks, then refused


async def send(session: CommandContext, frame: SendIn) -> None:
    arrived = time.perf_counter()
    settings = session.settings
    room = session.writable_room(frame.room, frame.ref)
    require_valid_body(
        frame.body, settings.max_body_chars, frame.ref, with_files=bool(frame.attachments)
    )
    rate, burst = send_bucket(settings, session.user)
    await session.rate_limit("send", rate, burst, frame.ref)
    reply = None
    if frame.reply_to is not None:  # one read, for replies only (no await otherwise)
        reply = await reply_of(session.deps.store, room, frame.reply_to, frame.ref)
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
    submit(session.deps.writer, message, partial(_stored, session, frame.ref, arrived))
    session.sends.add()


def _stored(session: CommandContext, ref: str, arrived: float, result: Stored | Exception) -> None:
    """The writer's answer to one of the session's sends, in the order they came."""
    session.sends.done()
    if isinstance(result, Stored):
        session.conn.push(encode(result.ack))
        metrics.ACK_SECONDS.observe(time.perf_counter() - arrived)
    else:
        error = refusal(result, ref)
        session.error(error.code, error.detail, ref, error.retry_after)
