"""The `/ws` endpoint: handshake checks, authentication, then one frame at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from functools import partial

from fastapi import APIRouter, WebSocket
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from chat import metrics
from chat.abuse import AbuseEvent
from chat.accounts import Principal
from chat.hub import Connection
from chat.protocol import (
    AuthIn,
    ClientFrame,
    CloseCode,
    ErrorCode,
    ErrorFrame,
    FrameError,
    HelloFrame,
    JoinedFrame,
    JoinIn,
    LeaveIn,
    LeftFrame,
    PingIn,
    PongFrame,
    ReauthedFrame,
    SendIn,
    TypingFrame,
    TypingIn,
    encode,
    iso,
    now_iso,
    parse_client_frame,
)
from chat.security import TokenError
from chat.services import Services
from chat.serving import socket_sink
from chat.store import NewMessage, RoomView, Stored, check_body
from chat.writer import WriterFull

log = logging.getLogger(__name__)
router = APIRouter()
# Longer than any access token lives: bot tokens are revoked, not expired.
EXPIRY_WATCH_LIMIT = 7 * 24 * 3600.0
CLOSE_WAIT = 5.0  # seconds a session waits for its close frame to be handed over
FAIR_SHARE = 8  # frames a session handles before yielding the event loop to others
PENALTY_AFTER = 5  # refusals in a row before the socket is read more slowly
PENALTY_MAX = 0.05  # the longest pause after one refusal, in seconds
INFLIGHT_WAIT = 2.0  # seconds a send over the in-flight bound waits for acks, then refused


def origin_allowed(websocket: WebSocket, allowed: list[str]) -> bool:
    """No Origin (a bot) is fine; a browser's must be ours or on the allowlist, exactly."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    origin = origin.rstrip("/")
    scheme = "https" if websocket.url.scheme == "wss" else "http"
    host = websocket.headers.get("host", "")
    return origin in allowed or (bool(host) and origin == f"{scheme}://{host}")


