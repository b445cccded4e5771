"""A small raw Server-Sent Events reader over httpx streaming, for the stream's tests:
it sees exactly what a browser's `EventSource` would (events, ids, comments)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    event: str
    data: dict[str, Any]
    id: str | None


class SseReader:
    """Reads one open stream event by event; counts keep-alive comments."""

    def __init__(self, response: httpx.Response, *, paused: bool = False) -> None:
        self.response = response
        self.comments: list[str] = []
        self.seen: list[Event] = []  # every event handed out, `until` skips included
        self.ended = False
        # Read by a task of its own: a timed-out wait must not cancel the line iterator
        # (that would close the stream under the test).
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        if not paused:
            self.resume()

    def resume(self) -> None:
        """Start reading (a reader opened `paused` leaves everything in the socket)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def next(self, timeout: float = 5.0) -> Event:
        """The next event; `EOFError` when the server ended the stream."""
        if self.ended and self._events.empty():
            raise EOFError("the server ended the stream")
        event = await asyncio.wait_for(self._events.get(), timeout)
        if event is None:
            self.ended = True
            raise EOFError("the server ended the stream")
        self.seen.append(event)
        return event

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        kind, data, event_id = "message", list[str](), None
        try:
            async for line in self.response.aiter_lines():
                if not line:
                    if data:
                        await self._events.put(Event(kind, json.loads("\n".join(data)), event_id))
                    kind, data, event_id = "message", [], None
                elif line.startswith(":"):
                    self.comments.append(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        kind = value
                    elif name == "data":
                        data.append(value)
                    elif name == "id":
                        event_id = value
        except httpx.HTTPError:
            pass
        finally:
            self._events.put_nowait(None)

    async def until(self, kind: str, timeout: float = 5.0, **match: Any) -> Event:
        """Skip events until one of `kind` (with the given data fields) arrives."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no {kind} event matching {match}")
            event = await self.next(left)
            if event.event == kind and all(event.data.get(k) == v for k, v in match.items()):
                return event

    async def drain(self, quiet: float = 0.5) -> list[Event]:
        """Every event until none comes for `quiet` seconds (or the stream ends)."""
        out = []
        while True:
            try:
                out.append(await self.next(quiet))
            except (TimeoutError, EOFError):
                return out


@asynccontextmanager
async def open_stream(
    base_url: str,
    rooms: list[str],
    token: str | None = None,
    *,
    last_event_id: str | None = None,
    in_query: bool = False,
    ticket: str | None = None,
    verify: ssl.SSLContext | bool = True,
    paused: bool = False,
    watch: str | None = None,
) -> AsyncIterator[SseReader]:
    """`GET /api/stream` on `base_url`; the reader of its events (any status: the test
    looks at `reader.response.status_code`). `paused`: read nothing until `resume()`
    (the server meets a stalled client once the kernel's buffers are full). `verify`:
    for an `https://` base."""
    headers = {"Accept": "text/event-stream"}
    params = {"rooms": ",".join(rooms)}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if ticket is not None:
        params["ticket"] = ticket
    if watch is not None:
        params["watch"] = watch
    if last_event_id is not None:
        if in_query:
            params["last_event_id"] = last_event_id
        else:
            headers["Last-Event-ID"] = last_event_id
    timeout = httpx.Timeout(10.0, read=None)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=timeout, verify=verify) as client,
        client.stream("GET", "/api/stream", params=params, headers=headers) as response,
    ):
        if response.status_code != 200:
            await response.aread()
        reader = SseReader(response, paused=paused)
        try:
            yield reader
        finally:
            await reader.close()


def last_id(events: list[Event]) -> str | None:
    """The `id` a browser would resume from after these events."""
    ids = [e.id for e in events if e.id is not None]
    return ids[-1] if ids else None
