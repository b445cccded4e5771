"""One authenticated socket as the hub sees it: its user, rooms and outgoing frames."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from chat.monitoring import metrics
from chat.protocol import CloseCode, UserRef

log = logging.getLogger(__name__)
_ids = itertools.count(1)

Close = Callable[[int, str], Awaitable[None]]


class Sink(Protocol):
    """Where a connection's frames go: the socket's transport (see `chat.ws.socket`)."""

    def write(self, messages: Sequence[bytes]) -> None:
        """Send whole text messages (UTF-8), in order, without waiting."""

    def buffered(self) -> int:
        """Bytes written and not yet taken by the peer."""

    async def wait_below(self, limit: int) -> None:
        """Return once at most `limit` bytes are buffered, or the socket is gone."""

    def wake(self) -> None:
        """Interrupt the session's wait for the next frame (to halt or close)."""


class Connection:
    """One authenticated socket: its user, joined rooms and what it is about to be sent.

    Frames pushed during one turn of the event loop go out in one write at its
    end: no task, queue or await per connection or per frame. A connection
    whose unsent bytes pass `max_buffer` is too slow and is closed (4008).
    """

    def __init__(
        self, user: UserRef, sink: Sink, close: Close, max_buffer: int, *, held: bool = False
    ) -> None:
        self.id = next(_ids)
        self.user = user
        # Joined rooms; a list buffers live events while the join's replay is sent.
        self.rooms: dict[str, list[tuple[int | None, str]] | None] = {}
        # Per joined room, the highest seq given to this connection: never repeated.
        self.seen: dict[str, int] = {}
        # Joined rooms that refuse writes (archived), kept current by `room` events.
        self.read_only: set[str] = set()
        # Per room, how many `room` events (archived or not) reached this connection:
        # a join knows whether one came after it registered, and is newer than its read.
        self.read_only_events: dict[str, int] = {}
        # Per room, how often the user was removed from it while this connection was
        # open: a join that saw the count change under it was overtaken by a removal.
        self.removals: dict[str, int] = {}
        self.closed = asyncio.Event()
        # Set at shutdown: stop reading after the frame in hand, flush, close.
        self.halt = asyncio.Event()
        self.close_code: int | None = None
        self._sink = sink
        self._close = close
        self._max_buffer = max_buffer
        self._out: list[bytes] = []
        self._flush_soon: asyncio.Handle | None = None
        self._gone = False  # unregistered: nothing more is sent
        self._closer: asyncio.Task[None] | None = None
        # `held`: registered before its `hello` is ready (a socket, a stream), frames
        # published meanwhile wait here, so that nothing reaches the peer before `hello`.
        self._held: list[bytes] | None = [] if held else None

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def push(self, payload: str) -> None:
        """Queue a frame for this turn's write; never waits."""
        self.push_bytes(payload.encode())

    def push_bytes(self, data: bytes) -> None:
        """`push` for a frame encoded once for many connections."""
        if self.closing or self._gone:
            return
        if self._held is not None:
            self._held.append(data)
            return
        self._out.append(data)
        if self._flush_soon is None:
            self._flush_soon = asyncio.get_running_loop().call_soon(self._flush)

    def greet(self, hello: str) -> None:
        """Send `hello` first, then what was published to a `held` connection meanwhile."""
        held, self._held = self._held or [], None
        self.push(hello)
        for data in held:
            self.push_bytes(data)

    def claim(self, room: str, seq: int) -> bool:
        """Record that `seq` of `room` goes to this connection; False if it went already."""
        if seq <= self.seen.get(room, 0):
            metrics.REPEATS_DROPPED.inc()
            return False
        self.seen[room] = seq
        return True

    def push_seq(self, room: str, seq: int, data: bytes) -> None:
        """Queue a room message unless this connection was given that seq already."""
        if self.claim(room, seq):
            self.push_bytes(data)

    async def put(self, payload: str) -> None:
        """Send a frame now, then wait while the peer is behind (never used by fan-out).

        For long answers to this connection's own request (a join's replay):
        they wait for the socket instead of tripping the slow-consumer close,
        keeping half of the buffer free for live frames meanwhile.
        """
        if self.closing or self._gone:
            return
        self._out.append(payload.encode())
        self._flush(check=False)
        if self._sink.buffered() > self._max_buffer // 2:
            await self._sink.wait_below(self._max_buffer // 2)

    def stop_reading(self) -> None:
        """Shutting down: the session finishes the frame in hand, flushes and closes."""
        self.halt.set()
        self._sink.wake()

    def abort(self, code: int, reason: str, *, flush: bool = False) -> None:
        """Close the socket with `code` soon; frames not yet written are dropped
        unless `flush` (they then go out before the close frame)."""
        if self.closing:
            return
        if flush:
            self._flush(check=False)
        self.close_code = code
        self._out.clear()
        self._sink.wake()
        self._closer = asyncio.create_task(
            self._do_close(code, reason), name=f"conn-{self.id}-close"
        )

    async def drain_and_close(self, code: int, reason: str, timeout: float) -> None:
        """Write what is queued, wait (up to `timeout`) for the peer to take it, close."""
        if self.closing:
            return
        self._flush(check=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._sink.wait_below(0), timeout)
        self.abort(code, reason)
        await self.closed.wait()

    def discard(self) -> None:
        """The session is over: drop what is queued and send nothing more."""
        self._gone = True
        self._out.clear()

    async def _do_close(self, code: int, reason: str) -> None:
        try:
            await self._close(code, reason)
        except Exception as exc:  # the socket may already be gone
            log.debug("closing connection %s failed: %r", self.id, exc)
        finally:
            self.closed.set()

    def _flush(self, check: bool = True) -> None:
        self._flush_soon = None
        if not self._out or self.closing or self._gone:
            return
        out, self._out = self._out, []
        try:
            self._sink.write(out)
        except Exception as exc:
            log.debug("writing to connection %s failed: %r", self.id, exc)
            self.abort(CloseCode.GOING_AWAY, "send failed")
            return
        metrics.FRAMES_OUT.inc(len(out))
        if check and self._sink.buffered() > self._max_buffer:
            metrics.SLOW_CONSUMERS.inc()
            self.abort(CloseCode.SLOW_CONSUMER, "too slow: reconnect and resume with since")
