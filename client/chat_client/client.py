"""A client for the chat hub's WebSocket protocol, for bots and scripts.

```python
async with ChatClient("ws://127.0.0.1:8000/ws", token=TOKEN) as client:
    await client.join("general")
    async for event in client:
        if isinstance(event, MessageFrame) and event.user.id != client.user.id:
            await client.send(event.room, f"echo: {event.body}")
```

The client keeps one connection open and replaces it by itself when it drops:
it reconnects with jittered exponential backoff, asks the token provider for a
fresh token, rejoins its rooms with `since` set to the last `seq` it delivered
per room, and delivers the missed messages before new ones, never the same
(room, seq) twice. `send` gives every message a `ref` and retransmits it with
the same `ref` until it is acknowledged, so a message is stored exactly once.
Errors that retrying cannot fix (a bad or revoked token) end the client with a
typed exception instead.

This module is the public API and the supervision of the connection (the state
they share: rooms, last seqs, pending sends, waiters); opening one connection and
the backoff policy are in `connection.py`, paging history in `history.py`, the
errors in `errors.py`. It needs only `websockets`, `httpx` and `pydantic`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, TypeAlias

from pydantic import BaseModel, ValidationError
from websockets.exceptions import ConnectionClosed

from chat_client.connection import (
    Backoff,
    Connection,
    describe_close,
    http_base_url,
    open_connection,
    ws_url,
)
from chat_client.errors import (
    AuthenticationError,
    ChatClientError,
    ClientClosedError,
    ConnectionFailedError,
    DisconnectedError,
    FrameTooLargeError,
    RequestError,
    short,
)
from chat_client.history import PAGE, History, HistoryError
from chat_client.protocol import (
    AckFrame,
    AlertFrame,
    AuthIn,
    CloseCode,
    ErrorCode,
    ErrorFrame,
    HelloFrame,
    JoinedFrame,
    JoinIn,
    LeaveIn,
    LeftFrame,
    MessageFrame,
    PingIn,
    PongFrame,
    PresenceFrame,
    ReauthedFrame,
    SendIn,
    ServerFrame,
    TaskFrame,
    TypingFrame,
    TypingIn,
    UserRef,
    parse_server_frame,
)

__all__ = ["ChatClient", "Event", "TokenProvider"]

log = logging.getLogger(__name__)

Event: TypeAlias = MessageFrame | PresenceFrame | TypingFrame | TaskFrame | AlertFrame | ErrorFrame
"""What iterating a `ChatClient` yields. `ErrorFrame`s are the ones no call of yours awaits."""

TokenProvider: TypeAlias = Callable[[], str | Awaitable[str]]
"""A callable (plain or async) returning a currently valid access token."""

RETRY_LATER: Final = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.OVERLOADED, ErrorCode.UNAVAILABLE}
)
"""`error` codes after which a send is retransmitted with its ref (nothing was stored)."""
_INTERNAL_RETRIES: Final = 3  # `internal` errors a send is retried through
_STABLE_AFTER: Final = 5.0  # seconds a connection must last to reset the backoff


class _ResyncNeeded(Exception):
    """A gap in a room's messages could not be paged over HTTP: reconnect and resume."""


