"""The socket under a session: uvicorn's WebSocket protocol with jittered heartbeats,
bounded closes and direct writes.

ASGI has no ping, so heartbeats stay at the WebSocket protocol level, where
browsers and every client library answer them without any code of ours.
`ChatWebSocketProtocol` is uvicorn's sans-I/O protocol with four changes:

- pings are jittered: each is sent after a random 75-100 % of the interval, so
  clients that reconnected together do not ping in lockstep, and a dead peer is
  still found within `heartbeat_interval + heartbeat_timeout`;
- a peer that does not answer a ping is closed with 4002 and dropped at once,
  and the application hears of it immediately (not when TCP gives up);
- a close never waits for a peer that stopped reading: the close frame goes
  behind the data already queued, and the socket is aborted if the peer has not
  finished the closing handshake within `CLOSE_TIMEOUT` (uvicorn's own timer
  calls `transport.close()`, which waits forever for a full buffer to drain);
- at shutdown the close code is 1001 (going away) rather than uvicorn's 1012, so
  a client sees one code whichever path closed it;
- the application writes frames straight to the transport (`SocketSink`, found
  in the scope's extensions): a frame encoded once for a room is framed with a
  two-to-ten-byte header per recipient and written with that recipient's other
  frames of the same loop turn, instead of going through a task, starlette's
  and uvicorn's send wrappers and a compression pass per recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Sequence
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from chat.monitoring import metrics
from chat.protocol import CloseCode

log = logging.getLogger(__name__)

PROTOCOL_CLASS = "chat.ws.socket:ChatWebSocketProtocol"
SINK_EXTENSION = "chat.sink"  # scope["extensions"] key of the connection's SocketSink
SINK_POLL = 0.01  # seconds between looks at a draining buffer below the high-water mark
PING_JITTER = 0.25  # each ping waits a random 75-100 % of the interval
CLOSE_TIMEOUT = 5.0  # seconds a peer has to finish the closing handshake


class ChatWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with jittered pings and bounded closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_timeout = CLOSE_TIMEOUT
        self.lost = asyncio.Event()  # the TCP connection is gone

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()

    def schedule_ping(self) -> None:
        assert self.ping_interval is not None
        delay = self.ping_interval * random.uniform(1.0 - PING_JITTER, 1.0)
        self.ping_timer = self.loop.call_later(
            max(0.0, delay - self.last_ping_rtt), self.send_keepalive_ping
        )

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        metrics.HEARTBEAT_TIMEOUTS.inc()
        log.info("closing %s: no pong within %ss", _peer(self.client), self.ping_timeout)
        reason = "no answer to ping"
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 4002, "reason": reason})
        self.conn.fail(CloseCode.HEARTBEAT_TIMEOUT, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        # The peer did not answer a ping: it will not read a close frame either.
        self.transport.abort()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if not self.close_sent:
            self.scope["extensions"][SINK_EXTENSION] = {"sink": SocketSink(self)}

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            # websockets refused the request itself (a header line over 8 KiB: 431, a
            # request line too long: 414, not HTTP at all: no answer) and queued its
            # answer, but uvicorn only writes answers to requests it saw: send and close.
            log.info("refused a malformed handshake from %s", _peer(self.client))
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.handshake_complete = True
            self.close_sent = True
            self.transport.close()

    def send_receive_event_to_app(self) -> None:
        # As uvicorn's, but invalid UTF-8 is a client's mistake, not a server error:
        # close 1007 with a one-line log instead of logging a traceback.
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            try:
                text = bytes(data).decode()
            except UnicodeDecodeError:
                self.frames = []
                log.info("closing %s: a text frame was not valid UTF-8", _peer(self.client))
                try:
                    self.conn.send_close(1007, "text frames must be valid UTF-8")
                except InvalidState:
                    self.transport.close()
                    return
                self.handle_parser_exception()
                return
            self.frames = []
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
            return
        super().send_receive_event_to_app()

    def shutdown(self) -> None:
        if self._open():
            self.stop_keepalive()
            self._send_close(CloseCode.GOING_AWAY, "server shutting down")
            return
        if self.close_sent and self.transport.get_write_buffer_size():
            # Closing already, behind data the peer does not read: the drain waited
            # for it once, do not let uvicorn wait again (`close()` waits for a flush).
            self.stop_keepalive()
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
            self.transport.abort()
            return
        try:
            super().shutdown()
        except Exception:  # never let one odd connection stop the shutdown of the rest
            log.exception("shutting down a connection failed; dropping it")
            self.transport.abort()

    async def send(self, message: Any) -> None:
        # uvicorn waits for the transport to be writable before a close too,
        # which never happens when the peer stopped reading: close right away.
        if message["type"] == "websocket.close" and self._open():
            try:
                self._send_close(int(message.get("code", 1000)), message.get("reason") or "")
            except InvalidState:
                from uvicorn.protocols.utils import ClientDisconnected

                raise ClientDisconnected() from None
            return
        await super().send(message)

    def _open(self) -> bool:
        return (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
            and not self.transport.is_closing()
        )

    def _send_close(self, code: int, reason: str) -> None:
        self.conn.send_close(code, reason)
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:  # read the peer's close reply
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)


class SocketSink:
    """Writes whole text messages to one connection's transport (the hub's `Sink`)."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: ChatWebSocketProtocol) -> None:
        self._protocol = protocol

    def write(self, messages: Sequence[bytes]) -> None:
        protocol = self._protocol
        if protocol.close_sent or protocol.transport.is_closing():
            return
        if protocol.conn.extensions:  # permessage-deflate was negotiated: websockets frames
            for message in messages:
                protocol.conn.send_text(message)
            protocol.transport.write(b"".join(protocol.conn.data_to_send()))
            return
        parts: list[bytes] = []
        for message in messages:
            parts.append(_text_header(len(message)))
            parts.append(message)
        protocol.transport.write(b"".join(parts))

    async def receive(self) -> dict[str, Any]:
        """The next ASGI event of the socket (resumes reading, as uvicorn's does)."""
        event: dict[str, Any] = await self._protocol.receive()  # type: ignore[assignment]
        return event

    @property
    def lost(self) -> asyncio.Event:
        """Set once the peer's TCP connection is gone."""
        return self._protocol.lost

    def wake(self) -> None:
        self._protocol.queue.put_nowait({"type": "chat.wake"})  # type: ignore[arg-type,misc]

    def buffered(self) -> int:
        transport = self._protocol.transport
        return 0 if transport.is_closing() else transport.get_write_buffer_size()

    async def wait_below(self, limit: int) -> None:
        protocol = self._protocol
        while self.buffered() > limit and not protocol.transport.is_closing():
            if protocol.writable.is_set():  # below the transport's own high-water mark
                await asyncio.sleep(SINK_POLL)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(protocol.writable.wait(), SINK_POLL * 10)


def _text_header(length: int) -> bytes:
    """The header of an unmasked, final text frame (RFC 6455, 5.2): server to client."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


def socket_sink(websocket: Any) -> SocketSink:
    """The sink `ChatWebSocketProtocol` put in the scope of an accepted WebSocket."""
    extension = websocket.scope.get("extensions", {}).get(SINK_EXTENSION)
    if extension is None:
        raise RuntimeError("run the chat server with chat.ws.socket's WebSocket protocol")
    sink: SocketSink = extension["sink"]
    return sink


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
