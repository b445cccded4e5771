"""One event stream's life: a hub connection whose sink is the HTTP response.

The stream is a `Connection` like a socket's, so fan-out, presence, removal,
revocation (`close` on `user:<id>`), the slow-consumer bound and the drain treat
it the same. It opens with `hello`, then the notifications after the cursor's,
then each room as a socket's `join ... since` (`chat.ws.commands.rooms.attach`)
followed by a `changes_checked` that ends the room's resend, then live events.
It ends with a `close` event whose `code` is the socket's close code.

A response of our own rather than sse-starlette's `EventSourceResponse`: the hub
writes to a synchronous `Sink` and measures it (`buffered`, `wait_below`), which is
ours to write either way, and sse-starlette's own pings and shutdown watching would
duplicate the keep-alive and the hub's drain. What is left is one loop that writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chat.auth.accounts import Principal
from chat.hub import Connection
from chat.protocol import ChangesCheckedFrame, CloseCode, encode
from chat.storage.records import RoomView
from chat.stream.cursor import Cursor, CursorCodec
from chat.stream.sink import KEEPALIVE, EventSink
from chat.ws.commands.rooms import attach
from chat.ws.deps import WsDeps
from chat.ws.session import expiry_watch, hello, still_valid

log = logging.getLogger(__name__)

NOTES_PAGE = 200  # notifications read per query when resuming
CLOSE_WAIT = 5.0  # seconds a closed stream's last events have to reach the client


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What was checked before the stream started: who, which rooms, from where."""

    principal: Principal
    rooms: list[RoomView]
    cursor: Cursor
    resumed: bool  # a cursor was given: replay what came after it


class EventStreamResponse(Response):
    """`text/event-stream` from a hub connection until it closes or the client goes."""

    media_type = "text/event-stream"

    def __init__(self, deps: WsDeps, codec: CursorCodec, request: StreamRequest) -> None:
        # As `StreamingResponse` does: no body, so no Content-Length.
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._deps = deps
        self._request = request
        self._sink = EventSink(request.cursor, codec)
        self._conn = Connection(
            request.principal.user,
            self._sink,
            self._close,
            deps.settings.outbound_buffer_bytes,
            held=True,
        )

    @property
    def conn_id(self) -> int:
        """The stream's connection id, as the per-user connection count knows it."""
        return self._conn.id

    async def _close(self, code: int, reason: str) -> None:
        self._sink.close(code, reason)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        deps, sink, principal, conn = self._deps, self._sink, self._request.principal, self._conn
        gone = asyncio.create_task(_disconnected(receive, sink))
        opening: asyncio.Task[None] | None = None
        pump: asyncio.Task[None] | None = None
        expiry = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await deps.hub.register(conn)
            expiry = expiry_watch(conn, principal.claims)
            opening = asyncio.create_task(self._open(conn))
            pump = asyncio.create_task(self._pump(conn, send, gone))
            closed = asyncio.create_task(conn.closed.wait())
            await asyncio.wait({pump, closed}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if not pump.done():
                # Closed (revoked, too slow, drained): the `close` event goes behind what
                # the client has not taken; a client that takes nothing is dropped.
                await asyncio.wait({pump}, timeout=CLOSE_WAIT)
            if pump.done():
                pump.result()  # a failure of the writing loop is the server's to log
        finally:
            for task in (gone, opening, pump):
                if task is not None:
                    task.cancel()
            if expiry is not None:
                expiry.cancel()
            await deps.hub.unregister(conn)
            await deps.connections.release(principal.user.id, conn.id)

    async def _open(self, conn: Connection) -> None:
        """`hello`, the notifications missed, then each room with its replay."""
        deps, request = self._deps, self._request
        try:
            # A revocation published before the registration found nothing to close.
            if not await still_valid(deps.store, request.principal.claims):
                conn.abort(CloseCode.REVOKED, "token revoked")
                return
            greeting = await hello(deps, request.principal)
            if not request.resumed:  # a new stream starts at the inbox's newest
                request.cursor.note = max(request.cursor.note, greeting.last_notification_id)
            conn.greet(encode(greeting))
            await deps.greet(conn)  # active tasks' state (admins), as on a socket
            if request.resumed:
                await self._notifications(conn, request.cursor.note)
            for room in request.rooms:
                await self._join(conn, room)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("opening an event stream failed")
            conn.abort(CloseCode.INTERNAL, "internal error: reconnect with Last-Event-ID")

    async def _notifications(self, conn: Connection, after: int) -> None:
        user_id = self._request.principal.user.id
        while not conn.closing:
            page, _ = await self._deps.store.notifications_after(user_id, after, NOTES_PAGE)
            for note in page:
                await conn.put(encode(note))
            if len(page) < NOTES_PAGE:
                return
            after = page[-1].id

    async def _join(self, conn: Connection, room: RoomView) -> None:
        deps = self._deps
        position = self._request.cursor.rooms.get(room.name)
        since = position.seq if position is not None else None
        changes_after = position.checked if position is not None else None
        while not conn.closing:
            removals = conn.removals.get(room.name, 0)
            joined = await attach(deps, conn, room, since, changes_after, None, removals)
            if joined is not None:
                if room.name in conn.rooms:
                    # Every change up to the join's version was replayed, resent or is
                    # in the messages' state: the room's changes position.
                    checked = ChangesCheckedFrame(room=room.name, version=joined.changes_version)
                    await conn.put(encode(checked))
                return
            # Removed meanwhile: a room still readable (public) is joined afresh.
            fresh = await deps.store.room_for(room.name, conn.user)
            if fresh is None:
                return
            room = fresh

    async def _pump(self, conn: Connection, send: Send, gone: asyncio.Task[None]) -> None:
        """Write what the sink holds until the stream is closed or the client is gone;
        a keep-alive comment after each quiet `stream_keepalive_interval`."""
        settings, sink = self._deps.settings, self._sink
        drain: asyncio.Task[None] | None = None
        try:
            while not gone.done() and not (sink.finished and not sink.pending):
                if conn.halt.is_set() and drain is None:
                    # Shutting down: flush, then `close` 1001; the client resumes elsewhere.
                    drain = asyncio.create_task(
                        conn.drain_and_close(
                            CloseCode.GOING_AWAY, "server shutting down", settings.drain_timeout
                        )
                    )
                chunk = await sink.take(settings.stream_keepalive_interval)
                if not chunk:
                    continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if chunk is not KEEPALIVE:
                    sink.written(len(chunk))
            if not gone.done():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away mid-write
            return
        finally:
            if drain is not None:
                drain.cancel()


async def _disconnected(receive: Receive, sink: EventSink) -> None:
    """Return once the client has gone, waking the pump up."""
    with contextlib.suppress(Exception):
        while (await receive())["type"] != "http.disconnect":
            pass
    sink.wake()
