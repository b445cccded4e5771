"""One authenticated connection's life: hello, the receive loop, expiry, cleanup.

Frames are read straight from the socket (no task per frame) and handed to
their command (`chat.ws.commands`); the session keeps what commands share:
the rooms joined, the sends in flight, the flood guard, and how to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.websockets import WebSocket, WebSocketState

from chat.auth.accounts import Principal
from chat.auth.tokens import Claims
from chat.hub import Connection
from chat.limits.flood import FloodGuard
from chat.monitoring import metrics
from chat.monitoring.abuse import AbuseEvent
from chat.protocol import (
    MAX_ATTACHMENTS,
    CloseCode,
    ErrorCode,
    ErrorFrame,
    FrameError,
    HelloFrame,
    UserRef,
    encode,
    iso,
    parse_client_frame,
)
from chat.sending import ARCHIVED
from chat.storage.records import RoomView
from chat.storage.store import Store
from chat.ws.commands import COMMANDS
from chat.ws.deps import WsDeps
from chat.ws.inflight import InFlight
from chat.ws.socket import socket_sink

log = logging.getLogger(__name__)
# Longer than any access token lives: bot tokens are revoked, not expired.
EXPIRY_WATCH_LIMIT = 7 * 24 * 3600.0
CLOSE_WAIT = 5.0  # seconds a session waits for its close frame to be handed over
FAIR_SHARE = 8  # frames a session handles before yielding the event loop to others


def client_address(websocket: WebSocket) -> str | None:
    return websocket.client.host if websocket.client else None


async def close_quietly(websocket: WebSocket, code: int, reason: str = "") -> None:
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    try:
        await websocket.close(code, reason)
    except Exception as exc:  # already closed by the peer or the server
        log.debug("close failed: %r", exc)


async def still_valid(store: Store, claims: Claims) -> bool:
    """Whether the token that opened a connection is still live (not revoked or banned):
    asked once the connection is registered, where a revocation would find it."""
    user = await store.user_for_token(claims.user_id, claims.version)
    if user is None or user.banned or user.token_version != claims.version:
        return False
    return claims.type != "bot" or await store.bot_token_live(claims.jti)


def expiry_watch(conn: Connection, claims: Claims) -> asyncio.TimerHandle | None:
    """Close `conn` when the token expires (4001); None for a token that outlives any
    connection (bot tokens are revoked, not expired)."""
    remaining = claims.expires_at - time.time()
    if remaining > EXPIRY_WATCH_LIMIT:
        return None
    return asyncio.get_running_loop().call_later(
        max(remaining, 0.0),
        conn.abort,
        CloseCode.TOKEN_EXPIRED,
        "token expired: refresh it and reconnect",
    )


async def hello(deps: WsDeps, principal: Principal) -> HelloFrame:
    """The first frame of a connection: who, until when, where the inbox stands (so a
    client pages what it missed with `after`), and the limits."""
    settings = deps.settings
    unread, last_note = await deps.store.notification_counters(principal.user.id)
    return HelloFrame(
        user=principal.user,
        expires_at=iso(principal.claims.expires_at),
        notifications_unread=unread,
        last_notification_id=last_note,
        limits={
            "max_body_chars": settings.max_body_chars,
            "max_frame_bytes": settings.max_frame_bytes,
            "heartbeat_interval": settings.heartbeat_interval,
            "replay_cap": settings.replay_cap,
            "max_upload_bytes": settings.max_upload_bytes,
            "max_attachments": MAX_ATTACHMENTS,
        },
    )


class Session:
    """One authenticated connection's life: hello, frames, expiry, cleanup."""

    def __init__(self, websocket: WebSocket, deps: WsDeps, principal: Principal) -> None:
        self.ws = websocket
        self.deps = deps
        self.settings = deps.settings
        self.principal = principal
        self.sink = socket_sink(websocket)
        self.conn = Connection(
            principal.user, self.sink, self._close, self.settings.outbound_buffer_bytes, held=True
        )
        self.flood = FloodGuard(deps.limits, self.user.id, self.settings.rate_limit_close_after)
        self._close_after_acks: tuple[int, str] | None = None  # (code, reason)
        self._penalty = 0.0  # seconds to wait before reading the next frame
        self._expiry: asyncio.TimerHandle | None = None
        self.joined: dict[str, RoomView] = {}  # rooms joined, as read at the join
        self.sends = InFlight(self.settings.max_inflight_sends)

    @property
    def user(self) -> UserRef:
        """The connection's user, as the hub keeps it current (a new display name)."""
        return self.conn.user

    async def _close(self, code: int, reason: str) -> None:
        await close_quietly(self.ws, code, reason)

    async def run(self) -> None:
        connections = self.deps.connections
        cap = self.settings.max_connections_per_user
        # Counted on every process when CHAT_REDIS_URL is set (chat.backends).
        if not await connections.acquire(self.user.id, self.conn.id, cap):
            await self._close(CloseCode.TOO_MANY_CONNECTIONS, f"at most {cap} connections per user")
            return
        try:
            await self._registered()
        finally:
            await connections.release(self.user.id, self.conn.id)  # idempotent

    async def _registered(self) -> None:
        hub = self.deps.hub
        await hub.register(self.conn)
        try:
            # A revocation published between authenticating and registering
            # found no socket to close: look again now that this one is findable.
            if not await self._still_valid():
                self.conn.abort(CloseCode.REVOKED, "token revoked")
                await self.conn.closed.wait()
                return
            self.watch_expiry()
            self.conn.greet(encode(await hello(self.deps, self.principal)))
            await self.deps.greet(self.conn)  # active tasks' state, then live
            await self._receive_loop()
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
            await hub.unregister(self.conn)
            await self.deps.connections.release(self.user.id, self.conn.id)  # at once
            if self.conn.closing:
                # Returning drops the socket: let the close frame (and its code) go first.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.conn.closed.wait(), CLOSE_WAIT)

    async def _receive_loop(self) -> None:
        # Read straight from the protocol (no task per frame); a halt or a close of
        # ours wakes the read up with a message of its own.
        handled = 0
        while not self.conn.closing and not self.conn.halt.is_set() and not self.sink.lost.is_set():
            message = await self.sink.receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":  # a wake-up: the loop's condition decides
                continue
            text = message.get("text")
            if text is None:
                self.error(ErrorCode.BAD_FRAME, "binary frames are not accepted: send JSON text")
                continue
            await self.handle_text(text)
            handled += 1
            if self._penalty:
                await asyncio.sleep(self._penalty)
                self._penalty = 0.0
            elif handled % FAIR_SHARE == 0:
                # One read can bring hundreds of frames, handled without a pause:
                # let the other connections have the loop in between.
                await asyncio.sleep(0)
            if self._close_after_acks is not None:
                # Stop reading; the sends already taken get their acks, then the close.
                await self._settle()
                self.conn.abort(*self._close_after_acks, flush=True)
                return
        if self.conn.halt.is_set() and not self.conn.closing:
            # Shutting down: the frames in hand are done once their sends are acked;
            # flush the replies, then 1001.
            await self._settle()
            await self.conn.drain_and_close(
                CloseCode.GOING_AWAY, "server shutting down", self.settings.drain_timeout
            )

    async def _settle(self) -> None:
        """Wait (up to the drain timeout) until every send taken has been answered."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sends.settled.wait(), self.settings.drain_timeout)

    async def handle_text(self, text: str) -> None:
        ref: str | None = None
        try:
            frame = parse_client_frame(text)
            ref = frame.ref
            metrics.frame_in(frame.type)
            await COMMANDS[type(frame)](self, frame)
        except FrameError as exc:
            self.error(exc.code, exc.detail, exc.ref or ref, exc.retry_after)
        except Exception:
            log.exception("internal error handling a frame")
            self.error(ErrorCode.INTERNAL, "internal error; the frame was not processed", ref)

    # --- helpers --------------------------------------------------------------

    async def readable_room(self, name: str, ref: str | None) -> RoomView:
        room = await self.deps.store.room_for(name, self.user)
        if room is None:
            raise FrameError(ErrorCode.NOT_FOUND, "no such room, or you may not read it", ref)
        return room

    def require_joined(self, room: str, ref: str | None) -> None:
        if room not in self.conn.rooms:
            raise FrameError(ErrorCode.NOT_JOINED, "join the room first", ref)

    def writable_room(self, room: str, ref: str | None) -> RoomView:
        """The joined room, for a frame that writes to it (send, edit, react): raises
        `not_joined`, or `forbidden` while the room is archived. No database read: the
        writer refuses a message for a room archived meanwhile (`ReadOnlyRoom`)."""
        self.require_joined(room, ref)
        if room in self.conn.read_only:
            raise FrameError(ErrorCode.FORBIDDEN, ARCHIVED, ref)
        return self.joined[room]

    async def rate_limit(
        self, action: str, rate: float, burst: int, ref: str | None, detail: str | None = None
    ) -> None:
        """Raise `rate_limited` when the user's `action` bucket is empty (see `FloodGuard`)."""
        refusal = await self.flood.check(action, rate, burst)
        if refusal is None:
            return
        self._penalty = refusal.pause
        if refusal.close:
            self._close_after_acks = (CloseCode.RATE_LIMITED, "rate limit exceeded repeatedly")
            self.deps.abuse.report(
                AbuseEvent(
                    "rate_limit_close",
                    client_address(self.ws),
                    user_id=self.user.id,
                    username=self.user.name,
                    detail=action,
                )
            )
        raise FrameError(
            ErrorCode.RATE_LIMITED, detail or f"too many {action} frames", ref, refusal.retry_after
        )

    def error(
        self, code: str, detail: str, ref: str | None = None, retry_after: float | None = None
    ) -> None:
        metrics.ERRORS.labels(code).inc()
        self.conn.push(
            encode(ErrorFrame(code=code, detail=detail, ref=ref, retry_after=retry_after))
        )

    def watch_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = expiry_watch(self.conn, self.principal.claims)

    async def _still_valid(self) -> bool:
        return await still_valid(self.deps.store, self.principal.claims)

    def expires_iso(self) -> str:
        return iso(self.principal.claims.expires_at)