def bearer(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def client_address(websocket: WebSocket) -> str | None:
    return websocket.client.host if websocket.client else None


async def refuse(websocket: WebSocket, status: int, detail: str, retry_after: float) -> None:
    """Answer the handshake with an HTTP error and `Retry-After` instead of upgrading."""
    response = PlainTextResponse(
        detail, status_code=status, headers={"Retry-After": str(max(1, math.ceil(retry_after)))}
    )
    await websocket.send_denial_response(response)


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    settings = services.settings
    address = client_address(websocket)
    if services.draining:
        await refuse(websocket, 503, "the server is shutting down", 1)
        return
    wait = services.limiter.take(
        "handshake",
        address,
        settings.handshakes_per_ip_per_second,
        settings.handshakes_per_ip_burst,
    )
    if wait is not None:
        metrics.THROTTLED.labels("handshake").inc()
        services.abuse.report(AbuseEvent("handshake_throttled", address))
        await refuse(websocket, 429, "too many connection attempts", wait)
        return
    if not origin_allowed(websocket, settings.allowed_origins):
        metrics.AUTH_FAILURES.labels("origin").inc()
        log.info("refused a handshake from origin %r", websocket.headers.get("origin"))
        await websocket.close(CloseCode.POLICY)  # before accept: HTTP 403
        return
    principal: Principal | None = None
    header_token = bearer(websocket)
    if header_token is not None:
        try:
            principal = await services.accounts.authenticate(header_token)
        except TokenError:
            metrics.AUTH_FAILURES.labels("ws_header").inc()
            services.abuse.report(AbuseEvent("auth_failure", address, detail="ws handshake"))
            await websocket.close(CloseCode.POLICY)
            return
    await websocket.accept()
    if principal is None:
        principal = await _first_frame_auth(websocket, services)
        if principal is None:
            return
    session = Session(websocket, services, principal)
    await session.run()


async def _first_frame_auth(websocket: WebSocket, services: Services) -> Principal | None:
    """Wait for `{"type": "auth"}` within the deadline; close 1008 on anything else."""
    try:
        raw = await asyncio.wait_for(_receive_text(websocket), services.settings.auth_timeout)
        frame = parse_client_frame(raw) if raw is not None else None
        if not isinstance(frame, AuthIn):
            reason = "authenticate first: send an auth frame"
        else:
            return await services.accounts.authenticate(frame.token)
    except TimeoutError:
        reason = "no auth frame within the deadline"
    except FrameError:
        reason = "authenticate first: send an auth frame"
    except TokenError:
        reason = "invalid, expired or revoked token"
    except WebSocketDisconnect:
        return None
    metrics.AUTH_FAILURES.labels("ws_frame").inc()
    services.abuse.report(
        AbuseEvent("auth_failure", client_address(websocket), detail=f"ws: {reason}")
    )
    await _close_quietly(websocket, CloseCode.POLICY, reason)
    return None


async def _receive_text(websocket: WebSocket) -> str | None:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text: str | None = message.get("text")
    return text


async def _first_of(*events: asyncio.Event, timeout: float) -> None:
    """Wait until one of `events` is set, at most `timeout` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def _close_quietly(websocket: WebSocket, code: int, reason: str = "") -> None:
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    try:
        await websocket.close(code, reason)
    except Exception as exc:  # already closed by the peer or the server
        log.debug("close failed: %r", exc)


class Session:
    """One authenticated connection's life: hello, frames, expiry, cleanup."""

    def __init__(self, websocket: WebSocket, services: Services, principal: Principal) -> None:
        self.ws = websocket
        self.services = services
        self.settings = services.settings
        self.principal = principal
        self.user = principal.user
        self.sink = socket_sink(websocket)
        self.conn = Connection(
            self.user, self.sink, self._close, self.settings.outbound_buffer_bytes
        )
        self._close_after_acks: tuple[int, str] | None = None  # (code, reason)
        self._penalty = 0.0  # seconds to wait before reading the next frame
        self._strikes = 0  # refusals since two frames in a row were accepted
        self._accepted_last = True
        self._expiry: asyncio.TimerHandle | None = None
        self._joined: dict[str, RoomView] = {}  # rooms joined, as read at the join
        self._inflight = 0  # sends handed to the writer and not yet answered
        self._settled = asyncio.Event()  # set while nothing is in flight
        self._settled.set()
        self._has_room = asyncio.Event()  # set while another send may go in flight

    async def _close(self, code: int, reason: str) -> None:
        await _close_quietly(self.ws, code, reason)

    async def run(self) -> None:
        hub = self.services.hub
        # Check and register with no await in between: the cap holds under a burst.
        if hub.user_connections(self.user.id) >= self.settings.max_connections_per_user:
            await self._close(
                CloseCode.TOO_MANY_CONNECTIONS,
                f"at most {self.settings.max_connections_per_user} connections per user",
            )
            return
        await hub.register(self.conn)
        try:
            # A revocation published between authenticating and registering
            # found no socket to close: look again now that this one is findable.
            if not await self._still_valid():
                self.conn.abort(CloseCode.REVOKED, "token revoked")
                await self.conn.closed.wait()
                return
            self._watch_expiry()
            self.conn.push(
                encode(
                    HelloFrame(
                        user=self.user,
                        expires_at=self._expires_iso(),
                        limits={
                            "max_body_chars": self.settings.max_body_chars,
                            "max_frame_bytes": self.settings.max_frame_bytes,
                            "heartbeat_interval": self.settings.heartbeat_interval,
                            "replay_cap": self.settings.replay_cap,
                        },
                    )
                )
            )
            await self.services.tasks.greet(self.conn)  # active tasks' state, then live
            await self._receive_loop()
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
            await hub.unregister(self.conn)
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
                self._error(ErrorCode.BAD_FRAME, "binary frames are not accepted: send JSON text")
                continue
            await self._handle_text(text)
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
            await asyncio.wait_for(self._settled.wait(), self.settings.drain_timeout)

    async def _handle_text(self, text: str) -> None:
        ref: str | None = None
        try:
            frame = parse_client_frame(text)
            ref = frame.ref
            metrics.frame_in(frame.type)
            await self._handle(frame)
        except FrameError as exc:
            self._error(exc.code, exc.detail, exc.ref or ref, exc.retry_after)
        except Exception:
            log.exception("internal error handling a frame")
            self._error(ErrorCode.INTERNAL, "internal error; the frame was not processed", ref)

    async def _handle(self, frame: ClientFrame) -> None:
        if isinstance(frame, SendIn):
            await self._send(frame)
        elif isinstance(frame, JoinIn):
            await self._join(frame)
        elif isinstance(frame, LeaveIn):
            await self._leave(frame)
        elif isinstance(frame, TypingIn):
            await self._typing(frame)
        elif isinstance(frame, PingIn):
            self.conn.push(encode(PongFrame(ts=now_iso(), ref=frame.ref)))
        elif isinstance(frame, AuthIn):
            await self._reauth(frame)

    # --- frames ---------------------------------------------------------------

    async def _join(self, frame: JoinIn) -> None:
        hub = self.services.hub
        store = self.services.store
        if (
            frame.room not in self.conn.rooms
            and len(self.conn.rooms) >= self.settings.max_rooms_per_connection
        ):
            raise FrameError(
                ErrorCode.FORBIDDEN,
                f"at most {self.settings.max_rooms_per_connection} rooms per connection",
                frame.ref,
            )
        # Before any database work: a join may replay `replay_cap` messages.
        await self._rate_limit("join", self.settings.join_rate, self.settings.join_burst, frame.ref)
        room = await self._room(frame.room, frame.ref)
        self._joined[room.name] = room  # what sends need, without a read each
        presence = await hub.join(self.conn, room.name)
        last_seq = await store.last_seq(room.id)
        replay = []
        since = frame.since
        truncated = False
        if since is not None and since < last_seq:
            cap = self.settings.replay_cap
            replay = await store.messages(room, after=since, upto=last_seq, limit=cap)
            truncated = last_seq - since > cap
        self.conn.push(
            encode(
                JoinedFrame(
                    room=room.name,
                    presence=presence,
                    last_seq=last_seq,
                    replay_truncated=truncated,
                    ref=frame.ref,
                )
            )
        )
        for message in replay:  # waits for the socket rather than overflowing the queue
            if self.conn.claim(room.name, message.seq):
                await self.conn.put(encode(message))
        hub.finish_replay(self.conn, room.name, last_seq)

    async def _leave(self, frame: LeaveIn) -> None:
        # The join bucket: a join/leave loop pays for both halves.
        await self._rate_limit(
            "join",
            self.settings.join_rate,
            self.settings.join_burst,
            frame.ref,
            "too many join and leave frames",
        )
        if not await self.services.hub.leave(self.conn, frame.room):
            raise FrameError(ErrorCode.NOT_JOINED, "you have not joined that room", frame.ref)
        self._joined.pop(frame.room, None)
        self.conn.push(encode(LeftFrame(room=frame.room, ref=frame.ref)))

    async def _send(self, frame: SendIn) -> None:
        self._require_joined(frame.room, frame.ref)
        if len(frame.body) > self.settings.max_body_chars:
            raise FrameError(
                ErrorCode.TOO_LARGE,
                f"body is longer than {self.settings.max_body_chars} characters",
                frame.ref,
            )
        problem = check_body(frame.body)
        if problem:
            raise FrameError(ErrorCode.BAD_FRAME, problem, frame.ref)
        bot = self.user.role == "bot"
        await self._rate_limit(
            "send",
            self.settings.bot_send_rate if bot else self.settings.send_rate,
            self.settings.bot_send_burst if bot else self.settings.send_burst,
            frame.ref,
        )
        if self._inflight >= self.settings.max_inflight_sends:
            # Backpressure: stop reading until acks come back, refuse if they do not.
            self._has_room.clear()
            await _first_of(self._has_room, self.sink.lost, timeout=INFLIGHT_WAIT)
            if not self._has_room.is_set() and not self.sink.lost.is_set():
                raise FrameError(
                    ErrorCode.OVERLOADED,
                    f"{self.settings.max_inflight_sends} sends are waiting to be stored",
                    frame.ref,
                    INFLIGHT_WAIT,
                )
        if self.sink.lost.is_set():
            return  # the client is gone and gets no ack: it resends with the same ref
        room = self._joined[frame.room]
        message = NewMessage(room, self.user, frame.ref, frame.body)
        try:
            self.services.writer.submit(message, partial(self._stored, frame.ref))
        except WriterFull:
            raise FrameError(
                ErrorCode.OVERLOADED, "the server is busy: nothing was stored", frame.ref, 1.0
            ) from None
        self._inflight += 1
        self._settled.clear()

    def _stored(self, ref: str, result: Stored | Exception) -> None:
        """The writer's answer to one of this connection's sends, in the order they came."""
        self._inflight -= 1
        if not self._inflight:
            self._settled.set()
        if self._inflight < self.settings.max_inflight_sends:
            self._has_room.set()
        if isinstance(result, Stored):
            self.conn.push(encode(result.ack))
        else:
            self._error(
                ErrorCode.UNAVAILABLE,
                "the message could not be stored: send it again with the same ref",
                ref,
                1.0,
            )

    async def _typing(self, frame: TypingIn) -> None:
        self._require_joined(frame.room, frame.ref)
        await self._rate_limit(
            "typing", self.settings.typing_rate, self.settings.typing_burst, frame.ref
        )
        payload = encode(TypingFrame(room=frame.room, user=self.user))
        await self.services.hub.publish_room(frame.room, payload, exclude_user=self.user.id)

    async def _reauth(self, frame: AuthIn) -> None:
        try:
            principal = await self.services.accounts.authenticate(frame.token)
        except TokenError:
            raise FrameError(
                ErrorCode.FORBIDDEN, "invalid, expired or revoked token", frame.ref
            ) from None
        if principal.user.id != self.user.id:
            raise FrameError(ErrorCode.FORBIDDEN, "that token is for another user", frame.ref)
        self.principal = principal
        self._watch_expiry()
        self.conn.push(encode(ReauthedFrame(expires_at=self._expires_iso(), ref=frame.ref)))

    # --- helpers --------------------------------------------------------------

    async def _room(self, name: str, ref: str | None) -> RoomView:
        room = await self.services.store.room_for(name, self.user)
        if room is None:
            raise FrameError(ErrorCode.NOT_FOUND, "no such room, or you may not read it", ref)
        return room

    def _require_joined(self, room: str, ref: str | None) -> None:
        if room not in self.conn.rooms:
            raise FrameError(ErrorCode.NOT_JOINED, "join the room first", ref)

    async def _rate_limit(
        self, action: str, rate: float, burst: int, ref: str | None, detail: str | None = None
    ) -> None:
        # Per user, across every process when CHAT_REDIS_URL is set.
        wait, refused = await self.services.frame_limits.hit(action, self.user.id, rate, burst)
        if wait is None:
            if self._accepted_last:
                self._strikes = 0  # two accepted in a row: it has calmed down
            self._accepted_last = True
            return
        # Refusals since the client last had two frames accepted in a row: a flood
        # that gets one through now and then (the bucket refills) still counts up.
        self._strikes += 1
        self._accepted_last = False
        refused = max(refused, self._strikes)
        metrics.RATE_LIMITED.labels(action).inc()
        if refused >= PENALTY_AFTER:
            # Still sending while refused: read this socket more slowly, so a flood
            # costs the server a few frames a second instead of all its CPU.
            self._penalty = min(wait, PENALTY_MAX)
        if refused >= self.settings.rate_limit_close_after:
            self._close_after_acks = (CloseCode.RATE_LIMITED, "rate limit exceeded repeatedly")
            self.services.abuse.report(
                AbuseEvent(
                    "rate_limit_close",
                    client_address(self.ws),
                    user_id=self.user.id,
                    username=self.user.name,
                    detail=action,
                )
            )
        detail = detail or f"too many {action} frames"
        raise FrameError(ErrorCode.RATE_LIMITED, detail, ref, wait)

    def _error(
        self, code: str, detail: str, ref: str | None = None, retry_after: float | None = None
    ) -> None:
        metrics.ERRORS.labels(code).inc()
        self.conn.push(
            encode(ErrorFrame(code=code, detail=detail, ref=ref, retry_after=retry_after))
        )

    def _watch_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        remaining = self.principal.claims.expires_at - time.time()
        if remaining > EXPIRY_WATCH_LIMIT:
            self._expiry = None
            return
        self._expiry = asyncio.get_running_loop().call_later(
            max(remaining, 0.0),
            self.conn.abort,
            CloseCode.TOKEN_EXPIRED,
            "token expired: refresh it and reconnect",
        )

    async def _still_valid(self) -> bool:
        """Whether the token that opened this session is still live (not revoked or banned)."""
        claims = self.principal.claims
        store = self.services.store
        user = await store.user_for_token(claims.user_id)
        if user is None or user.banned or user.token_version != claims.version:
            return False
        return claims.type != "bot" or await store.bot_token_live(claims.jti)

    def _expires_iso(self) -> str:
        return iso(self.principal.claims.expires_at)