def _new_ref(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def _encode(frame: BaseModel) -> str:
    return frame.model_dump_json(exclude_none=True)


@dataclass(eq=False)
class _PendingSend:
    frame: SendIn
    data: str
    future: asyncio.Future[AckFrame]
    generation: int = -1  # the connection it was last transmitted on
    internal_errors: int = 0


# --- the client ----------------------------------------------------------------


class ChatClient:
    """One resilient connection to the hub, as an async context manager and event stream.

    Give either `token` (a fixed access token) or `token_provider` (a callable,
    plain or async, returning a valid token; called before every connection and
    before the token in use expires). `url` is the WebSocket URL, for example
    `ws://127.0.0.1:8000/ws`; message history is paged from the HTTP server at
    the same address.

    `max_connect_attempts` bounds consecutive failed connection attempts before
    `ConnectionFailedError` (None: retry forever). Backoff between attempts is
    exponential from `backoff_initial` to `backoff_max` seconds, with jitter.
    `ping_interval`/`ping_timeout` drive WebSocket keepalive pings that notice a
    dead connection. `request_timeout` bounds waiting for the reply to `join`,
    `leave`, `ping` and `reauthenticate`.

    Received events are buffered in memory until you iterate the client.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        max_connect_attempts: int | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float = 10.0,
        request_timeout: float = 30.0,
        http_timeout: float = 10.0,
    ) -> None:
        if (token is None) == (token_provider is None):
            raise ValueError("give exactly one of token= and token_provider=")
        if max_connect_attempts is not None and max_connect_attempts < 1:
            raise ValueError("max_connect_attempts must be at least 1 (or None)")
        self.url = ws_url(url)
        self.http_url = http_base_url(self.url)
        self._token = token
        self._token_provider = token_provider
        self._max_connect_attempts = max_connect_attempts
        self._backoff = Backoff(backoff_initial, max(backoff_max, backoff_initial))
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._open_timeout = open_timeout
        self._request_timeout = request_timeout

        self._conn: Connection | None = None
        self._generation = 0
        self._hello: HelloFrame | None = None
        self._rooms: dict[str, None] = {}  # rooms to be in, in join order
        self._last_seq: dict[str, int | None] = {}  # None: take `joined.last_seq`
        self._pending: dict[str, _PendingSend] = {}
        self._requests: dict[str, asyncio.Future[ServerFrame]] = {}
        self._join_refs: dict[str, str] = {}  # ref of a join frame -> room
        self._join_waiters: dict[str, list[asyncio.Future[JoinedFrame]]] = {}
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._paused_until = 0.0  # monotonic time before which sends wait (rate limit)
        self._background: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._first_connect: asyncio.Future[None] | None = None
        self._history = History(self.http_url, timeout=http_timeout)
        self._failure: BaseException | None = None
        self._closed = False
        self._reconnects = 0

    # --- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> ChatClient:
        """Connect (see `connect`) and return the client."""
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client (see `close`)."""
        await self.close()

    async def connect(self) -> None:
        """Open the first connection and wait for the server's `hello`.

        Raises `AuthenticationError` if the token is refused and
        `ConnectionFailedError` if `max_connect_attempts` attempts all failed.
        Later connections are made in the background as needed.
        """
        if self._closed:
            raise ClientClosedError("the client is closed")
        if self._supervisor is not None:
            raise RuntimeError("connect() was already called")
        loop = asyncio.get_running_loop()
        self._first_connect = loop.create_future()
        self._supervisor = asyncio.create_task(self._supervise(), name="chat-client")
        try:
            await self._first_connect
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and stop reconnecting. Safe to call more than once.

        Sends that were not acknowledged yet fail with `ClientClosedError`;
        iteration ends after the events already received.
        """
        if self._closed:
            return
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._failure is None:
            self._fail_all(ClientClosedError("the client was closed"))
            self._events.put_nowait(None)
        await self._history.aclose()

    # --- state -----------------------------------------------------------------

    @property
    def hello(self) -> HelloFrame:
        """The server's `hello` on the current (or last) connection."""
        if self._hello is None:
            raise ClientClosedError("not connected yet: use `async with` or connect()")
        return self._hello

    @property
    def user(self) -> UserRef:
        """Who the token belongs to (`id`, `name`, `role`)."""
        return self.hello.user

    @property
    def connected(self) -> bool:
        """True while a connection is open and its rooms are rejoined."""
        return self._conn is not None and self._conn.ready

    @property
    def reconnects(self) -> int:
        """How many times the client connected again after the first connection."""
        return self._reconnects

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms this client is in (and rejoins after reconnecting)."""
        return tuple(self._rooms)

    @property
    def last_seq(self) -> Mapping[str, int]:
        """Per room, the `seq` of the last message received (a copy).

        Messages up to it are delivered by iteration, or waiting to be. To resume
        a later run with `join(room, since=...)`, save the `seq` of the last
        message you handled instead.
        """
        return {room: seq for room, seq in self._last_seq.items() if seq is not None}

    # --- requests --------------------------------------------------------------

    async def join(self, room: str, since: int | None = None) -> JoinedFrame:
        """Join `room` and return the server's `joined` reply.

        With `since`, every stored message with a greater `seq` is delivered
        (by iterating the client) before any new one. The room is rejoined after
        every reconnect, resuming after the last message delivered. Raises
        `RequestError` (for example `forbidden`, `not_found`) and `TimeoutError`.
        """
        self._check_open()
        if since is not None:
            self._last_seq[room] = since
        else:
            self._last_seq.setdefault(room, None)
        self._rooms[room] = None
        waiter: asyncio.Future[JoinedFrame] = asyncio.get_running_loop().create_future()
        self._join_waiters.setdefault(room, []).append(waiter)
        conn = self._conn
        if conn is not None and conn.ready:
            await self._send_join(conn, room)
        # Otherwise the connection being set up joins it.
        async with asyncio.timeout(self._request_timeout):
            return await waiter

    async def leave(self, room: str) -> None:
        """Leave `room`: no more events from it, and it is not rejoined."""
        self._check_open()
        self._rooms.pop(room, None)
        self._last_seq.pop(room, None)
        for waiter in self._join_waiters.pop(room, []):
            if not waiter.done():
                waiter.set_exception(ClientClosedError(f"left {room!r} while joining"))
        conn = self._conn
        if conn is None or room not in conn.joins_sent:
            return
        conn.joins_sent.discard(room)
        with contextlib.suppress(DisconnectedError, RequestError):
            await self._request(conn, LeaveIn(type="leave", room=room, ref=_new_ref("l-")))

    async def send(self, room: str, body: str, *, ref: str | None = None) -> AckFrame:
        """Send `body` to `room` and return the server's `ack` once it is stored.

        The frame is retransmitted with the same `ref` after reconnects and after
        `rate_limited`, `overloaded` and `unavailable` refusals (waiting
        `retry_after`) until it is acknowledged;
        the server stores one message per `ref`. Pass your own `ref` (at most 64
        characters) to stay idempotent across processes. Raises `RequestError` when
        refused for good (for example `not_joined`, `too_large`), `FrameTooLargeError`,
        and the client's terminal error if it ends first. Cancel the call (for
        example with `asyncio.timeout`) to stop retrying.
        """
        self._check_open()
        frame = SendIn(type="send", room=room, body=body, ref=ref or _new_ref(""))
        data = _encode(frame)
        self._check_size(data)
        if frame.ref in self._pending:
            raise ValueError(f"a send with ref {frame.ref!r} is already in flight")
        future: asyncio.Future[AckFrame] = asyncio.get_running_loop().create_future()
        pending = _PendingSend(frame, data, future)
        self._pending[frame.ref] = pending
        try:
            conn = self._conn
            if conn is not None and conn.ready:
                await self._transmit(conn, pending)
            return await future
        finally:
            self._pending.pop(frame.ref, None)

    async def typing(self, room: str) -> None:
        """Tell the room's other members that this user is typing (best effort)."""
        self._check_open()
        conn = self._conn
        if conn is None or not conn.ready:
            return
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(_encode(TypingIn(type="typing", room=room, ref=_new_ref("t-"))))

    async def ping(self) -> PongFrame:
        """Round-trip a `ping` frame and return the `pong`.

        Raises `DisconnectedError` when not connected and `TimeoutError`.
        """
        self._check_open()
        conn = self._conn
        if conn is None or not conn.ready:
            raise DisconnectedError("not connected")
        reply = await self._request(conn, PingIn(type="ping", ref=_new_ref("p-")))
        assert isinstance(reply, PongFrame)
        return reply

    async def reauthenticate(self, token: str | None = None) -> ReauthedFrame:
        """Extend the open connection with a fresh token (an `auth` frame).

        Without `token`, asks the token provider. Happens by itself shortly
        before the token expires when the client has a token provider.
        """
        self._check_open()
        token = token if token is not None else await self._fresh_token()
        conn = self._conn
        if conn is None or not conn.ready:
            raise DisconnectedError("not connected")
        reply = await self._request(conn, AuthIn(type="auth", token=token, ref=_new_ref("a-")))
        assert isinstance(reply, ReauthedFrame)
        self._token = token
        conn.token = token
        return reply

    # --- events ----------------------------------------------------------------

    def __aiter__(self) -> ChatClient:
        """Iterate the events: messages, presence, typing, tasks, alerts, errors."""
        return self

    async def __anext__(self) -> Event:
        """The next event. Ends when the client is closed; raises its terminal error."""
        event = await self._events.get()
        if event is None:
            self._events.put_nowait(None)  # keep ending for later calls
            if self._failure is not None:
                raise self._failure
            raise StopAsyncIteration
        return event

    # --- connection management -------------------------------------------------

    async def _supervise(self) -> None:
        failures = 0  # consecutive failed connection attempts
        unstable = 0  # consecutive connections that ended quickly
        delay = 0.0
        try:
            while True:
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    conn = await self._open()
                except (AuthenticationError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    failures += 1
                    log.info("connection attempt %d failed: %s", failures, short(exc))
                    limit = self._max_connect_attempts
                    if limit is not None and failures >= limit:
                        raise ConnectionFailedError(
                            f"cannot connect to {self.url}: {short(exc)}"
                        ) from exc
                    delay = self._backoff.after_failure(failures, exc)
                    continue
                failures = 0
                started = time.monotonic()
                code, reason = await self._serve(conn)
                lasted = time.monotonic() - started
                unstable = 0 if lasted >= _STABLE_AFTER else unstable + 1
                log.info("disconnected: %s", describe_close(code, reason))
                delay = self._backoff.after_close(code, reason, unstable)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc)

    async def _fresh_token(self) -> str:
        if self._token_provider is None:
            assert self._token is not None
            return self._token
        value = self._token_provider()
        token = await value if inspect.isawaitable(value) else value
        if not isinstance(token, str) or not token:
            raise TypeError("the token provider must return a non-empty string")
        return token

    async def _open(self) -> Connection:
        """Open a connection with a fresh token (see `open_connection`)."""
        token = await self._fresh_token()
        ws, hello = await open_connection(
            self.url,
            token,
            open_timeout=self._open_timeout,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
        )
        self._generation += 1
        self._hello = hello
        return Connection(ws=ws, generation=self._generation, token=token, hello=hello)

    async def _serve(self, conn: Connection) -> tuple[int | None, str | None]:
        """Run one connection until it ends; returns its close code and reason."""
        self._conn = conn
        helpers: list[asyncio.Task[None]] = []
        try:
            first = self._first_connect is not None and not self._first_connect.done()
            if not first:
                # Counted before the rejoin: its replay may hand the caller every message
                # it waits for before the rejoin itself returns.
                self._reconnects += 1
            await self._rejoin(conn)
            conn.ready = True
            if first and self._first_connect is not None:
                self._first_connect.set_result(None)
            helpers.append(asyncio.create_task(self._retransmit(conn)))
            helpers.append(asyncio.create_task(self._refresh_before_expiry(conn)))
            try:
                async for raw in conn.ws:
                    await self._dispatch(conn, raw)
            except ConnectionClosed:
                pass
            except _ResyncNeeded as exc:
                log.warning("resyncing: %s", exc)
                await conn.ws.close(CloseCode.NORMAL, "resync")
                return None, "resync"
            return conn.ws.close_code, conn.ws.close_reason
        finally:
            self._conn = None
            conn.ready = False
            for task in helpers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await conn.ws.close()
            self._join_refs.clear()
            for future in self._requests.values():
                if not future.done():
                    future.set_exception(DisconnectedError("the connection dropped"))
            self._requests.clear()

    async def _rejoin(self, conn: Connection) -> None:
        """Send a join for every room, with `since` the last seq delivered there.

        The server handles a connection's frames in order, so anything sent after
        these joins (such as retransmitted sends) finds the rooms joined.
        """
        while todo := [room for room in self._rooms if room not in conn.joins_sent]:
            for room in todo:
                await self._send_join(conn, room)

    async def _retransmit(self, conn: Connection) -> None:
        """Send again, with their refs, the sends not acknowledged on an earlier connection."""
        for pending in list(self._pending.values()):
            if pending.generation != conn.generation:
                await self._transmit(conn, pending)

    async def _refresh_before_expiry(self, conn: Connection) -> None:
        """With a token provider, send a fresh token before the current one expires."""
        if self._token_provider is None:
            return
        expires_at = conn.hello.expires_at
        while expires_at is not None:
            remaining = _parse_time(expires_at) - time.time()
            # Refresh a minute early, or half-way for short-lived tokens.
            await asyncio.sleep(max(0.5, remaining - min(60.0, remaining / 2)))
            while not conn.ready:
                await asyncio.sleep(0.5)
            try:
                reply = await self.reauthenticate()
            except (ChatClientError, TimeoutError, TypeError) as exc:
                log.warning("could not refresh the token: %s", short(exc))
                return
            expires_at = reply.expires_at

    async def _send_join(self, conn: Connection, room: str) -> None:
        conn.joins_sent.add(room)
        ref = _new_ref("j-")
        self._join_refs[ref] = room
        frame = JoinIn(type="join", room=room, since=self._last_seq.get(room), ref=ref)
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(_encode(frame))

    async def _request(self, conn: Connection, frame: BaseModel) -> ServerFrame:
        ref = getattr(frame, "ref", None)
        assert isinstance(ref, str)
        future: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        self._requests[ref] = future
        try:
            try:
                await conn.ws.send(_encode(frame))
            except ConnectionClosed:
                raise DisconnectedError("the connection dropped") from None
            async with asyncio.timeout(self._request_timeout):
                return await future
        finally:
            self._requests.pop(ref, None)

    async def _transmit(self, conn: Connection, pending: _PendingSend) -> None:
        pending.generation = conn.generation
        while (wait := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if pending.future.done() or self._conn is not conn:
            return
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(pending.data)

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise ClientClosedError("the client is closed")
        if self._supervisor is None:
            raise ClientClosedError("not connected yet: use `async with` or connect()")

    def _check_size(self, data: str) -> None:
        limit = self._hello.limits.get("max_frame_bytes") if self._hello else None
        size = len(data.encode())
        if limit is not None and size > limit:
            raise FrameTooLargeError(f"the frame is {size} bytes; the server takes {limit:.0f}")

    # --- incoming frames -------------------------------------------------------

    async def _dispatch(self, conn: Connection, raw: str | bytes) -> None:
        try:
            frame = parse_server_frame(raw)
        except ValidationError:
            log.warning("ignoring a frame this client does not understand: %.200r", raw)
            return
        match frame:
            case MessageFrame():
                await self._on_message(frame)
            case AckFrame():
                pending = self._pending.get(frame.ref)
                if pending is not None and not pending.future.done():
                    pending.future.set_result(frame)
            case JoinedFrame():
                await self._on_joined(frame)
            case ErrorFrame():
                self._on_error(conn, frame)
            case PresenceFrame() | TypingFrame() | TaskFrame() | AlertFrame():
                self._events.put_nowait(frame)
            case LeftFrame() | PongFrame() | ReauthedFrame():
                future = self._requests.get(frame.ref) if frame.ref else None
                if future is not None and not future.done():
                    future.set_result(frame)
            case HelloFrame():
                self._hello = conn.hello = frame

    async def _on_joined(self, frame: JoinedFrame) -> None:
        room = frame.room
        if frame.ref is not None:
            room = self._join_refs.pop(frame.ref, room)
        if room in self._rooms:
            last = self._last_seq.get(room)
            if last is None:
                self._last_seq[room] = frame.last_seq
            elif frame.last_seq < last:
                log.warning(
                    "room %r restarted its seq (%d < %d); following it", room, frame.last_seq, last
                )
                self._last_seq[room] = frame.last_seq
            elif frame.replay_truncated:
                await self._fill(room, frame.last_seq + 1)
        for waiter in self._join_waiters.pop(room, []):
            if not waiter.done():
                waiter.set_result(frame)

    async def _on_message(self, frame: MessageFrame) -> None:
        room = frame.room
        if room not in self._rooms:
            return  # left meanwhile
        last = self._last_seq.get(room)
        if last is not None:
            if frame.seq <= last:
                return  # already delivered
            if frame.seq > last + 1:
                await self._fill(room, frame.seq)
                last = self._last_seq.get(room)
                if last is not None and frame.seq <= last:
                    return
        self._last_seq[room] = frame.seq
        self._events.put_nowait(frame)

    async def _fill(self, room: str, before: int) -> None:
        """Deliver the stored messages of `room` after its last seq and before `before`."""
        after = self._last_seq.get(room)
        while after is not None and after + 1 < before:
            conn = self._conn
            token = conn.token if conn is not None else await self._fresh_token()
            try:
                items = await self._history.after(room, after, token)
            except HistoryError as exc:
                raise _ResyncNeeded(f"cannot page {room!r} after {after}: {exc}") from exc
            for item in items:
                if after < item.seq < before:
                    self._events.put_nowait(item)
                    self._last_seq[room] = after = item.seq
            if len(items) < PAGE or items[-1].seq >= before - 1:
                return
            after = max(after, items[-1].seq)

    def _on_error(self, conn: Connection, frame: ErrorFrame) -> None:
        ref = frame.ref
        if ref is not None and (pending := self._pending.get(ref)) is not None:
            if frame.code in RETRY_LATER:  # nothing stored: the same ref again, later
                delay = frame.retry_after if frame.retry_after is not None else 1.0
                self._paused_until = max(self._paused_until, time.monotonic() + delay)
                self._retransmit_later(conn, pending, 0.0)
            elif frame.code == ErrorCode.INTERNAL and pending.internal_errors < _INTERNAL_RETRIES:
                # Nothing was stored (say, a database hiccup while the server stops).
                pending.internal_errors += 1
                delay = self._backoff.delay(pending.internal_errors)
                self._retransmit_later(conn, pending, delay)
            elif not pending.future.done():
                pending.future.set_exception(RequestError(frame))
            return
        if ref is not None and (room := self._join_refs.pop(ref, None)) is not None:
            if frame.code == ErrorCode.RATE_LIMITED and room in self._rooms:
                # Not refused for good (many rooms rejoined at once): join again later.
                delay = frame.retry_after if frame.retry_after is not None else 1.0
                self._rejoin_later(conn, room, delay)
                return
            self._rooms.pop(room, None)
            self._last_seq.pop(room, None)
            waiters = [w for w in self._join_waiters.pop(room, []) if not w.done()]
            for waiter in waiters:
                waiter.set_exception(RequestError(frame))
            if not waiters:
                self._events.put_nowait(frame)
            return
        if ref is not None and (future := self._requests.get(ref)) is not None:
            if not future.done():
                future.set_exception(RequestError(frame))
            return
        if ref is not None and ref.startswith("t-"):
            return  # typing is best effort
        self._events.put_nowait(frame)

    # --- ending ----------------------------------------------------------------

    def _retransmit_later(self, conn: Connection, pending: _PendingSend, delay: float) -> None:
        pending.generation = -1  # a reconnect meanwhile retransmits it at once

        async def later() -> None:
            await asyncio.sleep(delay)
            await self._transmit(conn, pending)  # waits out a rate-limit pause

        task = asyncio.create_task(later())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _rejoin_later(self, conn: Connection, room: str, delay: float) -> None:
        conn.joins_sent.discard(room)  # a reconnect meanwhile rejoins it at once

        async def later() -> None:
            await asyncio.sleep(delay)
            if self._conn is conn and room in self._rooms and room not in conn.joins_sent:
                await self._send_join(conn, room)

        task = asyncio.create_task(later())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _fail(self, exc: BaseException) -> None:
        log.warning("the client stopped: %s", short(exc))
        self._failure = exc
        if self._first_connect is not None and not self._first_connect.done():
            self._first_connect.set_exception(exc)
        self._fail_all(exc)
        self._events.put_nowait(None)

    def _fail_all(self, exc: BaseException) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(exc)
        for waiters in self._join_waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        self._join_waiters.clear()
        for future in self._requests.values():
            if not future.done():
                future.set_exception(exc)


def _parse_time(value: str) -> float:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
