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
(room, seq) twice; the notifications that came meanwhile are paged over HTTP and
delivered before live ones, each once. `send` gives every message a `ref` and
retransmits it with the same `ref` until it is acknowledged, so a message is
stored exactly once; `edit`, `delete` and `react` are retransmitted the same way
(each sets a state, so a repeat changes nothing). Errors that retrying cannot fix
(a bad or revoked token) end the client with a typed exception instead.

This module is the public API and the supervision of the connection (the state
they share: rooms, last seqs, pending requests, waiters); opening one connection and
the backoff policy are in `connection.py`, filling gaps over HTTP in `catchup.py`
(history pages from `history.py`, the notification inbox from `inbox.py` over
`api.py`), which change events are news in `changes.py`, the errors in `errors.py`.
It needs only `websockets`, `httpx` and `pydantic`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ValidationError
from websockets.exceptions import ConnectionClosed

from chat_client.api import HttpApi
from chat_client.catchup import CatchUp, ResyncNeeded
from chat_client.changes import ChangeFrame, ChangeVersions
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
from chat_client.history import History
from chat_client.inbox import Inbox, NotificationCursor, NotificationPage
from chat_client.protocol import (
    AckFrame,
    AlertFrame,
    Attachment,
    AuthIn,
    ChangesCheckedFrame,
    CloseCode,
    DeletedFrame,
    DeleteIn,
    EditedFrame,
    EditIn,
    ErrorCode,
    ErrorFrame,
    HelloFrame,
    JoinedFrame,
    JoinIn,
    LeaveIn,
    LeftFrame,
    MessageFrame,
    NotificationFrame,
    NotificationsReadFrame,
    PingIn,
    PongFrame,
    PresenceFrame,
    ReactIn,
    ReactionFrame,
    ReadFrame,
    ReadIn,
    ReauthedFrame,
    RemovedFrame,
    RoomFrame,
    SendIn,
    ServerFrame,
    TaskFrame,
    TypingFrame,
    TypingIn,
    UserRef,
    parse_server_frame,
)
from chat_client.search import Searcher, SearchPage

__all__ = ["ChatClient", "Event", "TokenProvider"]

log = logging.getLogger(__name__)

Event: TypeAlias = (
    MessageFrame
    | EditedFrame
    | DeletedFrame
    | ReactionFrame
    | ReadFrame
    | RoomFrame
    | RemovedFrame
    | NotificationFrame
    | NotificationsReadFrame
    | PresenceFrame
    | TypingFrame
    | TaskFrame
    | AlertFrame
    | ErrorFrame
)
"""What iterating a `ChatClient` yields. `ErrorFrame`s are the ones no call of yours awaits."""

TokenProvider: TypeAlias = Callable[[], str | Awaitable[str]]
"""A callable (plain or async) returning a currently valid access token."""

RETRY_LATER: Final = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.OVERLOADED, ErrorCode.UNAVAILABLE}
)
"""`error` codes after which a request is retransmitted with its ref (nothing was done)."""
_INTERNAL_RETRIES: Final = 3  # `internal` errors a request is retried through
_STABLE_AFTER: Final = 5.0  # seconds a connection must last to reset the backoff


