"""Where a stream connection's frames go: Server-Sent Events in a bounded buffer.

The hub writes frames (JSON text, encoded once per room) exactly as to a socket
(`chat.hub.connection.Sink`); each becomes `event: <type>` and `data: <frame>`,
with `id: <cursor>` when it moves the resume position. The response (`drain`) takes
what is buffered and writes it; `buffered()` counts what the client has not taken,
so a stream that falls behind is closed (4008) like a slow socket, and resumes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from chat.stream.cursor import Cursor, CursorCodec

KEEPALIVE = b": keepalive\n\n"


class EventSink:
    """SSE events waiting for the response to write them (the hub's `Sink`)."""

    def __init__(self, cursor: Cursor, codec: CursorCodec) -> None:
        self.cursor = cursor
        self._codec = codec
        self._out: list[bytes] = []
        self._size = 0  # bytes buffered or being written, not yet taken by the client
        self._ready = asyncio.Event()  # something to write, or a wake-up
        self._below = asyncio.Event()  # the last write went out: look at `_size` again
        self.finished = False  # the close event is queued: nothing more after it

    def write(self, messages: Sequence[bytes]) -> None:
        if self.finished:
            return
        for message in messages:
            frame = json.loads(message)
            send, moved = self.cursor.admit(frame)
            if send:
                self._append(self._event(str(frame.get("type")), message, moved))
        self._ready.set()

    def close(self, code: int, reason: str) -> None:
        """End the stream with a `close` event (`code` as a socket's close code).
        Events not yet written are dropped: the client never saw their ids, so it
        resumes before them."""
        if self.finished:
            return
        self._out.clear()
        self._size = 0
        data = json.dumps({"type": "close", "code": code, "reason": reason}).encode()
        self._append(b"event: close\ndata: " + data + b"\n\n")
        self.finished = True
        self._ready.set()
        self._below.set()

    @property
    def pending(self) -> bool:
        """Events are waiting for the next `take`."""
        return bool(self._out)

    def buffered(self) -> int:
        return self._size

    async def wait_below(self, limit: int) -> None:
        while self._size > limit and not self.finished:
            self._below.clear()
            await self._below.wait()

    def wake(self) -> None:
        self._ready.set()

    async def take(self, timeout: float) -> bytes:
        """What is buffered, once there is something or after a wake-up; a keep-alive
        comment when `timeout` passes with nothing."""
        if not self._out:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return KEEPALIVE
        self._ready.clear()
        out, self._out = self._out, []
        return b"".join(out)

    def written(self, size: int) -> None:
        """`size` bytes of a `take` reached the client's side (the send returned)."""
        self._size = max(0, self._size - size)
        self._below.set()

    def _append(self, event: bytes) -> None:
        self._out.append(event)
        self._size += len(event)

    def _event(self, kind: str, data: bytes, moved: bool) -> bytes:
        head = f"event: {kind}\n"
        if moved:
            head += f"id: {self._codec.encode(self.cursor)}\n"
        return head.encode() + b"data: " + data + b"\n\n"