def _new_ref(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def _encode(frame: BaseModel) -> str:
    return frame.model_dump_json(exclude_none=True)


_Reply = TypeVar("_Reply", AckFrame, EditedFrame, DeletedFrame, ReactionFrame, ReadFrame)


@dataclass(eq=False)
class _Pending:
    """A frame sent with a `ref` until its confirmation arrives (`expect`): a send's
    `ack`, the change event carrying the ref, a `read` echo."""

    data: str
    expect: type[AckFrame | ChangeFrame | ReadFrame]
    future: asyncio.Future[ServerFrame]
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

    Notifications are live from the first connection on; give
    `notifications_after` (a notification id, e.g. `last_notification_id` saved by
    an earlier run) to have the ones after it delivered first.

    `ssl_context` verifies a `wss://` (and `https://`) server, for example one with a
    certificate of a private CA: `ssl.create_default_context(cafile="ca.pem")`.
    Default: the system's trusted CAs.

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
        notifications_after: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
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
        self._pending: dict[str, _Pending] = {}
        self._requests: dict[str, asyncio.Future[ServerFrame]] = {}
        self._join_refs: dict[str, str] = {}  # ref of a join frame -> room
        self._join_waiters: dict[str, list[asyncio.Future[JoinedFrame]]] = {}
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._paused_until = 0.0  # monotonic time before which sends wait (rate limit)
        self._background: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._first_connect: asyncio.Future[None] | None = None
        self._ssl_context = ssl_context
        self._history = History(self.http_url, timeout=http_timeout, ssl_context=ssl_context)
        self._api = HttpApi(
            self.http_url, timeout=http_timeout, token=self._http_token, ssl_context=ssl_context
        )
        self._inbox = Inbox(self._api)
        self._searcher = Searcher(self._api)
        self._notifications = NotificationCursor(notifications_after)
        self._catchup = CatchUp(self._history, self._inbox, self._http_token)
        self._versions = ChangeVersions()
        # Per room, the change `version` up to which every change has reached us (the
        # server says so in `joined` and `changes_checked`): a rejoin asks for the
        # changes after it (`changes_after`), whatever seq they were made at. Not the
        # highest version seen: an event can overtake an earlier one still on its way.
        self._change_version: dict[str, int] = {}
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
        await self._api.aclose()

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
    def last_notification_id(self) -> int | None:
        """The id of the newest notification delivered (or, before any, the server's
        newest when the client connected): give it as `notifications_after` to a later
        run to resume there. None before the first connection."""
        return self._notifications.last

    @property
    def last_seq(self) -> Mapping[str, int]:
        """Per room, the `seq` of the last message received (a copy).

        Messages up to it are delivered by iteration, or waiting to be. To resume
        a later run with `join(room, since=...)`, save the `seq` of the last
        message you handled instead.
        """
        return {room: seq for room, seq in self._last_seq.items() if seq is not None}

    # --- requests --------------------------------------------------------------

    async def join(
        self, room: str, since: int | None = None, changes_after: int | None = None
    ) -> JoinedFrame:
        """Join `room` and return the server's `joined` reply.

        With `since`, every stored message with a greater `seq` is delivered
        (by iterating the client) before any new one, then the changes to older
        messages: those after `changes_after` (a `change_version` saved with
        `since`) when given, else those made since message `since`. The room is
        rejoined after every reconnect, resuming after the last message and change
        delivered. Raises `RequestError` (for example `forbidden`, `not_found`)
        and `TimeoutError`.
        """
        self._check_open()
        if changes_after is not None:
            self._change_version[room] = changes_after
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
        self._forget_room(room)
        for waiter in self._join_waiters.pop(room, []):
            if not waiter.done():
                waiter.set_exception(ClientClosedError(f"left {room!r} while joining"))
        conn = self._conn
        if conn is None or room not in conn.joins_sent:
            return
        conn.joins_sent.discard(room)
        with contextlib.suppress(DisconnectedError, RequestError):
            await self._request(conn, LeaveIn(type="leave", room=room, ref=_new_ref("l-")))

    async def send(
        self,
        room: str,
        body: str,
        *,
        reply_to: int | None = None,
        ref: str | None = None,
        attachments: Sequence[str] | None = None,
    ) -> AckFrame:
        """Send `body` to `room` and return the server's `ack` once it is stored.

        `reply_to` is the seq of the message of `room` this one answers; `attachments`
        are ids of your uploads to `room` (`upload`), at most 10, not attached yet (else
        `RequestError` `bad_attachment`, and nothing is stored). The frame is
        retransmitted with the same `ref` after reconnects and after `rate_limited`,
        `overloaded` and `unavailable` refusals (waiting `retry_after`) until it is
        acknowledged; the server stores one message per `ref`. Pass your own `ref` (at
        most 64 characters) to stay idempotent across processes. Raises `RequestError`
        when refused for good (for example `not_joined`, `too_large`, `not_found` for a
        `reply_to` that does not exist), `FrameTooLargeError`, and the client's terminal
        error if it ends first. Cancel the call (for example with `asyncio.timeout`) to
        stop retrying.
        """
        self._check_open()
        frame = SendIn(
            type="send",
            room=room,
            body=body,
            ref=ref or _new_ref(""),
            reply_to=reply_to,
            attachments=list(attachments) if attachments else None,
        )
        return await self._submit(frame.ref, frame, AckFrame)

    async def upload(self, room: str, path: str | os.PathLike[str]) -> Attachment:
        """`POST /api/files`: upload the file at `path` to `room` (streamed from disk);
        returns its `Attachment` (`id` to pass to `send`). The server decides its type
        from its content. Raises `ApiError` (413: larger than the server's upload bound
        or past your quota; 422: an image with too many pixels; 404: no such room;
        403: archived), `AuthenticationError`, `ConnectionFailedError`, `OSError`.
        """
        self._check_usable()
        answer = await self._api.upload("/api/files", {"room": room}, Path(path))
        return Attachment.model_validate(answer)

    async def send_file(
        self, room: str, path: str | os.PathLike[str], body: str = "", *, ref: str | None = None
    ) -> AckFrame:
        """Upload the file at `path` to `room`, then send `body` with it attached; returns
        the `ack`. Raises what `upload` and `send` raise. An upload never attached (the
        send failed for good) is removed by the server after a while."""
        item = await self.upload(room, path)
        return await self.send(room, body, ref=ref, attachments=[item.id])

    async def edit(self, room: str, seq: int, body: str) -> EditedFrame:
        """Replace the text of your message `seq` in `room`; returns the `edited` event.

        Like `send`, the request survives reconnects and rate limits (an edit to the
        same text again changes nothing). The event also reaches the iteration, as it
        does every member's. Raises `RequestError`: `forbidden` (not your message, or
        the room is archived), `not_found` (no such message or room), `too_large`,
        `bad_frame`; and `FrameTooLargeError`.
        """
        self._check_open()
        ref = _new_ref("e-")
        frame = EditIn(type="edit", room=room, seq=seq, body=body, ref=ref)
        return await self._submit(ref, frame, EditedFrame)

    async def delete(self, room: str, seq: int) -> DeletedFrame:
        """Delete message `seq` of `room` (yours, or any as the room's owner or an
        admin); returns the `deleted` event. It keeps its seq and loses its text.

        Retried like `edit`. Raises `RequestError` (`forbidden`, `not_found`).
        """
        self._check_open()
        ref = _new_ref("d-")
        frame = DeleteIn(type="delete", room=room, seq=seq, ref=ref)
        return await self._submit(ref, frame, DeletedFrame)

    async def react(self, room: str, seq: int, emoji: str, on: bool = True) -> ReactionFrame:
        """Set (`on=True`) or clear your `emoji` reaction to message `seq` of `room`;
        returns the `reaction` event, with everyone who has that reaction now.

        `emoji` is at most 16 characters. Retried like `edit`. Raises `RequestError`
        (`forbidden` in an archived room, `not_found`, `bad_frame`, `too_large` past
        the distinct reactions a message may have) and `ValueError` for a bad `emoji`.
        """
        self._check_open()
        ref = _new_ref("x-")
        try:
            frame = ReactIn(type="react", room=room, seq=seq, emoji=emoji, on=on, ref=ref)
        except ValidationError as exc:
            raise ValueError(f"not a reaction: {emoji!r} (1 to 16 characters)") from exc
        return await self._submit(ref, frame, ReactionFrame)

    async def read(self, room: str, seq: int) -> ReadFrame:
        """Move your read cursor in `room` forward to `seq`; returns the server's `read`
        confirmation, whose `seq` is the cursor now (it never moves back, nor past the
        room's newest message).

        Your other connections get a `read` event. Retried like `edit` (moving a cursor
        twice is harmless). Raises `RequestError` (`not_joined`, `bad_frame`).
        """
        self._check_open()
        ref = _new_ref("r-")
        frame = ReadIn(type="read", room=room, seq=seq, ref=ref)
        return await self._submit(ref, frame, ReadFrame)

    # --- notifications ---------------------------------------------------------

    async def notifications(self) -> AsyncIterator[NotificationFrame]:
        """Iterate the client's events, yielding only the notifications.

        Notifications come to every connection of the user whatever rooms it joined,
        so this needs no `join`. It consumes the same stream as `async for event in
        client` (other events are skipped): use one or the other. Ends and raises
        like that iteration.
        """
        async for event in self:
            if isinstance(event, NotificationFrame):
                yield event

    async def list_notifications(self, after: int = 0, limit: int = 50) -> NotificationPage:
        """`GET /api/notifications`: your notifications with an id above `after`,
        oldest first (at most `limit`), and how many are unread.

        Works over HTTP, connected or not (the HTTP calls need only the token).
        Raises `ApiError`, `AuthenticationError` and `ConnectionFailedError`.
        """
        self._check_usable()
        return await self._inbox.page(after, limit)

    async def mark_notifications_read(self, upto: int) -> int | None:
        """`POST /api/notifications/read`: mark your notifications up to id `upto`
        read; returns how many are left unread (when the server says)."""
        self._check_usable()
        return await self._inbox.mark_read(upto)

    async def notify(
        self, username: str, title: str, body: str, link: str | None = None
    ) -> NotificationFrame:
        """`POST /api/notifications` (admins and bots): send `username` a notification
        of kind `app` (`from` you); returns it as stored. A `429` is waited out.

        Raises `ApiError` (`forbidden` for other callers, `not_found` for an unknown
        user, `bad_request` for an empty or too long field or a link that is not an
        http(s) URL or a path), `AuthenticationError`, `ConnectionFailedError`.
        """
        self._check_usable()
        return await self._inbox.notify(username, title, body, link)

    # --- search ----------------------------------------------------------------

    async def search(
        self,
        q: str,
        room: str | None = None,
        limit: int = 20,
        *,
        offset: int = 0,
        order: Literal["rank", "newest"] = "rank",
    ) -> SearchPage:
        """`GET /api/search`: the messages you can read containing every word and
        "phrase" of `q` (`word*` for a prefix), best match first (`order="newest"`:
        newest first), at most `limit` (up to 50); `next_offset` pages on. Each hit
        is a `MessageFrame` and its snippet, the matching words marked.

        Works over HTTP, connected or not. Raises `ApiError` (422: nothing to search
        for, or too long; 404: a `room` you cannot read), `AuthenticationError` and
        `ConnectionFailedError`.
        """
        self._check_usable()
        return await self._searcher.page(q, room=room, limit=limit, offset=offset, order=order)

    # --- other requests --------------------------------------------------------

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
        """Iterate the events: messages and their changes (`edited`, `deleted`,
        `reaction`), `read`, `room`, `removed`, notifications and `notifications_read`,
        presence, typing, tasks, alerts, errors."""
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
            ssl_context=self._ssl_context,
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
                # Before any live frame is read: the missed notifications come first.
                if self._notifications.behind(conn.hello.last_notification_id):
                    await self._catchup.notifications(self._notifications, self._events.put_nowait)
                async for raw in conn.ws:
                    await self._dispatch(conn, raw)
            except ConnectionClosed:
                pass
            except ResyncNeeded as exc:
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
        """Send again, with their refs, the requests not confirmed on an earlier connection."""
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
        since = self._last_seq.get(room)
        changes_after = self._change_version.get(room) if since is not None else None
        frame = JoinIn(type="join", room=room, since=since, changes_after=changes_after, ref=ref)
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

    async def _transmit(self, conn: Connection, pending: _Pending) -> None:
        pending.generation = conn.generation
        while (wait := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if pending.future.done() or self._conn is not conn:
            return
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(pending.data)

    async def _submit(self, ref: str, frame: BaseModel, expect: type[_Reply]) -> _Reply:
        """Send `frame` (with `ref`) until its confirmation, an `expect`, arrives."""
        data = _encode(frame)
        self._check_size(data)
        if ref in self._pending:
            raise ValueError(f"a request with ref {ref!r} is already in flight")
        future: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        pending = _Pending(data, expect, future)
        self._pending[ref] = pending
        try:
            conn = self._conn
            if conn is not None and conn.ready:
                await self._transmit(conn, pending)
            reply = await future
        finally:
            self._pending.pop(ref, None)
        assert isinstance(reply, expect)
        return reply

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise ClientClosedError("the client is closed")
        if self._supervisor is None:
            raise ClientClosedError("not connected yet: use `async with` or connect()")

    def _check_usable(self) -> None:
        """For HTTP calls: the client need not be connected, only not closed."""
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise ClientClosedError("the client is closed")

    async def _http_token(self) -> str:
        conn = self._conn
        return conn.token if conn is not None else await self._fresh_token()

    def _pause(self, seconds: float) -> None:
        """Hold every frame of ours back for `seconds` (after `rate_limited`)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def change_version(self, room: str) -> int | None:
        """The change `version` in `room` up to which every change has been delivered
        (None: not joined yet): save it with the last seq to resume a later run with
        `join(room, since, changes_after)`."""
        return self._change_version.get(room)

    def _forget_room(self, room: str) -> None:
        self._rooms.pop(room, None)
        self._last_seq.pop(room, None)
        self._change_version.pop(room, None)
        self._versions.forget_room(room)

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
                self._confirm(frame.ref, frame)
            case JoinedFrame():
                await self._on_joined(frame)
            case ErrorFrame():
                self._on_error(conn, frame)
            case EditedFrame() | DeletedFrame() | ReactionFrame():
                self._on_change(frame)
            case ChangesCheckedFrame():
                self._changes_reached(frame.room, frame.version)
            case NotificationFrame():
                if self._notifications.take(frame):
                    self._events.put_nowait(frame)
            case RemovedFrame():
                self._on_removed(conn, frame)
            case ReadFrame() if frame.ref is not None:  # the confirmation of our `read`
                self._confirm(frame.ref, frame)
            case (
                RoomFrame()
                | ReadFrame()
                | PresenceFrame()
                | TypingFrame()
                | TaskFrame()
                | AlertFrame()
                | NotificationsReadFrame()
            ):
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
            if last is not None and frame.changes_truncated:
                # More changes than a join resends: each message's state from history.
                await self._catchup.changes(room, last, self._events.put_nowait)
            # Every change up to it is in what the join sent (or history, paged above).
            self._changes_reached(room, frame.changes_version)
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

    def _on_change(self, frame: ChangeFrame) -> None:
        """An `edited`, `deleted` or `reaction` event: the confirmation of a request of
        ours when it carries its ref; news to the application unless already seen."""
        self._confirm(frame.ref, frame)
        if frame.room in self._rooms and self._versions.is_news(frame):
            self._events.put_nowait(frame)

    def _changes_reached(self, room: str, version: int) -> None:
        if room in self._rooms:
            self._change_version[room] = max(self._change_version.get(room, 0), version)

    def _confirm(self, ref: str | None, frame: AckFrame | ChangeFrame | ReadFrame) -> None:
        """Resolve the request waiting for `frame` (its `ref`, the type it expects)."""
        pending = self._pending.get(ref) if ref is not None else None
        if pending is not None and isinstance(frame, pending.expect) and not pending.future.done():
            pending.future.set_result(frame)

    def _on_removed(self, conn: Connection, frame: RemovedFrame) -> None:
        """Removed from a room (or left it elsewhere): it is no longer rejoined."""
        self._forget_room(frame.room)
        conn.joins_sent.discard(frame.room)
        self._events.put_nowait(frame)

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
        if after is not None:
            await self._catchup.messages(room, after, before, self._deliver_message)

    def _deliver_message(self, frame: MessageFrame) -> None:
        self._last_seq[frame.room] = frame.seq
        self._events.put_nowait(frame)

    def _on_error(self, conn: Connection, frame: ErrorFrame) -> None:
        ref = frame.ref
        if ref is not None and (pending := self._pending.get(ref)) is not None:
            if frame.code in RETRY_LATER:  # nothing stored: the same ref again, later
                self._pause(frame.retry_after if frame.retry_after is not None else 1.0)
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

    def _retransmit_later(self, conn: Connection, pending: _Pending, delay: float) -> None:
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
